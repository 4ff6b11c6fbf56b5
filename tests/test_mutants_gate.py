"""Tests written to kill the mutants of ``ope.gate``, ``ope.intervals``, ``ope.dr`` and ``ope.base``
that survived mutation testing.

The logs are small and hand-made: ``n`` rounds alternating actions 0 and 1 with propensity 0.5,
so the IPS per-round value of "always action k" is ``2 r_i [a_i = k]`` and the paired difference
of "always 1" minus "always 0" is ``d_i = 2 r_i (+1 if a_i = 1 else -1)``. Expected values are
computed from those formulas with numpy, independently of the code under test.
"""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtri

import ope
from ope import SNDR, InvalidConfigError, LoggedFeedback, RoundTerms, confidence_interval

# ---------------------------------------------------------------- helpers


def _always(k, n, n_actions=2):
    return np.tile(np.eye(n_actions)[k], (n, 1))


def _alternating(rewards, **kw):
    """Actions 0, 1, 0, 1, ... logged uniformly at random (propensity 0.5)."""
    n = len(rewards)
    return LoggedFeedback(actions=np.arange(n) % 2, rewards=np.asarray(rewards, dtype=float),
                          propensities=np.full(n, 0.5), n_actions=2, **kw)


def _paired_ips_diff(a, values):
    """IPS per-round difference of "always 1" minus "always 0" (propensity 0.5)."""
    return 2.0 * np.asarray(values, dtype=float) * np.where(a == 1, 1.0, -1.0)


def _small_feedback(n=200, seed=0, **kw):
    rng = np.random.default_rng(seed)
    a = np.arange(n) % 2
    r = rng.binomial(1, np.where(a == 1, 0.6, 0.4)).astype(float)
    return _alternating(r, **kw)


# ---------------------------------------------------------------- gate: argument checks


@pytest.mark.parametrize("kw, field, match", [
    (dict(alpha=float("nan")), "alpha", r"^alpha must be a finite number, got nan$"),
    (dict(margin="0.1"), "margin", r"^margin must be a finite number, got '0\.1'$"),
    (dict(min_ess=True), "min_ess", r"^min_ess must be a finite number, got True$"),
])
def test_non_numbers_are_rejected_naming_field_and_value(kw, field, match):
    fb = _small_feedback()
    with pytest.raises(InvalidConfigError, match=match) as info:
        ope.gate(fb, candidate=_always(1, 200), baseline=_always(0, 200), estimator="ips", **kw)
    assert info.value.field == field


def test_feedback_must_be_logged_feedback_and_the_error_names_the_field():
    with pytest.raises(InvalidConfigError, match=r"^feedback must be a LoggedFeedback, got dict$") as info:
        ope.gate({"actions": [0, 1]}, candidate=_always(1, 2), baseline=_always(0, 2))
    assert info.value.field == "feedback"


@pytest.mark.parametrize("value", [0, 0.0, -1.0])
def test_mean_weight_z_must_be_positive(value):
    fb = _small_feedback()
    with pytest.raises(InvalidConfigError, match=rf"^mean_weight_z must be > 0, got {re.escape(repr(value))}$") as info:
        ope.gate(fb, candidate=_always(1, 200), baseline=_always(0, 200), estimator="ips", mean_weight_z=value)
    assert info.value.field == "mean_weight_z"


def test_mean_weight_z_below_one_is_accepted_and_used():
    # weights of "always k" under uniform logging are 0 or 2; any positive limit is valid. The
    # overall mean weight of "always 1" on alternating actions is exactly 1 (z = 0), so even a
    # tiny limit raises no "weights:" problem.
    n = 200
    fb = _small_feedback(n)
    result = ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", mean_weight_z=0.5,
                      min_ess=0)
    assert not any(r.startswith("weights:") for r in result.reasons)
    # with a mean weight far from 1 (propensities logged as 1/4 of the truth) the limit bites
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, n)
    wrong = LoggedFeedback(actions=a, rewards=np.ones(n), propensities=np.where(a == 1, 0.125, 0.5), n_actions=2)
    result = ope.gate(wrong, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", mean_weight_z=0.5,
                      min_ess=0)
    assert result.reasons[0].startswith("weights: the candidate's mean importance weight is")
    assert "(limit 0.5)" in result.reasons[0]


def test_cohort_margin_is_used_for_cohorts_and_validated():
    n = 200
    seg = np.where(np.arange(n) < 100, "a", "b")
    fb = _small_feedback(n, cohorts=pl.DataFrame({"seg": seg}))
    result = ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", margin=0.01,
                      cohorts=["seg"], cohort_margin=0.03, min_ess=0)
    t = result.table
    assert t.filter(pl.col("cohort_column").is_null()).get_column("threshold").to_list() == [0.01]
    assert t.filter(pl.col("cohort_column") == "seg").get_column("threshold").to_list() == [-0.03, -0.03]
    with pytest.raises(InvalidConfigError, match=r"^cohort_margin must be >= 0, got -1\.0$") as info:
        ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", cohorts=["seg"],
                 cohort_margin=-1.0)
    assert info.value.field == "cohort_margin"


