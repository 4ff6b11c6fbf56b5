"""Anytime-valid canary monitoring (``ope.monitor``, ``ope.confseq``): error rates under repeated
looks, power, coverage at every look, guardrails, bad input, the doctests.

The simulations use the world of ``benchmarks/bench_monitor.py`` (8 profiles, a 10% canary,
near-uniform logging). Every statistical assertion compares a count over independent runs with
a binomial quantile: a rate that should be <= ``alpha`` fails the test only if the count exceeds
the 0.999 quantile of Binomial(runs, alpha), i.e. one time in a thousand if the true rate were
exactly ``alpha`` (and never by chance for a true rate well below it, as measured: 0 / 500). The
vectorised simulation runs the monitor's own sequences (``OffPolicyCS``, at the monitor's
``alpha_per_side``); ``test_the_monitor_and_the_vectorised_sequences_agree`` shows they give the
monitor's bounds bit for bit, and the monitor objects are also run directly on fewer runs.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
from scipy.stats import binom

import ope
import ope.confseq
import ope.monitor
from ope.confseq import LowerConfidenceSequence, OffPolicyCS
from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.monitor import CanaryMonitor, MonitorOptions

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_monitor.py"
_spec = importlib.util.spec_from_file_location("bench_monitor", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

ALPHA = 0.05
NULL, BETTER, WORSE = bench.World(0.0), bench.World(0.05), bench.World(-0.1)
W = NULL.max_weight  # 1 / f = 10


def at_most_alpha(count: int, runs: int, alpha: float = ALPHA) -> bool:
    """Consistent with a rate <= alpha: count <= the 0.999 quantile of Binomial(runs, alpha)."""
    return count <= binom.ppf(0.999, runs, alpha)


# ---------------------------------------------------------------- the bar


@pytest.fixture(scope="module")
def null_runs():
    """500 runs x 1,000 looks x 20 rounds with zero true difference (the issue's bar)."""
    return bench.simulate(NULL, n_runs=500, n_looks=1000, alpha=ALPHA, max_weight=W, seed=0)


def test_false_promote_over_1000_looks_stays_below_alpha(null_runs):
    false_promote = int((null_runs["promote"] > 0).sum())
    assert at_most_alpha(false_promote, 500), false_promote
    assert at_most_alpha(int((null_runs["rollback"] > 0).sum()), 500)


def test_a_naive_interval_looked_at_after_every_batch_exceeds_alpha(null_runs):
    # the same data, a 95% normal interval recomputed after every batch: the problem is real
    naive = int((null_runs["naive_promote"] > 0).sum())
    assert naive > binom.ppf(0.999, 500, ALPHA), naive
    assert int((null_runs["promote"] > 0).sum()) < naive


def test_every_sequence_covers_its_truth_at_every_look_under_the_null(null_runs):
    assert at_most_alpha(int((~null_runs["covered"]).sum()), 500)


def test_false_promote_without_a_weight_bound(seed):
    out = bench.simulate(NULL, n_runs=300, n_looks=300, alpha=ALPHA, max_weight=None, seed=100 + seed, coverage=False)
    assert at_most_alpha(int((out["promote"] > 0).sum()), 300)


def test_false_promote_when_the_policies_change_and_the_candidate_is_never_better(seed):
    # a learning production policy: the true difference is 0 or -0.05 depending on the look
    worlds = [NULL, bench.World(-0.05)]
    opts = MonitorOptions(alpha=ALPHA, max_weight=W)
    cs = OffPolicyCS(value_range=(0.0, 1.0), alpha_side=opts.alpha_per_side, max_weight=W, values=False, shape=(300,))
    streams = [w.batches(n_runs=300, n_looks=400, seed=200 + seed + i) for i, w in enumerate(worlds)]
    promoted = np.zeros(300, dtype=bool)
    for look in range(400):
        data = next(streams[(look // 25) % 2])
        next(streams[1 - (look // 25) % 2])
        cs.update(w_candidate=data["candidate_probs"] / data["propensities"],
                  w_baseline=data["baseline_probs"] / data["propensities"], outcomes=data["rewards"])
        promoted |= cs.difference().low > 0
    assert at_most_alpha(int(promoted.sum()), 300)


# ---------------------------------------------------------------- power and coverage


def test_a_real_gain_is_detected_and_covered_at_every_look(seed):
    # +0.05 at a 10% canary: the benchmark's 90% quantile of the rounds to promote is ~7,500;
    # with a true power of >= 0.95 by 12,000 rounds, fewer than 85% of 200 runs has p < 1e-6
    out = bench.simulate(BETTER, n_runs=200, n_looks=600, alpha=ALPHA, max_weight=W, seed=300 + seed)
    assert (out["promote"] > 0).mean() >= 0.85
    assert not (out["rollback"] > 0).any()
    assert at_most_alpha(int((~out["covered"]).sum()), 200)
    # the naive interval promotes earlier, but it pays for it with the error above
    assert np.median(out["naive_promote"]) < np.median(out["promote"])


def test_the_weight_bound_detects_sooner_than_no_bound(seed):
    kw = dict(n_runs=200, n_looks=600, alpha=ALPHA, seed=400 + seed, coverage=False)
    bounded, unbounded = bench.simulate(BETTER, max_weight=W, **kw), bench.simulate(BETTER, max_weight=None, **kw)
    first = lambda r: np.where(r > 0, r, 10 ** 9)  # noqa: E731
    assert np.median(first(bounded["promote"])) < np.median(first(unbounded["promote"]))
    assert (unbounded["promote"] > 0).mean() >= 0.7


# ---------------------------------------------------------------- the monitor object


def test_the_monitor_and_the_vectorised_sequences_agree():
    opts = MonitorOptions(alpha=ALPHA, max_weight=W)
    cs = OffPolicyCS(value_range=(0.0, 1.0), alpha_side=opts.alpha_per_side, max_weight=W, shape=(3,))
    monitors = [CanaryMonitor(opts) for _ in range(3)]
    for data in BETTER.batches(n_runs=3, n_looks=60, seed=5):
        cs.update(w_candidate=data["candidate_probs"] / data["propensities"],
                  w_baseline=data["baseline_probs"] / data["propensities"], outcomes=data["rewards"])
        for i, m in enumerate(monitors):
            res = m.update(**{k: data[k][i] for k in ("candidate_probs", "baseline_probs", "propensities", "rewards")})
            for name, got in (("difference", res.difference), ("candidate", res.candidate), ("baseline", res.baseline)):
                want = cs.difference() if name == "difference" else cs.value(name)
                assert (got.estimate, got.low, got.high) == pytest.approx((want.estimate[i], want.low[i], want.high[i]),
                                                                           rel=1e-12, abs=1e-12)


def test_monitor_objects_do_not_promote_a_candidate_that_is_not_better(seed):
    results = bench.run_monitors(NULL, n_runs=40, n_looks=150, seed=500 + seed, options=MonitorOptions(max_weight=W))
    assert at_most_alpha(sum(r.decision == "promote" for r in results), 40)
    assert at_most_alpha(sum(r.decision == "rollback" for r in results), 40)
    assert all(r.n_rounds == 3000 and r.n_batches == 150 for r in results)


def test_monitor_objects_promote_a_better_candidate_and_stay_promoted(seed):
    results = bench.run_monitors(BETTER, n_runs=20, n_looks=120, batch=100, seed=600 + seed,
                                 options=MonitorOptions(max_weight=W))
    promoted = [r for r in results if r.decision == "promote"]
    assert len(promoted) >= 15  # power >= 0.95 by 12,000 rounds: P(< 15 of 20) < 0.003
    for r in promoted:
        assert r.decided_at_round is not None and r.decided_at_round <= r.n_rounds
        assert r.reason.startswith("reward: candidate - baseline lower bound ")
        assert f"after {r.decided_at_round:,} rounds" in r.reason


def test_a_gain_below_the_margin_neither_promotes_nor_rolls_back():
    # true difference +0.05, margin 0.1: not shown above 0.1, and far from below -0.1
    results = bench.run_monitors(BETTER, n_runs=5, n_looks=100, batch=200, seed=13,
                                 options=MonitorOptions(max_weight=W, margin=0.1))
    assert all(r.decision == "continue" and r.difference.high < 0.1 + 0.05 for r in results)
    assert all(r.reason.startswith("no decision yet after 20,000 rounds") for r in results)


def test_a_clearly_worse_candidate_is_rolled_back():
    results = bench.run_monitors(WORSE, n_runs=10, n_looks=300, seed=7, options=MonitorOptions(max_weight=W))
    assert all(r.decision == "rollback" and r.failed_guardrail is None for r in results)
    assert all(r.reason.startswith("reward: candidate - baseline upper bound ") for r in results)


def test_promote_and_rollback_are_sticky():
    m = CanaryMonitor(MonitorOptions(max_weight=W))
    good, bad = BETTER.batches(n_runs=1, n_looks=10 ** 6, batch=500, seed=8), WORSE.batches(n_runs=1, n_looks=10 ** 6,
                                                                                               batch=500, seed=9)
    keys = ("candidate_probs", "baseline_probs", "propensities", "rewards")
    while m.decision_ == "continue":
        res = m.update(**{k: v[0] for k, v in next(good).items() if k in keys})
    decided, reason = res.decided_at_round, res.reason
    assert res.decision == "promote" and m.decided_at_round_ == decided
    for _ in range(60):  # now a much worse candidate: the numbers move, the decision does not
        res = m.update(**{k: v[0] for k, v in next(bad).items() if k in keys})
    assert res.difference.high < 0
    assert (res.decision, res.decided_at_round, res.reason) == ("promote", decided, reason)


# ---------------------------------------------------------------- guardrails


EXPENSIVE = np.full(8, 0.001)
EXPENSIVE[[0, -1]] = 0.008  # the candidate plays only the two expensive profiles: +0.0053 per call


def test_a_clearly_worse_guardrail_rolls_back_naming_it():
    world = bench.World(0.05, cost_usd=EXPENSIVE)
    opts = MonitorOptions(max_weight=W, guardrails={"cost_usd": 0.001}, metric_ranges={"cost_usd": bench.COST_RANGE})
    results = bench.run_monitors(world, n_runs=10, n_looks=150, seed=10, options=opts)
    for r in results:
        assert r.decision == "rollback" and r.failed_guardrail == "cost_usd"
        assert r.reason.startswith("guardrail cost_usd: candidate - baseline lower bound ")
        assert "> 0.001 (allowed increase 0.001)" in r.reason
        (g,) = r.guardrails
        assert g.status == "fail" and g.difference.low > 0.001


def test_an_equal_guardrail_rarely_rolls_back(seed):
    assert NULL.cost_difference == pytest.approx(0.0, abs=1e-15)
    out = bench.simulate(NULL, n_runs=400, n_looks=400, alpha=ALPHA, max_weight=W, seed=700 + seed, coverage=False,
                         cost_margin=0.0)
    assert at_most_alpha(int((out["cost_fail"] > 0).sum()), 400)


def test_the_same_guardrail_is_caught_by_the_vectorised_sequences(seed):
    world = bench.World(0.0, cost_usd=EXPENSIVE)
    out = bench.simulate(world, n_runs=200, n_looks=100, alpha=ALPHA, max_weight=W, seed=800 + seed, coverage=False,
                         cost_margin=0.001)
    assert (out["cost_fail"] > 0).mean() >= 0.95


def test_promotion_waits_for_guardrail_non_inferiority_unless_told_otherwise():
    # a better candidate whose cost is equal (every profile costs the same): non-inferiority
    # within margin 0 can never be shown
    world = bench.World(0.1, cost_usd=np.full(8, 0.003))
    rails = dict(guardrails={"cost_usd": 0.0}, metric_ranges={"cost_usd": bench.COST_RANGE})
    strict = bench.run_monitors(world, n_runs=3, n_looks=60, batch=100, seed=11,
                                options=MonitorOptions(max_weight=W, **rails))
    lenient = bench.run_monitors(world, n_runs=3, n_looks=60, batch=100, seed=11,
                                 options=MonitorOptions(max_weight=W, require_non_inferiority=False, **rails))
    for s, le in zip(strict, lenient):
        assert s.difference.low > 0 and s.guardrails[0].status == "pending"
        assert s.decision == "continue" and "not yet shown non-inferior: cost_usd" in s.reason
        assert le.decision == "promote"


def test_the_result_is_a_json_event_with_the_numbers():
    opts = MonitorOptions(max_weight=W, guardrails={"cost_usd": 0.001}, metric_ranges={"cost_usd": bench.COST_RANGE})
    (res,) = bench.run_monitors(bench.World(0.05, cost_usd=EXPENSIVE), n_runs=1, n_looks=150, seed=12, options=opts)
    event = json.loads(json.dumps(res.to_dict()))
    assert event["decision"] == "rollback" and event["failed_guardrail"] == "cost_usd"
    assert event["alpha"] == 0.05 and event["n_sequences"] == 4 and event["alpha_per_side"] == 0.05 / 8
    assert event["difference"]["low"] == res.difference.low and event["n_rounds"] == res.n_rounds
    (rail,) = event["guardrails"]
    assert rail["metric"] == "cost_usd" and rail["direction"] == "lower" and rail["status"] == "fail"
    assert rail["difference"]["low"] > rail["margin"] == 0.001
    empty = CanaryMonitor().result().to_dict()
    assert empty["difference"]["estimate"] is None and json.dumps(empty)


# ---------------------------------------------------------------- the sequences themselves


def test_the_lower_bound_is_below_the_running_mean_and_tightens(seed):
    rng = np.random.default_rng(seed)
    cs = LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=0.05)
    gaps = []
    for _ in range(6):
        cs.update(rng.binomial(1, 0.3, size=2000).astype(float))
        assert cs.bound() < cs.mean()
        gaps.append(float(cs.mean() - cs.bound()))
    assert gaps == sorted(gaps, reverse=True)
    # smaller alpha, lower bound; an empty sequence says nothing beyond its floor
    strict = LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=0.001)
    strict.update(np.ones(50))
    loose = LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=0.2)
    loose.update(np.ones(50))
    assert strict.bound() < loose.bound() <= 1.0
    assert LowerConfidenceSequence(floor=-2.0, ceiling=1.0, alpha=0.05).bound() == -2.0


def test_the_lower_bound_covers_the_mean_of_a_skewed_stream_at_every_look(seed):
    # importance-weighted terms: mostly 0, sometimes 10 (mean 0.5), unbounded above as far as the CS knows
    rng = np.random.default_rng(seed)
    cs = LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=0.05, shape=(1000,))
    missed = np.zeros(1000, dtype=bool)
    for _ in range(100):
        cs.update(10.0 * rng.binomial(1, 0.05, size=(1000, 50)))
        missed |= cs.bound() > 0.5
    assert at_most_alpha(int(missed.sum()), 1000)


def test_on_policy_logs_give_a_zero_difference():
    # candidate = baseline = logging: every weight is 1, the difference is exactly 0 and covered
    rng = np.random.default_rng(0)
    m = CanaryMonitor()
    p = np.full(400, 0.25)
    res = m.update(candidate_probs=p, baseline_probs=p, propensities=p, rewards=rng.random(400))
    assert res.difference.estimate == 0.0 and res.difference.low < 0.0 < res.difference.high
    assert res.candidate.estimate == res.baseline.estimate


# ---------------------------------------------------------------- bad input


def _batch(**over):
    base = dict(candidate_probs=[0.5, 0.2, 0.1], baseline_probs=[0.25, 0.25, 0.25], propensities=[0.3, 0.3, 0.3],
                rewards=[1.0, 0.0, 0.5])
    return {**base, **over}


@pytest.mark.parametrize("over, field, match", [
    (dict(candidate_probs=[1.5, 0.2, 0.1]), "candidate_probs",
     r"^candidate_probs must be in \[0, 1\], got 1\.5 at round 0$"),
    (dict(baseline_probs=[0.2, -0.1, 0.1]), "baseline_probs",
     r"^baseline_probs must be in \[0, 1\], got -0\.1 at round 1$"),
    (dict(propensities=[0.3, 0.3, 0.0]), "propensities", r"^propensities must be in \(0, 1\], got 0\.0 at round 2$"),
    (dict(rewards=[1.0, 2.0, 0.0]), "rewards", r"^rewards must be in \[0, 1\], got 2\.0 at round 1$"),
    (dict(rewards=[1.0, float("nan"), 0.0]), "rewards", r"^rewards must be in \[0, 1\], got nan at round 1$"),
    (dict(rewards=[1.0, 0.0]), "rewards", r"^rewards has length 2 but candidate_probs has length 3$"),
    (dict(candidate_probs=[[0.5, 0.2, 0.1]]), "candidate_probs",
     r"^candidate_probs must be 1-dimensional, got shape \(1, 3\)$"),
    (dict(propensities=["a", "b", "c"]), "propensities", r"^propensities must be numeric"),
    (dict(candidate_probs=[1.0, 0.2, 0.1], propensities=[0.05, 0.3, 0.3]), "candidate_probs",
     r"^candidate_probs / propensities must be <= max_weight 10, got 20 at round 0$"),
])
def test_bad_batches_name_the_field_and_the_value_and_add_nothing(over, field, match):
    m = CanaryMonitor(MonitorOptions(max_weight=10.0))
    with pytest.raises(InvalidFeedbackError, match=match) as info:
        m.update(**_batch(**over))
    assert info.value.field == field
    assert m.n_rounds_ == 0 and m.n_batches_ == 0 and m.result().difference.estimate != 0.0


@pytest.mark.parametrize("metrics, field, match", [
    (None, "metrics", r"^metrics must include the guardrail metric 'cost_usd', got \[\]$"),
    ({"latency_ms": [1, 2, 3]}, "metrics",
     r"^metrics must include the guardrail metric 'cost_usd', got \['latency_ms'\]$"),
    ({"cost_usd": [0.001, 0.5, 0.0]}, "metrics['cost_usd']",
     r"^metrics\['cost_usd'\] must be in \[0, 0\.02\], got 0\.5 at round 1$"),
    ({"cost_usd": [0.001]}, "metrics['cost_usd']",
     r"^metrics\['cost_usd'\] has length 1 but candidate_probs has length 3$"),
    ([0.1, 0.2, 0.3], "metrics", r"^metrics must be a mapping metric -> values, got \[0\.1, 0\.2, 0\.3\]$"),
])
def test_bad_guardrail_metrics_name_the_field(metrics, field, match):
    m = CanaryMonitor(MonitorOptions(guardrails={"cost_usd": 0.001}, metric_ranges={"cost_usd": (0, 0.02)}))
    with pytest.raises(InvalidFeedbackError, match=match) as info:
        m.update(**_batch(), metrics=metrics)
    assert info.value.field == field and m.n_rounds_ == 0


@pytest.mark.parametrize("kw, field, match", [
    (dict(alpha=0.7), "alpha", r"^alpha must be in \(0, 0\.5\), got 0\.7$"),
    (dict(alpha=float("nan")), "alpha", r"^alpha must be a finite number, got nan$"),
    (dict(margin="0.1"), "margin", r"^margin must be a finite number, got '0\.1'$"),
    (dict(reward_range=(1.0, 0.0)), "reward_range",
     r"^reward_range must be a known range \(lo, hi\) with lo < hi, got \(1\.0, 0\.0\)$"),
    (dict(reward_range=(0.0, math.inf)), "reward_range", r"^reward_range must be a known range"),
    (dict(max_weight=0.5), "max_weight", r"^max_weight must be >= 1 \(weights average 1\), got 0\.5$"),
    (dict(guardrails=["cost_usd"]), "guardrails",
     r"^guardrails must be a mapping metric -> margin, got \['cost_usd'\]$"),
    (dict(guardrails={"tokens": 5}, metric_ranges={"tokens": (0, 10)}), "guardrails['tokens']",
     r"needs a direction: pass \(margin, 'higher'\) or \(margin, 'lower'\), got 5$"),
    (dict(guardrails={"cost_usd": -0.1}, metric_ranges={"cost_usd": (0, 1)}), "guardrails['cost_usd'].margin",
     r"^guardrails\['cost_usd'\]\.margin must be >= 0, got -0\.1$"),
    (dict(guardrails={"latency_ms": 50}), "metric_ranges['latency_ms']",
     r"^metric_ranges\['latency_ms'\] must be a known range \(lo, hi\) with lo < hi, got None$"),
    (dict(metric_ranges=[(0, 1)]), "metric_ranges", r"^metric_ranges must be a mapping metric -> \(lo, hi\)"),
    (dict(require_non_inferiority="yes"), "require_non_inferiority",
     r"^require_non_inferiority must be a bool, got 'yes'$"),
])
def test_bad_options_name_the_field_and_the_value(kw, field, match):
    with pytest.raises(InvalidConfigError, match=match) as info:
        MonitorOptions(**kw)
    assert info.value.field == field


def test_options_are_frozen_keyword_only_and_checked_by_the_monitor():
    with pytest.raises(TypeError):
        MonitorOptions(0.1)
    opts = MonitorOptions()
    with pytest.raises(AttributeError):
        opts.alpha = 0.1
    with pytest.raises(InvalidConfigError, match=r"^options must be a MonitorOptions, got dict$"):
        CanaryMonitor({"alpha": 0.1})


def test_bad_sequence_arguments_name_the_field():
    with pytest.raises(InvalidConfigError, match=r"^ceiling must be finite and > floor 1\.0, got 0\.0$"):
        LowerConfidenceSequence(floor=1.0, ceiling=0.0, alpha=0.05)
    with pytest.raises(InvalidConfigError, match=r"^alpha must be in \(0, 1\), got 1\.5$"):
        LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=1.5)
    cs = LowerConfidenceSequence(floor=0.0, ceiling=1.0, alpha=0.05)
    with pytest.raises(InvalidFeedbackError, match=r"^terms must be finite and >= 0, got -0\.5$") as info:
        cs.update(np.array([0.2, -0.5]))
    assert info.value.field == "terms" and cs.n == 0
    with pytest.raises(InvalidFeedbackError, match=r"^terms must be finite and >= 0, got nan$"):
        cs.update(np.array([np.nan]))
    with pytest.raises(InvalidConfigError, match=r"^value_range must be finite \(lo, hi\) with lo < hi"):
        OffPolicyCS(value_range=(1.0, 1.0), alpha_side=0.01)
    with pytest.raises(InvalidConfigError, match=r"^max_weight must be a finite number >= 1, got 0\.5$"):
        OffPolicyCS(value_range=(0.0, 1.0), alpha_side=0.01, max_weight=0.5)
    with pytest.raises(InvalidConfigError, match=r"values=False"):
        OffPolicyCS(value_range=(0.0, 1.0), alpha_side=0.01, values=False).value("candidate")
    with pytest.raises(InvalidConfigError, match=r"^which must be 'candidate' or 'baseline', got 'prod'$"):
        OffPolicyCS(value_range=(0.0, 1.0), alpha_side=0.01).value("prod")
    ops = OffPolicyCS(value_range=(0.0, 1.0), alpha_side=0.01, max_weight=2.0)
    with pytest.raises(InvalidFeedbackError, match=r"^w_baseline must be in \[0, 2\], got 3\.0$") as info:
        ops.update(w_candidate=[1.0, 1.0], w_baseline=[1.0, 3.0], outcomes=[0.5, 0.5])
    assert info.value.field == "w_baseline" and ops.n == 0
    with pytest.raises(InvalidFeedbackError, match=r"^outcomes must be in \[0, 1\], got nan$"):
        ops.update(w_candidate=[1.0], w_baseline=[1.0], outcomes=[np.nan])


# ---------------------------------------------------------------- package


@pytest.mark.parametrize("module", [ope.monitor, ope.confseq])
def test_the_doctests_run(module):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failures, attempted = doctest.testmod(module, optionflags=flags)
    assert attempted >= 5 and failures == 0


def test_exported_from_ope():
    for name in ("CanaryMonitor", "MonitorOptions", "MonitorResult", "GuardrailStatus", "SequenceBounds",
                 "LowerConfidenceSequence", "OffPolicyCS"):
        assert name in ope.__all__ and getattr(ope, name) is not None
