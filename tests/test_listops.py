"""ListOps: generator faithful to LRA, labels, tokenisers, TSV reading and writing, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks import listops as lo
from lra.tasks import listops_gen as gen
from lra.tasks import listops_tsv as tsv
from lra.tasks.base import SPLITS, check_split
from listops_eval import evaluate_string

SMALL = dict(min_length=20, max_length=200, max_depth=10, max_args=10)
SIZES = dict(train_size=240, val_size=30, test_size=30)


def make_cfg(seq_len: int = 200, **data):
    fields = dict(source="generate", path=None, tokenizer="keep_close", seed=0, workers=1, **SIZES, **SMALL)
    fields.update(data)
    return OmegaConf.create({"name": "listops", "seq_len": seq_len, "data": fields})


@pytest.fixture(scope="module")
def splits():
    return gen.generate_splits(seed=0, workers=1, **SIZES, **SMALL)


@pytest.fixture(scope="module")
def everything(splits):
    return gen._concat([splits[s] for s in SPLITS])


@pytest.fixture(scope="module")
def tsv_folder(tmp_path_factory, splits):
    folder = tmp_path_factory.mktemp("listops_tsv")
    paths = lo.export_tsv(make_cfg(), folder)  # the same data as `splits`
    assert sorted(p.name for p in paths) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    return folder


# --------------------------------------------------------------------------- reference code
# Written here from the description of LRA's procedure, independently of tasks/listops.py.


def canonical_to_tree(ids):
    """Canonical ids -> LRA's nested binary tuples ((((op, a1), a2), ...), END)."""
    names = {gen.OP0 + k: "[" + op for k, op in enumerate(gen.OPERATORS)}

    def parse(i):
        tok = int(ids[i])
        if gen.DIGIT0 <= tok < gen.DIGIT0 + 10:
            return tok - gen.DIGIT0, i + 1
        assert tok in names
        args, i = [], i + 1
        while int(ids[i]) != gen.END_ID:
            arg, i = parse(i)
            args.append(arg)
        t = (names[tok], args[0])
        for arg in args[1:]:
            t = (t, arg)
        return (t, "]"), i + 1

    tree, end = parse(0)
    assert end == len(ids)
    return tree


def lra_to_string(t):
    if isinstance(t, str):
        return t
    if isinstance(t, int):
        return str(t)
    return "( " + lra_to_string(t[0]) + " " + lra_to_string(t[1]) + " )"


def reference_generate(seed, n, min_length, max_length, max_depth=10, max_args=10):
    """(length, label) of n trees drawn with Python's random exactly as LRA describes,
    and the argument count of every operator in them."""
    rng = random.Random(seed)
    arg_counts = []

    def tree(depth):
        r = rng.random() if depth < max_depth else 1.0
        if r > 0.25:
            return rng.choice(range(10)), 1
        values, length = [], 2
        for _ in range(rng.randint(2, max_args)):
            v, sub = tree(depth + 1)
            values.append(v)
            length += sub
        arg_counts.append(len(values))
        op = rng.choice(["MIN", "MAX", "MED", "SM"])
        if op == "MIN":
            return min(values), length
        if op == "MAX":
            return max(values), length
        if op == "MED":
            return int(np.median(values)), length
        return sum(values) % 10, length

    out, counts = [], []
    while len(out) < n:
        arg_counts.clear()
        value, length = tree(1)
        if min_length < length < max_length:
            out.append((length, value))
            counts += arg_counts
    return np.array(out), np.array(counts)


def argument_counts(ids):
    """How many arguments each operator of a canonical sequence has (a plain stack)."""
    stack, counts = [], []
    for tok in ids.tolist():
        if tok == gen.END_ID:
            counts.append(stack.pop())
        elif stack:
            stack[-1] += 1
        if tok >= gen.OP0 and tok != gen.END_ID:
            stack.append(0)
    return counts


# --------------------------------------------------------------------------- registration, config


def test_registered_task_and_vocab():
    task = TASKS.get("listops")()
    assert isinstance(task, lo.ListOps)
    assert (task.name, task.num_classes, task.auto_prepare, task.version) == ("listops", 10, True, "1")
    assert gen.VOCAB == ("<pad>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
                        "MIN", "MAX", "MED", "SM", "]", "<unk>")
    spec = task.spec(make_cfg())
    assert spec.vocab_size == 17 == gen.VOCAB_SIZE and spec.seq_len == 200 and not spec.pair


