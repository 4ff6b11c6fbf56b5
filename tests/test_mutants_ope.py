"""Tests written to kill the mutants that survived mutation testing of ``ope``.

Each test names the behaviour it pins; the expected values are computed independently
(numpy by hand) or follow from a property derived in the test's comment.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import Ridge

import ope
from ope import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    DiagnosticThresholds,
    DRos,
    InvalidConfigError,
    InvalidFeedbackError,
    LoggedFeedback,
    RoundTerms,
)


# ---------------------------------------------------------------- helpers


def _feedback(n=60, seed=0, n_actions=2):
    """Uniform logging over ``n_actions``, a numeric context that drives the reward."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    a = rng.integers(0, n_actions, n)
    r = 0.5 * x + 0.3 * a + rng.normal(0, 0.5, n)
    return LoggedFeedback(actions=a, rewards=r, propensities=np.full(n, 1.0 / n_actions), n_actions=n_actions,
                          contexts=pl.DataFrame({"x": x}))


def _always(k, n, n_actions=2):
    return np.tile(np.eye(n_actions)[k], (n, 1))


# ---------------------------------------------------------------- base.py: seeding of the hook


class _Noise(ope.Estimator):
    """An estimator whose per-round terms are draws from the Generator the template hands it."""

    name = "noise"

    def _terms(self, feedback, target, weights, rng, cache):
        return RoundTerms(base=rng.random(feedback.n_rounds))


def test_terms_hands_the_hook_a_generator_built_from_the_seed():
    fb = _feedback(n=8)
    t = _always(0, 8)
    # an int seed becomes np.random.default_rng(seed), built once
    np.testing.assert_array_equal(_Noise().terms(fb, t, seed=3).base, np.random.default_rng(3).random(8))
    np.testing.assert_array_equal(_Noise().per_round(fb, t, seed=3), np.random.default_rng(3).random(8))
    # a Generator is used as is: its stream advances
    gen = np.random.default_rng(5)
    first = _Noise().terms(fb, t, seed=gen).base
    second = _Noise().terms(fb, t, seed=gen).base
    ref = np.random.default_rng(5).random(16)
    np.testing.assert_array_equal(np.concatenate([first, second]), ref)


def test_estimate_hands_the_hook_a_generator_built_from_the_seed():
    fb = _feedback(n=8)
    est = _Noise().estimate(fb, _always(0, 8), seed=11)
    np.testing.assert_array_equal(est.per_round, np.random.default_rng(11).random(8))


def test_dr_terms_use_the_seeded_cross_fit():
    # the seed reaches cross-fitting: DR's terms are q(pi_e) + w (r - q_a) with q from the same seed
    fb = _feedback(n=60)
    t = np.tile([0.3, 0.7], (60, 1))
    q = ope.cross_fit_predictions(fb, Ridge(alpha=1.0), n_folds=3, seed=4)
    w = t[np.arange(60), fb.actions] / fb.propensities
    expected = (t * q).sum(axis=1) + w * (fb.rewards - q[np.arange(60), fb.actions])
    got = DR(reward_model=Ridge(alpha=1.0), n_folds=3).terms(fb, t, seed=4).base
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- base.py: arguments reach their consumers


def test_thresholds_reach_the_diagnostics():
    # 4 rounds: the default min_ess = 100 warns; thresholds that disable every check must not
    fb = LoggedFeedback(actions=[0, 1, 0, 1], rewards=[1.0, 0.0, 1.0, 1.0], propensities=[0.5] * 4, n_actions=2)
    t = np.tile([0.5, 0.5], (4, 1))
    default = IPS().estimate(fb, t)
    assert any("effective sample size" in w for w in default.warnings)
    lenient = DiagnosticThresholds(min_ess=0.0, min_ess_fraction=0.0, max_weight_share=1.0,
                                   mean_weight_z=math.inf, max_support_deficiency=1.0)
    est = IPS().estimate(fb, t, thresholds=lenient)
    assert est.warnings == () and est.diagnostics.warnings == ()
    strict = DiagnosticThresholds(min_ess=0.0, min_ess_fraction=0.0, max_weight_share=0.2)
    est = IPS().estimate(fb, t, thresholds=strict)  # 4 equal weights: each carries 25% > 20%
    assert any("one round carries 25.0%" in w for w in est.warnings)


def test_bernstein_uses_the_given_value_range():
    n, alpha, lo, hi = 1000, 0.05, 0.0, 10.0
    rng = np.random.default_rng(1)
    a = np.arange(n) % 2
    r = rng.random(n)
    fb = LoggedFeedback(actions=a, rewards=r, propensities=np.full(n, 0.5), n_actions=2)
    x = 2.0 * r * (a == 0)  # IPS per-round values of "always action 0"
    v, var, log_term = x.mean(), x.var(ddof=1), math.log(4 / alpha)
    half = math.sqrt(2 * var * log_term / n) + 7 * (hi - lo) * log_term / (3 * (n - 1))
    est = IPS().estimate(fb, _always(0, n), interval="bernstein", alpha=alpha, value_range=(lo, hi))
    assert est.ci_low == pytest.approx(max(v - half, lo), abs=1e-12)
    assert est.ci_high == pytest.approx(min(v + half, hi), abs=1e-12)


