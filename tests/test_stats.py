"""lra/stats.py: intervals cover at their nominal rate, tests hold their size under
the null and reject a planted difference, and the exact pieces match hand
computations (McNemar's binomial tail, Student's t in closed form)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lra import stats
from lra.errors import LraError


def binomial_band(rate: float, trials: int, sigmas: float = 4.0) -> tuple[float, float]:
    """Where a fraction of `trials` Bernoulli(rate) outcomes falls, +-`sigmas` sd
    (4 sd: a correct implementation fails about once in 16,000 runs)."""
    half = sigmas * math.sqrt(rate * (1 - rate) / trials)
    return rate - half, rate + half


def test_bootstrap_matches_index_resampling():
    """The binomial shortcut has the distribution of the textbook index bootstrap."""
    rng = np.random.default_rng(3)
    correct = rng.random(300) < 0.62
    low, high = stats.bootstrap_accuracy_ci(correct, n_resamples=20_000, seed=1)
    idx = rng.integers(0, correct.size, size=(20_000, correct.size))
    ref_low, ref_high = np.quantile(correct[idx].mean(axis=1), [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=0.004)
    assert high == pytest.approx(ref_high, abs=0.004)
    assert low < correct.mean() < high


def test_bootstrap_is_deterministic_with_seed():
    correct = np.arange(100) % 3 == 0
    assert stats.bootstrap_accuracy_ci(correct, seed=5) == stats.bootstrap_accuracy_ci(correct, seed=5)


def test_bootstrap_covers_true_accuracy_at_nominal_rate():
    rng = np.random.default_rng(0)
    runs, n, true_acc = 1000, 400, 0.7
    covered = 0
    for i in range(runs):
        correct = rng.random(n) < true_acc
        low, high = stats.bootstrap_accuracy_ci(correct, n_resamples=2000, seed=i)
        covered += low <= true_acc <= high
    low_band, high_band = binomial_band(0.95, runs)
    assert low_band <= covered / runs <= high_band, covered / runs


def test_bootstrap_interval_narrows_with_level():
    correct = np.random.default_rng(1).random(500) < 0.5
    wide = stats.bootstrap_accuracy_ci(correct, level=0.99)
    narrow = stats.bootstrap_accuracy_ci(correct, level=0.8)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_mcnemar_against_hand_computation():
    # 3 vs 12 discordant: P(X <= 3 | Bin(15, 1/2)) = (1 + 15 + 105 + 455) / 2**15.
    assert stats.mcnemar_exact_p(3, 12) == pytest.approx(2 * 576 / 2**15, rel=1e-12)
    assert stats.mcnemar_exact_p(12, 3) == stats.mcnemar_exact_p(3, 12)
    assert stats.mcnemar_exact_p(0, 0) == 1.0
    assert stats.mcnemar_exact_p(5, 5) == 1.0  # the doubled tail is capped
    assert stats.mcnemar_exact_p(0, 10) == pytest.approx(2 / 2**10, rel=1e-12)
    # Large counts: exact integer arithmetic as the reference.
    m, k = 3000, 1400
    exact = 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    assert stats.mcnemar_exact_p(k, m - k) == pytest.approx(exact, rel=1e-9)


def test_paired_comparison_counts_and_mcnemar():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 0, 1, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0, 1], bool)
    result = stats.paired_comparison(a, b, n_resamples=2000)
    assert (result["only_a"], result["only_b"]) == (4, 1)
    assert result["difference"] == pytest.approx(0.3)
    assert result["mcnemar_p"] == pytest.approx(2 * (1 + 5) / 2**5)
    low, high = result["interval"]
    assert low <= 0.3 <= high
    with pytest.raises(ValueError):
        stats.paired_comparison(a, b[:-1])


def test_paired_tests_uniform_under_null_and_reject_planted_difference():
    """Two models of equal accuracy, correlated errors (as for two networks on one
    test set): bootstrap p is about uniform and McNemar holds its size; a planted
    3-point gap is found nearly always."""
    rng = np.random.default_rng(11)
    runs, n = 400, 1000
    null_boot, null_mcnemar, planted_boot, planted_mcnemar = [], [], [], []
    for i in range(runs):
        hard = rng.random(n)  # example difficulty shared by both models
        a = rng.random(n) < 0.4 + 0.5 * hard
        b = rng.random(n) < 0.4 + 0.5 * hard
        null = stats.paired_comparison(a, b, n_resamples=1000, seed=i)
        null_boot.append(null["bootstrap_p"])
        null_mcnemar.append(null["mcnemar_p"])
        better = rng.random(n) < 0.5 + 0.5 * hard  # 10 points more accurate
        planted = stats.paired_comparison(better, b, n_resamples=1000, seed=i)
        planted_boot.append(planted["bootstrap_p"])
        planted_mcnemar.append(planted["mcnemar_p"])
    null_boot = np.sort(null_boot)
    # Kolmogorov-Smirnov distance to U(0,1); 1.63/sqrt(N) is its 1% critical value.
    ks = np.max(np.maximum(np.arange(1, runs + 1) / runs - null_boot, null_boot - np.arange(runs) / runs))
    assert ks < 1.63 / math.sqrt(runs), ks
    low, high = binomial_band(0.05, runs)
    assert low <= np.mean(null_boot < 0.05) <= high
    assert np.mean(np.array(null_mcnemar) < 0.05) <= high  # exact test: size at most 5%
    assert np.mean(np.array(planted_boot) < 0.05) > 0.95
    assert np.mean(np.array(planted_mcnemar) < 0.05) > 0.95


def test_student_t_closed_forms_and_tables():
    for t in (-3.0, -0.4, 0.0, 0.9, 7.5):
        assert stats.student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
        assert stats.student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    # Printed t tables (0.975 quantile); the normal limit for large df.
    for df, value in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert stats.student_t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert stats.student_t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert stats.student_t_quantile(0.025, 5) == -stats.student_t_quantile(0.975, 5)


def test_seed_interval_formula_and_coverage():
    values = [0.52, 0.61, 0.55]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    low, high = stats.seed_interval(values)
    assert (low + high) / 2 == pytest.approx(mean)
    assert (high - low) / 2 == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-6)
    assert all(math.isnan(v) for v in stats.seed_interval([0.5]))
    # Three seeds: Student t covers at 95%, a normal-quantile interval only at ~80%.
    rng = np.random.default_rng(2)
    draws = rng.normal(0.6, 0.02, size=(2000, 3))
    covered = np.mean([lo <= 0.6 <= hi for lo, hi in map(stats.seed_interval, draws)])
    band = binomial_band(0.95, 2000)
    assert band[0] <= covered <= band[1], covered


def test_seed_comparison_welch_and_paired():
    a, b = [0.50, 0.60, 0.55], [0.40, 0.45, 0.50]
    welch = stats.seed_comparison(a, b)
    assert welch["test"] == "Welch t"
    # Hand computation: both variances 0.0025 and 0.0025 -> se = sqrt(2 * 0.0025 / 3), df = 4.
    se = math.sqrt(2 * 0.0025 / 3)
    assert welch["df"] == pytest.approx(4.0)
    assert welch["p"] == pytest.approx(2 * stats.student_t_cdf(-0.1 / se, 4))
    assert welch["interval"][1] - 0.1 == pytest.approx(2.776445 * se, rel=1e-6)
    # Unequal variances and sizes: var(a) = 1, var(b) = 8, so se^2 = 1/3 + 4 = 13/3 and the
    # Welch-Satterthwaite df = (13/3)^2 / ((1/3)^2 / 2 + 4^2 / 1) = 338/289.
    unequal = stats.seed_comparison([1.0, 2.0, 3.0], [1.0, 5.0])
    assert unequal["df"] == pytest.approx(338 / 289, rel=1e-12)
    assert unequal["difference"] == pytest.approx(-1.0)
    assert unequal["p"] == pytest.approx(2 * stats.student_t_cdf(-1 / math.sqrt(13 / 3), 338 / 289))
    paired = stats.seed_comparison(a, b, seeds_a=[0, 1, 2], seeds_b=[2, 1, 0])
    assert paired["test"] == "paired t"
    diffs = np.array([0.50 - 0.50, 0.60 - 0.45, 0.55 - 0.40])  # matched by seed
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(3))
    assert paired["p"] == pytest.approx(2 * stats.student_t_cdf(-t, 2))
    assert math.isnan(stats.seed_comparison([0.5], [0.4])["p"])


def test_seed_comparison_size_and_power():
    rng = np.random.default_rng(4)
    null = rng.normal(0.6, 0.02, size=(2000, 2, 5))
    p_null = np.array([stats.seed_comparison(x, y)["p"] for x, y in null])
    low, high = binomial_band(0.05, 2000)
    assert np.mean(p_null < 0.05) <= high  # Welch is at most slightly conservative
    assert np.mean(p_null < 0.05) >= 0.02
    shifted = [stats.seed_comparison(x + 0.06, y)["p"] for x, y in null[:200]]
    assert np.mean(np.array(shifted) < 0.05) > 0.9  # 3 sd apart, 5 seeds each: power ~0.98


def test_run_correct_reads_predictions(tmp_path):
    np.savez(tmp_path / "predictions.npz", predictions=np.array([0, 1, 2, 1]), labels=np.array([0, 1, 1, 1]))
    assert stats.run_correct(tmp_path).tolist() == [True, True, False, True]
    with pytest.raises(LraError, match="missing"):
        stats.run_correct(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad" / "predictions.npz", predictions=np.zeros(3), labels=np.zeros(4))
    with pytest.raises(LraError, match="rerun"):
        stats.run_correct(tmp_path / "bad")
