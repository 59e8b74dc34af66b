"""How sure is a number: confidence intervals and significance tests for accuracies.

Pure numpy and the standard library (scipy is not a dependency of the core
install). Two sources of uncertainty are treated separately:

- *within a run*, the finite test set: the test examples are a sample, so the
  accuracy of one trained model has sampling error. Bootstrap over test
  examples (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13)
  gives its interval; two models scored on the same examples are compared
  *paired* (paired bootstrap, Koehn 2004 "Statistical Significance Tests for
  Machine Translation Evaluation"; Berg-Kirkpatrick et al. 2012; and McNemar's
  exact test, McNemar 1947, Edwards 1948).
- *across runs*, the training randomness (initialisation, data order): seeds
  are the sample, and Student-t intervals and tests over per-seed accuracies
  apply (paired t where both models ran the same seeds, Welch's t otherwise;
  Dror et al. 2018 "The Hitchhiker's Guide to Testing Statistical Significance
  in NLP" discusses both levels).

Bootstrap draws use the sufficient statistic instead of resampling indices:
resampling n examples with replacement from a 0/1 vector with k ones gives a
Binomial(n, k/n) count of ones, and resampling n *pairs* gives Multinomial(n, ·)
counts of the four (a right/wrong, b right/wrong) cells. The distribution is
exactly that of the index bootstrap, at O(resamples) instead of
O(n * resamples) cost, so 25,000 test examples cost nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lra.errors import LraError

N_RESAMPLES = 10_000  # Monte-Carlo error of a 95% percentile bound ~ 0.2% of its spread


def _correct_vector(correct, name: str = "correct") -> np.ndarray:
    array = np.asarray(correct)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of 0/1 (got shape {array.shape})")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 or booleans")
    return array.astype(bool)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def _percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def bootstrap_accuracy_ci(correct, level: float = 0.95, n_resamples: int = N_RESAMPLES,
                          seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the accuracy of one run over its test examples.

    `correct[i]` says whether test example i was classified correctly. The
    interval covers the sampling error of the test set only (not training
    randomness: see `seed_interval`). Deterministic for a given seed.
    """
    hits = _correct_vector(correct)
    level = _check_level(level)
    n = hits.size
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, hits.mean(), size=int(n_resamples)) / n
    return _percentile_interval(draws, level)


def paired_comparison(correct_a, correct_b, level: float = 0.95, n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> dict:
    """Compare two runs scored on the same test examples: accuracy(a) - accuracy(b).

    Returns the difference, its paired percentile-bootstrap interval, a
    two-sided paired-bootstrap p-value and McNemar's exact p-value.

    The bootstrap p-value tests "no difference" by shifting the bootstrap
    distribution of the difference to the null (Efron & Tibshirani 1993,
    sec. 16.4; Berg-Kirkpatrick et al. 2012): p = (1 + #{|d* - d| >= |d|}) / (1 + B),
    the +1 keeping it a valid p-value that is never 0 (Davison & Hinkley 1997,
    eq. 4.11). McNemar's test uses only the discordant examples (one run right,
    the other wrong), exact binomial, so it is valid for any test-set size.
    """
    a = _correct_vector(correct_a, "correct_a")
    b = _correct_vector(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"the runs must be scored on the same examples (sizes {a.size} and {b.size})")
    level = _check_level(level)
    n = a.size
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    both = int(np.sum(a & b))
    cells = np.array([only_a, only_b, both, n - only_a - only_b - both], float) / n
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, cells, size=int(n_resamples))
    draws = (counts[:, 0] - counts[:, 1]) / n
    difference = (only_a - only_b) / n
    extreme = np.sum(np.abs(draws - difference) >= abs(difference) - 1e-12)
    low, high = _percentile_interval(draws, level)
    return {
        "difference": difference,
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "interval": (low, high),
        "level": level,
        "bootstrap_p": float((1 + extreme) / (1 + int(n_resamples))),
        "mcnemar_p": mcnemar_exact_p(only_a, only_b),
        "only_a": only_a,
        "only_b": only_b,
        "examples": n,
    }


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    Under "both runs equally accurate" each discordant example is equally
    likely to favour either run, so only_a ~ Binomial(only_a + only_b, 1/2);
    the two-sided p-value is twice the smaller tail, capped at 1 (the
    binomial-test form of McNemar's test, Edwards 1948; Fagerland et al. 2013).
    Summed in log space, so tens of thousands of discordant pairs are exact to
    rounding.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError("discordant counts must be non-negative")
    m = only_a + only_b
    if m == 0:
        return 1.0
    k = min(only_a, only_b)
    log_terms = np.array([math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1)
                          for i in range(k + 1)]) - m * math.log(2.0)
    top = log_terms.max()
    tail = math.exp(top) * float(np.sum(np.exp(log_terms - top)))
    return min(1.0, 2.0 * tail)


