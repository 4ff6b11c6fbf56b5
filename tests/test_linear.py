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
        cost = router.config.profiles[router.profiles.index(d.profile)].cost_usd
        rewards.append(OBJECTIVE.reward(quality=q, cost_usd=cost, latency_ms=0.0))
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
    message = r"context\.prompt_tokens must be a finite number \(a contextual feature\), got 'long'"
    with pytest.raises(br.InvalidRequestError, match=message):
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


def scenario_shares(lin, x, feasible):
    """The pmf recomputed from the refreshed posterior: ``u[k, m] = x . mean_k + spread_k
    sqrt(x' cov_k x) z[k, m]`` in float32 as one batched product ``[mean, sd] @ [1, z]``, each
    scenario won by its first maximiser among the feasible profiles."""
    means = lin.mean_ @ x
    sd = lin.spread_ * np.sqrt(np.einsum("i,kij,j->k", x, lin.cov_, x))
    coef = np.stack([means, sd], axis=1).astype(np.float32)[:, None, :]  # (K, 1, 2)
    ones_z = np.stack([np.ones_like(lin._z), lin._z], axis=1)  # (K, 2, M)
    u = np.matmul(coef, ones_z)[:, 0, :]
    u[~feasible] = -np.inf
    return np.bincount(u.argmax(axis=0), minlength=len(feasible)) / lin.n_draws


def test_linear_pmf_is_the_share_of_the_scenarios_won(seed):
    """The float32 scenarios: the pmf is exactly the share of the M scenarios each profile wins
    (ties to the first maximiser, as argmax), with infeasible profiles masked out."""
    from banditroute.policies.linear import LinearTS

    rng = np.random.default_rng(seed)
    lin = LinearTS(4, ["chat", "code"], (("tokens", 1000.0), ("turns", 10.0)), n_draws=512, posterior_scale=1.0,
                   seed=seed)
    for _ in range(300):
        ctx = {"tokens": float(rng.integers(10, 4000)), "turns": float(rng.integers(1, 20))}
        k = int(rng.integers(4))
        lin.learn_task(ctx, rng.dirichlet(np.ones(2)), k, float(rng.random() < 0.5 + 0.02 * k), 0.25)
    lin.refresh()
    assert lin._z.shape == (4, 512) and lin._z.dtype == np.float32
    ctx, w = {"tokens": 1200.0, "turns": 3.0}, np.array([0.3, 0.7])
    x = lin.featurize(ctx, w)
    mixed = 0
    for feasible in (np.ones(4, dtype=bool), np.array([True, False, True, False]), np.array([False, True, True, True]),
                     np.array([True, True, False, False]), np.array([False, False, True, True])):
        expected = scenario_shares(lin, x, feasible)
        pmf = lin.distribution(ctx, w, feasible)
        assert np.array_equal(pmf, expected) and pmf[~feasible].sum() == 0.0
        mixed += (pmf > 0).sum() >= 2
    assert mixed >= 2  # the test has teeth: the scenarios are shared between profiles
    # profiles 1 and 2 made identical (statistics, posterior and scenario normals): they tie in
    # every scenario, and 1, the first maximiser, wins them
    for name in ("A_", "b_", "rr_", "n_", "mean_", "cov_", "spread_", "_z"):
        getattr(lin, name)[2] = getattr(lin, name)[1]
    lin._ones_z = None  # derived from _z, which was edited in place
    pmf = lin.distribution(ctx, w, np.ones(4, dtype=bool))
    assert pmf[2] == 0.0 and pmf[1] > 0 and pmf.sum() == pytest.approx(1.0)
    assert np.array_equal(pmf, scenario_shares(lin, x, np.ones(4, dtype=bool)))


@pytest.mark.parametrize("old", ["bank_", "theta_"])
def test_linear_refuses_a_pickle_of_the_old_bank(seed, old):
    """State pickled by the old LinearTS (a bank of coefficient draws, ``bank_`` or ``theta_``)
    cannot be read as the new sufficient statistics: loading it is a ConfigError that says so
    and how to rebuild the policy (replay the log), for the policy and for a pickled router."""
    from banditroute.policies.linear import LinearTS

    lin = LinearTS(3, ["chat"], (("tokens", 1000.0),), n_draws=64, seed=seed)
    ctx, w, mask = {"tokens": 500.0}, np.array([1.0]), np.ones(3, dtype=bool)
    clone = pickle.loads(pickle.dumps(lin))  # a pickle of the current model loads
    assert np.array_equal(clone.distribution(ctx, w, mask), lin.distribution(ctx, w, mask))
    lin.__dict__[old] = np.zeros((2, 3, 64), dtype=np.float32)
    message = (r"^policy was saved by an older banditroute \(a bank of coefficient draws\): "
               r"rebuild it by replaying the log")
    with pytest.raises(br.ConfigError, match=message) as info:
        pickle.loads(pickle.dumps(lin))
    assert info.value.field == "policy"
    router = make("linear", seed)
    router.policy.__dict__[old] = np.zeros((2, 1024, 2))
    with pytest.raises(br.ConfigError, match=message):
        pickle.loads(pickle.dumps(router))


def test_linear_state_arrays_round_trip_continues_identically(seed):
    """A policy restored from :meth:`state_arrays` (into one built with another seed) gives the
    same pmfs, bit for bit, and continues exactly as the original: the same statistics and
    posterior after more outcomes (a pending refresh and its counter, the exact re-inversion of
    the precision due after max(64, dim) rank-one updates), the same scenario normals for a
    profile added later (the generator's state)."""
    from banditroute.policies.linear import LinearTS

    rng = np.random.default_rng(seed)
    feats = (("tokens", 1000.0),)

    def outcome(policy, i):
        tokens = float(300 * (i % 13))
        reward = float((i % 3 == 0) == (tokens < 2000)) + 0.1 * (i % 7)
        policy.learn_task({"tokens": tokens}, np.array([0.4, 0.6]), i % 3, reward, 0.3)

    lin = LinearTS(3, ["chat", "code"], feats, n_draws=256, refresh_every=7, seed=seed)
    for i in range(45):  # 45 = 6 * 7 + 3: three outcomes wait for the next refresh
        outcome(lin, i)
    arrays = lin.state_arrays()
    assert set(arrays) >= {"A", "b", "rr", "n", "z", "mean", "cov", "spread", "dirty", "counters", "rng"}
    restored = LinearTS(3, ["chat", "code"], feats, n_draws=256, refresh_every=7, seed=seed + 1)
    restored.load_state_arrays(arrays)
    contexts = [({"tokens": float(t)}, rng.dirichlet(np.ones(2))) for t in (0, 900, 2500, 6000)]
    mask = np.ones(3, dtype=bool)

    def pmfs(policy):
        return np.array([policy.distribution(c, w, mask) for c, w in contexts])

    assert np.array_equal(pmfs(restored), pmfs(lin))
    for i in range(45, 260):  # 260 / 3 outcomes per profile: past 64 updates of its precision
        outcome(lin, i)
        outcome(restored, i)
        assert np.array_equal(pmfs(restored), pmfs(lin)), i
    lin.add_profile()
    restored.add_profile()
    a, b = lin.state_arrays(), restored.state_arrays()
    assert {k: v.tobytes() for k, v in a.items()} == {k: v.tobytes() for k, v in b.items()}
    assert not np.array_equal(a["mean"][:3], arrays["mean"])  # the test has teeth: it learned on