def test_unknown_metric_lists_the_logged_metrics_with_reward():
    n = 200
    fb = _small_feedback(n, metrics=pl.DataFrame({"quality": np.ones(n), "cost_usd": np.ones(n)}))
    expected = "metric 'tokens' is not logged in the feedback; have ['cost_usd', 'quality', 'reward']"
    with pytest.raises(InvalidConfigError, match="^" + re.escape(expected) + "$") as info:
        ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", metric="tokens")
    assert info.value.field == "metric"
    # without metrics only "reward" is available
    with pytest.raises(InvalidConfigError, match=re.escape("have ['reward']")):
        ope.gate(_small_feedback(n), candidate=_always(1, n), baseline=_always(0, n), estimator="ips",
                 metric="tokens")


# ---------------------------------------------------------------- gate: computation


def test_a_metric_missing_on_some_rounds_is_judged_on_the_rounds_where_it_is_logged():
    n = 300
    fb0 = _small_feedback(n, seed=1)
    a = fb0.actions
    rng = np.random.default_rng(2)
    quality = rng.random(n) + 0.1 * (a == 1)
    logged = np.ones(n, dtype=bool)
    logged[:60] = False  # null (not logged)
    logged[60:90:3] = False  # NaN (not logged either)
    column = pl.Series("quality", [None if i < 60 else (math.nan if not logged[i] else quality[i]) for i in range(n)],
                       dtype=pl.Float64)
    fb = LoggedFeedback(actions=a, rewards=fb0.rewards, propensities=fb0.propensities, n_actions=2,
                        metrics=pl.DataFrame([column]))
    result = ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips",
                      guardrails={"quality": 0.05}, min_ess=0, min_n=10)
    row = result.table.filter(pl.col("metric") == "quality").row(0, named=True)
    d = _paired_ips_diff(a[logged], quality[logged])
    assert row["n"] == logged.sum() == 230
    assert row["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert row["stderr"] == pytest.approx(d.std(ddof=1) / math.sqrt(d.size), rel=1e-9)
    assert row["estimate_candidate"] == pytest.approx(np.mean(2 * quality[logged] * (a[logged] == 1)), abs=1e-12)
    # the primary metric still uses every round
    assert result.table.filter(pl.col("metric") == "reward").row(0, named=True)["n"] == n


class _RecordingIPS(ope.Estimator):
    """IPS whose hook records the random generator the gate hands it."""

    name = "recording-ips"

    def __init__(self):
        self.rngs = []

    def _terms(self, feedback, target, weights, rng, cache):
        self.rngs.append(rng)
        return RoundTerms(base=weights * feedback.rewards)


def test_gate_hands_every_hook_call_the_one_seeded_generator():
    n = 200
    fb = _small_feedback(n, metrics=pl.DataFrame({"quality": np.linspace(0, 1, n)}))
    est = _RecordingIPS()
    gen = np.random.default_rng(4)
    ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator=est, guardrails={"quality": 0.1},
             seed=gen, min_ess=0)
    # candidate and baseline, for the primary metric and the guardrail
    assert len(est.rngs) == 4
    assert all(r is gen for r in est.rngs)
    est = _RecordingIPS()
    ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator=est, seed=7, min_ess=0)
    assert len(est.rngs) == 2
    assert isinstance(est.rngs[0], np.random.Generator) and est.rngs[1] is est.rngs[0]


def test_harmful_overall_reason_says_do_not_promote():
    # the candidate always plays the action with reward 0, the baseline the one with reward 1
    n = 200
    a = np.arange(n) % 2
    fb = _alternating((a == 1).astype(float))
    result = ope.gate(fb, candidate=_always(0, n), baseline=_always(1, n), estimator="ips")
    # d_i = -2 on the rounds with action 1, 0 on the others: mean -1
    d = -2.0 * (a == 1)
    upper = d.mean() + float(ndtri(0.95)) * d.std(ddof=1) / math.sqrt(n)
    (reason,) = result.reasons
    assert reason.startswith("reward (all traffic): the candidate is worse than the baseline: even its 95% upper "
                             f"bound {upper:.4g} misses the required margin 0 (")
    assert reason.endswith("; do not promote this candidate.")


