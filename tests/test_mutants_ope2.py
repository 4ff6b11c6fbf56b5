"""Tests written to kill the second sample of ``ope`` mutants that survived mutation testing
(``ope.gate``, ``ope.intervals``, ``ope.dr``).

The logs are small and hand-made: ``n`` rounds alternating actions 0 and 1 with propensity 0.5,
so the importance weight of "always action k" is 2 on the rounds with action k and 0 elsewhere.
Expected values follow from those formulas (computed with numpy in the test), independently of
the code under test.
"""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtri

import ope
from ope import DR, Guardrail, InvalidConfigError, LoggedFeedback, confidence_interval

# ---------------------------------------------------------------- helpers


def _always(k, n, n_actions=2):
    return np.tile(np.eye(n_actions)[k], (n, 1))


def _alternating(rewards, n_actions=2, **kw):
    """Actions 0, 1, 0, 1, ... logged with propensity 0.5."""
    n = len(rewards)
    return LoggedFeedback(actions=np.arange(n) % 2, rewards=np.asarray(rewards, dtype=float),
                          propensities=np.full(n, 0.5), n_actions=n_actions, **kw)


def _feedback(n=200, seed=0, **kw):
    rng = np.random.default_rng(seed)
    a = np.arange(n) % 2
    r = rng.binomial(1, np.where(a == 1, 0.6, 0.4)).astype(float)
    return _alternating(r, **kw)


def _gate(fb, **kw):
    n = fb.n_rounds
    kw.setdefault("estimator", "ips")
    return ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), **kw)


# ---------------------------------------------------------------- gate: argument checks


def test_gate_accepts_an_explicit_cohort_margin_given_as_an_int():
    n = 200
    fb = _feedback(n, cohorts=pl.DataFrame({"seg": np.where(np.arange(n) < 100, "a", "b")}))
    t = _gate(fb, cohorts="seg", cohort_margin=2, min_ess=0).table
    cohort_rows = t.filter(pl.col("cohort_column") == "seg")
    assert cohort_rows.get_column("cohort").to_list() == ["seg=a", "seg=b"]
    assert cohort_rows.get_column("threshold").to_list() == [-2.0, -2.0]


