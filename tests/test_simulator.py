"""Tests of the embedded simulator: configuration, determinism, and its statistics as statistics.

Statistical checks compare an empirical mean with its configured truth within ``Z`` standard
errors of the sampling distribution (``Z = 5``: a false alarm has probability < 1e-6 per check),
under a ``seed`` fixture over three seeds, shifted by ``BR_TEST_SEED`` to sweep more.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from banditroute.errors import ConfigError
from banditroute.sim import Degradation, Scenario, SimProfile, Simulator

Z = 5.0


class Obj:  # the weights of banditroute.Objective, without importing the router
    quality, cost, latency = 1.0, 10.0, 2e-5


@pytest.fixture(params=[0, 1, 2])
def seed(request):
    return int(os.environ.get("BR_TEST_SEED", "0")) + request.param


def binomial_tol(p: float, n: int) -> float:
    return Z * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


def profile(name="a", **kw):
    base = dict(name=name, cost_usd=0.001, latency_ms=500,
                reliability={"chat": 0.9, "code": 0.5})
    return SimProfile(**{**base, **kw})


def scenario(**kw):
    base = dict(profiles=(profile("a"), profile("b", reliability={"chat": 0.6, "code": 0.2})),
                task_types=("chat", "code"), task_mix=(0.5, 0.5))
    return Scenario(**{**base, **kw})


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(task_mix=(0.5, 0.6)), r"scenario.task_mix must sum to 1, got \(0.5, 0.6\)"),
    (dict(task_mix=(1.0,)), "scenario.task_mix must have one entry per task type"),
    (dict(profiles=(profile("a"), profile("a"))), r"scenario.profiles must have unique names, got \['a', 'a'\]"),
    (dict(profiles=(profile("a", joins_at=5),)), "scenario.profiles must include a profile with joins_at=0"),
    (dict(profiles=(profile("a", reliability={"chat": 0.9}),)),
     r"profiles\[a\].reliability must name exactly the task types \['chat', 'code'\], got \['chat'\]"),
    (dict(degradations=(Degradation(profile="zz", task_type="chat", at_request=3, reliability=0.1),)),
     "degradation.profile must be one of"),
    (dict(max_delay_requests=-1), "scenario.max_delay_requests must be an integer >= 0, got -1"),
    (dict(quality="ternary"), "scenario.quality must be 'binary' or 'graded', got 'ternary'"),
])
def test_scenario_validation_names_field_and_value(kw, match):
    with pytest.raises(ConfigError, match=match):
        scenario(**kw)


def test_profile_and_degradation_validation():
    with pytest.raises(ConfigError, match=r"profiles\[a\].cost_usd must be >= 0, got -1"):
        profile("a", cost_usd=-1)
    with pytest.raises(ConfigError, match=r"profiles\[a\].reliability.chat must be <= 1, got 1.5"):
        profile("a", reliability={"chat": 1.5, "code": 0.5})
    with pytest.raises(ConfigError, match="degradation.at_request must be an integer >= 0, got -3"):
        Degradation(profile="a", task_type="chat", at_request=-3, reliability=0.1)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0, got 'x'"):
        Simulator(scenario(), seed="x")


def test_default_scenario_and_stationary_variant():
    s = Scenario.default(n_requests=50_000)
    assert s.event_steps(50_000) == (20_000, 35_000)
    assert s.degradations[0].profile == "large" and s.degradations[0].task_type == "code"
    st = s.stationary()
    assert st.event_steps(50_000) == () and st.profile_names == ("small", "medium", "large")
    # Under the demo objective the best profile differs by task type, and the late profile
    # is the best where it joins.
    sim = Simulator(s, seed=0)
    best = lambda step: [sim.profile_names[k] for k in np.nanargmax(sim.expected_reward_table(step, Obj), axis=0)]
    assert best(0) == ["small", "large", "large", "medium"]
    assert best(20_000) == ["small", "medium", "large", "medium"]
    assert best(35_000) == ["small", "medium-v2", "medium-v2", "medium-v2"]


# -- determinism --------------------------------------------------------------------------------
def _run(seed):
    sim = Simulator(Scenario.default(n_requests=300), seed=seed)
    b = sim.next_requests(300)
    out = sim.submit(b, np.zeros(300, dtype=int), tickets=list(range(300)))
    return b, out


def test_same_seed_same_stream_and_different_seed_differs():
    (b1, o1), (b2, o2), (b3, _) = _run(7), _run(7), _run(8)
    for f in ("task", "prompt_tokens", "tenant", "delay_requests"):
        np.testing.assert_array_equal(getattr(b1, f), getattr(b2, f))
    np.testing.assert_array_equal(o1.quality, o2.quality)
    np.testing.assert_array_equal(o1.cost_usd, o2.cost_usd)
    assert not np.array_equal(b1.task, b3.task)


def test_contexts_look_like_production_requests():
    sim = Simulator(Scenario.default(), seed=0)
    ctx = sim.next_requests(5).contexts()
    assert all(set(c) == {"task_type", "prompt_tokens", "tenant"} for c in ctx)
    assert all(c["task_type"] in Scenario.default().task_types and c["prompt_tokens"] >= 1 for c in ctx)
    assert all(isinstance(c["prompt_tokens"], int) for c in ctx)


# -- statistics ---------------------------------------------------------------------------------
def test_task_mix_matches_configuration(seed):
    s = Scenario.default()
    n = 100_000
    b = Simulator(s, seed=seed).next_requests(n)
    freq = np.bincount(b.task, minlength=len(s.task_types)) / n
    for p, f in zip(s.task_mix, freq):
        assert abs(f - p) <= binomial_tol(p, n)
    tenants = np.bincount(b.tenant, minlength=len(s.tenants)) / n
    assert np.all(np.abs(tenants - 1 / len(s.tenants)) <= binomial_tol(1 / len(s.tenants), n))


def test_empirical_reliability_within_binomial_tolerance(seed):
    s = Scenario.default(n_requests=10**9).stationary()
    sim = Simulator(s, seed=seed)
    n = 60_000
    b = sim.next_requests(n)
    for k, p in enumerate(s.profiles):
        out = sim.sample_outcomes(b, np.full(n, k))
        assert set(np.unique(out.quality)) <= {0.0, 1.0}
        for t, task in enumerate(s.task_types):
            q = out.quality[b.task == t]
            truth = p.reliability[task]
            assert abs(q.mean() - truth) <= binomial_tol(truth, q.size), (p.name, task)


def test_degradation_changes_reliability_from_its_step(seed):
    s = Scenario.default(n_requests=40_000)  # large degrades on code at 16,000
    d = s.degradations[0]
    sim = Simulator(s, seed=seed)
    b = sim.next_requests(40_000)
    k, t = s.profile_names.index(d.profile), s.task_types.index(d.task_type)
    q = sim.sample_outcomes(b, np.full(b.step.size, k)).quality
    before, after = (b.task == t) & (b.step < d.at_request), (b.task == t) & (b.step >= d.at_request)
    truth = s.profiles[k].reliability[d.task_type]
    assert abs(q[before].mean() - truth) <= binomial_tol(truth, before.sum())
    assert abs(q[after].mean() - d.reliability) <= binomial_tol(d.reliability, after.sum())
    other = (b.task != t) & (b.step >= d.at_request)  # other task types are untouched
    rel = sim.reliability(b.step[other], b.task[other])[:, k]
    np.testing.assert_array_equal(rel, sim.reliability_[k, b.task[other]])


def test_mean_cost_and_latency_equal_configuration(seed):
    s = Scenario.default(n_requests=10**9).stationary()
    sim = Simulator(s, seed=seed)
    n = 50_000
    b = sim.next_requests(n)
    for k, p in enumerate(s.profiles):
        out = sim.sample_outcomes(b, np.full(n, k))
        for values, truth in ((out.cost_usd, p.cost_usd), (out.latency_ms, p.latency_ms)):
            assert np.all(values > 0)
            assert abs(values.mean() - truth) <= Z * values.std(ddof=1) / math.sqrt(n), p.name


def test_expected_reward_is_the_mean_realised_reward(seed):
    s = Scenario.default(n_requests=10**9).stationary()
    sim = Simulator(s, seed=seed)
    n = 50_000
    b = sim.next_requests(n)
    expected = sim.expected_reward(b, Obj)
    for k in range(len(s.profiles)):
        out = sim.sample_outcomes(b, np.full(n, k))
        realised = Obj.quality * out.quality - Obj.cost * out.cost_usd - Obj.latency * out.latency_ms
        resid = realised - expected[:, k]  # zero-mean if expected_reward is right, request by request
        assert abs(resid.mean()) <= Z * resid.std(ddof=1) / math.sqrt(n)


def test_graded_quality_is_in_unit_interval_with_configured_mean(seed):
    s = Scenario.default(n_requests=10**9).stationary()
    s = Scenario(**{**{f: getattr(s, f) for f in s.__dataclass_fields__}, "quality": "graded"})
    sim = Simulator(s, seed=seed)
    n = 40_000
    b = sim.next_requests(n)
    q = sim.sample_outcomes(b, np.full(n, 2)).quality
    assert q.min() >= 0.0 and q.max() <= 1.0 and np.unique(q).size > 100
    for t, task in enumerate(s.task_types):
        qt, truth = q[b.task == t], s.profiles[2].reliability[task]
        assert abs(qt.mean() - truth) <= Z * qt.std(ddof=1) / math.sqrt(qt.size)


# -- delays and availability ------------------------------------------------------------------------
def test_outcomes_arrive_after_their_delay_exactly_once(seed):
    s = Scenario.default(n_requests=10**9).stationary()
    sim = Simulator(s, seed=seed)
    delivered, n = [], 4_000
    delays = []
    for _ in range(n // 40):
        delivered.append(sim.poll())
        b = sim.next_requests(40)
        delays.append(b.delay_requests)
        sim.submit(b, np.zeros(40, dtype=int), tickets=b.step.tolist())
    delivered.append(sim.drain())
    tickets = np.concatenate([d.tickets for d in delivered]).astype(int)
    assert sorted(tickets.tolist()) == list(range(n))
    d = np.concatenate(delays)
    assert d.min() == 0 and d.max() == s.max_delay_requests
    m = s.max_delay_requests
    sd = math.sqrt(((m + 1) ** 2 - 1) / 12)  # discrete uniform on 0..m
    assert abs(d.mean() - m / 2) <= Z * sd / math.sqrt(n)


def test_poll_respects_arrival_times():
    s = Scenario.default(n_requests=10**9).stationary()
    sim = Simulator(s, seed=3)
    b = sim.next_requests(200)
    delay = dict(zip(b.step.tolist(), b.delay_requests.tolist()))
    sim.submit(b, np.zeros(200, dtype=int), tickets=b.step.tolist())
    seen = set()
    for _ in range(6):
        arrived = sim.poll()
        for step in arrived.tickets.tolist():
            assert step + delay[step] < sim.clock_  # arrived only once its delay elapsed
        seen.update(arrived.tickets.tolist())
        pending = set(delay) - seen
        assert all(step + delay[step] >= sim.clock_ for step in pending)  # nothing held back
        sim.next_requests(10)
    assert len(seen) + len(sim.drain()) == 200
    assert len(sim.poll()) == 0


def test_late_profile_exists_only_from_its_join_step():
    s = Scenario.default(n_requests=1_000)  # medium-v2 joins at 700
    sim = Simulator(s, seed=0)
    b = sim.next_requests(1_000)
    avail = sim.available(b.step)
    k = s.profile_names.index("medium-v2")
    assert not avail[:700, k].any() and avail[700:, k].all()
    assert np.isnan(sim.expected_reward(b, Obj)[:700, k]).all()
    assert sim.joining(0, 700) == [] and sim.joining(650, 750) == ["medium-v2"]
    with pytest.raises(ConfigError, match="profile does not exist yet at request 0, got 'medium-v2'"):
        sim.sample_outcomes(b, np.full(1_000, k))


# -- benchmark ----------------------------------------------------------------------------------
def test_benchmark_without_gap_finds_the_true_best_profiles(seed):
    sim = Simulator(Scenario.default(benchmark_gap=False), seed=seed)
    bench = sim.benchmark(Obj, n_runs=20_000)
    truth = sim.expected_reward_table(0, Obj)[:3]
    assert bench.table == {t: sim.profile_names[k] for t, k in zip(sim.task_types, np.argmax(truth, axis=0))}
    # each mean reward is within sampling error of its truth (quality sd <= 0.5, cost/latency small)
    assert np.all(np.abs(bench.mean_reward - truth) <= Z * 0.55 / math.sqrt(20_000))


def test_benchmark_gap_misleads_the_static_table(seed):
    sim = Simulator(Scenario.default(), seed=seed)
    bench = sim.benchmark(Obj, n_runs=20_000)
    # the easy benchmark says medium is enough for code and math; production says large
    assert bench.table["code"] == "medium" and bench.table["math"] == "medium"
    assert bench.profiles == ("small", "medium", "large")