def test_bootstrap_units_reach_the_bootstrap():
    # bootstrap_units=2 splits the 200 rounds into 2 random groups of 100 and resamples the
    # groups: every resample's mean is m_A (AA), the overall mean (AB) or m_B (BB), with
    # probabilities 1/4, 1/2, 1/4. Of 1000 resamples far more than 26 are AA and BB (binomial
    # mean 250, sd 14), so the 2.5% / 97.5% quantiles are exactly min / max(m_A, m_B), whose sum
    # is twice the overall mean (IPS is linear). The per-round bootstrap of skewed values is not symmetric.
    n = 200
    rng = np.random.default_rng(2)
    a = np.arange(n) % 2
    fb = LoggedFeedback(actions=a, rewards=rng.binomial(1, 0.1, n).astype(float), propensities=np.full(n, 0.5),
                        n_actions=2)
    t = _always(0, n)
    grouped = IPS().estimate(fb, t, interval="bootstrap", n_bootstrap=1000, seed=0, bootstrap_units=2)
    assert grouped.ci_low + grouped.ci_high == pytest.approx(2 * grouped.value, abs=1e-12)
    assert grouped.ci_low < grouped.value < grouped.ci_high
    rounds = IPS().estimate(fb, t, interval="bootstrap", n_bootstrap=1000, seed=0, bootstrap_units=None)
    assert abs(rounds.ci_low + rounds.ci_high - 2 * rounds.value) > 1e-6


def test_bernstein_warning_only_for_self_normalised_bernstein():
    fb = LoggedFeedback(actions=[0, 1, 0, 1], rewards=[1.0, 0.0, 1.0, 1.0], propensities=[0.5] * 4, n_actions=2)
    t = np.tile([0.5, 0.5], (4, 1))

    def bernstein_warnings(est):
        return [w for w in est.warnings if "Bernstein" in w]

    assert bernstein_warnings(SNIPS().estimate(fb, t, interval="normal")) == []
    assert bernstein_warnings(SNIPS().estimate(fb, t, interval="bootstrap", seed=0)) == []
    assert bernstein_warnings(IPS().estimate(fb, t, interval="bernstein")) == []
    (w,) = bernstein_warnings(SNIPS().estimate(fb, t, interval="bernstein"))
    assert "self-normalised SNIPS" in w and "no finite-sample guarantee" in w


# ---------------------------------------------------------------- dr.py


def test_predictions_are_the_seeded_cross_fit():
    fb = _feedback(n=60)
    expected = ope.cross_fit_predictions(fb, Ridge(alpha=1.0), n_folds=3, seed=7)
    model = DR(reward_model=Ridge(alpha=1.0), n_folds=3)
    np.testing.assert_array_equal(model.predictions(fb, seed=7), expected)
    np.testing.assert_array_equal(model.predictions(fb, seed=np.random.default_rng(7)), expected)
    q = np.arange(120, dtype=float).reshape(60, 2)
    np.testing.assert_array_equal(DM(reward_predictions=q).predictions(fb), q)


def test_sndr_uses_the_seeded_cross_fit():
    fb = _feedback(n=60)
    t = np.tile([0.2, 0.8], (60, 1))
    q = ope.cross_fit_predictions(fb, Ridge(alpha=1.0), n_folds=3, seed=9)
    idx = np.arange(60)
    w = t[idx, fb.actions] / fb.propensities
    expected = (t * q).sum(axis=1).mean() + (w * (fb.rewards - q[idx, fb.actions])).sum() / w.sum()
    est = SNDR(reward_model=Ridge(alpha=1.0), n_folds=3).estimate(fb, t, seed=9)
    assert est.value == pytest.approx(expected, abs=1e-12)


