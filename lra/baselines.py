"""Reference baselines: what trivial and non-long-range methods score on each task.

A benchmark number means little without its floor. `lra baselines` computes,
from a prepared cache, the scores of methods that cannot model long-range
structure, and writes each as an ordinary run record (model `baseline_<name>`,
`reference: true`) with its `predictions.npz`, so the leaderboard and
`lra compare` treat them like any run:

- every task: `chance` (a uniform random guess, seeded) and `majority` (the most
  frequent training label);
- ListOps: `outer_operator`, the best rule that sees only the outermost operator
  (the first token): for each operator, the most frequent training label. LRA's
  paper reports 36.37% for its Transformer, about what this rule scores;
- Text: logistic regression on byte 1-3-gram counts and on word tf-idf, of the
  bytes a model sees (the review cut to `seq_len`);
- Image: logistic regression on the raw pixels and on the intensity histogram;
- Pathfinder: logistic regression on the raw pixels and on simple global
  features (histogram, row and column profiles); both should stay near chance.

Logistic regressions pick their regularisation strength C on a validation
split carved from the training split (never on the task's validation split,
which for Text is LRA's test split, and never on test), fit on at most
`max_train` training examples for a bounded CPU cost, and record all of it.
scikit-learn is an optional extra: `pip install -e ".[baselines]"`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lra import data as lra_data
from lra.errors import LraError
from lra.records import git_commit, package_versions, utc_now, write_record
from lra.stats import PREDICTIONS

C_GRID = tuple(10.0**k for k in range(-6, 4))  # 1e-6 .. 1e3, log-spaced; ties go to the smaller C
HOLDOUT_FRACTION = 0.1  # of the training split, for choosing C
HOLDOUT_MAX = 5000
DENSE_MAX_TRAIN = 20_000  # dense-feature fits: bounded CPU time on a laptop-class machine
HISTOGRAM_BINS = 32
MAX_ITER = 1000


@dataclasses.dataclass
class Outcome:
    """What a baseline predicts on the task's validation and test splits."""

    val_predictions: np.ndarray
    test_predictions: np.ndarray
    val_loss: float | None = None
    test_loss: float | None = None
    param_count: int = 0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- rules (numpy only)

def majority_label(labels: np.ndarray, num_classes: int) -> int:
    """The most frequent label; ties go to the smallest label."""
    return int(np.argmax(np.bincount(np.asarray(labels), minlength=num_classes)))


def first_tokens(inputs: np.ndarray) -> np.ndarray:
    """The first token of each sequence: ListOps's outermost operator (with either
    tokenizer, since `[` is never a token and the root comes first)."""
    return np.asarray(inputs[:, 0]).astype(np.int64)


