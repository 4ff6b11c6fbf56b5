"""Tests written to kill the third sample of ``ope`` mutants that survived mutation testing
(seed 2: ``ope.gate`` -- now ``gate``, ``gate_options``, ``gate_result`` --, ``ope.intervals``,
``ope.dr``, ``ope.base`` and ``ope.logs`` -- now ``log_columns``).

The logs are small and hand-made: ``n`` rounds alternating actions 0 and 1 with propensity 0.5,
so the importance weight of "always action k" is 2 on the rounds with action k and 0 elsewhere.
Expected values follow from those formulas (computed with numpy in the test), independently of
the code under test. Each docstring starts with the mutants the test was shown to kill.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import polars as pl
import pytest
from sklearn.dummy import DummyRegressor

import ope
from ope import (
    DM,
    DR,
    IPS,
    InvalidConfigError,
    InvalidFeedbackError,
    LoggedFeedback,
    confidence_interval,
)
from ope.gate import benjamini_hochberg
from test_mutants_ope2 import _always, _alternating, _feedback, _gate  # the same small logs and gate

# ---------------------------------------------------------------- base.py


def test_estimate_bootstrap_interval_is_confidence_interval_with_the_same_defaults():
    """ope.base.xǁEstimatorǁestimate__mutmut_4 (n_bootstrap default 1000 -> 1001).

    Every estimator gets its interval from the one function ``confidence_interval``: with the
    same seed and the default options, ``estimate`` gives exactly the interval of
    ``confidence_interval`` on the estimator's terms (IPS draws nothing before the bootstrap).
    """
    fb = _feedback(300, seed=1)
    t = np.tile([0.3, 0.7], (300, 1))
    est = IPS().estimate(fb, t, interval="bootstrap", seed=0)
    ci = confidence_interval(IPS().terms(fb, t), method="bootstrap", rng=0)
    assert (est.value, est.stderr, est.ci_low, est.ci_high) == (ci.value, ci.stderr, ci.ci_low, ci.ci_high)
    explicit = IPS().estimate(fb, t, interval="bootstrap", seed=0, n_bootstrap=1000)
    assert (explicit.ci_low, explicit.ci_high, explicit.stderr) == (est.ci_low, est.ci_high, est.stderr)
    # the number of resamples shows in the interval (else the equality above proves nothing)
    other = IPS().estimate(fb, t, interval="bootstrap", seed=0, n_bootstrap=1001)
    assert (other.ci_low, other.ci_high, other.stderr) != (est.ci_low, est.ci_high, est.stderr)


# ---------------------------------------------------------------- dr.py


def test_estimators_with_different_reward_models_in_one_evaluate_each_use_their_own():
    """ope.dr.xǁ_ModelBasedǁ_predictions__mutmut_33 (cache key of the cross-fit -> None).

    ``evaluate`` shares one cache of reward-model fits between its cells; it is keyed by model
    and folds, so a second model is fitted, not served the first one's predictions. With a
    constant model ``q = c``: DM's value is ``c`` and DR's ``c + mean(w (r - c))``.
    """
    n = 200
    fb = _feedback(n, seed=2)
    t = np.tile([0.25, 0.75], (n, 1))
    low, high = DummyRegressor(strategy="constant", constant=0.1), DummyRegressor(strategy="constant", constant=0.9)
    table = ope.evaluate(fb, {"p": t}, {"dm_low": DM(reward_model=low), "dm_high": DM(reward_model=high),
                                        "dr_low": DR(reward_model=low), "dr_high": DR(reward_model=high)}, seed=0)
    value = dict(zip(table.get_column("estimator"), table.get_column("value")))
    w = t[np.arange(n), fb.actions] / fb.propensities
    assert value["dm_low"] == pytest.approx(0.1, abs=1e-12)
    assert value["dm_high"] == pytest.approx(0.9, abs=1e-12)
    assert value["dr_low"] == pytest.approx(0.1 + np.mean(w * (fb.rewards - 0.1)), abs=1e-12)
    assert value["dr_high"] == pytest.approx(0.9 + np.mean(w * (fb.rewards - 0.9)), abs=1e-12)
    # the same through Estimator.estimate(cache=...): one dict shared by two models
    cache: dict = {}
    assert DM(reward_model=low).estimate(fb, t, seed=0, cache=cache).value == pytest.approx(0.1, abs=1e-12)
    assert DM(reward_model=high).estimate(fb, t, seed=0, cache=cache).value == pytest.approx(0.9, abs=1e-12)


# ---------------------------------------------------------------- gate_options.py


def test_default_dr_reward_model_does_not_depend_on_the_units_of_a_context(seed):
    """ope.gate.x_default_reward_model__mutmut_4 (StandardScaler dropped from the pipeline).

    The default reward model is a ridge regression on *standardised* features: logging a
    context in other units (milliseconds or seconds) must not change the gate's DR estimates.
    Without standardisation the ridge penalty shrinks the small-unit coefficients to about 0.
    """
    n = 400
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    a = np.arange(n) % 2
    r = 0.5 + 0.4 * x * (2 * a - 1) + rng.normal(0.0, 0.1, n)
    cols = ["estimate_candidate", "estimate_baseline", "diff", "stderr"]
    tables = []
    for scale in (1.0, 1e-3):
        fb = _alternating(r, contexts=pl.DataFrame({"latency": x * scale}))
        tables.append(_gate(fb, estimator="dr", min_ess=0, seed=seed).table.select(cols).row(0))
    np.testing.assert_allclose(tables[1], tables[0], rtol=1e-9)


# ---------------------------------------------------------------- gate_result.py


def test_refusal_summary_is_the_verdict_sentence_then_one_line_per_reason():
    """ope.gate.xǁGateResultǁsummary__mutmut_9 (the REFUSE sentence in capitals)."""
    n = 200
    a = np.arange(n) % 2
    fb = _alternating((a == 1).astype(float))
    result = ope.gate(fb, candidate=_always(0, n), baseline=_always(1, n), estimator="ips", alpha=0.1)
    assert not result.promote and result.reasons
    lines = result.summary().splitlines()
    assert lines[0] == "REFUSE: the candidate does not pass the gate (alpha = 0.1)."
    assert lines[1:] == [f"- {r}" for r in result.reasons]


def test_benjamini_hochberg_counts_p_values_stored_as_json_null_as_one():
    """ope.gate.x_benjamini_hochberg__mutmut_9 (no float64 conversion of the input).

    JSON has no NaN: ``GateResult.to_dict`` writes NaN as null, so p-values read back from JSON
    hold ``None`` where they were NaN; they count as 1, like NaN.
    """
    p = json.loads(json.dumps([0.01, None, 0.04]))
    assert p == [0.01, None, 0.04]
    np.testing.assert_allclose(benjamini_hochberg(p), benjamini_hochberg([0.01, math.nan, 0.04]),
                               rtol=0, atol=0)
    np.testing.assert_allclose(benjamini_hochberg(p), [0.03, 1.0, 0.06], rtol=1e-12)


def test_zero_margins_are_shown_without_a_minus_sign():
    """ope.gate.x__fmt__mutmut_6 (``x + 0.0`` -> ``x - 0.0``: "-0" is no longer turned into "0").

    The default cohort margin 0 and a guardrail margin 0 make the limits ``-0.0``; the reasons
    read "limit 0 (margin 0)", never "limit -0".
    """
    n = 400
    a = np.arange(n) % 2
    seg = np.where(np.arange(n) < 200, "a", "b")
    fb = _alternating((a == 1).astype(float), cohorts=pl.DataFrame({"seg": seg}),
                      metrics=pl.DataFrame({"quality": (a == 1).astype(float)}))
    result = _gate(fb, cohorts=["seg"], guardrails={"quality": 0.0}, min_ess=0)
    assert result.promote
    t = result.table
    texts = [*t.get_column("reason").to_list(), *result.reasons]
    assert not any(re.search(r"-0\b(?!\.)", s) for s in texts), texts
    cohort_reward = t.filter((pl.col("cohort_column") == "seg") & (pl.col("metric") == "reward"))
    assert all("the non-inferiority limit 0 (margin 0) (" in s for s in cohort_reward.get_column("reason"))
    quality = t.filter(pl.col("cohort_column").is_null() & (pl.col("metric") == "quality")).get_column("reason")[0]
    assert "the non-inferiority limit 0 (margin 0) (" in quality
    assert ", limit 0, BH-adjusted p" in result.reasons[-1]


# ---------------------------------------------------------------- gate.py


def test_default_max_weight_is_500():
    """ope.gate.x_gate__mutmut_9 (max_weight default 500 -> 501).

    One round logged with propensity 1 / 500.5 gives the candidate a weight of 500.5: over
    the documented default ceiling of 500, under an explicit 501.
    """
    n = 1000
    a = np.arange(n) % 2
    a[0] = 1
    p = np.full(n, 0.5)
    p[0] = 1 / 500.5
    rng = np.random.default_rng(4)
    fb = LoggedFeedback(actions=a, rewards=rng.binomial(1, 0.5, n).astype(float), propensities=p, n_actions=2)
    default = _gate(fb, min_ess=0)
    row = default.table.row(0, named=True)
    assert row["max_weight"] == pytest.approx(500.5)
    assert not row["diagnostics_ok"] and not default.promote
    assert "the largest importance weight is 500.5 (max_weight = 500)" in row["reason"]
    assert default.table.equals(_gate(fb, min_ess=0, max_weight=500.0).table)
    assert _gate(fb, min_ess=0, max_weight=501.0).table.get_column("diagnostics_ok").to_list() == [True]


def test_a_candidate_identical_to_the_baseline_is_within_every_margin(seed):
    """ope.gate.x_gate__mutmut_282 (zero standard error: a lower-is-better metric judged as higher-is-better).

    The same policy as candidate and baseline: every paired difference is exactly 0, so the
    difference is known without error and lies within every positive margin, for a
    lower-is-better guardrail (cost) as for a higher-is-better one (quality) and for a
    non-inferiority primary margin.
    """
    n = 200
    rng = np.random.default_rng(seed)
    fb = _alternating(rng.binomial(1, 0.5, n).astype(float),
                      metrics=pl.DataFrame({"quality": rng.random(n), "cost_usd": rng.exponential(0.01, n)}))
    same = np.full((n, 2), 0.5)
    result = ope.gate(fb, candidate=same, baseline=same, estimator="ips", margin=-0.01,
                      guardrails={"quality": 0.01, "cost_usd": 0.001})
    t = result.table
    assert t.get_column("diff").to_list() == [0.0, 0.0, 0.0]
    assert t.get_column("stderr").to_list() == [0.0, 0.0, 0.0]
    assert t.get_column("p_value").to_list() == [0.0, 0.0, 0.0]
    assert result.promote, result.reasons
    # a zero margin is not cleared by a zero difference, in either direction
    strict = ope.gate(fb, candidate=same, baseline=same, estimator="ips", margin=0.0,
                      guardrails={"cost_usd": 0.0})
    assert strict.table.get_column("p_value").to_list() == [1.0, 1.0]


def test_a_guardrail_never_logged_in_a_cohort_leaves_that_cell_unjudged():
    """ope.gate.x_gate__mutmut_336 (the baseline's largest weight of an empty cell: ``max(initial=None)`` raises).

    ``quality`` is logged only in cohort ``seg=a``: its cell in ``seg=b`` has no rounds. The
    gate reports it as not judgeable (0 rounds) and refuses, instead of crashing.
    """
    n = 400
    a = np.arange(n) % 2
    seg = np.where(np.arange(n) < 200, "a", "b")
    quality = pl.Series("quality", [float(a[i]) if seg[i] == "a" else None for i in range(n)], dtype=pl.Float64)
    fb = _alternating((a == 1).astype(float), cohorts=pl.DataFrame({"seg": seg}), metrics=pl.DataFrame([quality]))
    result = _gate(fb, cohorts=["seg"], guardrails={"quality": 0.1}, min_ess=0)
    cell = result.table.filter((pl.col("metric") == "quality") & (pl.col("cohort") == "seg=b")).row(0, named=True)
    assert (cell["n"], cell["max_weight"], cell["ess_candidate"], cell["ess_baseline"]) == (0, 0.0, 0.0, 0.0)
    assert math.isnan(cell["diff"]) and cell["p_value"] == 1.0
    assert not cell["diagnostics_ok"] and not cell["passed"]
    assert cell["reason"].startswith("quality on seg=b: cannot be judged: only 0 logged rounds (min_n = 100)")
    assert not result.promote
    assert any(r.startswith("seg=b: cannot be judged: only 0 logged rounds") for r in result.reasons)
    # the cohort where quality is logged is judged
    judged = result.table.filter((pl.col("metric") == "quality") & (pl.col("cohort") == "seg=a")).row(0, named=True)
    assert judged["n"] == 200 and judged["diagnostics_ok"]


def test_refusal_reasons_do_not_depend_on_the_order_the_guardrails_are_given():
    """ope.gate.x__refusal_reasons__mutmut_15 (failed cells no longer sorted by metric).

    Two guardrails fail overall; the reasons are the same, in the same order (primary first,
    then the guardrails by name), whichever order the guardrails were passed in.
    """
    n = 400
    a = np.arange(n) % 2
    fb = _alternating((a == 1).astype(float),
                      metrics=pl.DataFrame({"quality": (a == 1).astype(float),
                                            "cost_usd": np.where(a == 0, 0.01, 0.001)}))
    kw = {"candidate": _always(0, n), "baseline": _always(1, n), "estimator": "ips"}
    first = ope.gate(fb, guardrails={"quality": 0.0, "cost_usd": 0.0}, **kw)
    second = ope.gate(fb, guardrails={"cost_usd": 0.0, "quality": 0.0}, **kw)
    assert not first.promote and len(first.reasons) == 3
    assert first.reasons == second.reasons
    assert [r.split(" ")[0] for r in first.reasons] == ["reward", "cost_usd", "quality"]


# ---------------------------------------------------------------- intervals.py


@pytest.mark.parametrize("alpha", [1.5, 0.0])
def test_invalid_alpha_of_an_interval_names_the_field(alpha):
    """ope.intervals.x__check__mutmut_19 (the error's field "alpha" -> "ALPHA")."""
    with pytest.raises(InvalidConfigError, match=rf"^alpha must be in \(0, 1\), got {alpha!r}$") as info:
        confidence_interval(np.arange(5.0), alpha=alpha)
    assert info.value.field == "alpha"
    fb = _feedback(20)
    with pytest.raises(InvalidConfigError, match=r"^alpha must be in \(0, 1\)") as info:
        IPS().estimate(fb, _always(0, 20), alpha=alpha)
    assert info.value.field == "alpha"


@pytest.mark.parametrize("n", [2, 3, 40])
def test_an_undefined_self_normalised_value_has_no_interval_whatever_the_method(n):
    """ope.intervals.x__interval__mutmut_125 (Bernstein: ``n < 2`` -> ``n <= 2``).

    The target puts all its mass on an action the log never played: every weight is 0, SNIPS's
    value is undefined (0 / 0) and so is its interval, with every method, from two rounds on
    (one round is the documented exception: the Bernstein bound is then the value range).
    For a defined value the mutant changes nothing: at n = 2 the bound is wider than the range.
    """
    fb = _alternating(np.ones(n), n_actions=3)  # actions 0 and 1 only
    t = _always(2, n, 3)
    for interval in ("normal", "bootstrap", "bernstein"):
        est = ope.SNIPS().estimate(fb, t, interval=interval, seed=0, value_range=(0.0, 1.0))
        assert math.isnan(est.value) and "SNIPS value is undefined (sum of importance weights is 0)" in est.warnings
        assert math.isnan(est.ci_low) and math.isnan(est.ci_high), (interval, est.ci_low, est.ci_high)


def test_bernstein_with_values_outside_the_value_range_is_an_error_naming_it():
    """Found while classifying ope.intervals.x__interval__mutmut_125 (``n < 2`` -> ``n <= 2``):
    the bug was an inverted interval (ci_low > ci_high) without a word.

    ``value_range`` is an a-priori range of the per-round values; values outside it (a wrong
    range, e.g. (0, 1) for IPS values that reach 1 / propensity) are rejected naming
    ``value_range`` and the values seen; values inside it still give an ordered interval.
    """
    x = np.full(50, 3.0)  # every value above the declared range (0, 1)
    with pytest.raises(InvalidConfigError, match=r"value_range must contain every per-round value .*\(3 to 3\)") as err:
        confidence_interval(x, method="bernstein", value_range=(0.0, 1.0))
    assert err.value.field == "value_range"
    with pytest.raises(InvalidConfigError):
        confidence_interval(np.r_[np.full(49, 0.5), 1.5], method="bernstein", value_range=(0.0, 1.0))
    ci = confidence_interval(np.r_[np.full(49, 0.5), 1.0], method="bernstein", value_range=(0.0, 1.0))
    assert ci.ci_low <= ci.value <= ci.ci_high


# ---------------------------------------------------------------- log_columns.py

_DECISION_SCHEMA = {
    "decision_id": pl.String, "ts": pl.Datetime("us", "UTC"), "policy_version": pl.String, "context": pl.String,
    "task_types": pl.List(pl.String), "task_probs": pl.List(pl.Float64), "profiles": pl.List(pl.String),
    "probabilities": pl.List(pl.Float64), "profile": pl.String, "propensity": pl.Float64,
}


def test_logs_whose_decisions_hold_no_profiles_are_rejected_naming_the_field(tmp_path):
    """ope.logs.x_feedback_from_logs__mutmut_21 (the error's field "profiles" -> None).

    A decision file with no rows yet (a writer that created its part before any decision):
    there is no action space to evaluate on.
    """
    path = tmp_path / "decisions" / "date=2025-01-01"
    path.mkdir(parents=True)
    pl.DataFrame(schema=_DECISION_SCHEMA).write_parquet(path / "part-w1-000000.parquet")
    expected = f"no profiles found in the decisions under {tmp_path}"
    with pytest.raises(InvalidFeedbackError, match="^" + re.escape(expected) + "$") as info:
        LoggedFeedback.from_logs(tmp_path)
    assert info.value.field == "profiles"
    with pytest.raises(InvalidFeedbackError) as info:
        ope.logs.feedback_from_logs(tmp_path)
    assert info.value.field == "profiles"
