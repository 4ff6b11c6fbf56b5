"""The deciding core: surviving mutants of ``router.py``, ``policy.py`` and ``beliefs.py``
(TESTING.md), through the public API.

Covered promises: the reliability floor's confidence setting and its strict inequalities;
the objective's quality weight; the bank is redrawn only where evidence changed; a learner's
policy version tracks the settings; batch decisions with a learner learn from the right
profile and propensity; batch decisions with a task-type posterior log that posterior; the
decision-time ceiling; the pending window's exact edge; the policy template's defaults.
"""

import time

import numpy as np
import polars as pl
import pytest
from scipy import stats

import banditroute as br


class UniformLearner:
    """A contextual learner that plays uniformly over the feasible profiles and remembers
    every ``learn`` call."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls = []

    def distribution(self, context, task_probs, feasible):
        if self.delay_s:
            time.sleep(self.delay_s)
        return feasible / feasible.sum()

    def learn(self, context, k, reward, propensity):
        self.calls.append((context, k, reward, propensity))

    def add_profile(self, profile):
        pass


class FixedDraws(br.BankPolicy):
    """The template's one hook, with a fixed scenario bank of shape (n_scenarios, n_profiles)."""

    def __init__(self, draws, **kwargs):
        super().__init__(**kwargs)
        self.draws = np.asarray(draws, dtype=np.float64)

    def quality_draws(self, task):
        return self.draws

    @property
    def version(self):
        return 0


# -- the reliability floor ----------------------------------------------------------------------

def test_floor_confidence_setting_decides_the_exclusion(seed):
    """'weak' ~ Beta(1, 1), so P(q < 0.8) = 0.8: the bank's share of draws below the floor is
    0.8 +- 0.0125 (binomial sd, M = 1024). It is excluded at floor_confidence 0.6 and kept at
    0.9; 'strong' ~ Beta(50, 1) has P(q < 0.8) = 0.8**50 ~ 1e-5 and is always kept."""
    profiles = [br.Profile("weak"), br.Profile("strong", prior=br.BetaPrior(alpha=50.0, beta=1.0))]
    strict = br.Router(profiles, reliability_floor=0.8, floor_confidence=0.6, n_draws=1024, seed=seed)
    d = strict.decide({})
    assert list(d.excluded) == ["weak"]
    assert "below floor 0.8" in d.excluded["weak"] and "probability > 0.6" in d.excluded["weak"]
    assert d.probabilities["weak"] == 0.0 and d.profile == "strong"
    lenient = br.Router(profiles, reliability_floor=0.8, floor_confidence=0.9, n_draws=1024, seed=seed)
    d = lenient.decide({})
    assert dict(d.excluded) == {}
    assert d.probabilities["weak"] > 0.0


def test_floor_excludes_only_when_the_share_below_strictly_exceeds_the_confidence(seed):
    """With M = 4 draws of Beta(1, 1) and floor 0.75, the number of draws below the floor is
    Binomial(4, 0.75); at floor_confidence 0.75 the profile is excluded only when all 4 are
    below (share 1 > 0.75, probability 0.75**4 = 0.316), not when exactly 3 are (share 0.75,
    which is not above 0.75; 'at least 3' would have probability 0.738). Over independent
    routers the exclusion rate must match 0.316 within 4.5 binomial sd."""
    n = 300
    profiles = [br.Profile("weak"), br.Profile("strong", prior=br.BetaPrior(alpha=1000.0, beta=1.0))]
    excluded = 0
    for i in range(n):
        router = br.Router(profiles, reliability_floor=0.75, floor_confidence=0.75, n_draws=4,
                           seed=seed * 10_000 + i)
        d = router.decide({})
        assert "strong" not in d.excluded
        excluded += "weak" in d.excluded
    p = stats.binom.sf(3, 4, 0.75)  # P(X > 3) = P(X = 4)
    assert p == pytest.approx(0.75 ** 4)
    assert abs(excluded / n - p) < 4.5 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("edge_prior", [(1.0, 1.0), (3.0, 3.0), (2.5, 2.5)])