def test_inconclusive_lower_is_better_guardrail_names_its_upper_bound():
    # cost_usd is lower-is-better; margin set between the estimated difference and its
    # one-sided 95% upper bound, so the cell is neither shown nor harmful
    n = 400
    rng = np.random.default_rng(5)
    a = np.arange(n) % 2
    cost = rng.exponential(1.0, n) * np.where(a == 1, 1.1, 1.0)
    d = _paired_ips_diff(a, cost)
    diff, se = d.mean(), d.std(ddof=1) / math.sqrt(n)
    margin = float(abs(diff) + 0.5 * se)  # diff < margin < diff + z se, and margin > 0
    fb = _alternating(np.ones(n), metrics=pl.DataFrame({"cost_usd": cost}))
    result = ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips",
                      guardrails={"cost_usd": margin}, min_ess=0)
    row = result.table.filter(pl.col("metric") == "cost_usd").row(0, named=True)
    upper = diff + float(ndtri(0.95)) * se
    assert row["upper"] == pytest.approx(upper, rel=1e-9)
    assert not row["passed"] and row["lower"] < margin < row["upper"]
    assert row["reason"].startswith(f"cost_usd (all traffic): not shown: the 95% upper bound {row['upper']:.4g} "
                                    f"does not clear the non-inferiority limit +{margin:.4g}")
    assert any(r == row["reason"] for r in result.reasons)


# ---------------------------------------------------------------- intervals


def test_max_units_error_names_the_field():
    with pytest.raises(InvalidConfigError, match=r"^max_units must be an integer >= 2 or None, got 1$") as info:
        confidence_interval(np.ones(5), method="bootstrap", max_units=1)
    assert info.value.field == "max_units"


def test_bootstrap_default_is_1000_resamples():
    x = np.random.default_rng(8).exponential(size=300)
    default = confidence_interval(x, method="bootstrap", rng=0)
    explicit = confidence_interval(x, method="bootstrap", rng=0, n_bootstrap=1000)
    assert default == explicit
    # and the number of resamples matters (else the check above proves nothing)
    assert confidence_interval(x, method="bootstrap", rng=0, n_bootstrap=1001) != explicit


def test_bootstrap_interval_reports_its_method_and_alpha():
    x = np.random.default_rng(9).normal(size=200)
    ci = confidence_interval(x, method="bootstrap", alpha=0.1, n_bootstrap=200, rng=0)
    assert ci.method == "bootstrap" and ci.alpha == 0.1
    assert ci.ci_low < ci.value < ci.ci_high


def test_bernstein_accepts_a_degenerate_value_range():
    # low == high is allowed ("low <= high"): constant values in that range give a zero-width interval
    ci = confidence_interval(np.full(10, 0.5), method="bernstein", value_range=(0.5, 0.5))
    assert (ci.value, ci.ci_low, ci.ci_high) == (0.5, 0.5, 0.5)
    assert ci.method == "bernstein"


def test_bernstein_with_one_round_is_the_value_range():
    ci = confidence_interval(np.array([0.3]), method="bernstein", alpha=0.1, value_range=(0.0, 1.0))
    assert (ci.value, ci.ci_low, ci.ci_high, ci.method, ci.alpha) == (0.3, 0.0, 1.0, "bernstein", 0.1)
    assert math.isnan(ci.stderr)


def test_bernstein_known_answer():
    # Maurer & Pontil (2009) Thm 4: half-width sqrt(2 V ln(4/alpha) / n) + 7 M ln(4/alpha) / (3 (n - 1))
    x = np.tile([0.0, 1.0, 1.0, 0.5], 100)  # n = 400, mean 0.625
    n, alpha, lo, hi = x.size, 0.05, 0.0, 1.0
    v, var, log_term = x.mean(), x.var(ddof=1), math.log(4 / alpha)
    half = math.sqrt(2 * var * log_term / n) + 7 * (hi - lo) * log_term / (3 * (n - 1))
    assert v - half > lo and v + half < hi  # not clipped: the formula is observable
    ci = confidence_interval(x, method="bernstein", alpha=alpha, value_range=(lo, hi))
    assert ci.ci_low == pytest.approx(v - half, abs=1e-12)
    assert ci.ci_high == pytest.approx(v + half, abs=1e-12)


# ---------------------------------------------------------------- dr / base


def test_non_finite_reward_predictions_error_message():
    fb = _small_feedback(4)
    q = np.array([[0.1, 0.2], [np.nan, 0.3], [0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(InvalidConfigError, match=r"^reward_predictions must be finite$") as info:
        ope.DR(reward_predictions=q).estimate(fb, _always(0, 4))
    assert info.value.field == "reward_predictions"


def test_sndr_bernstein_warns_that_there_is_no_finite_sample_guarantee():
    fb = _small_feedback(40)
    q = np.full((40, 2), 0.5)
    est = SNDR(reward_predictions=q).estimate(fb, np.tile([0.3, 0.7], (40, 1)), interval="bernstein")
    (w,) = [w for w in est.warnings if "Bernstein" in w]
    assert w == ("the Bernstein bound of self-normalised SNDR uses linearised per-round values: "
                 "no finite-sample guarantee")
    normal = SNDR(reward_predictions=q).estimate(fb, np.tile([0.3, 0.7], (40, 1)))
    assert not any("Bernstein" in w for w in normal.warnings)
