"""Vowpal Wabbit inside (issue 6): the VW policy behind the Router API and the VW reward model."""

import importlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import banditroute as br
from banditroute.sim import Scenario, Simulator
import ope
from banditroute.policies import vw_binding as vw
from banditroute.policies.vw import VWConfig, VWPolicy

pytestmark = pytest.mark.skipif(not vw.available(), reason="vowpal_wabbit_next has no wheel here")

TASKS = ["chat", "code"]
# truth[profile][task]: small is best for chat, large for code
TRUTH = {"small": {"chat": 0.9, "code": 0.2}, "medium": {"chat": 0.5, "code": 0.5}, "large": {"chat": 0.3, "code": 0.9}}


def make_router(profiles, *, config=None, seed=0, **kwargs):
    policy = VWPolicy(profiles, config=config, seed=seed)
    router = br.Router(profiles, task_types=TASKS, learner=policy, exploration=0.0, seed=seed, **kwargs)
    return router, policy


def play(router, n, rng, contexts=None):
    """n decisions with Bernoulli(TRUTH) quality, learned at once; returns (logged pmf, chosen)."""
    names = router.profiles
    pmfs, chosen = np.zeros((n, len(names))), np.zeros(n, dtype=int)
    for i in range(n):
        ctx = contexts[i] if contexts else {"task_type": TASKS[i % 2], "tenant": "acme"}
        d = router.decide(ctx)
        pmfs[i] = [d.probabilities[p] for p in names]
        chosen[i] = names.index(d.profile)
        router.record(d.id, quality=float(rng.random() < TRUTH[d.profile][ctx["task_type"]]))
    return pmfs, chosen


def test_config_errors_name_field_and_value():
    with pytest.raises(br.ConfigError, match=r"vw.epsilon must be <= 1, got 2.0"):
        VWConfig(exploration="epsilon", epsilon=2.0)
    with pytest.raises(br.ConfigError, match=r"vw.cb_type must be one of mtr, ips, dr, dm, got 'sm'") as err:
        VWConfig(cb_type="sm")
    assert err.value.field == "vw.cb_type"
    with pytest.raises(br.ConfigError, match=r"vw.interactions must combine"):
        VWConfig(interactions=("sx",))
    with pytest.raises(br.ConfigError, match=r"profiles must have unique names"):
        VWPolicy([br.Profile("a"), br.Profile("a")], seed=0)


