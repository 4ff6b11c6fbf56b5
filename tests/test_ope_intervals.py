"""The one interval function: normal, bootstrap (exact and grouped), Bernstein."""

import math

import numpy as np
import pytest

from ope import InvalidConfigError, RoundTerms, confidence_interval


def test_normal_matches_formula():
    x = np.random.default_rng(0).exponential(size=5000)
    ci = confidence_interval(x, method="normal", alpha=0.1)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert ci.stderr == pytest.approx(se)
    assert ci.ci_high - ci.value == pytest.approx(1.6448536 * se)


def test_bootstrap_matches_loop_reference():
    x = np.random.default_rng(1).exponential(size=3000)
    ci = confidence_interval(x, method="bootstrap", n_bootstrap=4000, rng=0)
    rng = np.random.default_rng(5)
    ref = [x[rng.integers(0, x.size, x.size)].mean() for _ in range(4000)]
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert ci.ci_low == pytest.approx(np.quantile(ref, 0.025), abs=0.1 * se)
    assert ci.ci_high == pytest.approx(np.quantile(ref, 0.975), abs=0.1 * se)
    assert ci.stderr == pytest.approx(se, rel=0.06)


def test_grouped_bootstrap_matches_exact_for_large_n():
    x = np.random.default_rng(2).lognormal(sigma=1.0, size=200_000)
    exact = confidence_interval(x, method="bootstrap", n_bootstrap=1000, rng=0, max_units=None)
    grouped = confidence_interval(x, method="bootstrap", n_bootstrap=1000, rng=0, max_units=20_000)
    assert grouped.stderr == pytest.approx(exact.stderr, rel=0.1)
    assert grouped.ci_low == pytest.approx(exact.ci_low, abs=0.3 * exact.stderr)
    assert grouped.ci_high == pytest.approx(exact.ci_high, abs=0.3 * exact.stderr)


def test_bootstrap_seeded():
    x = np.arange(100.0)
    a = confidence_interval(x, method="bootstrap", rng=3)
    b = confidence_interval(x, method="bootstrap", rng=np.random.default_rng(3))
    assert a == b


def test_ratio_terms():
    rng = np.random.default_rng(4)
    w = rng.exponential(size=2000)
    r = rng.binomial(1, 0.4, size=2000)
    terms = RoundTerms(base=np.zeros(2000), num=w * r, den=w)
    assert terms.value == pytest.approx((w * r).sum() / w.sum())
    normal = confidence_interval(terms)
    boot = confidence_interval(terms, method="bootstrap", n_bootstrap=3000, rng=0)
    assert boot.stderr == pytest.approx(normal.stderr, rel=0.08)


def test_bernstein_is_wider_and_clipped_to_range():
    x = np.random.default_rng(6).binomial(1, 0.5, size=500).astype(float)
    normal = confidence_interval(x)
    bern = confidence_interval(x, method="bernstein", value_range=(0.0, 1.0))
    assert bern.ci_low < normal.ci_low and bern.ci_high > normal.ci_high
    assert 0.0 <= bern.ci_low and bern.ci_high <= 1.0


def test_bernstein_coverage_small_sample():
    # holds without normality: skewed bounded values, n=50
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        x = (rng.random(50) < 0.05) * 10.0  # values in [0, 10], mean 0.5
        ci = confidence_interval(x, method="bernstein", value_range=(0.0, 10.0))
        covered += ci.ci_low <= 0.5 <= ci.ci_high
    assert covered == 400


def test_interval_errors():
    with pytest.raises(InvalidConfigError, match=r"value_range must be \(low, high\)"):
        confidence_interval(np.ones(5), method="bernstein", value_range=(1.0, 0.0))
    with pytest.raises(InvalidConfigError, match=r"max_units must be an integer >= 2 or None, got 1"):
        confidence_interval(np.ones(5), method="bootstrap", max_units=1)
    with pytest.raises(InvalidConfigError, match="num and den must be given together"):
        RoundTerms(base=np.ones(2), num=np.ones(2))