def fit_lookup_rule(keys: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[int, int]:
    """For each key, its most frequent label (ties to the smaller label)."""
    table: dict[int, int] = {}
    for key in np.unique(keys):
        table[int(key)] = majority_label(labels[keys == key], num_classes)
    return table


def apply_lookup_rule(table: dict[int, int], keys: np.ndarray, default: int) -> np.ndarray:
    """Predictions of a lookup rule; keys never seen in training get `default`."""
    return np.array([table.get(int(k), default) for k in keys], np.int32)


def chance(splits, num_classes: int, seed: int, **_) -> Outcome:
    rng = np.random.default_rng(seed)
    guess = lambda n: rng.integers(0, num_classes, n).astype(np.int32)  # noqa: E731
    uniform_loss = math.log(num_classes)  # cross-entropy of the uniform distribution
    return Outcome(guess(len(splits["val"]["labels"])), guess(len(splits["test"]["labels"])),
                   uniform_loss, uniform_loss, 0,
                   {"method": "uniform random class per example (seeded)",
                    "expected_accuracy": 1.0 / num_classes})


def majority(splits, num_classes: int, **_) -> Outcome:
    label = majority_label(splits["train"]["labels"], num_classes)
    constant = lambda n: np.full(n, label, np.int32)  # noqa: E731
    return Outcome(constant(len(splits["val"]["labels"])), constant(len(splits["test"]["labels"])),
                   param_count=1,
                   details={"method": "the most frequent training label", "label": label,
                            "train_counts": np.bincount(splits["train"]["labels"], minlength=num_classes).tolist()})


def outer_operator(splits, num_classes: int, **_) -> Outcome:
    train_keys = first_tokens(splits["train"]["inputs"])
    table = fit_lookup_rule(train_keys, np.asarray(splits["train"]["labels"]), num_classes)
    default = majority_label(splits["train"]["labels"], num_classes)
    predict = lambda split: apply_lookup_rule(table, first_tokens(splits[split]["inputs"]), default)  # noqa: E731
    return Outcome(predict("val"), predict("test"), param_count=len(table),
                   details={"method": "first token (the outermost operator) -> its most frequent "
                                      "training label; unseen tokens -> the majority label",
                            "rule": {str(k): v for k, v in sorted(table.items())}})


# ---------------------------------------------------------------- features

def pixel_features(inputs: np.ndarray) -> np.ndarray:
    """Tokens are pixel + 1: back to intensities in [0, 1]."""
    return (np.asarray(inputs, np.float32) - 1.0) / 255.0


def histogram_features(inputs: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Share of each image's pixels in each of `bins` equal intensity bins."""
    pixels = np.asarray(inputs, np.int64) - 1
    which = np.clip(pixels * bins // 256, 0, bins - 1)
    rows = np.repeat(np.arange(len(pixels)), pixels.shape[1])
    counts = np.bincount(rows * bins + which.ravel(), minlength=len(pixels) * bins)
    return counts.reshape(len(pixels), bins).astype(np.float32) / pixels.shape[1]


def global_image_features(inputs: np.ndarray, side: int) -> np.ndarray:
    """Position-free and coarse summaries: the intensity histogram, the mean of each
    row and each column. None of them can follow a path between two markers."""
    images = pixel_features(inputs).reshape(len(inputs), side, side)
    return np.concatenate([histogram_features(inputs), images.mean(axis=2), images.mean(axis=1)], axis=1)


def byte_strings(inputs: np.ndarray) -> list[bytes]:
    """Text tokens (byte + 1, 0 = padding) back to the bytes a model sees."""
    rows = np.asarray(inputs)
    return [bytes((row[row > 0] - 1).astype(np.uint8)) for row in rows]


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise LraError('the logistic-regression baselines need scikit-learn: pip install -e ".[baselines]"') from None


class Standardise:
    """Zero mean, unit variance per feature, statistics from the fitting split only."""

    def fit(self, x: np.ndarray) -> "Standardise":
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def dense_featurizer(features: Callable[[np.ndarray], np.ndarray]):
    """fit(train inputs) -> transform: numpy features, standardised on the fit split."""
    def fit(inputs: np.ndarray):
        scaler = Standardise().fit(features(inputs))
        return lambda x: scaler(features(x)).astype(np.float32)
    return fit


def byte_ngram_featurizer(inputs: np.ndarray):
    """Counts of byte 1- to 3-grams (bytes as latin-1 characters, so a character is a
    byte), n-grams seen in fewer than 2 reviews dropped, each count divided by its
    standard deviation on the fit split (sparse: no centring), so that one C grid
    suits these and the standardised dense features alike."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import StandardScaler

    text = lambda x: [b.decode("latin-1") for b in byte_strings(x)]  # noqa: E731
    vectorizer = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False, min_df=2,
                                 dtype=np.float32)
    counts = vectorizer.fit_transform(text(inputs))
    scaler = StandardScaler(with_mean=False).fit(counts)
    return lambda x: scaler.transform(vectorizer.transform(text(x)))


def word_tfidf_featurizer(inputs: np.ndarray):
    """Word uni- and bigram tf-idf (sublinear tf), words of 2+ letters, lowercased,
    min_df 2: the classic strong linear sentiment baseline (e.g. Wang & Manning 2012)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    decode = lambda x: [b.decode("utf-8", errors="replace") for b in byte_strings(x)]  # noqa: E731
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, dtype=np.float32)
    vectorizer.fit(decode(inputs))
    return lambda x: vectorizer.transform(decode(x))


# ---------------------------------------------------------------- logistic regression

def carve_holdout(n: int, seed: int, max_train: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (fit, holdout) indices into the training split: the holdout
    (10%, at most 5,000) chooses C; the fit part is cut to `max_train`."""
    order = np.random.default_rng(seed).permutation(n)
    size = min(HOLDOUT_MAX, max(1, int(round(HOLDOUT_FRACTION * n))))
    holdout, fit = order[:size], order[size:]
    if max_train is not None:
        fit = fit[:max_train]
    return np.sort(fit), np.sort(holdout)


def _cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def logistic_regression(splits, num_classes: int, seed: int, featurizer, max_train: int | None,
                        c_grid=C_GRID, **_) -> Outcome:
    """Fit features + L2 logistic regression, C chosen on a holdout of the training split."""
    _require_sklearn()
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    inputs, labels = splits["train"]["inputs"], np.asarray(splits["train"]["labels"])
    fit_idx, holdout_idx = carve_holdout(len(labels), seed, max_train)
    transform = featurizer(np.asarray(inputs[fit_idx]))
    x_fit, x_holdout = transform(np.asarray(inputs[fit_idx])), transform(np.asarray(inputs[holdout_idx]))
    y_fit, y_holdout = labels[fit_idx], labels[holdout_idx]
    scores, models, iterations, unconverged = {}, {}, {}, []
    # Each C from a cold start: a warm start from the previous C's solution looks converged
    # to lbfgs at once (its gradient tolerance applies to the loss averaged over examples).
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x_fit, y_fit)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            unconverged.append(c)
        scores[c] = float(np.mean(model.predict(x_holdout) == y_holdout))
        iterations[c] = int(np.max(model.n_iter_))
        models[c] = model
    best = max(c_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    model = models[best]

    def predict(split):
        x = transform(np.asarray(splits[split]["inputs"]))
        probabilities = model.predict_proba(x)
        full = np.zeros((len(probabilities), num_classes))
        full[:, model.classes_] = probabilities  # a class absent from the fit split keeps 0
        return np.argmax(full, axis=1).astype(np.int32), _cross_entropy(full, np.asarray(splits[split]["labels"]))

    val_pred, val_loss = predict("val")
    test_pred, test_loss = predict("test")
    return Outcome(val_pred, test_pred, val_loss, test_loss,
                   param_count=int(model.coef_.size + model.intercept_.size),
                   details={"method": "L2 logistic regression (scikit-learn, lbfgs)",
                            "features": x_fit.shape[1],
                            "fit_examples": int(len(fit_idx)),
                            "holdout_examples": int(len(holdout_idx)),
                            "train_examples_available": int(len(labels)),
                            "selection": "C with the best accuracy on a seeded holdout of the training split",
                            "holdout_accuracy": {str(c): scores[c] for c in c_grid},
                            "chosen_C": best,
                            "chosen_C_at_grid_edge": best in (min(c_grid), max(c_grid)),
                            "iterations": {str(c): iterations[c] for c in c_grid},
                            "not_converged_C": unconverged,
                            "max_iter": MAX_ITER})


def _lr(featurizer, max_train):
    def run(splits, num_classes, seed, max_train_override=None, **_):
        limit = max_train_override if max_train_override is not None else max_train
        return logistic_regression(splits, num_classes, seed, featurizer, limit)
    return run


def _pathfinder_features(inputs):
    side = int(round(math.sqrt(inputs.shape[1])))
    return global_image_features(inputs, side)


# Which baselines each task has, and what each is (the record's `baseline.description`).
GENERAL = {
    "chance": (chance, "uniform random guess"),
    "majority": (majority, "most frequent training label"),
}
SPECIFIC: dict[str, dict[str, tuple[Callable, str]]] = {
    "listops": {"outer_operator": (outer_operator, "most frequent training label of the outermost operator")},
    "text": {
        "logreg_bytes": (_lr(byte_ngram_featurizer, None), "logistic regression on scaled byte 1-3-gram counts"),
        "logreg_words": (_lr(word_tfidf_featurizer, None), "logistic regression on word 1-2-gram tf-idf"),
    },
    "image": {
        "logreg_pixels": (_lr(dense_featurizer(pixel_features), DENSE_MAX_TRAIN),
                          "logistic regression on the 1,024 gray pixels"),
        "logreg_histogram": (_lr(dense_featurizer(histogram_features), DENSE_MAX_TRAIN),
                             f"logistic regression on the {HISTOGRAM_BINS}-bin intensity histogram"),
    },
    "pathfinder": {
        "logreg_pixels": (_lr(dense_featurizer(pixel_features), DENSE_MAX_TRAIN),
                          "logistic regression on the 1,024 pixels"),
        "logreg_features": (_lr(dense_featurizer(_pathfinder_features), DENSE_MAX_TRAIN),
                            "logistic regression on the histogram and row/column mean profiles"),
    },
}


def available(task: str) -> dict[str, tuple[Callable, str]]:
    return {**GENERAL, **SPECIFIC.get(task, {})}


# ---------------------------------------------------------------- records

def _new_run_dir(runs_dir: Path, task: str, model: str, seed: int) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = Path(runs_dir) / task / model / f"{stamp}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=False)  # microsecond names: never someone else's folder
    return run_dir


def _machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()}


def run_baseline(name: str, cache: Path, runs_dir: Path, seed: int = 0,
                 max_train: int | None = None) -> tuple[Path, dict]:
    """Compute one baseline on a prepared cache and write its record and predictions."""
    from lra.registry import TASKS, load_all

    manifest = lra_data.read_manifest(cache)
    task_name = manifest["task"]
    load_all()
    task = TASKS.get(task_name)
    choices = available(task_name)
    if name not in choices:
        raise LraError(f"unknown baseline '{name}' for {task_name}; choose one of: {', '.join(choices)}")
    function, description = choices[name]
    splits = lra_data.open_prepared(cache)
    started, wall, cpu = utc_now(), time.perf_counter(), time.process_time()
    outcome = function(splits, num_classes=task.num_classes, seed=seed, max_train_override=max_train)
    val_labels, test_labels = np.asarray(splits["val"]["labels"]), np.asarray(splits["test"]["labels"])
    model = f"baseline_{name}"
    run_dir = _new_run_dir(runs_dir, task_name, model, seed)
    partial = run_dir / ".predictions.tmp.npz"
    np.savez_compressed(partial, predictions=outcome.test_predictions, labels=test_labels.astype(np.int32))
    os.replace(partial, run_dir / PREDICTIONS)
    versions = package_versions()
    try:
        from importlib import metadata

        versions["scikit-learn"] = metadata.version("scikit-learn")
    except Exception:  # noqa: BLE001 - absent is a fact to record, not an error
        versions["scikit-learn"] = "absent"
    record = {
        "status": "completed",
        "task": task_name,
        "model": model,
        "seed": seed,
        "experiment": None,
        "reference": True,
        "baseline": {"name": name, "description": description, **outcome.details},
        "config": {"task": {"name": task_name, "seq_len": manifest["seq_len"], "data": manifest["data"]},
                   "max_train": max_train},
        "data": {"key": manifest["key"], "source": manifest.get("source"), "counts": manifest["counts"]},
        "param_count": outcome.param_count,
        # LRA's Text validates on its test split: then the val score is no independent number.
        "val_is_test": bool(val_labels.shape == test_labels.shape and np.array_equal(val_labels, test_labels)
                            and np.array_equal(splits["val"]["inputs"], splits["test"]["inputs"])),
        "best_val": {"accuracy": float(np.mean(outcome.val_predictions == val_labels)),
                     "loss": outcome.val_loss, "step": None},
        "test": {"accuracy": float(np.mean(outcome.test_predictions == test_labels)),
                 "loss": outcome.test_loss, "examples": int(len(test_labels))},
        "started": started,
        "date": utc_now(),
        "wall_seconds": round(time.perf_counter() - wall, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "run_dir": str(run_dir),
        "git_commit": git_commit(),
        "versions": versions,
        "backend": "cpu",
        "machine": _machine(),
    }
    write_record(run_dir, record)
    return run_dir, record


# ---------------------------------------------------------------- `lra baselines`

USAGE = """usage: lra baselines [task=NAME] [baseline=a,b] [seed=N] [max_train=N] [data_dir=DIR] [runs_dir=DIR] [task.*=...]

Computes reference baselines from prepared data and writes them as run records
(runs_dir/<task>/baseline_<name>/...). Without task=, every cache in data_dir.
With task=, the cache its config names (task.data.* as for `lra data prepare`).
Logistic regressions need scikit-learn: pip install -e ".[baselines]".
  baselines per task: chance, majority (all); listops: outer_operator;
  text: logreg_bytes, logreg_words; image: logreg_pixels, logreg_histogram;
  pathfinder: logreg_pixels, logreg_features
example: lra baselines task=text task.data.source=jsonl task.data.path=/data/imdb"""

KEYS = ("task", "baseline", "seed", "max_train", "data_dir", "runs_dir")


def _parse(args: list[str]) -> tuple[dict[str, str], list[str]]:
    options, task_overrides = {}, []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not value:
            raise LraError(f"expected key=value, got '{arg}'; see: lra baselines --help")
        if key.startswith("task."):
            task_overrides.append(arg)
        elif key in KEYS:
            options[key] = value
        else:
            raise LraError(f"unknown option '{key}'; valid: {', '.join(KEYS)}, task.*")
    return options, task_overrides


def _int(options: dict, key: str, default: int | None) -> int | None:
    if key not in options:
        return default
    try:
        value = int(options[key])
    except ValueError:
        raise LraError(f"{key} must be an integer, got '{options[key]}'") from None
    if value < (0 if key == "seed" else 1):
        raise LraError(f"{key} must be {'non-negative' if key == 'seed' else 'positive'}, got {value}")
    return value


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from lra.config import compose
    from lra.stats import bootstrap_accuracy_ci, run_correct

    options, task_overrides = _parse(args)
    seed, max_train = _int(options, "seed", 0), _int(options, "max_train", None)
    if task_overrides and "task" not in options:
        raise LraError("task.* options need task=NAME")
    overrides = [f"task={options['task']}"] if "task" in options else []
    overrides += task_overrides
    for key in ("data_dir", "runs_dir"):
        if key in options:
            overrides.append(f"{key}={options[key]}")
    cfg = compose(overrides)  # checks the overrides too
    if "task" in options:
        choices = available(cfg.task.name)
        for name in options.get("baseline", "").split(",") if "baseline" in options else []:
            if name not in choices:
                raise LraError(f"unknown baseline '{name}' for {cfg.task.name}; choose one of: {', '.join(choices)}")
        lra_data.load(cfg.task, cfg.data_dir)  # the exact `lra data prepare` command if absent
        caches = [lra_data.cache_dir(cfg.task, cfg.data_dir)]
    else:
        caches = [path for path, _ in lra_data.list_prepared(cfg.data_dir)]
        if not caches:
            raise LraError(f"no prepared data in {cfg.data_dir}; prepare some with: lra data prepare <task>")
    jobs = []
    for cache in caches:
        task = lra_data.read_manifest(cache)["task"]
        choices = available(task)
        names = options["baseline"].split(",") if "baseline" in options else list(choices)
        jobs += [(cache, n) for n in names if n in choices]
    if not jobs:
        raise LraError(f"no baseline named {options.get('baseline')} for the prepared tasks")
    if any(name.startswith("logreg") for _, name in jobs):
        _require_sklearn()
    for cache, name in jobs:
        run_dir, record = run_baseline(name, cache, Path(cfg.runs_dir), seed=seed, max_train=max_train)
        test = record["test"]
        low, high = bootstrap_accuracy_ci(run_correct(run_dir))
        print(f"{record['task']}/{record['model']} seed {seed} test accuracy {test['accuracy']:.4f} "
              f"(95% CI {low:.4f}-{high:.4f}, {test['examples']} examples; "
              f"{record['cpu_seconds']:.1f} s CPU) -> {run_dir / 'record.json'}")
    return 0