@pytest.mark.parametrize("exploration", vw.EXPLORATIONS)
def test_every_reduction_routes_learns_and_round_trips(profiles, exploration, seed, tmp_path):
    router, policy = make_router(profiles, config=VWConfig(exploration=exploration), seed=seed)
    pmfs, chosen = play(router, 300, np.random.default_rng(seed))
    np.testing.assert_allclose(pmfs.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(pmfs[np.arange(300), chosen] > 0)
    assert policy.n_learned_ == 300
    ctx = {"task_type": "code", "tenant": "acme", "prompt_tokens": 800}
    before = router.probabilities(ctx)
    # pickled with the router (VW's own serialisation inside), and as a VW model file
    router.save(tmp_path / "router.pkl")
    assert br.Router.load(tmp_path / "router.pkl", log_dir=None).probabilities(ctx) == before
    policy.save_model(tmp_path / "model.vw")
    again = VWPolicy.load_model(tmp_path / "model.vw", profiles)
    assert again.probabilities(ctx) == pytest.approx(before, abs=1e-7)
    assert router.probabilities(ctx) == before  # predicting does not learn


def test_logged_probabilities_match_executed_frequencies(profiles, seed):
    """Frozen policy, one context: chi-square of executed counts against the logged pmf."""
    router, policy = make_router(profiles, config=VWConfig(exploration="epsilon", epsilon=0.3), seed=seed)
    play(router, 400, np.random.default_rng(seed))
    ctx = {"task_type": "chat", "tenant": "acme"}
    n = 20_000
    decisions = [router.decide(ctx) for _ in range(n)]  # no outcome recorded: the pmf stays fixed
    pmf = np.array([decisions[0].probabilities[p] for p in router.profiles])
    assert all(d.probabilities == decisions[0].probabilities for d in decisions)
    counts = np.array([sum(d.profile == p for d in decisions) for p in router.profiles])
    chi2 = float((((counts - n * pmf) ** 2) / (n * pmf)).sum())
    assert chi2 < stats.chi2.ppf(0.999, df=len(pmf) - 1)


def test_logged_probabilities_calibrated_while_learning(profiles, seed):
    """Learning between decisions: per profile, executions minus summed logged propensities is
    a martingale with variance sum p(1-p)."""
    router, _ = make_router(profiles, config=VWConfig(exploration="squarecb"), seed=seed)
    pmfs, chosen = play(router, 3000, np.random.default_rng(seed))
    counts = np.bincount(chosen, minlength=len(profiles))
    z = (counts - pmfs.sum(axis=0)) / np.sqrt((pmfs * (1 - pmfs)).sum(axis=0))
    assert np.all(np.abs(z) < stats.norm.ppf(1 - 0.001 / (2 * len(profiles))))


def test_masked_profiles_get_zero_and_are_never_executed(seed):
    profiles = [br.Profile("small", cost_usd=0.0004, latency_ms=400),
                br.Profile("medium", cost_usd=0.002, latency_ms=900, allow={"tenant": ["acme"]}),
                br.Profile("large", cost_usd=0.012, latency_ms=2500)]
    router, _ = make_router(profiles, config=VWConfig(exploration="epsilon", epsilon=0.5), seed=seed,
                            budget=br.Budget(max_cost_usd=0.01))
    rng = np.random.default_rng(seed)
    ctxs = [{"task_type": TASKS[i % 2], "tenant": ["acme", "globex"][int(rng.integers(2))]} for i in range(600)]
    pmfs, chosen = play(router, 600, rng, contexts=ctxs)
    globex = np.array([c["tenant"] == "globex" for c in ctxs])
    assert np.all(pmfs[:, 2] == 0) and not np.any(chosen == 2)                      # over budget
    assert np.all(pmfs[globex, 1] == 0) and not np.any(chosen[globex] == 1)          # allow-list
    np.testing.assert_allclose(pmfs.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(pmfs[~globex, 1] > 0)


def test_squarecb_learns_the_best_profile_per_task(profiles, seed):
    router, _ = make_router(profiles, seed=seed)
    play(router, 3000, np.random.default_rng(seed))
    assert router.probabilities({"task_type": "chat", "tenant": "acme"})["small"] > 0.5
    assert router.probabilities({"task_type": "code", "tenant": "acme"})["large"] > 0.5


def test_added_profile_gets_exploratory_traffic(profiles, seed):
    router, policy = make_router(profiles[:2], seed=seed)
    play(router, 500, np.random.default_rng(seed))
    router.add_profile(profiles[2])
    assert policy.profiles == router.profiles
    assert router.probabilities({"task_type": "code"})["large"] > 0


def test_candidate_for_shadow_and_ope_without_learning(profiles, seed):
    policy = VWPolicy(profiles, config=VWConfig(exploration="epsilon", epsilon=0.2), seed=seed)
    rng = np.random.default_rng(seed)
    for i in range(600):
        task = TASKS[i % 2]
        k = int(rng.integers(3))
        policy.learn({"task_type": task}, k, float(rng.random() < TRUTH[profiles[k].name][task]), 1 / 3)
    state = policy.model_bytes()
    import polars as pl

    frame = pl.DataFrame({"task_type": ["chat", "code", "code"], "tenant": ["acme", None, "x"]})
    dist = policy.action_distribution(frame, ["large", "small", "medium", "unknown"])
    assert dist.shape == (3, 4) and np.allclose(dist.sum(axis=1), 1.0) and np.all(dist[:, 3] == 0)
    assert dist[0, 1] == pytest.approx(0.8 + 0.2 / 3, abs=1e-6) and dist[1, 0] == pytest.approx(0.8 + 0.2 / 3, abs=1e-6)
    # nothing learned: a copy from before the predictions predicts the same (VW's byte image
    # differs only in its example counters)
    before = pickle.loads(pickle.dumps(policy))
    before.__setstate__({**before.__getstate__(), "model": state})
    np.testing.assert_array_equal(before.action_distribution(frame, policy.profiles),
                                  policy.action_distribution(frame, policy.profiles))
    assert policy.n_learned_ == 600
    with pytest.raises(br.ConfigError, match="must include every profile the policy can play"):
        policy.action_distribution([{"task_type": "chat"}], ["small"])
    router = br.Router(profiles, task_types=TASKS, seed=seed)
    router.add_shadow("vw", policy)
    d = router.decide({"task_type": "chat"})
    assert d.profile in router.profiles


def test_learn_refuses_bad_outcomes(profiles):
    policy = VWPolicy(profiles, seed=0)
    with pytest.raises(br.InvalidOutcomeError, match=r"propensity must be > 0, got 0.0"):
        policy.learn({}, 0, 1.0, 0.0)
    with pytest.raises(br.InvalidOutcomeError, match=r"k must be a profile index in \[0, 3\), got 3"):
        policy.learn({}, 3, 1.0, 0.5)


def test_missing_binding_raises_a_clear_error(monkeypatch, profiles):
    real = importlib.import_module

    def fake(name, *args):
        if name == "vowpal_wabbit_next":
            raise ImportError("No module named 'vowpal_wabbit_next'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert not vw.available()
    with pytest.raises(vw.VWUnavailableError, match="vowpal_wabbit_next is needed .* pip install vowpal-wabbit-next"):
        VWPolicy(profiles, seed=0)
    from ope.vw_reward import VWRegressor

    with pytest.raises(ope.InvalidConfigError, match="needs vowpal_wabbit_next"):
        VWRegressor().fit(np.zeros((2, 1)), np.zeros(2))


def test_importing_does_not_need_the_binding():
    code = ("import sys, banditroute, banditroute.policies.vw, banditroute.logs.dsjson, ope.dsjson, ope.vw_reward; "
            "assert 'vowpal_wabbit_next' not in sys.modules, 'imported VW'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def simulator_feedback():
    """Logged traffic of a Thompson router (exploration 0.1) on the embedded simulator."""
    sim = Simulator(Scenario.default(n_requests=4000).stationary(), seed=3)
    profiles = [br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms) for p in sim.scenario.profiles]
    router = br.Router(profiles, task_types=list(sim.task_types), exploration=0.1,
                       objective=br.Objective(quality=1.0, cost=10.0, latency=2e-5), seed=3)
    batch = sim.next_requests(4000)
    ctxs = batch.contexts()
    decisions = router.decide_batch(ctxs)
    out = sim.sample_outcomes(batch, np.array([router.profiles.index(d.profile) for d in decisions]))
    import polars as pl

    frame = pl.DataFrame({"task_type": [c["task_type"] for c in ctxs], "prompt_tokens": batch.prompt_tokens,
                          "tenant": [c["tenant"] for c in ctxs]})
    reward = out.quality - 10.0 * out.cost_usd - 2e-5 * out.latency_ms
    return ope.LoggedFeedback(actions=out.profile, rewards=reward,
                              propensities=[d.propensity for d in decisions], n_actions=len(profiles),
                              action_names=router.profiles, contexts=frame)


def test_dr_with_vw_reward_model_agrees_with_sklearn(simulator_feedback, seed):
    from sklearn.ensemble import HistGradientBoostingRegressor

    from ope.vw_reward import VWRegressor

    fb = simulator_feedback
    target = ope.one_hot(np.zeros(fb.n_rounds, dtype=int), fb.n_actions)  # always "small"
    skl = ope.DR(reward_model=HistGradientBoostingRegressor(max_iter=100), n_folds=3).estimate(fb, target, seed=seed)
    vwe = ope.DR(reward_model=VWRegressor(passes=3), n_folds=3).estimate(fb, target, seed=seed)
    assert skl.ci_low <= vwe.value <= skl.ci_high
    assert vwe.ci_low <= skl.value <= vwe.ci_high


def test_vw_regressor_pickles_and_clones():
    from sklearn.base import clone

    from ope.vw_reward import VWRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.0, -2.0, 0.5])
    model = VWRegressor(loss="squared", passes=5, random_state=0).fit(x, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(x[:5]), model.predict(x[:5]))
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(ope.InvalidConfigError, match="loss must be 'auto', 'squared' or 'logistic', got 'hinge'"):
        VWRegressor(loss="hinge").fit(x, y)