def test_dros_zero_shrinkage_is_dm_without_numpy_warnings():
    # shrinkage = 0 with zero weights (target mass 0 on the logged action) is 0 / 0: DRos must
    # give DM's value and not leak a numpy RuntimeWarning
    fb = LoggedFeedback(actions=[0, 1, 0, 1], rewards=[1.0, 0.0, 1.0, 1.0], propensities=[0.5] * 4, n_actions=2)
    q = np.array([[0.2, 0.4], [0.6, 0.1], [0.3, 0.3], [0.9, 0.5]])
    t = _always(0, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = DRos(reward_predictions=q, shrinkage=0.0).estimate(fb, t)
    assert est.value == pytest.approx(q[:, 0].mean(), abs=1e-15)
    np.testing.assert_allclose(est.per_round, q[:, 0], rtol=0, atol=1e-15)


# ---------------------------------------------------------------- gate.py


def test_refusal_reasons_put_the_primary_metric_first():
    # primary "reward" and guardrail "cost_usd" both fail overall; the primary comes first
    # even though "cost_usd" sorts before "reward"
    n = 400
    a = np.arange(n) % 2
    fb = LoggedFeedback(actions=a, rewards=(a == 1).astype(float), propensities=np.full(n, 0.5), n_actions=2,
                        metrics=pl.DataFrame({"reward": (a == 1).astype(float),
                                              "cost_usd": np.where(a == 0, 0.01, 0.001)}))
    result = ope.gate(fb, candidate=_always(0, n), baseline=_always(1, n), estimator="ips",
                      guardrails={"cost_usd": 0.0})
    assert not result.promote
    assert len(result.reasons) == 2
    assert result.reasons[0].startswith("reward (all traffic): the candidate is worse")
    assert result.reasons[1].startswith("cost_usd (all traffic): the candidate is worse")


# ---------------------------------------------------------------- logs.py

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
_DECISION_SCHEMA = {
    "decision_id": pl.String, "ts": pl.Datetime("us", "UTC"), "policy_version": pl.String, "context": pl.String,
    "task_types": pl.List(pl.String), "task_probs": pl.List(pl.Float64), "profiles": pl.List(pl.String),
    "probabilities": pl.List(pl.Float64), "profile": pl.String, "propensity": pl.Float64,
}
_OUTCOME_SCHEMA = {"decision_id": pl.String, "ts": pl.Datetime("us", "UTC"), "reward": pl.Float64,
                   "quality": pl.Float64, "cost_usd": pl.Float64, "latency_ms": pl.Float64}


def _decision(i, profiles, probs, executed, *, minutes=0, context=None, profile=None):
    return {"decision_id": f"d{i}", "ts": T0 + dt.timedelta(minutes=minutes), "policy_version": "v1",
            "context": json.dumps(context or {}), "task_types": ["chat", "code"], "task_probs": [0.3, 0.7],
            "profiles": profiles, "probabilities": probs, "profile": executed if profile is None else profile,
            "propensity": probs[profiles.index(executed)]}


def _outcome(i, reward, *, minutes=1):
    return {"decision_id": f"d{i}", "ts": T0 + dt.timedelta(minutes=minutes), "reward": reward, "quality": reward,
            "cost_usd": 0.001, "latency_ms": 500.0}


def _write(root, kind, rows, seq=0):
    path = root / kind / "date=2025-01-01"
    path.mkdir(parents=True, exist_ok=True)
    schema = _DECISION_SCHEMA if kind == "decisions" else _OUTCOME_SCHEMA
    pl.DataFrame(rows, schema=schema).write_parquet(path / f"part-w1-{seq:06d}.parquet")


def test_join_rejects_unknown_duplicates_rule_naming_the_field(tmp_path):
    _write(tmp_path, "decisions", [_decision(0, ["a", "b"], [0.5, 0.5], "a")])
    with pytest.raises(InvalidConfigError, match=r"duplicates must be one of .*got 'median'") as info:
        ope.join_logs(tmp_path, duplicates="median")
    assert info.value.field == "duplicates"


def test_action_space_orders_by_first_appearance_not_by_name(tmp_path):
    # the list seen first ("b", "a") sorts after the later one ("a", "c") by name
    _write(tmp_path, "decisions", [_decision(0, ["b", "a"], [0.5, 0.5], "b", minutes=0),
                                   _decision(1, ["a", "c"], [0.5, 0.5], "c", minutes=5)])
    assert ope.action_space(tmp_path) == ("b", "a", "c")


def test_task_type_cohort_prefers_the_context_over_the_posterior(tmp_path):
    # the posterior's most probable task type is "code"; the context says "chat"
    _write(tmp_path, "decisions", [_decision(0, ["a", "b"], [0.5, 0.5], "a", context={"task_type": "chat"}),
                                   _decision(1, ["a", "b"], [0.5, 0.5], "b", context={"tenant": "x"})])
    _write(tmp_path, "outcomes", [_outcome(0, 1.0), _outcome(1, 0.0)])
    fb = LoggedFeedback.from_logs(tmp_path, cohorts=("task_type",))
    assert fb.cohorts["task_type"].to_list() == ["chat", "code"]


def test_executed_profile_outside_the_profiles_is_named(tmp_path):
    _write(tmp_path, "decisions", [_decision(0, ["a", "b"], [0.5, 0.5], "a"),
                                   _decision(1, ["a", "b"], [0.5, 0.5], "b", profile="zzz")])
    _write(tmp_path, "outcomes", [_outcome(0, 1.0), _outcome(1, 0.0)])
    with pytest.raises(InvalidFeedbackError, match=r"profile 'zzz' is not among the logged profiles \('a', 'b'\)") as info:
        LoggedFeedback.from_logs(tmp_path)
    assert info.value.field == "profile"