# ---------------------------------------------------------------- Student t, no scipy

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, modified Lentz method
    (Press et al., Numerical Recipes, 3rd ed., sec. 6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            return h
    raise ArithmeticError("incomplete beta continued fraction did not converge")


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function (Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (possibly fractional) degrees of freedom:
    1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0 (Abramowitz & Stegun 26.7.1)."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t, by bisection on `student_t_cdf` (to ~1e-12)."""
    if not 0.0 < q < 1.0:
        raise ValueError("q must be in (0, 1)")
    if q < 0.5:
        return -student_t_quantile(1.0 - q, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < q:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# ---------------------------------------------------------------- across seeds

def _values(values, name: str = "values") -> np.ndarray:
    array = np.asarray(values, float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    return array


def seed_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed results: mean +- t * s / sqrt(n).

    It covers training randomness (seeds), assuming per-seed results are
    roughly normal. With fewer than two seeds there is no spread to estimate,
    and the interval is (nan, nan) rather than a misleading zero width.
    """
    x = _values(values)
    level = _check_level(level)
    n = x.size
    if n < 2:
        return (math.nan, math.nan)
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(n)
    half = student_t_quantile((1.0 + level) / 2.0, n - 1) * sem
    return (mean - half, mean + half)


def _t_result(test: str, difference: float, se: float, df: float, level: float, n_a: int, n_b: int) -> dict:
    if se == 0.0:  # identical spreads of zero: the t statistic is undefined
        p = 1.0 if difference == 0.0 else 0.0
        interval = (difference, difference)
    else:
        t = difference / se
        p = min(1.0, 2.0 * student_t_cdf(-abs(t), df))
        half = student_t_quantile((1.0 + level) / 2.0, df) * se
        interval = (difference - half, difference + half)
    return {"test": test, "difference": difference, "interval": interval, "p": p, "df": df,
            "level": level, "n_a": n_a, "n_b": n_b}


def seed_comparison(values_a, values_b, level: float = 0.95, seeds_a=None, seeds_b=None) -> dict:
    """Compare mean per-seed results of two models: mean(a) - mean(b).

    Where both ran the same seeds (`seeds_a` and `seeds_b` given and equal as
    sets), the per-seed differences are tested with the paired t test: a seed
    fixes the data order and, for models with the same parameters, part of the
    initialisation, so pairing removes shared variance. Otherwise Welch's t
    test (unequal variances; Welch 1947, Welch–Satterthwaite degrees of
    freedom). Needs two or more values per model (NaNs in the result otherwise).
    """
    a, b = _values(values_a, "values_a"), _values(values_b, "values_b")
    level = _check_level(level)
    nan = {"difference": math.nan, "interval": (math.nan, math.nan), "p": math.nan, "df": math.nan,
           "level": level, "n_a": a.size, "n_b": b.size}
    if seeds_a is not None and seeds_b is not None and sorted(seeds_a) == sorted(seeds_b):
        if len(set(seeds_a)) != len(seeds_a):
            raise ValueError("each seed may appear once per model")
        order_a, order_b = np.argsort(np.asarray(seeds_a)), np.argsort(np.asarray(seeds_b))
        diff = a[order_a] - b[order_b]
        if diff.size < 2:
            return {"test": "paired t", **nan}
        n = diff.size
        return _t_result("paired t", float(diff.mean()), float(diff.std(ddof=1)) / math.sqrt(n),
                         float(n - 1), level, a.size, b.size)
    if a.size < 2 or b.size < 2:
        return {"test": "Welch t", **nan}
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        df = float(a.size + b.size - 2)
    else:
        df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return _t_result("Welch t", float(a.mean() - b.mean()), se, df, level, a.size, b.size)


# ---------------------------------------------------------------- run folders

PREDICTIONS = "predictions.npz"


def load_predictions(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """The (predictions, labels) a run saved for its test split (see lra/run.py)."""
    path = Path(run_dir) / PREDICTIONS
    try:
        with np.load(path) as saved:
            predictions, labels = np.asarray(saved["predictions"]), np.asarray(saved["labels"])
    except FileNotFoundError:
        raise LraError(f"{path} is missing; the run saved no test predictions (rerun it with this version)")
    except (OSError, ValueError, KeyError) as err:
        raise LraError(f"{path} is unreadable ({err}); rerun the run")
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise LraError(f"{path} holds predictions {predictions.shape} and labels {labels.shape}; rerun the run")
    return predictions, labels


def run_correct(run_dir) -> np.ndarray:
    """Per-test-example correctness of a run, the input of the bootstrap functions."""
    predictions, labels = load_predictions(run_dir)
    return predictions == labels