def test_reliability_exactly_at_the_floor_is_not_below_it(edge_prior):
    """The greedy policy sees one scenario, the posterior mean: Beta(a, a) has mean 0.5 exactly,
    which is not below a floor of 0.5; Beta(1, 2) (mean 1/3) is below it."""
    good = br.Profile("good", prior=br.BetaPrior(alpha=9.0, beta=1.0))
    at_floor = br.Profile("edge", prior=br.BetaPrior(alpha=edge_prior[0], beta=edge_prior[1]))
    router = br.Router([at_floor, good], policy="greedy", reliability_floor=0.5, exploration=0.2, seed=0)
    d = router.decide({})
    assert dict(d.excluded) == {}
    assert d.probabilities["edge"] == pytest.approx(0.1)  # the exploration floor 0.2 / 2
    below = br.Profile("edge", prior=br.BetaPrior(alpha=1.0, beta=2.0))
    router = br.Router([below, good], policy="greedy", reliability_floor=0.5, exploration=0.2, seed=0)
    d = router.decide({})
    assert list(d.excluded) == ["edge"] and "below floor 0.5" in d.excluded["edge"]
    assert d.probabilities == {"edge": 0.0, "good": 1.0}


@pytest.mark.parametrize("policy", ["thompson", "greedy"])
def test_set_evidence_changes_the_next_decisions_at_once(policy, seed):
    """Replacing the evidence (as the shared-state merge across replicas does) must change the
    distribution of the very next decision, as it would in a router built with that evidence.
    'a' gets 20 failures and 'b' 20 successes: Beta(1, 21) vs Beta(21, 1), P(a wins) < 1e-10.

    Fails for policy='greedy' (a real bug, left unfixed here): GreedyPolicy.version is the
    belief's ``n_updates_``, which ``set_evidence`` does not change, so the router keeps serving
    the distribution it cached before the merge until the next local outcome."""
    profiles = [br.Profile("a"), br.Profile("b")]
    router = br.Router(profiles, policy=policy, exploration=0.0, seed=seed)
    router.probabilities({})  # a distribution computed (and cached) before the merge
    router.set_evidence(np.array([[0.0], [20.0]]), np.array([[20.0], [0.0]]))
    assert router.probabilities({}) == {"a": 0.0, "b": 1.0}
    assert router.decide({}).profile == "b"


# -- the objective ----------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["thompson", "greedy"])
def test_quality_weight_multiplies_reliability_against_cost(policy, seed):
    """u = w_q * q - w_c * cost. With w_q = 2 and w_c = 1: 'pricey' (q ~ 0.9, cost 0.5) has
    u ~ 1.3 and 'cheap' (q ~ 0.1, cost 0) u ~ 0.2, so 'pricey' wins every scenario (the
    posteriors Beta(900, 100) and Beta(100, 900) have sd 0.0095, the gap is > 100 sd). Were
    the weight to divide instead, 'cheap' would win (0.05 vs -0.05). The costs are the configured
    ones (cost learning off: its prior uncertainty about the cost would blur the trade-off)."""
    profiles = [br.Profile("pricey", cost_usd=0.5, prior=br.BetaPrior(alpha=900.0, beta=100.0)),
                br.Profile("cheap", cost_usd=0.0, prior=br.BetaPrior(alpha=100.0, beta=900.0))]
    fixed = br.CostLearning(enabled=False)
    router = br.Router(profiles, objective=br.Objective(quality=2.0, cost=1.0), policy=policy,
                       exploration=0.0, seed=seed, cost_learning=fixed)
    assert router.probabilities({}) == {"pricey": 1.0, "cheap": 0.0}
    # and the trade-off turns with the weights: at w_q = 0.5 the 0.4 quality gap < the 0.5 cost gap
    cheap_wins = br.Router(profiles, objective=br.Objective(quality=0.5, cost=1.0), policy=policy,
                           exploration=0.0, seed=seed, cost_learning=fixed)
    assert cheap_wins.probabilities({}) == {"pricey": 0.0, "cheap": 1.0}


# -- the policy template ------------------------------------------------------------------------

