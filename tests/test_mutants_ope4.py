"""Tests written to kill the fourth sample of ``ope`` mutants that survived mutation testing
(seed 3: ``ope.logs``, ``ope.log_columns``, ``ope.dr``, ``ope.gate``, ``ope.gate_options``,
``ope.gate_result``).

The options of :func:`ope.logs.feedback_from_logs` are checked on real banditroute logs: a small
``banditroute.Router`` run with ``log_dir=tmp_path`` (decide, record, flush), read back by ope.
Expected values come from what the router logged (its decisions and the recorded outcomes), not
from the code under test. Each docstring starts with the mutants the test was shown to kill.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from sklearn.dummy import DummyRegressor
from test_mutants_ope2 import _alternating, _always  # the same small logs
from test_ope_logs import decision, outcome, write  # hand-made banditroute-schema rows

import banditroute as br
import ope
from ope import (
    DM,
    DR,
    InvalidConfigError,
    InvalidFeedbackError,
    LoggedFeedback,
    SwitchDR,
)
from ope.gate_options import Guardrail
from ope.log_columns import read_log_columns

TASKS = ("chat", "code")


def _router_logs(log_dir, n=60, seed=0, *, quality=True):
    """A banditroute run of ``n`` decisions, each with one outcome (quality, cost, latency).

    Returns the decisions and the recorded outcomes, in decision order.
    """
    profiles = [br.Profile("small", cost_usd=0.0004, latency_ms=400), br.Profile("large", cost_usd=0.012, latency_ms=2500)]
    router = br.Router(profiles, task_types=list(TASKS), seed=seed, log_dir=log_dir, exploration=0.3)
    rng = np.random.default_rng(seed)
    decisions, recorded = [], []
    for i in range(n):
        d = router.decide({"task_type": TASKS[i % 2]})
        out = {"latency_ms": float(100 + i), "cost_usd": 0.001 * (i + 1)}
        if quality:
            out["quality"] = float(rng.random() < 0.5)
        router.record(d.id, **out)
        decisions.append(d)
        recorded.append(out)
    router.flush()
    return decisions, recorded


# ---------------------------------------------------------------- logs.py: the options take effect


def test_feedback_from_logs_keeps_the_logged_distribution_by_default_and_drops_it_on_request(tmp_path):
    """ope.logs.x_feedback_from_logs__mutmut_7 (default logging_distribution True -> False),
    ope.logs.x_feedback_from_logs__mutmut_29 (logging_distribution not passed on).

    By default the logged probability vectors are kept (one row per round, summing to 1, the
    executed action's entry being its logged propensity); ``logging_distribution=False`` drops
    them, as ``LoggedFeedback.from_logs`` does.
    """
    decisions, _ = _router_logs(tmp_path)
    fb = ope.feedback_from_logs(tmp_path)
    assert fb.logging_distribution is not None
    assert fb.logging_distribution.shape == (len(decisions), 2)
    np.testing.assert_allclose(fb.logging_distribution.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fb.logging_distribution[np.arange(fb.n_rounds), fb.actions], fb.propensities)
    np.testing.assert_array_equal(fb.propensities, [d.propensity for d in decisions])
    assert ope.feedback_from_logs(tmp_path, logging_distribution=False).logging_distribution is None
    assert LoggedFeedback.from_logs(tmp_path, logging_distribution=False).logging_distribution is None


@pytest.mark.parametrize("metric", ["latency_ms", "cost_usd"])
def test_feedback_from_logs_uses_the_chosen_reward_column(tmp_path, metric):
    """ope.logs.x_feedback_from_logs__mutmut_25 (reward not passed on: always "reward").

    ``reward="latency_ms"`` makes the recorded latencies the rewards (in decision order).
    """
    _, recorded = _router_logs(tmp_path)
    fb = ope.feedback_from_logs(tmp_path, reward=metric)
    np.testing.assert_allclose(fb.rewards, [o[metric] for o in recorded])
    np.testing.assert_allclose(fb.metrics[metric].to_numpy(), fb.rewards)


def test_feedback_from_logs_applies_the_duplicates_rule(tmp_path):
    """ope.logs.x_feedback_from_logs__mutmut_24 (duplicates not passed on: always "first").

    A second recorder logged, one minute later, another outcome for every decision (reward
    ``1 - r``): "first" keeps the router's rewards, "last" the later ones, "mean" their mean.
    """
    _router_logs(tmp_path)
    first_part = sorted((tmp_path / "outcomes").rglob("*.parquet"))
    outcomes = pl.concat([pl.read_parquet(p) for p in first_part])
    later = outcomes.with_columns(
        (1.0 - pl.col("reward")).alias("reward"),
        (pl.col("ts") + pl.duration(minutes=1)).alias("ts"),
        pl.lit("second-recorder").alias("writer"),
    )
    later.write_parquet(first_part[0].parent / "part-second-recorder-00000000.parquet")
    r = ope.feedback_from_logs(tmp_path).rewards
    assert set(np.unique(r)) <= {0.0, 1.0} and 0 < r.sum() < r.size  # both values occur
    np.testing.assert_array_equal(ope.feedback_from_logs(tmp_path, duplicates="first").rewards, r)
    np.testing.assert_array_equal(ope.feedback_from_logs(tmp_path, duplicates="last").rewards, 1.0 - r)
    np.testing.assert_array_equal(ope.feedback_from_logs(tmp_path, duplicates="mean").rewards, np.full(r.size, 0.5))


def test_feedback_from_logs_joins_in_the_requested_number_of_partitions(tmp_path, monkeypatch):
    """ope.logs.x_feedback_from_logs__mutmut_20 (n_partitions not passed on: always None).

    ``n_partitions`` bounds memory: the join runs as that many hash partitions, one after the
    other (each partition's join is observed), and the feedback is the same as in one pass.
    """
    _router_logs(tmp_path)
    one = ope.feedback_from_logs(tmp_path, n_partitions=1)
    seen = []
    real = ope.log_columns.join_logs

    def spy(*args, partition=None, **kwargs):
        seen.append(partition)
        return real(*args, partition=partition, **kwargs)

    monkeypatch.setattr(ope.log_columns, "join_logs", spy)
    many = ope.feedback_from_logs(tmp_path, n_partitions=3)
    assert seen == [(0, 3), (1, 3), (2, 3)]
    np.testing.assert_array_equal(many.actions, one.actions)
    np.testing.assert_array_equal(many.rewards, one.rewards)
    np.testing.assert_array_equal(many.propensities, one.propensities)


@pytest.mark.parametrize("n_partitions", [0, -1])
def test_feedback_from_logs_rejects_a_non_positive_number_of_partitions(tmp_path, n_partitions):
    """Found while checking ope.logs.x_feedback_from_logs__mutmut_20 (was a bug):
    ``n_partitions=0`` ran ``range(0)`` joins and reported "no decision in the logs has a
    counted outcome" on a log full of joined rounds; it is an InvalidConfigError naming it."""
    _router_logs(tmp_path, n=10)
    with pytest.raises(InvalidConfigError) as info:
        ope.feedback_from_logs(tmp_path, n_partitions=n_partitions)
    assert info.value.field == "n_partitions"


# ---------------------------------------------------------------- log_columns.py


def test_read_log_columns_defaults_are_those_of_feedback_from_logs(tmp_path):
    """ope.log_columns.x_read_log_columns__mutmut_3 (default reward "reward" -> "XXrewardXX").

    ``read_log_columns`` documents the options of ``feedback_from_logs``: with no option it
    reads the ``reward`` column, as ``feedback_from_logs`` does.
    """
    _router_logs(tmp_path)
    cols = read_log_columns(tmp_path)
    fb = ope.feedback_from_logs(tmp_path)
    np.testing.assert_array_equal(cols.rewards, fb.rewards)
    np.testing.assert_array_equal(cols.rewards, fb.metrics["reward"].to_numpy())
    np.testing.assert_array_equal(cols.actions, fb.actions)


def test_unknown_reward_column_is_a_config_error_naming_reward():
    """ope.log_columns.x_read_log_columns__mutmut_12 (the error's field "reward" -> the message)."""
    for read in (read_log_columns, ope.feedback_from_logs, LoggedFeedback.from_logs):
        with pytest.raises(InvalidConfigError, match=r"^reward must be one of .* got 'tokens'$") as info:
            read("/nonexistent", reward="tokens")
        assert info.value.field == "reward"


def test_null_reward_in_the_logs_is_an_error_naming_rewards(tmp_path):
    """ope.log_columns.x__to_columns__mutmut_50 (the error's field "rewards" -> "XXrewardsXX").

    Outcomes recorded without a quality have no reward: reading them as rewards is an error
    on field ``rewards`` that names the reward column and the first such round.
    """
    _router_logs(tmp_path, n=10, quality=False)
    with pytest.raises(InvalidFeedbackError, match=r"^reward is null at round 0; ") as info:
        ope.feedback_from_logs(tmp_path)
    assert info.value.field == "rewards"
    # the latency was recorded: it can be the reward
    assert ope.feedback_from_logs(tmp_path, reward="latency_ms").n_rounds == 10


def test_several_decisions_with_an_unknown_executed_profile_name_the_first(tmp_path):
    """ope.log_columns.x__to_columns__mutmut_18 (``head(1)`` -> ``head(None)``: every bad row).

    Two decisions executed profiles outside their ``profiles`` lists: the error names one of
    them (the first), as an InvalidFeedbackError on ``profile``.
    """
    ab = (["a", "b"], [0.5, 0.5])
    write(tmp_path, "decisions", [decision(0, *ab, "a"), decision(1, *ab, "b", extra={"profile": "zzz"}),
                                  decision(2, *ab, "a", extra={"profile": "yyy"})])
    write(tmp_path, "outcomes", [outcome(0, 1.0), outcome(1, 0.0), outcome(2, 1.0)])
    for read in (ope.feedback_from_logs, LoggedFeedback.from_logs):
        with pytest.raises(InvalidFeedbackError, match=r"^profile 'zzz' is not among the logged profiles \('a', 'b'\)$") as info:
            read(tmp_path)
        assert info.value.field == "profile"


# ---------------------------------------------------------------- dr.py


def test_switch_dr_with_a_reward_model_is_dr_or_dm_at_the_extreme_thresholds():
    """ope.dr.xǁSwitchDRǁ_terms__mutmut_5 (the fit cache not passed: SwitchDR with a model fails).

    With a fitted reward model (not given predictions), ``threshold = inf`` is DR and
    ``threshold = 0`` is DM, with the same seed (same cross-fit), also inside ``ope.evaluate``.
    """
    rng = np.random.default_rng(0)
    n = 400
    a = np.arange(n) % 2
    fb = _alternating(rng.binomial(1, np.where(a == 1, 0.7, 0.3)).astype(float))
    target = _always(1, n)
    model = DummyRegressor()
    kw = {"interval": "normal", "seed": 3}
    dr = DR(reward_model=model).estimate(fb, target, **kw)
    dm = DM(reward_model=model).estimate(fb, target, **kw)
    switch_inf = SwitchDR(reward_model=model).estimate(fb, target, **kw)
    switch_0 = SwitchDR(reward_model=model, threshold=0.0).estimate(fb, target, **kw)
    assert switch_inf.value == pytest.approx(dr.value, abs=1e-12)
    assert switch_0.value == pytest.approx(dm.value, abs=1e-12)
    assert switch_inf.value != pytest.approx(switch_0.value)  # the correction term matters here
    # threshold 2 keeps every weight of "always 1" (0 or 2): DR again, in evaluate's shared cache
    table = ope.evaluate(fb, {"one": target}, estimators=[SwitchDR(reward_model=model, threshold=2.0)], seed=3)
    assert table["value"].item() == pytest.approx(switch_inf.value, abs=1e-12)


# ---------------------------------------------------------------- gate.py


def test_rounds_with_a_null_cohort_value_form_their_own_cohort_labelled_null():
    """ope.gate.x__cohort_cells__mutmut_32 and ope.gate.x__cohort_cells__mutmut_33
    (the label "(null)" of the null cohort value -> "XX(null)XX" / "(NULL)").

    A round whose cohort value is missing is judged in a cohort of its own, shown as
    ``(null)`` in the gate's table, next to the real values.
    """
    n = 600
    rng = np.random.default_rng(1)
    a = np.arange(n) % 2
    region = pl.DataFrame({"region": pl.Series([None, "eu", "us"] * (n // 3), dtype=pl.String)})
    fb = _alternating(rng.binomial(1, np.where(a == 1, 0.6, 0.4)).astype(float), cohorts=region)
    result = ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", cohorts=["region"],
                      margin=-1.0)
    cells = result.table.filter(pl.col("cohort_column") == "region")
    assert sorted(cells["cohort_value"].to_list()) == ["(null)", "eu", "us"]
    null_cell = cells.filter(pl.col("cohort_value") == "(null)")
    assert null_cell["n"].item() == n // 3


# ---------------------------------------------------------------- gate_options.py


@pytest.mark.parametrize("metric", ["", 3, None])
def test_guardrail_without_a_metric_name_is_a_config_error(metric):
    """ope.gate_options.xǁGuardrailǁ__post_init____mutmut_7 (the error's message dropped: a TypeError)."""
    with pytest.raises(InvalidConfigError, match=r"^guardrail metric must be a non-empty string, got "
                       + re.escape(repr(metric)) + "$") as info:
        Guardrail(metric=metric, margin=0.1)
    assert info.value.field == "guardrails"


# ---------------------------------------------------------------- gate_result.py


def test_a_candidate_better_than_the_baseline_but_not_by_the_margin_is_not_called_worse():
    """ope.gate_result.x__cell_reason__mutmut_90 (the word is always "worse").

    Candidate 0.6 vs baseline 0.5 (exactly, IPS on constant rewards per action) with a
    required margin of 0.5: the upper bound (about 0.1 + 2 * 0.025) misses the margin, so the
    gate refuses -- saying the candidate does not improve enough, not that it is worse.
    """
    n = 2000
    a = np.arange(n) % 2
    fb = _alternating(np.where(a == 1, 0.6, 0.5))
    result = ope.gate(fb, candidate=_always(1, n), baseline=_always(0, n), estimator="ips", margin=0.5)
    assert result.verdict != "promote"
    overall = result.table.filter(pl.col("cohort_column").is_null() & (pl.col("role") == "primary"))
    assert overall["diff"].item() == pytest.approx(0.1)
    assert overall["upper"].item() < 0.5
    (reason,) = [r for r in result.reasons if r.startswith("reward (")]
    assert "does not improve enough on the baseline" in reason
    assert "worse" not in reason
