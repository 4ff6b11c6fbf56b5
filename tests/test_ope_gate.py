"""The promotion gate: paired intervals, BH over cohorts x metrics, diagnostics, reasons, the bar.

The bar's replications here are a fast version of ``benchmarks/gate_power.py`` (same synthetic
world). At n = 20,000 the benchmark measured a promotion rate of ~100% for a candidate better
by twice the margin and 0% for one worse by the margin, so a handful of replications decide
the bar: if the true power were 0.95, 12 replications would all promote with probability 0.54
and fewer than 10 of 12 with probability 0.02; we assert >= 80% (10 of 12).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import polars as pl
import pytest

import ope
from ope.errors import InvalidConfigError, OPEError
from ope.gate import GATE_TABLE_SCHEMA, GateResult, Guardrail, benjamini_hochberg, gate

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gate_power.py"
_spec = importlib.util.spec_from_file_location("gate_power", _BENCH)
gate_power = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gate_power)

M = gate_power.MARGIN


def run_gate(fb, cand, base, **kw):
    args = dict(candidate=cand, baseline=base, margin=M, cohorts=["tenant"], guardrails=gate_power.GUARDRAILS)
    return gate(fb, **{**args, **kw})


@pytest.mark.parametrize("scenario, expect_promote, bar", [("worse", False, 0.95), ("better", True, 0.80)])
def test_bar_refuses_worse_and_promotes_better(seed, scenario, expect_promote, bar):
    reps = 12
    outcomes = []
    for i in range(reps):
        fb, cand, base, _ = gate_power.make_gate_logs(20_000, deltas=gate_power.scenario_deltas(scenario),
                                                      seed=seed * 1000 + i)
        outcomes.append(run_gate(fb, cand, base, seed=seed + i).promote == expect_promote)
    assert np.mean(outcomes) >= bar


def test_bar_better_on_average_but_worse_on_one_cohort_is_refused_naming_it(seed):
    fb, cand, base, truth = gate_power.make_gate_logs(
        20_000, deltas=gate_power.scenario_deltas("one_cohort_worse"), seed=seed)
    assert truth["all"] == pytest.approx(2 * M)
    result = run_gate(fb, cand, base, seed=seed)
    assert not result.promote
    overall = result.table.filter(pl.col("cohort") == "all traffic", pl.col("metric") == "reward").row(0, named=True)
    assert overall["passed"]  # better on average ...
    failed = result.failures
    assert set(failed.get_column("cohort")) == {"tenant=initech"}  # ... but not on initech
    (reason,) = [r for r in result.reasons if "initech" in r]
    # an actionable sentence: metric, cohort, numbers, what to do
    assert reason.startswith("reward on tenant=initech: the candidate is worse than the baseline")
    for needle in ("upper bound", "non-inferiority limit -0.02", "n = ", "BH-adjusted", "do not promote"):
        assert needle in reason


def test_paired_differences_account_for_correlation(seed):
    """The paired standard error equals the SD of the per-round differences / sqrt(n), and is
    much smaller than treating the two estimates as independent when the policies overlap."""
    fb, cand, base, _ = gate_power.make_gate_logs(20_000, deltas=0.0, seed=seed)
    result = gate(fb, candidate=cand, baseline=base, estimator="ips", margin=0.0)
    row = result.table.row(0, named=True)
    ips = ope.IPS()
    pc, pb = ips.per_round(fb, cand), ips.per_round(fb, base)
    d = pc - pb
    assert row["diff"] == pytest.approx(d.mean())
    assert row["stderr"] == pytest.approx(d.std(ddof=1) / np.sqrt(d.size))
    independent = np.sqrt(pc.var(ddof=1) + pb.var(ddof=1)) / np.sqrt(d.size)
    assert row["stderr"] < 0.8 * independent
    assert row["lower"] == pytest.approx(row["diff"] - 1.6448536 * row["stderr"], rel=1e-6)


def test_identical_policies_are_not_an_improvement(seed):
    fb, _, base, _ = gate_power.make_gate_logs(2_000, deltas=0.0, seed=seed)
    result = gate(fb, candidate=base, baseline=base, estimator="snips", margin=0.0)
    assert not result.promote
    row = result.table.row(0, named=True)
    assert row["diff"] == 0.0 and row["stderr"] == 0.0 and row["p_value"] == 1.0
    assert "the point estimate itself misses it" in result.reasons[0]


def test_cohort_cells_are_the_estimator_on_the_cohort(seed):
    """Self-normalised estimators are re-normalised within each cohort."""
    fb, cand, base, _ = gate_power.make_gate_logs(8_000, deltas=M, seed=seed)
    result = gate(fb, candidate=cand, baseline=base, estimator="snips", cohorts=["tenant", "task_type"], min_ess=10)
    tenants = fb.contexts.get_column("tenant").to_numpy()
    for row in result.table.filter(pl.col("cohort_column") == "tenant").iter_rows(named=True):
        mask = tenants == row["cohort_value"]
        sub = fb.filter(mask)
        assert row["estimate_candidate"] == pytest.approx(ope.SNIPS().estimate(sub, cand[mask]).value)
        assert row["estimate_baseline"] == pytest.approx(ope.SNIPS().estimate(sub, base[mask]).value)
        assert row["n"] == mask.sum()
    assert result.table.height == (1 + 4 + 2) * 1
    assert set(result.table.get_column("cohort")) >= {"task_type=chat", "task_type=code", "tenant=acme"}


def test_dr_recovers_the_true_difference_within_its_interval(seed):
    """Coverage of the overall paired interval over replications (one-sided 95% bounds = 90% two-sided)."""
    reps, covered = 30, 0
    for i in range(reps):
        fb, cand, base, truth = gate_power.make_gate_logs(5_000, deltas=M, seed=seed * 100 + i)
        row = gate(fb, candidate=cand, baseline=base, margin=0.0, seed=i).table.row(0, named=True)
        covered += row["lower"] <= truth["all"] <= row["upper"]
    # 90% nominal: P(Binomial(30, 0.9) < 21) ~ 0.0016
    assert covered >= 21


def test_guardrail_lower_is_better_refuses_a_costlier_candidate(seed):
    fb, cand, base, _ = gate_power.make_gate_logs(10_000, deltas=2 * M, seed=seed)
    costly = np.asarray(fb.metrics.get_column("cost_usd")) + 0.001 * (fb.actions == np.where(
        fb.contexts.get_column("task_type").to_numpy() == "chat", 1, 0))
    fb2 = ope.LoggedFeedback(actions=fb.actions, rewards=fb.rewards, propensities=fb.propensities, n_actions=3,
                             contexts=fb.contexts, metrics=fb.metrics.with_columns(cost_usd=costly))
    result = gate(fb2, candidate=cand, baseline=base, margin=M, guardrails={"cost_usd": 0.0002})
    assert not result.promote
    (reason,) = result.reasons
    assert reason.startswith("cost_usd (all traffic): the candidate is worse than the baseline")
    assert "non-inferiority limit +0.0002" in reason
    row = result.table.filter(pl.col("metric") == "cost_usd").row(0, named=True)
    assert row["direction"] == "lower" and row["diff"] == pytest.approx(0.4 * 0.001, abs=6 * row["stderr"])


def test_inconclusive_reason_says_how_much_more_traffic():
    """Hand-made log: the candidate gains 0.1 per round, its lower bound misses the margin 0.05."""
    a = np.tile([0, 1], 20)
    r = np.where(a == 1, np.tile([1, 1, 1, 0, 0], 8), np.tile([1, 0, 1, 0, 0], 8)).astype(float)
    fb = ope.LoggedFeedback(actions=a, rewards=r, propensities=np.full(40, 0.5), n_actions=2)
    result = gate(fb, candidate=np.tile([0.0, 1.0], (40, 1)), baseline=np.tile([1.0, 0.0], (40, 1)),
                  estimator="ips", margin=0.05, min_n=10, min_ess=0)
    row = result.table.row(0, named=True)
    assert not result.promote and row["diff"] == pytest.approx(0.2)
    factor = (1.6448536 * row["stderr"] / (0.2 - 0.05)) ** 2
    (reason,) = result.reasons
    assert reason.startswith("reward (all traffic): not shown: the 95% lower bound")
    assert f"about {factor:.1f}x the traffic would be needed" in reason and "the required margin 0.05" in reason


def test_small_cohort_and_weight_ceiling_fail_with_reasons(seed):
    fb, cand, base, _ = gate_power.make_gate_logs(5_000, deltas=2 * M, seed=seed)
    rare = np.where(np.arange(fb.n_rounds) < 40, "rare", "common")
    fb2 = ope.LoggedFeedback(actions=fb.actions, rewards=fb.rewards, propensities=fb.propensities, n_actions=3,
                             cohorts=pl.DataFrame({"segment": rare}), metrics=fb.metrics)
    result = gate(fb2, candidate=cand, baseline=base, margin=0.0, cohorts=["segment"], min_n=100,
                  guardrails={"latency_ms": 50.0}, max_weight=2.5, estimator="ips")
    assert not result.promote
    text = "\n".join(result.reasons)
    assert "segment=rare: cannot be judged: only 40 logged rounds (min_n = 100)" in text
    assert text.count("segment=rare: cannot be judged") == 1  # once per cohort, not per metric
    assert "the largest importance weight is 3 (max_weight = 2.5)" in text


def test_low_ess_and_support_and_wrong_propensities(seed):
    fb, cand, base, _ = gate_power.make_gate_logs(5_000, deltas=0.0, seed=seed)
    third = np.tile([0.0, 0.0, 1.0], (fb.n_rounds, 1))
    result = gate(fb, candidate=third, baseline=base, estimator="ips", min_ess=2_000)
    assert not result.promote
    assert any("the candidate's effective sample size is" in r and "min_ess = 2000" in r for r in result.reasons)
    # wrong propensities: logged as twice what they were
    wrong = ope.LoggedFeedback(actions=fb.actions, rewards=fb.rewards, propensities=fb.propensities / 2, n_actions=3)
    result = gate(wrong, candidate=cand, baseline=base, estimator="ips")
    assert result.reasons[0].startswith("weights: the candidate's mean importance weight is")
    # the candidate plays a profile the logging policy never plays
    never = np.tile([0.5, 0.5, 0.0], (fb.n_rounds, 1))
    logged = ope.LoggedFeedback(actions=np.minimum(fb.actions, 1), rewards=fb.rewards,
                                propensities=np.full(fb.n_rounds, 0.5), n_actions=3,
                                logging_distribution=never)
    result = gate(logged, candidate=third, baseline=never, estimator="ips", min_ess=0)
    assert any(r.startswith("support: the candidate puts 100.00% of its traffic") for r in result.reasons)


def test_table_schema_and_json(seed):
    fb, cand, base, _ = gate_power.make_gate_logs(5_000, deltas=2 * M, seed=seed)
    result = run_gate(fb, cand, base, seed=seed)
    assert isinstance(result, GateResult)
    assert result.table.schema == pl.Schema(GATE_TABLE_SCHEMA)
    assert result.table.height == (1 + 4) * 3
    d = json.loads(json.dumps(result.to_dict()))
    assert d["verdict"] == result.verdict and len(d["table"]) == 15
    # the BH column is the BH adjustment of the raw p-values over the whole family
    t = result.table
    assert np.allclose(t.get_column("p_adjusted").to_numpy(), benjamini_hochberg(t.get_column("p_value").to_numpy()))
    assert result.promote == bool(t.get_column("passed").all())
    assert result.summary().startswith(result.verdict)


def test_benjamini_hochberg_known_values():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    adj = benjamini_hochberg(p)
    assert adj[0] == pytest.approx(0.01) and adj[1] == pytest.approx(0.04)
    assert adj[2:5] == pytest.approx([0.084] * 3)
    assert adj[-1] == pytest.approx(0.216)
    assert (np.sort(adj) == adj[np.argsort(p)]).all()  # monotone in p


@pytest.mark.parametrize("kw, err, match", [
    (dict(alpha=0.7), InvalidConfigError, r"alpha must be in \(0, 0.5\), got 0.7"),
    (dict(cohorts=["region"]), InvalidConfigError, r"cohort column 'region' is not in the feedback's cohorts or contexts"),
    (dict(guardrails={"tokens": 5}), InvalidConfigError, r"guardrails\['tokens'\] needs a direction"),
    (dict(guardrails={"cost_usd": -1}), InvalidConfigError, r"guardrails\['cost_usd'\].margin must be >= 0, got -1"),
    (dict(guardrails={"tokens": (1.0, "up")}), InvalidConfigError, r"direction must be 'higher' or 'lower', got 'up'"),
    (dict(estimator="magic"), InvalidConfigError, r"estimator must be one of .* got 'magic'"),
    (dict(metric="tokens"), InvalidConfigError, r"metric 'tokens' is not logged in the feedback"),
    (dict(min_n=1), InvalidConfigError, r"min_n must be an integer >= 2, got 1"),
    (dict(max_weight=0), InvalidConfigError, r"max_weight must be > 0, got 0"),
    (dict(estimator=ope.DR(reward_predictions=np.zeros((500, 3))), guardrails={"cost_usd": 0.1}),
     InvalidConfigError, r"fixed reward_predictions"),
])
def test_bad_arguments_name_field_and_value(kw, err, match):
    fb, cand, base, _ = gate_power.make_gate_logs(500, deltas=0.0, seed=0)
    with pytest.raises(err, match=match) as info:
        gate(fb, candidate=cand, baseline=base, **kw)
    assert isinstance(info.value, OPEError) and isinstance(info.value, ValueError) and info.value.field


def test_guardrail_is_frozen_and_keyword_only():
    g = Guardrail(metric="quality", margin=0.01)
    with pytest.raises(AttributeError):
        g.margin = 0.5
    with pytest.raises(TypeError):
        Guardrail("quality", 0.01)


def test_a_cell_failed_only_by_the_multiple_testing_adjustment_says_so():
    """Its own bound clears the limit (p = 0.021) but BH over 4 cells makes it 0.086: the reason names
    the adjustment and does not ask for 'about 0.3x the traffic' (a factor below 1 read as nonsense)."""
    n = 3000
    a = np.tile([0, 1], n // 2)
    seg = np.repeat(["a", "b", "c"], n // 3)
    r = np.random.default_rng(0).binomial(1, np.where(a == 1, np.where(seg == "c", 0.55, 0.3), 0.5)).astype(float)
    fb = ope.LoggedFeedback(actions=a, rewards=r, propensities=np.full(n, 0.5), n_actions=2,
                            cohorts=pl.DataFrame({"segment": seg}))
    result = gate(fb, candidate=np.tile([0.0, 1.0], (n, 1)), baseline=np.tile([1.0, 0.0], (n, 1)), estimator="ips",
                  margin=0.0, cohorts=["segment"], min_n=10, min_ess=0)
    row = result.table.filter(pl.col("cohort") == "segment=c").row(0, named=True)
    assert not row["passed"] and row["p_value"] < 0.05 < row["p_adjusted"] and row["lower"] > row["threshold"]
    (reason,) = [x for x in result.reasons if "segment=c" in x]
    assert reason.startswith("reward on segment=c: not shown once adjusted for the number of cohort x metric tests")
    assert "Benjamini-Hochberg adjusted p 0.0859 is above 0.05" in reason and "the traffic would be needed" not in reason