def test_shipped_config_passes_check():
    from conftest import compose_config

    cfg = compose_config("task=listops")
    lo.ListOps().check(cfg.task)
    assert lo._settings(cfg.task) == lo.DEFAULTS == OmegaConf.to_container(cfg.task.data)


@pytest.mark.parametrize(
    "override",
    [
        dict(source="tfds"),
        dict(tokenizer="bpe"),
        dict(tokenizer="lra"),  # the old name of drop_close: renamed, said in the error
        dict(train_size=0),
        dict(test_size=-1),
        dict(min_length=200, max_length=200),
        dict(min_length=300, max_length=200),
        dict(max_depth=0),
        dict(max_args=1),
        dict(seed=-3),
        dict(workers=0),
        dict(train_size="many"),
        dict(source="tsv", path=None),
        dict(max_depth=2, max_args=2, min_length=10),  # the longest possible tree has 4 tokens
    ],
)
def test_check_rejects_bad_settings(override):
    with pytest.raises(LraError) as err:
        lo.ListOps().check(make_cfg(**override))
    assert "\n" not in str(err.value)


def test_check_rejects_bad_seq_len():
    with pytest.raises(LraError):
        lo.ListOps().check(make_cfg(seq_len=0))


# --------------------------------------------------------------------------- generator


def test_labels_agree_with_independent_evaluator(everything):
    strings = gen.to_strings(everything)
    assert len(strings) == len(everything) == 300
    for text, label in zip(strings, everything.labels):
        assert evaluate_string(text) == label


def test_written_form_is_lras_to_string(everything):
    strings = gen.to_strings(everything)
    for i in range(len(everything)):
        assert strings[i] == lra_to_string(canonical_to_tree(everything.sequence(i)))


def test_evaluator_on_known_expressions():
    assert evaluate_string("( ( ( [MAX 2 ) 9 ) ] )") == 9
    assert evaluate_string("( ( ( [MED 1 ) 2 ) ] )") == 1  # int(1.5)
    assert evaluate_string("( ( ( ( ( [MED 7 ) 1 ) 4 ) 8 ) ] )") == 5  # int(5.5)
    assert evaluate_string("( ( ( ( [MED 7 ) 1 ) 4 ) ] )") == 4
    assert evaluate_string("( ( ( ( [SM 7 ) 8 ) 9 ) ] )") == 4
    nested = "( ( ( [MIN ( ( ( [MAX 2 ) 9 ) ] ) ) 5 ) ] )"
    assert evaluate_string(nested) == 5
    assert evaluate_string("7") == 7
    for bad in ("( [MIN 2 ]", "[MIN ]", "[MAX 1 2", "1 2", "[FIRST 1 ]", "] 1", "( 3 ) )"):
        with pytest.raises(ValueError):
            evaluate_string(bad)


def test_med_matches_numpy_median():
    rng = np.random.default_rng(1)
    for _ in range(200):
        args = rng.integers(0, 10, rng.integers(2, 11)).tolist()
        text = "( " * (len(args) + 1) + "[MED " + " ".join(f"{a} )" for a in args) + " ] )"
        assert evaluate_string(text) == int(np.median(args))


def test_lengths_strictly_inside_bounds(everything):
    lengths = everything.lengths()
    assert lengths.min() > 20 and lengths.max() < 200
    tight = gen.generate(50, seed=3, min_length=9, max_length=11, workers=1)
    assert set(tight.lengths().tolist()) == {10}
    strings = gen.to_strings(tight)
    assert all(evaluate_string(s) == y for s, y in zip(strings, tight.labels))


def test_sequences_are_well_formed_trees(everything):
    for i in range(len(everything)):
        seq = everything.sequence(i)
        ops = np.count_nonzero((seq >= gen.OP0) & (seq < gen.OP0 + 4))
        assert ops == np.count_nonzero(seq == gen.END_ID) >= 1
        assert seq[0] >= gen.OP0 and seq[-1] == gen.END_ID


def test_no_duplicates_within_or_across_splits(splits):
    keys = [d.sequence(i).tobytes() for d in splits.values() for i in range(len(d))]
    assert len(keys) == len(set(keys)) == 300
    assert [len(splits[s]) for s in SPLITS] == [240, 30, 30]


