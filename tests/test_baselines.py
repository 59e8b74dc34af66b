"""lra/baselines.py and lra/compare.py: each baseline against a hand computation on a
small fixture, logistic regressions on tiny synthetic data with a planted signal,
and the `lra baselines` / `lra compare` commands end to end on a tiny cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lra import baselines, compare, stats
from lra.cli import main
from lra.errors import LraError
from lra.tasks.listops_gen import DIGIT0, END_ID, OP0

MIN, MAX, MED, SM = (OP0 + k for k in range(4))


def splits_of(train, val, test):
    return {name: {"inputs": np.asarray(x), "labels": np.asarray(y, np.int32)}
            for name, (x, y) in zip(("train", "val", "test"), (train, val, test))}


def test_majority_label_and_ties():
    assert baselines.majority_label(np.array([3, 1, 3, 2, 1, 3]), 5) == 3
    assert baselines.majority_label(np.array([4, 2, 4, 2]), 5) == 2  # tie: the smaller label
    x = np.ones((6, 4), np.int32)
    out = baselines.majority(splits_of((x, [3, 1, 3, 2, 1, 3]), (x[:2], [3, 0]), (x[:4], [1, 3, 3, 0])),
                             num_classes=5)
    assert out.test_predictions.tolist() == [3, 3, 3, 3]
    assert np.mean(out.test_predictions == [1, 3, 3, 0]) == 0.5


def listops_row(*tokens, length=12):
    row = np.zeros(length, np.int32)
    row[: len(tokens)] = tokens
    return row


def test_outer_operator_rule_on_hand_written_listops():
    d = lambda v: DIGIT0 + v  # noqa: E731
    train = [
        (listops_row(MAX, d(2), d(9), END_ID), 9),              # [MAX 2 9 ]
        (listops_row(MAX, d(4), MIN, d(7), d(1), END_ID, END_ID), 4),
        (listops_row(MAX, d(3), d(9), END_ID), 9),
        (listops_row(MIN, d(2), d(5), END_ID), 2),
        (listops_row(MIN, d(0), d(8), END_ID), 0),
        (listops_row(MIN, d(0), d(1), END_ID), 0),
        (listops_row(SM, d(4), d(5), END_ID), 9),
    ]
    test = [
        (listops_row(MAX, d(1), d(9), END_ID), 9),   # MAX -> 9: right
        (listops_row(MIN, d(3), d(6), END_ID), 3),   # MIN -> 0: wrong
        (listops_row(SM, d(1), d(1), END_ID), 2),    # SM  -> 9: wrong
        (listops_row(MED, d(0), d(0), END_ID), 0),   # MED unseen -> majority label 9: wrong
    ]
    stack = lambda rows: (np.stack([r for r, _ in rows]), [y for _, y in rows])  # noqa: E731
    out = baselines.outer_operator(splits_of(stack(train), stack(test), stack(test)), num_classes=10)
    assert out.details["rule"] == {str(MIN): 0, str(MAX): 9, str(SM): 9}
    assert out.test_predictions.tolist() == [9, 0, 9, 9]


def test_chance_is_seeded_and_uniform():
    x = np.ones((4000, 2), np.int32)
    s = splits_of((x[:10], np.zeros(10)), (x, np.zeros(4000)), (x, np.zeros(4000)))
    a = baselines.chance(s, num_classes=4, seed=1)
    assert np.array_equal(a.test_predictions, baselines.chance(s, num_classes=4, seed=1).test_predictions)
    assert np.bincount(a.test_predictions, minlength=4) == pytest.approx([1000] * 4, abs=120)


def test_histogram_and_global_features_by_hand():
    tokens = np.array([[1, 1, 129, 256]])  # pixels 0, 0, 128, 255
    assert baselines.histogram_features(tokens, bins=4).tolist() == [[0.5, 0.0, 0.25, 0.25]]
    # Three equal bins of [0, 256): 85 < 256/3 <= 86.
    assert baselines.histogram_features(np.array([[86, 87]]), bins=3).tolist() == [[0.5, 0.5, 0.0]]
    features = baselines.global_image_features(tokens, side=2)
    rows = [(0 + 0) / 2 / 255, (128 + 255) / 2 / 255]
    cols = [(0 + 128) / 2 / 255, (0 + 255) / 2 / 255]
    assert features[0, -4:] == pytest.approx(rows + cols)


def test_carve_holdout_is_disjoint_and_capped():
    fit, holdout = baselines.carve_holdout(1000, seed=0, max_train=300)
    assert len(holdout) == 100 and len(fit) == 300
    assert not set(fit) & set(holdout)
    assert np.array_equal(fit, baselines.carve_holdout(1000, seed=0, max_train=300)[0])


def test_byte_strings_decode_text_tokens():
    tokens = np.array([[ord("h") + 1, ord("i") + 1, 1, 256, 0, 0]])
    assert baselines.byte_strings(tokens) == [b"hi\x00\xff"]


@pytest.fixture
def sklearn():
    return pytest.importorskip("sklearn")


def test_logreg_pixels_finds_planted_signal(sklearn):
    """Class k brightens pixel k: logistic regression must find it; a label-shuffled
    copy must stay at chance (so the score is not a leak from test)."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = rng.integers(0, 3, n)
        pixels = rng.integers(0, 100, (n, 16))
        pixels[np.arange(n), labels] += 150
        return pixels + 1, labels

    s = splits_of(make(600), make(200), make(200))
    out = baselines.logistic_regression(s, 3, 0, baselines.dense_featurizer(baselines.pixel_features), None)
    assert np.mean(out.test_predictions == s["test"]["labels"]) > 0.95
    assert out.details["fit_examples"] == 540 and out.details["holdout_examples"] == 60
    assert out.test_loss < np.log(3)
    shuffled = splits_of((s["train"]["inputs"], rng.permutation(s["train"]["labels"])),
                         (s["val"]["inputs"], s["val"]["labels"]), (s["test"]["inputs"], s["test"]["labels"]))
    null = baselines.logistic_regression(shuffled, 3, 0, baselines.dense_featurizer(baselines.pixel_features), None)
    assert np.mean(null.test_predictions == s["test"]["labels"]) < 0.5


