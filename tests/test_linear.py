"""Contextual Thompson sampling (policy="linear"): exact propensities, learning, replay."""

import pickle

import numpy as np
import pytest
from scipy import stats

import banditroute as br

OBJECTIVE = br.Objective(quality=1.0, cost=20.0)
PROFILES = [br.Profile("small", cost_usd=0.001), br.Profile("large", cost_usd=0.01)]


def p_good(profile: str, tokens: float) -> float:
    """Small is as good as large on short prompts and fails on long ones."""
    if profile == "large":
        return 0.85
    return 0.95 - 0.8 * min(tokens, 4000) / 4000


def run(router, n, rng):
    rewards = []
    for _ in range(n):
        tokens = float(rng.integers(10, 4000))
        d = router.decide({"task_type": "chat", "prompt_tokens": tokens})
        q = float(rng.random() < p_good(d.profile, tokens))
        router.record(d.id, quality=q)
        rewards.append(OBJECTIVE.reward(quality=q, cost_usd=router.config.profiles[router.profiles.index(d.profile)].cost_usd,
                                        latency_ms=0.0))
    return np.array(rewards)


def make(policy, seed, **kwargs):
    extra = {"features": {"prompt_tokens": 1000.0}} if policy == "linear" else {}
    return br.Router(PROFILES, task_types=["chat"], objective=OBJECTIVE, policy=policy, exploration=0.02,
                     seed=seed, **extra, **kwargs)


def test_linear_beats_beta_when_reliability_depends_on_a_feature(seed):
    n = 6000
    linear = run(make("linear", seed), n, np.random.default_rng(seed))
    beta = run(make("thompson", seed), n, np.random.default_rng(seed))
    late = slice(n // 2, None)
    diff = linear[late] - beta[late]
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert diff.mean() > 4 * se  # clearly better in the second half of the run


def test_linear_propensities_are_exact(seed, tmp_path):
    router = make("linear", seed, log_dir=tmp_path, refresh_every=10**9)
    run(router, 300, np.random.default_rng(seed))  # learns (bank frozen: refresh_every is huge)
    router.policy.refresh()
    ctx = {"task_type": "chat", "prompt_tokens": 2500.0}
    n = 20_000
    decisions = router.decide_batch([ctx] * n)
    pmf = decisions[0].probabilities
    assert sum(pmf.values()) == pytest.approx(1.0) and all(d.probabilities == pmf for d in decisions)
    observed = [sum(d.profile == p for d in decisions) for p in router.profiles]
    assert stats.chisquare(observed, [pmf[p] * n for p in router.profiles]).pvalue > 1e-3
    assert router.probabilities(ctx) == dict(pmf)
    assert router.policy_version.startswith("ts-linear-")


def test_linear_replay_and_pickle(seed, tmp_path):
    live = make("linear", seed, log_dir=tmp_path)
    run(live, 400, np.random.default_rng(seed))
    live.flush()
    fresh = make("linear", seed)
    fresh.replay(tmp_path)
    assert np.allclose(fresh.policy.A_, live.policy.A_) and np.allclose(fresh.policy.b_, live.policy.b_)
    clone = pickle.loads(pickle.dumps(live))
    ctx = {"task_type": "chat", "prompt_tokens": 300.0}
    assert clone.probabilities(ctx) == live.probabilities(ctx)


def test_linear_feature_errors(seed):
    router = make("linear", seed)
    with pytest.raises(br.InvalidRequestError, match=r"context\.prompt_tokens must be a finite number \(a contextual feature\), got 'long'"):
        router.decide({"task_type": "chat", "prompt_tokens": "long"})
    with pytest.raises(br.ConfigError, match=r"features\.prompt_tokens must be > 0, got 0\.0"):
        br.Router(PROFILES, policy="linear", features={"prompt_tokens": 0.0})


def test_linear_from_toml(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[router]\npolicy = "linear"\nfeatures = { prompt_tokens = 1000.0 }\n'
                    '[[profiles]]\nname = "a"\n[[profiles]]\nname = "b"\n')
    router = br.Router.from_config(path, seed=0)
    assert router.config.features == (("prompt_tokens", 1000.0),) and router.policy.dim == 2
    path.write_text('[router]\npolicy = "linear"\nfeatures = ["prompt_tokens"]\n[[profiles]]\nname = "a"\n')
    with pytest.raises(br.ConfigError, match=r"routes\.toml: router\.features must be a table of field = scale"):
        br.Router.from_config(path)


def test_linear_pmf_is_the_share_of_the_stored_bank(seed):
    """The float32 bank: the pmf is exactly the share of the stored draws each profile wins
    (ties to the first maximiser, as argmax), with infeasible profiles masked out."""
    from banditroute.policies.linear import LinearTS

    rng = np.random.default_rng(seed)
    lin = LinearTS(4, ["chat", "code"], (("tokens", 1000.0), ("turns", 10.0)), n_draws=512, seed=seed)
    for _ in range(300):
        ctx = {"tokens": float(rng.integers(10, 4000)), "turns": float(rng.integers(1, 20))}
        lin.learn_task(ctx, rng.dirichlet(np.ones(2)), int(rng.integers(4)), float(rng.random()), 0.25)
    assert lin.theta_.shape == (4, 512, lin.dim) and lin.theta_.dtype == np.float32
    ctx, w = {"tokens": 1200.0, "turns": 3.0}, np.array([0.3, 0.7])
    x = lin.featurize(ctx, w).astype(np.float32)
    for feasible in (np.ones(4, dtype=bool), np.array([True, False, True, False])):
        u = np.einsum("kmd,d->km", lin.theta_, x)
        u[~feasible] = -np.inf
        expected = np.bincount(u.argmax(axis=0), minlength=4) / 512
        pmf = lin.distribution(ctx, w, feasible)
        assert np.array_equal(pmf, expected) and pmf[~feasible].sum() == 0.0
    lin.bank_[:, 2, :] = lin.bank_[:, 1, :]  # profiles 1 and 2 tie on every draw: 1 wins them
    pmf = lin.distribution(ctx, w, np.ones(4, dtype=bool))
    assert pmf[2] == 0.0 and pmf.sum() == pytest.approx(1.0)


def test_linear_loads_a_pickle_with_the_float64_bank(seed):
    """State pickled before the float32 bank (``theta_`` of shape (K, M, dim)) still loads."""
    from banditroute.policies.linear import LinearTS

    lin = LinearTS(3, ["chat"], (("tokens", 1000.0),), n_draws=64, seed=seed)
    state = dict(lin.__dict__)
    state["theta_"] = state.pop("bank_").transpose(1, 2, 0).astype(np.float64)
    old = LinearTS.__new__(LinearTS)
    old.__setstate__(state)
    assert old.bank_.shape == (lin.dim, 3, 64) and old.bank_.flags.c_contiguous
    ctx, w, mask = {"tokens": 500.0}, np.array([1.0]), np.ones(3, dtype=bool)
    assert np.array_equal(old.distribution(ctx, w, mask), lin.distribution(ctx, w, mask))