def test_duplicates_are_dropped_and_exhaustion_is_reported():
    # depth 2, two arguments: 10 digits + 4 * 100 two-argument trees = 410 distinct trees
    few = gen.generate(300, seed=0, min_length=0, max_length=5, max_depth=2, max_args=2, workers=1)
    keys = {few.sequence(i).tobytes() for i in range(len(few))}
    assert len(few) == len(keys) == 300
    with pytest.raises(LraError, match="distinct"):
        gen.generate(500, seed=0, min_length=0, max_length=5, max_depth=2, max_args=2, workers=1)


def test_deterministic_for_a_seed_and_independent_of_workers():
    one = gen.generate(400, seed=7, workers=1, chunk_size=60, **SMALL)
    again = gen.generate(400, seed=7, workers=1, chunk_size=60, **SMALL)
    two = gen.generate(400, seed=7, workers=2, chunk_size=60, **SMALL)
    other = gen.generate(400, seed=8, workers=1, chunk_size=60, **SMALL)
    for run in (again, two):
        assert np.array_equal(one.tokens, run.tokens)
        assert np.array_equal(one.offsets, run.offsets)
        assert np.array_equal(one.labels, run.labels)
    assert len(other) == 400 and not np.array_equal(one.offsets, other.offsets)


def test_build_is_deterministic_and_follows_conventions():
    task = lo.ListOps()
    cfg = make_cfg()
    first, second = task.build(cfg), task.build(cfg)
    other = task.build(make_cfg(seed=1))
    for split in SPLITS:
        arrays = first.splits[split]
        check_split(task, split, arrays, 200)
        assert arrays["inputs"].dtype == np.int8 and arrays["labels"].dtype == np.int32
        assert arrays["inputs"].shape == (SIZES[f"{split}_size"], 200)
        assert np.array_equal(arrays["inputs"], second.splits[split]["inputs"])
        assert np.array_equal(arrays["labels"], second.splits[split]["labels"])
    assert not np.array_equal(first.splits["train"]["inputs"], other.splits["train"]["inputs"])
    meta = first.meta
    assert meta["source"] == "generate" and meta["tokenizer"] == "keep_close" and meta["seed"] == 0
    assert meta["sizes"] == {"train": 240, "val": 30, "test": 30}
    assert meta["generation_seconds"] >= 0
    json.dumps(meta)  # goes into the cache manifest


def test_label_distribution(everything):
    counts = np.bincount(everything.labels, minlength=10)
    assert len(counts) == 10 and (counts > 0).all()
    assert counts.max() < 0.5 * len(everything)