def test_min_n_of_two_is_accepted_and_judges_two_round_cohorts():
    # 6 rounds; cohort "a" has rounds 0-1 (n = 2), cohort "b" rounds 2-5 (n = 4)
    fb = _alternating([0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
                      cohorts=pl.DataFrame({"seg": ["a", "a", "b", "b", "b", "b"]}))
    t = _gate(fb, cohorts=["seg"], min_n=2, min_ess=0).table
    assert t.get_column("n").to_list() == [6, 2, 4]
    # n >= min_n everywhere and the largest weight (2) is under max_weight: diagnostics hold
    assert t.get_column("diagnostics_ok").to_list() == [True, True, True]
    # min_n = 3 leaves the two-round cohort unjudgeable
    t3 = _gate(fb, cohorts=["seg"], min_n=3, min_ess=0).table
    assert t3.get_column("diagnostics_ok").to_list() == [True, False, True]
    for bad in (1, 2.0):
        with pytest.raises(InvalidConfigError, match=rf"^min_n must be an integer >= 2, got {bad!r}$"):
            _gate(fb, min_n=bad)


@pytest.mark.parametrize("value", ["4", float("inf")])
def test_mean_weight_z_that_is_not_a_finite_number_is_named(value):
    with pytest.raises(InvalidConfigError, match=rf"^mean_weight_z must be a finite number, got {value!r}$") as info:
        _gate(_feedback(), mean_weight_z=value)
    assert info.value.field == "mean_weight_z"


def test_a_non_string_metric_is_rejected_with_its_message():
    with pytest.raises(InvalidConfigError, match=r"^metric must be a metric name, got 3$") as info:
        _gate(_feedback(), metric=3)
    assert info.value.field == "metric"


def test_unknown_cohort_column_lists_the_context_columns():
    n = 200
    fb = _feedback(n, contexts=pl.DataFrame({"x": np.zeros(n), "lang": ["en"] * n}))
    expected = ("cohort column 'seg' is not in the feedback's cohorts or contexts ['lang', 'x']; "
                "load the logs with cohorts=['seg']")
    with pytest.raises(InvalidConfigError, match="^" + re.escape(expected) + "$") as info:
        _gate(fb, cohorts=["seg"])
    assert info.value.field == "cohorts"
    # cohorts and contexts together, and neither
    fb2 = _feedback(n, contexts=pl.DataFrame({"x": np.zeros(n)}), cohorts=pl.DataFrame({"task": ["qa"] * n}))
    with pytest.raises(InvalidConfigError, match=re.escape("contexts ['task', 'x'];")):
        _gate(fb2, cohorts=["seg"])
    with pytest.raises(InvalidConfigError, match=re.escape("contexts [];")):
        _gate(_feedback(n), cohorts=["seg"])


# ---------------------------------------------------------------- gate: guardrails and seeding


def test_a_guardrail_instance_is_used_as_given():
    n = 200
    fb = _feedback(n, metrics=pl.DataFrame({"latency_ms": np.full(n, 100.0)}))
    rail = Guardrail(metric="latency_ms", margin=5.0, direction="lower")
    t = _gate(fb, guardrails={"latency_ms": rail}, min_ess=0).table
    row = t.filter(pl.col("metric") == "latency_ms").row(0, named=True)
    assert (row["role"], row["direction"], row["threshold"]) == ("guardrail", "lower", 5.0)
    # both policies cost 100 ms on every round they play: the IPS difference is 2*100*(+-1)
    d = 200.0 * np.where(np.arange(n) % 2 == 1, 1.0, -1.0)
    assert row["diff"] == pytest.approx(d.mean(), abs=1e-9)
    assert row["stderr"] == pytest.approx(d.std(ddof=1) / math.sqrt(n), rel=1e-12)


def test_gate_with_an_int_seed_is_reproducible_and_matches_the_generator():
    # DR cross-fits its reward model with folds drawn from the seed: the seed must reach it
    n = 120
    rng = np.random.default_rng(3)
    x = rng.normal(size=n)
    a = np.arange(n) % 2
    fb = LoggedFeedback(actions=a, rewards=x + 0.5 * a + rng.normal(0, 0.3, n), propensities=np.full(n, 0.5),
                        n_actions=2, contexts=pl.DataFrame({"x": x}))
    cols = ["estimate_candidate", "estimate_baseline", "diff", "stderr"]
    first = _gate(fb, estimator="dr", seed=7, min_ess=0).table.select(cols)
    second = _gate(fb, estimator="dr", seed=7, min_ess=0).table.select(cols)
    from_gen = _gate(fb, estimator="dr", seed=np.random.default_rng(7), min_ess=0).table.select(cols)
    assert first.equals(second)
    assert first.equals(from_gen)


# ---------------------------------------------------------------- gate: diagnostics and reasons


def test_baseline_without_support_is_named_in_the_support_reason():
    # three actions, only 0 and 1 ever logged; the baseline always plays the unplayed action 2
    n = 200
    fb = _feedback(n, n_actions=3)
    result = ope.gate(fb, candidate=_always(1, n, 3), baseline=_always(2, n, 3), estimator="ips", min_ess=0)
    assert not result.promote
    assert result.reasons[0].startswith(
        "support: the baseline puts 100.00% of its traffic on profiles the logging policy never played")
    assert not any("the candidate puts" in r for r in result.reasons)


def test_max_weight_equal_to_the_largest_weight_is_allowed():
    # the largest importance weight is exactly 1 / 0.5 = 2
    fb = _feedback(200)
    t = _gate(fb, max_weight=2.0, min_ess=0).table
    assert t.get_column("max_weight").to_list() == [2.0]
    assert t.get_column("diagnostics_ok").to_list() == [True]
    t_low = _gate(fb, max_weight=1.999, min_ess=0).table
    assert t_low.get_column("diagnostics_ok").to_list() == [False]
    assert "the largest importance weight is 2 (max_weight = 1.999)" in t_low.get_column("reason")[0]


def test_passing_guardrail_reason_says_the_candidate_is_within_the_limit():
    n = 400
    a = np.arange(n) % 2
    fb = _alternating((a == 1).astype(float), metrics=pl.DataFrame({"quality": np.ones(n)}))
    result = _gate(fb, guardrails={"quality": 1.5}, min_ess=0)
    assert result.promote
    reason = result.table.filter(pl.col("metric") == "quality").get_column("reason")[0]
    assert reason.startswith("quality (all traffic): passes, the candidate is within the non-inferiority "
                             "limit -1.5 (margin 1.5) (")


def test_margins_below_one_thousandth_are_shown_with_three_significant_digits():
    fb = _feedback(200)
    reason = _gate(fb, margin=0.00012345, min_ess=0).reasons[0]
    assert "the required margin 0.000123 (" in reason
    assert "0.0001235" not in reason


# ---------------------------------------------------------------- intervals


def test_n_bootstrap_error_names_its_field():
    with pytest.raises(InvalidConfigError, match=r"^n_bootstrap must be an integer >= 2, got 1$") as info:
        confidence_interval(np.arange(5.0), method="bootstrap", n_bootstrap=1)
    assert info.value.field == "n_bootstrap"


def test_normal_interval_of_one_round_has_no_standard_error():
    ci = confidence_interval(np.array([0.7]), method="normal")
    assert ci.value == 0.7
    assert math.isnan(ci.stderr) and math.isnan(ci.ci_low) and math.isnan(ci.ci_high)
    assert (ci.method, ci.alpha) == ("normal", 0.05)


def test_inverted_value_range_error_names_its_field():
    with pytest.raises(InvalidConfigError, match=r"^value_range must be \(low, high\) with low <= high, got \(1, 0\)$") \
            as info:
        confidence_interval(np.arange(5.0), method="bernstein", value_range=(1, 0))
    assert info.value.field == "value_range"


def test_bernstein_interval_reports_its_method_and_alpha():
    one = confidence_interval(np.array([0.5]), method="bernstein", alpha=0.1, value_range=(0, 1))
    assert (one.ci_low, one.ci_high, one.method, one.alpha) == (0.0, 1.0, "bernstein", 0.1)
    x = np.linspace(0.0, 1.0, 50)
    many = confidence_interval(x, method="bernstein", alpha=0.1, value_range=(0, 1))
    assert (many.method, many.alpha) == ("bernstein", 0.1)
    log_term = math.log(4.0 / 0.1)
    half = math.sqrt(2 * x.var(ddof=1) * log_term / 50) + 7 * log_term / (3 * 49)
    assert many.ci_low == pytest.approx(max(0.5 - half, 0.0), abs=1e-12)
    assert many.ci_high == pytest.approx(min(0.5 + half, 1.0), abs=1e-12)


# ---------------------------------------------------------------- dr


def test_reward_predictions_of_the_wrong_shape_name_the_field():
    fb = _alternating([1.0, 0.0, 1.0])
    with pytest.raises(InvalidConfigError,
                       match=r"^reward_predictions must have shape \(3, 2\), got \(2, 2\)$") as info:
        DR(reward_predictions=np.ones((2, 2))).estimate(fb, _always(0, 3))
    assert info.value.field == "reward_predictions"


def test_dr_direct_term_is_the_target_weighted_prediction():
    # DR per-round value: sum_a pi(a|x) q(x, a) + w (r - q(x, a_logged))
    fb = _alternating([1.0, 0.0, 1.0, 1.0])
    q = np.array([[0.2, 0.9], [0.4, 0.1], [0.6, 0.3], [0.0, 0.5]])
    target = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0], [0.0, 1.0]])
    a = np.arange(4) % 2
    w = target[np.arange(4), a] / 0.5
    expected = (target * q).sum(axis=1) + w * (fb.rewards - q[np.arange(4), a])
    np.testing.assert_allclose(DR(reward_predictions=q).per_round(fb, target), expected, rtol=1e-12)
