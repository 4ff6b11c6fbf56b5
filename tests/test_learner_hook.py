"""The contextual-learner hook: the router masks, draws, logs and feeds outcomes back."""

import pickle

import numpy as np
import pytest
from scipy import stats

import banditroute as br


class MeanByTenant:
    """A toy contextual learner: softmax over mean reward per (tenant, profile)."""

    def __init__(self, n_profiles):
        self.sums = {}
        self.n_profiles = n_profiles
        self.calls = []

    def distribution(self, context, task_probs, feasible):
        tenant = context.get("tenant", "")
        means = np.array([self.sums.get((tenant, k), (0.0, 0))[0] / max(1, self.sums.get((tenant, k), (0.0, 0))[1])
                          for k in range(self.n_profiles)])
        score = np.where(feasible, np.exp(3 * means), 0.0)
        return score / score.sum()

    def learn(self, context, k, reward, propensity):
        self.calls.append((context, k, reward, propensity))
        total, n = self.sums.get((context.get("tenant", ""), k), (0.0, 0))
        self.sums[(context.get("tenant", ""), k)] = (total + reward, n + 1)

    def add_profile(self, profile):
        self.n_profiles += 1


def test_learner_pmf_is_logged_exactly_and_masks_hold(seed, tmp_path):
    profiles = [br.Profile("a"), br.Profile("b"), br.Profile("eu", allow={"region": ["eu"]})]
    learner = MeanByTenant(3)
    router = br.Router(profiles, learner=learner, exploration=0.0, seed=seed, log_dir=tmp_path)
    rng = np.random.default_rng(seed)
    for _ in range(300):
        d = router.decide({"tenant": "acme", "region": "eu"})
        router.record(d.id, quality=float(rng.random() < {"a": 0.2, "b": 0.8, "eu": 0.5}[d.profile]))
    context, k, reward, propensity = learner.calls[-1]
    assert context == {"tenant": "acme", "region": "eu"} and reward in (0.0, 1.0) and 0 < propensity <= 1
    assert router.policy_version.startswith("meanbytenant-")
    n = 20_000
    decisions = router.decide_batch([{"tenant": "acme", "region": "us"}] * n)  # "eu" masked by its allow-list
    pmf = dict(decisions[0].probabilities)
    assert pmf["eu"] == 0.0 and sum(pmf.values()) == pytest.approx(1.0)
    assert not any(d.profile == "eu" for d in decisions)
    observed = [sum(d.profile == p for d in decisions) for p in ("a", "b")]
    assert stats.chisquare(observed, [pmf["a"] * n, pmf["b"] * n]).pvalue > 1e-3
    assert router.probabilities({"tenant": "acme", "region": "us"}) == pmf


def test_learner_round_trips_with_the_router(seed):
    router = br.Router([br.Profile("a"), br.Profile("b")], learner=MeanByTenant(2), seed=seed)
    d = router.decide({"tenant": "x"})
    clone = pickle.loads(pickle.dumps(router))
    assert clone.record(d.id, quality=1.0) == "applied"
    assert clone.policy.learner.calls[-1][1:] == (router.profiles.index(d.profile), 1.0, d.propensity)


def test_bad_learner_output_is_an_error(seed):
    class Broken(MeanByTenant):
        def distribution(self, context, task_probs, feasible):
            return np.array([0.7, 0.7])

    router = br.Router([br.Profile("a"), br.Profile("b")], learner=Broken(2), seed=seed)
    with pytest.raises(br.ConfigError, match=r"learner\.distribution must return non-negative probabilities"):
        router.decide({})
    with pytest.raises(br.ConfigError, match=r"learner must have distribution\(\), learn\(\) and add_profile\(\)"):
        br.Router([br.Profile("a")], learner=object())