def test_logreg_text_features_find_planted_words(sklearn):
    rng = np.random.default_rng(1)
    words = ["plain", "movie", "story", "actor", "scene", "film"]

    def make(n):
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(words, 12)) + (" superb" if y else " awful") for y in labels]
        tokens = np.zeros((n, 128), np.int32)
        for i, t in enumerate(texts):
            b = np.frombuffer(t.encode()[:128], np.uint8)
            tokens[i, : len(b)] = b.astype(np.int32) + 1
        return tokens, labels

    s = splits_of(make(300), make(100), make(100))
    for featurizer in (baselines.byte_ngram_featurizer, baselines.word_tfidf_featurizer):
        out = baselines.logistic_regression(s, 2, 0, featurizer, None)
        assert np.mean(out.test_predictions == s["test"]["labels"]) > 0.95, featurizer.__name__


def test_c_is_chosen_on_the_training_holdout_not_on_test(sklearn, monkeypatch):
    """Corrupting the test labels must not change the chosen C or the predictions."""
    rng = np.random.default_rng(2)
    x = rng.integers(1, 257, (400, 8))
    y = (x[:, 0] > 128).astype(np.int32)
    fit = lambda s: baselines.logistic_regression(  # noqa: E731
        s, 2, 0, baselines.dense_featurizer(baselines.pixel_features), None)
    a = fit(splits_of((x[:300], y[:300]), (x[300:], y[300:]), (x[300:], y[300:])))
    b = fit(splits_of((x[:300], y[:300]), (x[300:], 1 - y[300:]), (x[300:], 1 - y[300:])))
    assert a.details["chosen_C"] == b.details["chosen_C"]
    assert np.array_equal(a.test_predictions, b.test_predictions)


# ---------------------------------------------------------------- commands, end to end

@pytest.fixture
def listops_cache(tmp_path):
    """A tiny generated ListOps cache (seconds), prepared through the real code path."""
    data = tmp_path / "data"
    overrides = ["task.data.train_size=300", "task.data.val_size=50", "task.data.test_size=100",
                 "task.data.min_length=1", "task.data.max_length=40", "task.seq_len=40",
                 "task.data.max_depth=3", "task.data.workers=1"]
    return data, overrides