def test_distribution_matches_lra_procedure():
    """Same tree distribution as LRA's recursive generator (different random stream)."""
    n = 1500  # depth 6 keeps the unpruned reference fast; the depth rule is the same code
    ours = gen.generate(n, seed=11, workers=1, min_length=20, max_length=200, max_depth=6, max_args=10)
    ref, ref_args = reference_generate(11, n, 20, 200, max_depth=6)

    def same_mean(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        z = (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(z) < 5, (a.mean(), b.mean())

    a, b = ours.lengths().astype(float), ref[:, 0].astype(float)
    same_mean(a, b)
    args = [c for i in range(n) for c in argument_counts(ours.sequence(i))]
    assert set(args) == set(ref_args.tolist()) == set(range(2, 11))  # randint(2, max_args)
    same_mean(args, ref_args)
    for q in (0.25, 0.5, 0.75):
        assert abs(np.quantile(a, q) - np.quantile(b, q)) < 0.15 * np.quantile(b, q) + 3
    pa = np.bincount(ours.labels, minlength=10) / n
    pb = np.bincount(ref[:, 1], minlength=10) / n
    se = np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n) + 1e-9
    assert (np.abs(pa - pb) / se < 5).all(), (pa, pb)


def test_impossible_length_range_is_reported():
    with pytest.raises(LraError, match="min_length"):
        gen.generate(10, seed=0, min_length=10, max_length=20, max_depth=2, max_args=2)


# --------------------------------------------------------------------------- tokenisers


def test_tokenizers_on_a_known_string():
    text = "( ( ( [MAX 2 ) ( ( ( [SM 9 ) 0 ) ] ) ) ] )"
    MAX, SM, END = gen.OP0 + 1, gen.OP0 + 3, gen.END_ID
    # keep_close: "]" kept, as LRA's pipeline since c209b2a and S4/S5
    assert tsv.tokenize(text) == [MAX, 3, SM, 10, 1, END, END]
    assert tsv.tokenize(text, "drop_close") == [MAX, 3, SM, 10, 1]  # LRA's first released code
    assert tsv.tokenize("( [FIRST 3 ] )", "drop_close") == [gen.UNK_ID, 4]
    assert tsv.tokenize("( [FIRST 3 ] )", "keep_close") == [gen.UNK_ID, 4, END]
    assert tsv.tokenize("MIN [MINI 12", "drop_close") == [gen.OP0, gen.UNK_ID, gen.UNK_ID]
    assert tsv.tokenize("MIN [MINI 12", "keep_close") == [gen.UNK_ID, gen.UNK_ID, gen.UNK_ID]


def test_default_tokens_determine_the_label():
    """Two bracketings of the same operators and digits, with different values: the
    default tokens tell them apart (the label is a function of the input), while
    drop_close gives both one token sequence (the first released code's defect)."""
    inner_first = "( ( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 3 ) ] ) ) 5 ) ] )"  # MAX(2, MIN(9, 3), 5) = 5
    inner_wide = "( ( ( [MAX 2 ) ( ( ( ( [MIN 9 ) 3 ) 5 ) ] ) ) ] )"  # MAX(2, MIN(9, 3, 5)) = 3
    assert evaluate_string(inner_first) != evaluate_string(inner_wide)
    assert tsv.tokenize(inner_first) != tsv.tokenize(inner_wide)
    assert tsv.tokenize(inner_first, "drop_close") == tsv.tokenize(inner_wide, "drop_close")


def test_default_tokens_are_one_to_one_with_trees(everything):
    """Over generated data: equal default token rows always carry equal labels, and
    the default rows are exactly the canonical trees (nothing lost)."""
    inputs, _ = gen.encode(everything, lo.DEFAULTS["tokenizer"], 200)
    label_of: dict[bytes, int] = {}
    for row, label in zip(inputs, everything.labels):
        assert label_of.setdefault(row.tobytes(), int(label)) == label
    for i in range(len(everything)):
        seq = everything.sequence(i)
        assert np.array_equal(inputs[i][: len(seq)], seq) and not inputs[i][len(seq):].any()


def test_drop_close_run_carries_a_warning():
    assert lo.ListOps().build(make_cfg()).warnings == []
    built = lo.ListOps().build(make_cfg(tokenizer="drop_close"))
    assert built.warnings == [gen.DROP_CLOSE_WARNING] and "c209b2a" in built.warnings[0]


def test_tokenizers_on_generated_data(everything):
    drop, _ = gen.encode(everything, "drop_close", 200)
    keep, _ = gen.encode(everything, "keep_close", 200)
    assert not (drop == gen.END_ID).any()
    for i in range(len(everything)):
        seq = everything.sequence(i)
        assert (keep[i] == gen.END_ID).sum() == (seq == gen.END_ID).sum() >= 1
        kept = keep[i][(keep[i] != gen.END_ID) & (keep[i] != 0)]
        assert np.array_equal(drop[i][drop[i] != 0], kept)
        assert tsv.tokenize(gen.to_strings(everything.slice(i, i + 1))[0]) == seq.tolist()


@pytest.mark.parametrize("tokenizer", gen.TOKENIZERS)
def test_truncation_and_right_padding(everything, tokenizer):
    seq_len = 40
    inputs, stats = gen.encode(everything, tokenizer, seq_len)
    assert inputs.shape == (len(everything), seq_len)
    truncated = 0
    for i in range(len(everything)):
        full = [t for t in everything.sequence(i).tolist() if tokenizer == "keep_close" or t != gen.END_ID]
        truncated += len(full) > seq_len
        expected = (full + [0] * seq_len)[:seq_len]  # LRA: tokens[:max_length], then padded
        assert inputs[i].tolist() == expected
    assert stats["truncated"] == truncated > 0
    nonzero = inputs != 0
    assert (nonzero[:, :-1] | ~nonzero[:, 1:]).all()  # no token after padding


# --------------------------------------------------------------------------- TSV files


def test_written_tsv_looks_like_lras(tsv_folder, splits):
    raw = (tsv_folder / "basic_val.tsv").read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[0] == b"Source\tTarget" and lines[-1] == b""
    assert len(lines) == 2 + len(splits["val"])
    source, target = lines[1].decode().split("\t")
    assert source == gen.to_strings(splits["val"])[0] and int(target) == splits["val"].labels[0]
    assert source.startswith("( ") and source.endswith(" ] )")


@pytest.mark.parametrize("tokenizer", gen.TOKENIZERS)
def test_tsv_round_trip_gives_identical_arrays(tsv_folder, tokenizer):
    task = lo.ListOps()
    generated = task.build(make_cfg(tokenizer=tokenizer))
    read = task.build(make_cfg(tokenizer=tokenizer, source="tsv", path=str(tsv_folder)))
    for split in SPLITS:
        for field in ("inputs", "labels"):
            a, b = generated.splits[split][field], read.splits[split][field]
            assert a.dtype == b.dtype and np.array_equal(a, b), (split, field)
    assert read.meta["source"] == "tsv" and read.meta["sizes"] == generated.meta["sizes"]
    json.dumps(read.meta)


def test_tsv_reader_accepts_lf_lines_blank_lines_and_small_blocks(tmp_path, splits, monkeypatch):
    gen.write_tsv(tmp_path, splits, newline="\n")
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(path.read_bytes() + b"\n\n")  # trailing blank lines
    monkeypatch.setattr(tsv, "_READ_BLOCK_BYTES", 4096)  # many blocks, lines across block edges
    inputs, labels, _ = tsv.read_tsv_file(path, "keep_close", 200)
    expected, _ = gen.encode(splits["train"], "keep_close", 200)
    assert np.array_equal(inputs, expected) and np.array_equal(labels, splits["train"].labels)


def _corrupt(folder: Path, name: str, edit) -> Path:
    path = folder / name
    lines = path.read_bytes().decode().split("\n")  # keeps the "\r" of CRLF lines
    edit(lines)
    path.write_bytes("\n".join(lines).encode())
    return path


def _set_line(n, text):
    def edit(lines):
        lines[n - 1] = text

    return edit


def _replace_label(n, label):
    def edit(lines):
        lines[n - 1] = lines[n - 1].rsplit("\t", 1)[0] + "\t" + label + "\r"

    return edit


def _add_field(n):
    def edit(lines):
        lines[n - 1] = lines[n - 1].rstrip("\r") + "\t5\r"

    return edit


def _drop_tab(n):
    def edit(lines):
        lines[n - 1] = lines[n - 1].replace("\t", " ")

    return edit


CORRUPTIONS = {
    "bad header": ("basic_train.tsv", _set_line(1, "Src\tTgt\r"), "line 1"),
    "empty file": ("basic_val.tsv", lambda lines: lines.clear(), "line 1"),
    "three fields": ("basic_val.tsv", _add_field(3), "line 3"),
    "one field": ("basic_test.tsv", _drop_tab(4), "line 4"),
    "non-integer label": ("basic_train.tsv", _replace_label(3, "x"), "line 3"),
    "float label": ("basic_train.tsv", _replace_label(5, "3.0"), "line 5"),
    "label 10": ("basic_val.tsv", _replace_label(3, "10"), "line 3"),
    "label -1": ("basic_test.tsv", _replace_label(2, "-1"), "line 2"),
    "empty source": ("basic_val.tsv", _set_line(3, "( ) \t4\r"), "line 3"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_tsv_raises_one_line_error_naming_file_and_row(case, tmp_path, splits):
    name, edit, where = CORRUPTIONS[case]
    gen.write_tsv(tmp_path, splits)
    _corrupt(tmp_path, name, edit)
    with pytest.raises(LraError) as err:
        lo.ListOps().build(make_cfg(source="tsv", path=str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and name in message and where in message, message


def test_missing_folder_or_file_is_reported(tmp_path, splits):
    with pytest.raises(LraError, match="does not exist") as err:
        lo.ListOps().build(make_cfg(source="tsv", path=str(tmp_path / "nowhere")))
    assert "nowhere" in str(err.value) and "task.data.path" in str(err.value)
    gen.write_tsv(tmp_path, splits)
    (tmp_path / "basic_test.tsv").unlink()
    with pytest.raises(LraError, match="basic_test.tsv") as err:
        lo.ListOps().build(make_cfg(source="tsv", path=str(tmp_path)))
    assert "\n" not in str(err.value)


def test_acceptable_label_spellings(tmp_path, splits):
    gen.write_tsv(tmp_path, splits)
    _corrupt(tmp_path, "basic_train.tsv", _replace_label(2, " 07 "))
    inputs, labels, _ = tsv.read_tsv_file(tmp_path / "basic_train.tsv", "keep_close", 200)
    assert labels[0] == 7 and np.array_equal(labels[1:], splits["train"].labels[1:])
