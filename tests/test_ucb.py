"""Bayes-UCB as ``Router(policy="ucb")`` (banditroute/policies/ucb.py).

Checked here:

- the index and the pmf against an independent computation (``scipy.stats.beta``): the upper
  quantile at level ``1 - 1/(n_t + 1)``, the weighted average under a task-type posterior, the
  argmax with ties split equally, the exploration floor, the reliability floor;
- through the router: ``propensity == probabilities[profile]``, 0 on infeasible profiles,
  ``eps / n_feasible`` elsewhere, and the executed frequencies match the pmf (chi-square);
- the bar: at least 95% of the oracle's expected reward on the stationary simulator, with
  Thompson sampling measured on the same runs;
- usable as a shadow, as an off-policy candidate and from a routes file; errors name the field.

Statistical checks use the sweepable ``seed`` fixture (``BR_TEST_SEED=7 pytest ...``).
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy import stats

import banditroute as br
import ope
from banditroute.beliefs.beta import BetaBelief
from banditroute.policies import UCBPolicy
from banditroute.policies.base import PolicyQuery
from banditroute.sim import DEMO_OBJECTIVE, Scenario, Simulator

ALPHA = 1e-3  # false-alarm rate of each statistical check


def _belief(alpha_ev, beta_ev, prior=1.0):
    alpha_ev, beta_ev = np.asarray(alpha_ev, dtype=float), np.asarray(beta_ev, dtype=float)
    belief = BetaBelief(np.full(alpha_ev.shape, prior), np.full(alpha_ev.shape, prior), n_draws=8, seed=0)
    belief.set_evidence(alpha_ev, beta_ev)
    return belief


def _query(task, feasible, offset=None, eps=0.1, quality_weight=1.0, n_tasks=1):
    feasible = np.asarray(feasible, dtype=bool)
    probs = np.eye(n_tasks)[task] if isinstance(task, int) else np.asarray(task)
    offset = np.zeros(feasible.shape) if offset is None else np.asarray(offset, dtype=float)
    return PolicyQuery(task, probs, feasible, {}, offset, quality_weight, eps)


def _expected_pmf(u, feasible, eps):
    """The pmf the design promises: argmax (ties split) mixed with the floor over the feasible."""
    u = np.where(feasible, u, -np.inf)
    top = (u == u.max()).astype(float)
    return (1 - eps) * top / top.sum() + eps * feasible / feasible.sum()


# -- the index and the pmf, against scipy ---------------------------------------------------------
def test_index_is_the_beta_upper_quantile_at_level_one_minus_one_over_n_plus_one():
    a_ev = np.array([[12.0, 0.0], [3.0, 5.0], [30.0, 1.0]])
    b_ev = np.array([[4.0, 2.0], [9.0, 1.0], [25.0, 0.5]])
    policy = UCBPolicy(_belief(a_ev, b_ev))
    n_t = (a_ev + b_ev).sum(axis=0)  # outcomes of each task type, over every profile
    level = 1 - 1 / (n_t + 1)
    np.testing.assert_allclose(policy.levels(), level, rtol=0, atol=1e-15)
    for t in range(2):
        truth = stats.beta.ppf(level[t], 1 + a_ev[:, t], 1 + b_ev[:, t])
        np.testing.assert_allclose(policy.index(t), truth, rtol=1e-10)
    w = np.array([0.3, 0.7])  # a task-type posterior: the w-weighted average of the indices
    truth = sum(w[t] * stats.beta.ppf(level[t], 1 + a_ev[:, t], 1 + b_ev[:, t]) for t in range(2))
    np.testing.assert_allclose(policy.index(w), truth, rtol=1e-10)
    # the paper's c > 0: level 1 - 1/((n+1) log(n+2)^c), clipped at 0 where it would be negative
    c = UCBPolicy(_belief(a_ev, b_ev), log_exponent=2.0)
    np.testing.assert_allclose(c.levels(), np.clip(1 - 1 / ((n_t + 1) * np.log(n_t + 2) ** 2), 0, 1), atol=1e-15)
    assert UCBPolicy(_belief(np.zeros((2, 1)), np.zeros((2, 1))), log_exponent=2.0).levels().tolist() == [0.0]


def test_pmf_is_the_argmax_with_the_exploration_floor_on_the_feasible_profiles():
    # profile 0 is best by index, 3 is infeasible (and would be better still)
    policy = UCBPolicy(_belief([[40.0], [20.0], [5.0], [60.0]], [[10.0], [30.0], [5.0], [1.0]]))
    feasible = np.array([True, True, True, False])
    offset = np.array([0.05, 0.0, 0.01, 0.0])
    for eps in (0.0, 0.1, 0.5):
        pmf, below = policy.pmf(_query(0, feasible, offset, eps))
        u = policy.index(0) - offset
        expected = _expected_pmf(u, feasible, eps)
        assert int(np.argmax(expected)) == 0 and not below.any()
        np.testing.assert_allclose(pmf, expected, rtol=0, atol=1e-15)
        assert pmf.sum() == pytest.approx(1.0, abs=1e-12) and pmf[3] == 0.0
        assert np.allclose(pmf[1:3], eps / 3, rtol=0, atol=1e-15)
    # the offset decides when it outweighs the optimism: a large enough cost moves the argmax,
    # and a larger quality weight moves it back
    expensive = np.array([0.5, 0.0, 0.0, 0.0])
    pmf, _ = policy.pmf(_query(0, feasible, expensive, 0.1))
    assert pmf[0] == pytest.approx(0.1 / 3) and pmf[1:3].max() == pytest.approx(0.9 + 0.1 / 3)
    pmf, _ = policy.pmf(_query(0, feasible, expensive, 0.1, quality_weight=10.0))
    np.testing.assert_allclose(pmf, _expected_pmf(10.0 * policy.index(0) - expensive, feasible, 0.1), atol=1e-15)
    assert pmf[0] == pytest.approx(0.9 + 0.1 / 3)


def test_tied_maxima_share_the_argmax_weight_equally_and_deterministically():
    policy = UCBPolicy(_belief([[8.0], [8.0], [2.0]], [[2.0], [2.0], [8.0]]))
    pmf, _ = policy.pmf(_query(0, [True, True, True], eps=0.3))
    np.testing.assert_allclose(pmf, [0.35 + 0.1, 0.35 + 0.1, 0.1], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(policy.pmf(_query(0, [True, True, True], eps=0.3))[0], pmf)


def test_reliability_floor_excludes_by_the_posterior_probability_below_it():
    # profile 1 is bad on task 0 only; profile 3 is below the floor with probability 0.967 on both
    a_ev = np.array([[30.0, 30.0], [2.0, 30.0], [1.0, 1.0], [3.0, 3.0]])
    b_ev = np.array([[10.0, 10.0], [30.0, 10.0], [1.0, 1.0], [14.0, 14.0]])
    floor, confidence = 0.4, 0.9
    policy = UCBPolicy(_belief(a_ev, b_ev), reliability_floor=floor, floor_confidence=confidence)
    feasible = np.ones(4, dtype=bool)
    cdf = stats.beta.cdf(floor, 1 + a_ev, 1 + b_ev)  # P(reliability < floor) per cell
    assert 0.9 < cdf[3, 0] < 0.99  # the configured confidence decides, not another constant
    for task in (0, 1, np.array([0.5, 0.5]), np.array([0.05, 0.95]), np.array([0.95, 0.05])):
        w = np.eye(2)[task] if isinstance(task, int) else task
        expected_below = (cdf @ w) > confidence  # a posterior vector: the mixture's CDF
        pmf, below = policy.pmf(_query(task, feasible, eps=0.2, n_tasks=2))
        np.testing.assert_array_equal(below, expected_below)
        assert np.all(pmf[below] == 0.0) and pmf.sum() == pytest.approx(1.0)
        assert np.all(pmf[~below] >= 0.2 / (~below).sum() - 1e-15)
    below = {w: policy.pmf(_query(np.array([w, 1 - w]), feasible, eps=0.2, n_tasks=2))[1].tolist()
             for w in (1.0, 0.95, 0.5)}
    assert below == {1.0: [False, True, False, True], 0.95: [False, True, False, True],
                     0.5: [False, False, False, True]}  # the mixture weighs each task type's CDF
    assert policy.pmf(_query(0, feasible, eps=0.2, n_tasks=2))[1].tolist() == below[1.0]
    assert UCBPolicy(_belief(a_ev, b_ev), reliability_floor=floor).pmf(
        _query(0, feasible, eps=0.2, n_tasks=2))[1].tolist() == [False, True, False, True]  # 0.95 < 0.967
    assert UCBPolicy(_belief(a_ev, b_ev), reliability_floor=floor, floor_confidence=0.99).pmf(
        _query(0, feasible, eps=0.2, n_tasks=2))[1].tolist() == [False, True, False, False]


def test_version_changes_with_every_outcome_and_every_evidence_change():
    belief = _belief([[1.0]], [[1.0]])
    policy = UCBPolicy(belief)
    seen = {policy.version}
    belief.update(0, np.array([1.0]), 1.0)  # refresh_every=1: also redraws the bank
    seen.add(policy.version)
    belief.refresh_every = 100
    belief.update(0, np.array([1.0]), 0.0)  # no redraw, but the index moved
    seen.add(policy.version)
    belief.set_evidence(np.array([[5.0]]), np.array([[5.0]]))
    seen.add(policy.version)
    assert len(seen) == 4


# -- through the router ----------------------------------------------------------------------------
PROFILES = [br.Profile("small", cost_usd=0.0004, latency_ms=400),
            br.Profile("medium", cost_usd=0.002, latency_ms=900),
            br.Profile("eu", cost_usd=0.003, latency_ms=700, allow={"region": ["eu"]}),
            br.Profile("large", cost_usd=0.012, latency_ms=2500)]


def _trained_router(seed, **kw):
    router = br.Router(PROFILES, task_types=["chat", "code"], policy="ucb", budget=br.Budget(max_cost_usd=0.01),
                       seed=seed, **kw)
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 60, size=(4, 2)).astype(float)
    good = rng.binomial(n.astype(int), [[0.5], [0.7], [0.8], [0.9]]).astype(float)
    router.set_evidence(good, n - good)
    return router


def test_router_logs_the_exact_pmf_and_executes_it(seed):
    eps = 0.3
    router = _trained_router(seed, exploration=eps)
    assert isinstance(router.policy, UCBPolicy) and router.policy_version.startswith("ucb-beta-")
    ctx = {"task_type": "code", "region": "us"}  # eu fails its allow-list, large the budget
    pmf = router.probabilities(ctx)
    assert pmf["eu"] == 0.0 and pmf["large"] == 0.0
    assert sum(pmf.values()) == pytest.approx(1.0, abs=1e-12)
    best = max(pmf, key=pmf.get)
    assert pmf[best] == pytest.approx(1 - eps + eps / 2, abs=1e-12)
    assert [p for p in ("small", "medium") if p != best] and all(
        pmf[p] == pytest.approx(eps / 2, abs=1e-12) for p in ("small", "medium") if p != best)
    n = 6000
    decisions = router.decide_batch([ctx] * n)  # the belief is frozen: no outcome comes back
    assert all(d.propensity == d.probabilities[d.profile] for d in decisions)
    assert all(dict(d.probabilities) == pmf for d in decisions)
    names = [p for p in pmf if pmf[p] > 0]
    counts = np.array([sum(d.profile == p for d in decisions) for p in names])
    assert counts.sum() == n  # nothing executed outside the support
    p_value = stats.chisquare(counts, n * np.array([pmf[p] for p in names])).pvalue
    assert p_value > ALPHA, (counts, pmf)


def test_every_feasible_profile_keeps_the_floor_and_learning_moves_the_argmax(seed):
    router = br.Router(PROFILES[:2], policy="ucb", exploration=0.1, seed=seed)
    rng = np.random.default_rng(seed)
    truth = {"small": 0.2, "medium": 0.9}
    for _ in range(400):
        d = router.decide({})
        assert min(d.probabilities.values()) >= 0.05 - 1e-12
        router.record(d.id, quality=float(rng.random() < truth[d.profile]))
    assert router.probabilities({})["medium"] == pytest.approx(0.95, abs=1e-12)


# -- the bar: stationary simulator -----------------------------------------------------------------
def oracle_ratio(policy: str, *, n_requests: int, seed: int, batch_size: int = 16, exploration: float = 0.02) -> float:
    """Mean expected reward of ``policy``'s logged pmfs over the oracle's, on the stationary
    default scenario (three profiles, four task types, delayed outcomes), as ``run_demo``
    measures it: ``sum_k pmf[k] * E[reward | k, request]`` against ``max_k E[reward | k, request]``."""
    scenario = Scenario.default(n_requests=n_requests).stationary()
    sim_seq, router_seq = np.random.SeedSequence(seed).spawn(2)
    sim = Simulator(scenario, seed=int(sim_seq.generate_state(1)[0]))
    router = br.Router([br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms) for p in scenario.profiles],
                       task_types=list(scenario.task_types), objective=DEMO_OBJECTIVE, exploration=exploration,
                       policy=policy, seed=int(router_seq.generate_state(1)[0]))
    names = router.profiles
    earned = best = 0.0
    for start in range(0, n_requests, batch_size):
        arrived = sim.poll()
        for ticket, q, c, lat in zip(arrived.tickets.tolist(), arrived.quality.tolist(), arrived.cost_usd.tolist(),
                                     arrived.latency_ms.tolist()):
            router.record(ticket, quality=q, cost_usd=c, latency_ms=lat)
        batch = sim.next_requests(min(batch_size, n_requests - start))
        decisions = router.decide_batch(batch.contexts())
        pmf = np.array([[d.probabilities[n] for n in names] for d in decisions])
        expected = sim.expected_reward(batch, DEMO_OBJECTIVE)
        earned += float((expected * pmf).sum())
        best += float(expected.max(axis=1).sum())
        sim.submit(batch, np.array([names.index(d.profile) for d in decisions]), tickets=[d.id for d in decisions])
    return earned / best


def test_bar_ucb_reaches_95_percent_of_the_oracle_on_the_stationary_simulator(seed):
    # 5,000 requests, 4 seeds. Sweep over seeds 0-19 (docs/ucb.md): ucb 97.4-98.8% (mean 98.3%),
    # thompson 97.3-98.9% (mean 98.2%); the 95% bar holds with a margin of > 2 points per seed, and
    # the per-seed spread (sd ~0.3 points) keeps the two means well within 2 points of each other.
    n, seeds = 5_000, range(seed, seed + 4)
    ucb = np.array([oracle_ratio("ucb", n_requests=n, seed=s) for s in seeds])
    thompson = np.array([oracle_ratio("thompson", n_requests=n, seed=s) for s in seeds])
    print(f"oracle ratio at {n} requests, seeds {list(seeds)}: ucb {ucb.round(4).tolist()} "
          f"thompson {thompson.round(4).tolist()}")
    assert ucb.min() >= 0.95
    # for information, on the same runs: neither beats the other robustly, but they stay close
    assert abs(ucb.mean() - thompson.mean()) <= 0.02


# -- shadow, off-policy candidate, routes file --------------------------------------------------------
def test_ucb_router_as_a_shadow_is_logged_and_learns(seed, tmp_path):
    profiles = PROFILES[:2]
    router = br.Router(profiles, log_dir=tmp_path, seed=seed)
    shadow = br.Router(profiles, policy="ucb", exploration=0.1, seed=seed + 1)
    router.add_shadow("ucb", shadow, who="test", why="bayes-ucb in shadow")
    rng = np.random.default_rng(seed)
    expected = []
    for _ in range(60):
        expected.append(shadow.probabilities({}))
        d = router.decide({})
        router.record(d.id, quality=float(rng.random() < (0.8 if d.profile == "medium" else 0.3)))
    assert shadow.n_updates == router.n_updates == 60  # a Router shadow learns every applied outcome
    router.flush()
    rows = br.scan_table(tmp_path, "decisions").filter(pl.col("shadow").is_not_null()).collect()
    assert rows.height == 60
    for row, want in zip(rows.iter_rows(named=True), expected):
        assert dict(zip(row["profiles"], json.loads(row["shadow"])["ucb"])) == pytest.approx(want, abs=1e-12)
    router.close()


def _uniform_feedback(rng, n, qualities):
    k = len(qualities)
    actions = rng.integers(0, k, n)
    rewards = (rng.random(n) < np.asarray(qualities)[actions]).astype(float)
    return ope.LoggedFeedback(actions=actions, rewards=rewards, propensities=np.full(n, 1.0 / k), n_actions=k,
                              action_names=[f"p{i}" for i in range(k)], metrics=pl.DataFrame({"quality": rewards}))


def _candidate(seed):
    return br.Router([br.Profile(f"p{i}", cost_usd=0.001, latency_ms=100) for i in range(4)], policy="ucb",
                     exploration=0.05, log_dir=None, seed=seed)


def test_ucb_router_as_an_off_policy_candidate(seed):
    qualities = np.array([0.5, 0.5, 0.5, 0.75])
    fb = _uniform_feedback(np.random.default_rng(seed), 1500, qualities)
    target = ope.progressive(_candidate(seed), fb)
    assert target.shape == (1500, 4)
    np.testing.assert_allclose(target.sum(axis=1), 1.0, atol=1e-12)
    assert target.min() >= 0.05 / 4 - 1e-12  # support everywhere: the floor keeps IPS defined
    # IPS on uniform logs is unbiased for the candidate's true value (known here)
    est = ope.IPS().estimate(fb, target)
    truth = float((target @ qualities).mean())
    assert abs(est.value - truth) <= stats.norm.isf(ALPHA / 2) * est.stderr
    assert truth > 0.65  # it learned where the better profile is
    fitted = _candidate(seed)
    fitted.learn(fb)
    frozen = fitted.action_distribution([{}] * 3, list(fb.action_names))
    np.testing.assert_allclose(frozen, np.tile([0.0125, 0.0125, 0.0125, 0.9625], (3, 1)), atol=1e-12)
    result = ope.gate(fb, candidate=_candidate(seed), baseline=ope.uniform(1500, 4))
    assert result.evaluation["candidate"].startswith("progressive validation")


def test_a_routes_file_with_policy_ucb_builds_a_ucb_router(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[router]\npolicy = "ucb"\ntask_types = ["chat", "code"]\nexploration = 0.1\nseed = 3\n'
                    'reliability_floor = 0.2\n'
                    '[[profiles]]\nname = "small"\ncost_usd = 0.001\nlatency_ms = 100\n'
                    '[[profiles]]\nname = "large"\ncost_usd = 0.01\nlatency_ms = 500\n')
    router = br.Router.from_config(path, log_dir=None)
    assert isinstance(router.policy, UCBPolicy) and router.config.policy == "ucb"
    assert router.policy.reliability_floor == 0.2 and router.policy_version.startswith("ucb-beta-")
    d = router.decide({"task_type": "code"})
    assert d.propensity == d.probabilities[d.profile] and sum(d.probabilities.values()) == pytest.approx(1.0)


def test_ucb_works_with_drift_recalibration(seed):
    router = br.Router(PROFILES[:2], policy="ucb", drift=br.DriftConfig(), seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(200):
        d = router.decide({})
        router.record(d.id, quality=float(rng.random() < 0.6))
    assert sum(router.probabilities({}).values()) == pytest.approx(1.0)


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"log_exponent": -1.0}, r"^log_exponent must be >= 0, got -1\.0$"),
    ({"log_exponent": float("nan")}, r"^log_exponent must be finite, got nan$"),
    ({"log_exponent": "2"}, r"^log_exponent must be a number, got '2'$"),
    ({"reliability_floor": 1.0}, r"^reliability_floor must be < 1, got 1\.0$"),
    ({"floor_confidence": 0.5}, r"^floor_confidence must be > 0\.5, got 0\.5$"),
])
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(br.ConfigError, match=message) as info:
        UCBPolicy(_belief([[1.0]], [[1.0]]), **kwargs)
    assert info.value.field == next(iter(kwargs))


def test_bad_belief_and_bad_policy_name_are_refused_naming_the_field():
    with pytest.raises(br.ConfigError, match=r"^belief must be a BetaBelief, got 'NoneType'$"):
        UCBPolicy(None)
    with pytest.raises(br.ConfigError, match=r"^policy must be .*'ucb', got 'UCB'$"):
        br.Router(PROFILES[:2], policy="UCB")