def test_lra_baselines_and_compare_end_to_end(listops_cache, tmp_path, capsys):
    data, overrides = listops_cache
    runs = tmp_path / "runs"
    assert main(["baselines", "task=listops", f"data_dir={data}", f"runs_dir={runs}", *overrides]) == 0
    records = sorted(runs.glob("listops/*/*/record.json"))
    assert [p.parts[-3] for p in records] == ["baseline_chance", "baseline_majority", "baseline_outer_operator"]
    by_model = {}
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "completed" and record["reference"] is True and record["experiment"] is None
        predictions, labels = stats.load_predictions(path.parent)
        assert record["test"]["accuracy"] == pytest.approx(np.mean(predictions == labels))
        assert record["test"]["examples"] == 100 == labels.size
        by_model[record["model"]] = (record, predictions, labels)
    # The majority rule's accuracy is the share of its label in the test split.
    record, _, labels = by_model["baseline_majority"]
    assert record["test"]["accuracy"] == pytest.approx(np.mean(labels == record["baseline"]["label"]))

    assert all(r["val_is_test"] is False for r, _, _ in by_model.values())
    # Without task=: every prepared cache (here the one above).
    assert main(["baselines", "baseline=majority", f"data_dir={data}", f"runs_dir={tmp_path / 'all'}"]) == 0
    assert len(list((tmp_path / "all").glob("listops/baseline_majority/*/record.json"))) == 1

    capsys.readouterr()
    assert main(["compare", "baseline_outer_operator", "baseline_majority", f"runs={runs}", "resamples=500"]) == 0
    out = capsys.readouterr().out
    _, pred_a, labels = by_model["baseline_outer_operator"]
    _, pred_b, _ = by_model["baseline_majority"]
    diff = np.mean(pred_a == labels) - np.mean(pred_b == labels)
    assert f"difference {100 * diff:+.2f}" in out
    expected = stats.mcnemar_exact_p(int(np.sum((pred_a == labels) & (pred_b != labels))),
                                     int(np.sum((pred_a != labels) & (pred_b == labels))))
    assert f"McNemar p={expected:.3g}" in out
    assert "across seeds: needs two runs" in out


def test_compare_refuses_different_test_examples(tmp_path, capsys):
    for name, labels in (("a", [0, 1, 1]), ("b", [1, 1, 0])):
        run = tmp_path / name
        run.mkdir()
        (run / "record.json").write_text(json.dumps(
            {"status": "completed", "task": "listops", "model": name, "seed": 0, "test": {"accuracy": 0.5}}))
        np.savez(run / "predictions.npz", predictions=np.array([0, 1, 1]), labels=np.array(labels))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different examples" in err


def test_compare_across_seeds_uses_paired_t(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    runs = {}
    for model, acc in (("a", [0.8, 0.82, 0.79]), ("b", [0.7, 0.75, 0.71])):
        runs[model] = []
        for seed, a in enumerate(acc):
            run = tmp_path / model / str(seed)
            run.mkdir(parents=True)
            (run / "record.json").write_text(json.dumps(
                {"status": "completed", "task": "text", "model": model, "seed": seed, "test": {"accuracy": a},
                 "date": f"2026-01-0{seed + 1}"}))
            np.savez(run / "predictions.npz", predictions=rng.integers(0, 2, 50), labels=labels)
        runs[model] = compare.resolve(model, [str(tmp_path)], None)
    result = compare.compare(runs["a"], runs["b"], n_resamples=200)
    assert len(result["paired"]) == 3
    assert result["seeds"]["test"] == "paired t"
    assert result["seeds"]["p"] == pytest.approx(
        stats.seed_comparison([0.8, 0.82, 0.79], [0.7, 0.75, 0.71], seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])["p"])


@pytest.mark.parametrize("args, message", [
    (["baselines", "task=listops", "baseline=nope"], "unknown baseline 'nope'"),
    (["baselines", "colour=red"], "unknown option 'colour'"),
    (["baselines", "seed=x"], "seed must be an integer"),
    (["compare", "only_one"], "give two runs"),
    (["compare", "a", "b", "runs=/nonexistent"], "no completed run"),
])
def test_bad_input_is_one_line_and_leaves_no_run(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LRA_DATA_DIR", str(tmp_path / "data"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


def test_missing_sklearn_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(LraError, match=r'pip install -e "\.\[baselines\]"'):
        baselines._require_sklearn()