def test_bank_policy_defaults_to_no_exploration_and_a_boolean_below_mask():
    """A template subclass built with defaults: no exploration floor (the pmf is the share of
    scenarios won), no reliability floor, and ``below`` a boolean mask over the profiles."""
    names = np.array(["a", "b", "c"])
    draws = [[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.2, 0.7, 0.1], [0.9, 0.2, 0.3]]
    pmf, below = FixedDraws(draws).distribution(0, np.array([True, True, True]), np.zeros(3), 1.0)
    assert pmf.tolist() == [0.75, 0.25, 0.0]
    assert names[below].tolist() == []  # usable as a mask: selects nobody
    assert below.shape == (3,) and below.dtype == bool and not below.any()
    # one feasible profile: it gets everything; the mask is still boolean
    pmf, below = FixedDraws(draws).distribution(0, np.array([False, True, False]), np.zeros(3), 1.0)
    assert pmf.tolist() == [0.0, 1.0, 0.0]
    assert names[below].tolist() == []
    # the floor marks profiles below it, as a mask over the same profiles
    pmf, below = FixedDraws(draws, reliability_floor=0.25, floor_confidence=0.6).distribution(
        0, np.array([True, True, True]), np.zeros(3), 1.0)
    assert names[below].tolist() == ["c"]  # c is below 0.25 in 3 of 4 scenarios (0.75 > 0.6)
    assert pmf.tolist() == [0.75, 0.25, 0.0]


# -- the draw bank ------------------------------------------------------------------------------

def test_outcomes_redraw_only_their_own_cells_of_the_bank(seed):
    """Evidence for 'code' redraws the 'code' cells of the bank; the 'chat' draws stay as they
    were, so the 'chat' distribution is unchanged to the last bit (a redraw of its three cells
    would reproduce the same multinomial counts with probability ~1e-3, each time)."""
    profiles = [br.Profile("a"), br.Profile("b"), br.Profile("c")]
    router = br.Router(profiles, task_types=["chat", "code"], n_draws=1024, refresh_every=1,
                       exploration=0.0, seed=seed)
    chat = router.probabilities({"task_type": "chat"})
    code = [router.probabilities({"task_type": "code"})]
    for quality in (1.0, 0.0, 1.0, 1.0, 0.0):
        router.record(router.decide({"task_type": "code"}).id, quality=quality)
        assert router.probabilities({"task_type": "chat"}) == chat
        code.append(router.probabilities({"task_type": "code"}))
    assert any(after != before for before, after in zip(code, code[1:]))  # the bank was refreshed
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev[:, 0].sum() == 0 and beta_ev[:, 0].sum() == 0
    assert alpha_ev[:, 1].sum() == 3 and beta_ev[:, 1].sum() == 2


# -- learners -------------------------------------------------------------------------------------

def test_learner_policy_version_names_the_learner_and_tracks_the_settings():
    profiles = [br.Profile("a"), br.Profile("b")]
    v1 = br.Router(profiles, learner=UniformLearner(), exploration=0.1, seed=0).policy_version
    v1_again = br.Router(profiles, learner=UniformLearner(), exploration=0.1, seed=1).policy_version
    v2 = br.Router(profiles, learner=UniformLearner(), exploration=0.2, seed=0).policy_version
    assert v1.startswith("uniformlearner-") and v2.startswith("uniformlearner-")
    assert v1 == v1_again  # the seed does not shape the policy
    assert v1 != v2        # the exploration floor does
    # the part after the learner's name is the settings' fingerprint, as without a learner
    plain1 = br.Router(profiles, exploration=0.1, seed=0).policy_version
    plain2 = br.Router(profiles, exploration=0.2, seed=0).policy_version
    assert plain1 != plain2 and plain1.endswith(v1.split("-", 1)[1]) and plain2.endswith(v2.split("-", 1)[1])
    pinned = br.Router(profiles, learner=UniformLearner(), policy_version="v7", seed=0)
    assert pinned.policy_version == "v7" and pinned.decide({}).policy_version == "v7"


def test_batch_decisions_teach_a_learner_the_chosen_profile_and_its_propensity():
    profiles = [br.Profile("a", cost_usd=0.01), br.Profile("b", cost_usd=0.02), br.Profile("c", cost_usd=0.03)]
    learner = UniformLearner()
    router = br.Router(profiles, task_types=["chat", "code"], learner=learner,
                       objective=br.Objective(quality=1.0, cost=10.0), exploration=0.0, seed=0)
    contexts = [{"task_type": ["chat", "code"][i % 2], "i": i} for i in range(30)]
    decisions = router.decide_batch(contexts)
    assert {d.profile for d in decisions} == {"a", "b", "c"}
    for d, q in zip(decisions, [1.0, 0.0, 0.5] * 10):
        assert router.record(d.id, quality=q) == "applied"
    assert len(learner.calls) == 30
    for (context, k, reward, propensity), d, c, q in zip(learner.calls, decisions, contexts,
                                                        [1.0, 0.0, 0.5] * 10):
        assert context == c
        assert router.profiles[k] == d.profile
        assert propensity == d.propensity == pytest.approx(1 / 3)
        cost = {"a": 0.01, "b": 0.02, "c": 0.03}[d.profile]
        assert reward == pytest.approx(q - 10.0 * cost)
    # the Beta beliefs learn the same outcomes, in the decisions' own task types and profiles
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev.sum() + beta_ev.sum() == pytest.approx(30)
    for j, task in enumerate(["chat", "code"]):
        for i, name in enumerate(router.profiles):
            n = sum(1 for d, c in zip(decisions, contexts) if d.profile == name and c["task_type"] == task)
            assert alpha_ev[i, j] + beta_ev[i, j] == pytest.approx(n)


def test_decision_slower_than_the_ceiling_falls_back_and_says_how_long_it_took():
    """The learner sleeps 20 ms while scoring (time.sleep waits at least that long), well over
    the 5 ms ceiling: the fallback is played and the reason reports >= 20 ms."""
    profiles = [br.Profile("a"), br.Profile("b")]
    router = br.Router(profiles, learner=UniformLearner(delay_s=0.02), decision_timeout_ms=5.0,
                       fallback="b", seed=0)
    for d in [router.decide({}), *router.decide_batch([{}, {}])]:
        assert d.profile == "b" and d.propensity == 1.0
        assert d.probabilities == {"a": 0.0, "b": 1.0}
        prefix, _, rest = d.fallback_reason.partition(" ms > decision_timeout_ms ")
        assert prefix.startswith("decision took ") and rest == "5"
        assert float(prefix.removeprefix("decision took ")) >= 20.0


# -- batch decisions with a task-type posterior -----------------------------------------------------

def test_batch_with_task_posteriors_reports_and_logs_each_posterior(tmp_path):
    profiles = [br.Profile("a"), br.Profile("b")]
    router = br.Router(profiles, task_types=["chat", "code"], log_dir=tmp_path, seed=0)
    contexts = [{"task_probs": {"chat": 0.25, "code": 0.75}}, {"task_probs": {"chat": 0.5, "code": 0.5}},
                {"task_type": "code"}]
    decisions = router.decide_batch(contexts)
    assert [dict(d.task_probs) for d in decisions] == [{"chat": 0.25, "code": 0.75}, {"chat": 0.5, "code": 0.5},
                                                       {"chat": 0.0, "code": 1.0}]
    router.flush()
    logged = (br.scan_table(tmp_path, "decisions").select("decision_id", "task_types", "task_probs").collect()
              .sort("decision_id"))
    by_id = {row["decision_id"]: row for row in logged.iter_rows(named=True)}
    assert set(by_id) == {d.id for d in decisions}
    for d in decisions:
        row = by_id[d.id]
        assert row["task_types"] == ["chat", "code"]
        assert row["task_probs"] == [d.task_probs["chat"], d.task_probs["code"]]


# -- the pending window ----------------------------------------------------------------------------

def test_pending_window_edge_is_exact_to_the_microsecond(monkeypatch):
    """A decision waits exactly ``wait_window_s`` for its outcome: at the horizon it is still
    pending, one microsecond later it has left and its outcome is 'late' (teaches nothing).
    The clock is faked, so the edge is exact."""
    now_us = [1_700_000_000_000_000]
    monkeypatch.setattr(time, "time_ns", lambda: now_us[0] * 1000)
    window_us = 1000 * 1_000_000
    router = br.Router([br.Profile("a"), br.Profile("b")], wait_window_s=1000.0, seed=0)
    first = router.decide({})
    now_us[0] += 1
    second = router.decide({})
    now_us[0] += window_us - 1  # exactly the window after the first decision
    router.decide({})  # issuing a decision evicts what left the window
    assert router.record(first.id, quality=1.0) == "applied"
    now_us[0] += 2  # the window + 1 us after the second decision
    router.decide({})
    assert router.record(second.id, quality=1.0) == "late"
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev.sum() == 1 and beta_ev.sum() == 0  # only the first outcome was applied
