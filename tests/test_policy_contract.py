"""The policy contract: every Policy class in ``banditroute.policies`` passes the same checks.

Policies are discovered, not listed: every concrete subclass of
:class:`~banditroute.policies.base.Policy` defined in ``banditroute.policies`` is run through
every check below through a *builder* (a function that builds a Router using it). A registered
policy (``class P(Policy, name="p")``) gets a builder automatically (``Router(policy="p")``);
a policy handed to the router as an object needs an entry in ``EXPLICIT_BUILDERS``, and
:func:`test_every_policy_class_has_a_builder` fails until it has one. Adding a policy therefore
adds it to the contract.

Statistical checks use the sweepable ``seed`` fixture (``BR_TEST_SEED=7 pytest ...``): each
asserts a property at a stated false-alarm rate, never a pinned draw.
"""

from __future__ import annotations

import inspect
import math
import pickle
import sys

import numpy as np
import pytest
from scipy import stats

import banditroute as br
import banditroute.policies  # imports, and so registers, every policy module
from banditroute.policies.base import Policy, registered
from banditroute.policies.external import ExternalPolicy
from banditroute.policies.vw import VWPolicy

PACKAGE = "banditroute.policies"
TASKS = ["chat", "code"]
EPS = 0.1  # the router's exploration floor in every check
ALPHA = 1e-3  # false-alarm rate of each statistical test function (Bonferroni-split inside it)
FEATURES = {"x": 1.0}  # numeric context field (LinearTS needs one; the others ignore it)
BUDGET = br.Budget(max_cost_usd=0.01)  # excludes "large" for every request
RATES = {"small": 0.3, "medium": 0.6, "eu": 0.8, "large": 0.9}  # Bernoulli quality per profile


def make_profiles() -> list[br.Profile]:
    """Four profiles: two plain, one allow-listed (region eu), one over the budget."""
    return [br.Profile("small", cost_usd=0.0004, latency_ms=400),
            br.Profile("medium", cost_usd=0.002, latency_ms=900),
            br.Profile("eu", cost_usd=0.003, latency_ms=700, allow={"region": ["eu"]}),
            br.Profile("large", cost_usd=0.012, latency_ms=2500)]


#: contexts covering both task types, the allow-list passing and failing, and the feature
PROBES = [{"task_type": "chat", "region": "eu", "x": 0.5},
          {"task_type": "code", "region": "eu", "x": 2.0},
          {"task_type": "chat", "region": "us", "x": 1.0},
          {"task_type": "code", "x": 0.0}]


# -- test-local learner for ExternalPolicy (module level, so that routers holding it pickle) ------
class IPSLearner:
    """A deterministic duck-typed contextual learner (the ``learner=`` protocol): softmax of the
    inverse-propensity estimate of each profile's mean reward per (task type, region), so that
    it reads the context, the reward and the propensity of every outcome."""

    def __init__(self, n_profiles: int):
        self.n_profiles = n_profiles
        self.ips: dict = {}  # (task type, region, profile) -> sum of reward / propensity
        self.n: dict = {}  # (task type, region) -> outcomes

    def distribution(self, context, task_probs, feasible):
        key = (context.get("task_type"), context.get("region"))
        n = max(1, self.n.get(key, 0))
        values = np.array([self.ips.get((*key, k), 0.0) / n for k in range(self.n_profiles)])
        score = np.where(feasible, np.exp(12.0 * np.minimum(values, 2.0)), 0.0)
        return score / score.sum()

    def learn(self, context, k, reward, propensity):
        key = (context.get("task_type"), context.get("region"))
        self.n[key] = self.n.get(key, 0) + 1
        self.ips[(*key, k)] = self.ips.get((*key, k), 0.0) + reward / propensity

    def add_profile(self, profile):
        self.n_profiles += 1


# -- builders and discovery -------------------------------------------------------------------
def _router(profiles, *, seed, log_dir=None, **kwargs) -> br.Router:
    return br.Router(profiles, task_types=TASKS, budget=BUDGET, exploration=EPS, features=FEATURES,
                     seed=seed, log_dir=log_dir, **kwargs)


def _by_name(name: str):
    def build(profiles, *, seed, log_dir=None):
        return _router(profiles, seed=seed, log_dir=log_dir, policy=name)
    return build


def _build_vw(profiles, *, seed, log_dir=None):
    return _router(profiles, seed=seed, log_dir=log_dir, learner=VWPolicy(profiles, seed=seed))


def _build_external(profiles, *, seed, log_dir=None):
    return _router(profiles, seed=seed, log_dir=log_dir, learner=IPSLearner(len(profiles)))


#: builders of the policies that are not registered by name (handed to the router as objects)
EXPLICIT_BUILDERS = {VWPolicy: _build_vw, ExternalPolicy: _build_external}


def policy_classes() -> list[type[Policy]]:
    """Every concrete Policy subclass defined (at module level) in ``banditroute.policies``.

    A class must be an attribute of its own module: this leaves out classes defined in doctests
    (which run with a copy of the module's globals) and in tests."""
    found, todo = [], list(Policy.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        module = sys.modules.get(cls.__module__)
        if (not inspect.isabstract(cls) and cls.__module__.startswith(PACKAGE + ".")
                and getattr(module, cls.__qualname__, None) is cls and cls not in found):
            found.append(cls)
    return sorted(found, key=lambda c: (c.__module__, c.__qualname__))


def builders() -> dict[type[Policy], object]:
    """``{class: builder}`` for every discovered class that has one."""
    out = {}
    for cls in policy_classes():
        if cls in EXPLICIT_BUILDERS:
            out[cls] = EXPLICIT_BUILDERS[cls]
        elif cls.name is not None:
            out[cls] = _by_name(cls.name)
    return out


BUILDERS = builders()
by_policy = pytest.mark.parametrize("cls", list(BUILDERS), ids=lambda c: c.__name__)


def build(cls, seed, log_dir=None) -> br.Router:
    return BUILDERS[cls](make_profiles(), seed=seed, log_dir=log_dir)


def train(router: br.Router, rng: np.random.Generator, n: int) -> int:
    """Decide on the probe contexts in turn and record Bernoulli(RATES[profile]) quality;
    return the number of outcomes applied."""
    applied = 0
    for i in range(n):
        d = router.decide(PROBES[i % len(PROBES)])
        applied += router.record(d.id, quality=float(rng.random() < RATES[d.profile])) == "applied"
    return applied


def feasible_names(context) -> set[str]:
    names = {"small", "medium"}  # "large" is over the budget
    if context.get("region") == "eu":
        names.add("eu")
    return names


def assert_close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for name, value in a.items():
        assert value == b[name] or abs(value - b[name]) <= 1e-12, f"{what}: {name} {value!r} != {b[name]!r}"


# -- discovery is complete ---------------------------------------------------------------------
def test_every_policy_class_has_a_builder():
    """Every concrete Policy subclass in banditroute.policies is covered by the contract: it is
    registered by name or has an explicit builder (a new policy cannot escape these checks)."""
    classes = policy_classes()
    assert {c.__name__ for c in classes} >= {"ThompsonPolicy", "GreedyPolicy", "LinearTS", "VWPolicy",
                                             "ExternalPolicy"}
    uncovered = [c.__qualname__ for c in classes if c.name is None and c not in EXPLICIT_BUILDERS]
    assert not uncovered, f"Policy classes without a registry name or an explicit builder: {uncovered}"
    assert set(BUILDERS) == set(classes)


def test_every_registered_policy_is_discovered():
    """Every policy registered from banditroute.policies is among the discovered classes (so the
    registry and the discovery agree), and its version_prefix is distinct from the others'."""
    ours = {name: cls for name, cls in registered().items() if cls.__module__.startswith(PACKAGE + ".")}
    assert set(ours.values()) <= set(policy_classes())
    prefixes = [cls.version_prefix for cls in ours.values()]
    assert len(set(prefixes)) == len(prefixes), f"duplicate version_prefix among {dict(zip(ours, prefixes))}"


@by_policy
def test_builder_uses_its_policy(cls, seed):
    """The builder of a class builds a router whose policy is an instance of that class (and a
    policy built by name stamps its version_prefix on the log's policy_version)."""
    router = build(cls, seed)
    assert isinstance(router.policy, cls)
    if cls.name is not None and cls not in EXPLICIT_BUILDERS:
        assert router.policy_version.startswith(cls.version_prefix + "-"), router.policy_version


# -- 1. the pmf ------------------------------------------------------------------------------------
@by_policy
def test_pmf_is_a_distribution_over_feasible_profiles(cls, seed):
    """On every probe (fresh and after learning): probabilities are non-negative, sum to 1 within
    1e-9, are 0 exactly on the profiles excluded by the budget or an allow-list (and those are
    reported in ``excluded``), and the propensity is the probability of the executed profile."""
    router = build(cls, seed)
    rng = np.random.default_rng(seed)
    for phase in ("fresh", "trained"):
        if phase == "trained":
            train(router, rng, 120)
        for context in PROBES:
            d = router.decide(context)
            p = dict(d.probabilities)
            assert list(p) == router.profiles
            assert all(v >= 0.0 and math.isfinite(v) for v in p.values()), (phase, context, p)
            assert abs(sum(p.values()) - 1.0) <= 1e-9, (phase, context, p)
            feasible = feasible_names(context)
            for name in router.profiles:
                if name not in feasible:
                    assert p[name] == 0.0 and name in d.excluded, (phase, context, name, p)
            assert d.profile in feasible
            assert d.propensity == p[d.profile]
            assert router.probabilities(context) == p  # what decide drew from, with no side effects


# -- 2. the exploration floor --------------------------------------------------------------------
@by_policy
def test_exploration_floor_holds(cls, seed):
    """Every feasible profile gets at least eps / n_feasible on every probe, before and after the
    policy has learned to prefer one profile (when the floor is what keeps the others alive)."""
    router = build(cls, seed)
    rng = np.random.default_rng(seed)
    for phase in ("fresh", "trained"):
        if phase == "trained":
            train(router, rng, 300)
        for context in PROBES:
            p = router.probabilities(context)
            feasible = feasible_names(context)
            floor = EPS / len(feasible) - 1e-12
            low = {n: p[n] for n in feasible if p[n] < floor}
            assert not low, f"{phase} {context}: below the floor {EPS}/{len(feasible)}: {low}"


# -- 3. exact propensities ---------------------------------------------------------------------------
@by_policy
def test_draws_follow_the_logged_pmf(cls, seed, tmp_path):
    """With the state frozen (no outcomes between draws), the executed profiles of N decisions on
    one context are a multinomial sample of the logged pmf: every decision logs the same pmf, no
    zero-probability profile is drawn, and a chi-square goodness-of-fit test does not reject at
    ALPHA (split over the contexts and both paths, decide_batch and decide). The log holds the
    same probabilities and propensities as the decisions returned."""
    router = build(cls, seed, log_dir=tmp_path)
    train(router, np.random.default_rng(seed), 30)  # a non-uniform (not yet peaked) pmf, then frozen
    n = 6000
    contexts = [PROBES[0], PROBES[2]]  # all feasible; the allow-listed profile excluded
    n_tests = 2 * len(contexts)
    issued = []
    for context in contexts:
        for path in ("decide_batch", "decide"):
            decisions = (router.decide_batch([context] * n) if path == "decide_batch"
                         else [router.decide(context) for _ in range(n)])
            issued += decisions
            pmf = dict(decisions[0].probabilities)
            assert all(d.probabilities == pmf for d in decisions), f"{path}: pmf changed without outcomes"
            assert all(d.propensity == pmf[d.profile] for d in decisions)
            counts = {name: 0 for name in pmf}
            for d in decisions:
                counts[d.profile] += 1
            assert all(counts[name] == 0 for name in pmf if pmf[name] == 0.0), (path, counts, pmf)
            names = [name for name in pmf if pmf[name] > 0]
            observed = np.array([counts[name] for name in names])
            expected = np.array([pmf[name] for name in names]) * n
            pvalue = stats.chisquare(observed, expected).pvalue
            assert pvalue > ALPHA / n_tests, f"{path} {context}: counts {counts} vs pmf {pmf} (p = {pvalue:.2e})"
    router.flush()
    logged = br.scan_table(tmp_path, "decisions").select("decision_id", "profiles", "probabilities",
                                                         "profile", "propensity").collect()
    rows = {r["decision_id"]: r for r in logged.iter_rows(named=True)}
    for d in issued:
        row = rows[d.id]
        assert row["profile"] == d.profile and row["propensity"] == d.propensity
        assert dict(zip(row["profiles"], row["probabilities"])) == dict(d.probabilities)


#: policies meant to ignore outcomes (a fixed baseline, say), each with the reason; empty today
IGNORES_OUTCOMES: dict[type[Policy], str] = {}


@by_policy
def test_outcomes_change_the_pmf(cls, seed):
    """Outcomes reach the policy: after 100 outcomes the probabilities differ from the fresh
    router's on some probe (so the replay and round-trip equalities below are not vacuous); a
    policy declared in IGNORES_OUTCOMES must instead keep them unchanged."""
    fresh, trained = build(cls, seed), build(cls, seed)
    train(trained, np.random.default_rng(seed), 100)
    changed = any(fresh.probabilities(c) != trained.probabilities(c) for c in PROBES)
    if cls in IGNORES_OUTCOMES:
        assert not changed, f"{cls.__name__} is declared to ignore outcomes ({IGNORES_OUTCOMES[cls]})"
    else:
        assert changed, (f"{cls.__name__}'s probabilities did not change after 100 outcomes; if it is meant "
                         "to ignore outcomes, declare it in IGNORES_OUTCOMES")


# -- 4. replay --------------------------------------------------------------------------------------
Z_BANK = 5.0  # a bank share differing by more than 5 standard errors is a failure (two-sided ~6e-7)


def assert_same_bank_posterior(a: dict, b: dict, context, n_draws: int, what: str) -> None:
    """Two pmfs of a bank policy from two independent banks of ``n_draws`` draws of the *same*
    posterior: each profile's share of the bank is Binomial(n_draws, s) / n_draws, so the pmfs,
    ``(1 - eps) * share + eps / n_feasible``, differ by at most Z_BANK standard errors
    ``(1 - eps) * sqrt(2 s (1 - s) / n_draws)`` (s at least 1 / n_draws)."""
    assert a.keys() == b.keys(), what
    floor = EPS / len(feasible_names(context))
    for name, value in a.items():
        if name not in feasible_names(context):
            assert value == b[name] == 0.0, what
            continue
        share = min(max(((value + b[name]) / 2 - floor) / (1 - EPS), 1 / n_draws), 1 - 1 / n_draws)
        tol = (1 - EPS) * Z_BANK * math.sqrt(2 * share * (1 - share) / n_draws)
        assert abs(value - b[name]) <= tol, f"{what}: {name} {value!r} vs {b[name]!r} (tolerance {tol:.4f})"


@by_policy
def test_replay_equals_live(cls, seed, tmp_path):
    """A fresh router built the same way and replayed from the live router's log applies as many
    outcomes as the live one did and ends with equal beliefs. A policy with a model of its own
    (``learns``) ends with equal probabilities (within 1e-12) on every probe; a policy reading the
    shared Beta beliefs decides from a bank drawn from that same posterior, but the replay may
    draw it at other times than the live router did, so its probabilities agree within the bank's
    Monte Carlo error (and exactly if the bank is the same)."""
    live = build(cls, seed, log_dir=tmp_path)
    applied = train(live, np.random.default_rng(seed), 150)
    live.flush()
    live.refresh()  # the replay ends with a refresh of the bank; do the same live
    fresh = build(cls, seed)
    assert fresh.replay(tmp_path) == applied == 150
    assert fresh.beliefs().equals(live.beliefs())
    for context in PROBES:
        what = f"replayed {context}"
        if cls.learns:
            assert_close(fresh.probabilities(context), live.probabilities(context), what)
        else:
            assert_same_bank_posterior(fresh.probabilities(context), live.probabilities(context), context,
                                       live.config.n_draws, what)


# -- 5. persistence -----------------------------------------------------------------------------------
@by_policy
@pytest.mark.parametrize("how", ["pickle", "save-load", "save-load-pickle"])
def test_round_trip_keeps_the_policy(cls, how, seed, tmp_path):
    """A pickled or saved-and-loaded router (as data, or as a pickle) gives the same
    probabilities on every probe, accepts the outcome of a decision issued before it was saved
    ("applied"), learns from it as the original does, and then goes on exactly as the original
    (same draws, same outcomes: equal beliefs and probabilities after 40 more rounds, past the
    banks' refresh). A learner that cannot export its state as arrays refuses to be saved as
    data, naming the way out."""
    router = build(cls, seed)
    train(router, np.random.default_rng(seed), 100)
    pending = router.decide(PROBES[1])
    path = tmp_path / "router.state"
    if how == "pickle":
        clone = pickle.loads(pickle.dumps(router))
    elif how == "save-load" and cls.learns and cls.state_arrays is br.Policy.state_arrays:
        with pytest.raises(br.ConfigError, match="format='pickle'"):
            router.save(path)
        return
    elif how == "save-load" and cls.__name__ == "ExternalPolicy":
        with pytest.raises(br.ConfigError, match="format='pickle'"):
            router.save(path)
        return
    else:
        fmt = "pickle" if how == "save-load-pickle" else "data"
        router.save(path, format=fmt)
        clone = br.Router.load(path, log_dir=None, format=fmt)
    for context in PROBES:
        assert_close(clone.probabilities(context), router.probabilities(context), f"{how} {context}")
    assert clone.record(pending.id, quality=1.0) == "applied"
    assert router.record(pending.id, quality=1.0) == "applied"
    assert clone.beliefs().equals(router.beliefs())
    for context in PROBES:
        assert_close(clone.probabilities(context), router.probabilities(context), f"{how}, then learned {context}")
    train(router, np.random.default_rng(seed + 1), 40)
    train(clone, np.random.default_rng(seed + 1), 40)
    assert clone.beliefs().equals(router.beliefs())
    for context in PROBES:
        assert_close(clone.probabilities(context), router.probabilities(context), f"{how}, 40 rounds on {context}")


# -- 6. the template catches bad proposals -------------------------------------------------------------
class BadProposal(Policy):
    """A test-local policy (not exact) proposing the weights it is given."""

    learns = False

    def __init__(self, weights):
        self.weights = weights

    def propose(self, query):
        return np.array(self.weights, dtype=np.float64), np.zeros_like(query.feasible)


# profiles: small, medium, eu (allow-listed: infeasible for region "us"), large (over the budget)
BAD = {"negative": [0.5, -0.1, 0.0, 0.0], "on a budget-excluded profile": [0.5, 0.5, 0.0, 0.2],
       "on an allow-list-excluded profile": [0.5, 0.5, 0.3, 0.0], "all zero": [0.0, 0.0, 0.0, 0.0],
       "not finite": [0.5, float("nan"), 0.0, 0.0], "wrong shape": [0.5, 0.5]}


@pytest.mark.parametrize("weights", list(BAD.values()), ids=list(BAD))
def test_template_rejects_bad_proposals(weights, seed):
    """A policy that is not ``exact`` has its proposal checked by Policy.pmf: weights that are
    negative, on a profile excluded by the budget or an allow-list, all zero, not finite or of the
    wrong shape raise a ConfigError naming ``<ClassName>.propose``, before anything is drawn."""
    assert BadProposal.exact is False
    router = _router(make_profiles(), seed=seed, learner=BadProposal(weights))
    with pytest.raises(br.ConfigError, match=r"^BadProposal\.propose must return non-negative weights over the "
                                             r"feasible profiles, not all zero") as caught:
        router.decide({"task_type": "chat", "region": "us"})
    assert caught.value.field == "BadProposal.propose"
    assert router.log_position == 0  # nothing was issued


def test_template_accepts_a_valid_proposal(seed):
    """The same test-local policy with valid weights decides, with the floor mixed in as
    pmf = (1 - eps) w / sum(w) + eps / n_feasible (the check above is not a blanket refusal)."""
    router = _router(make_profiles(), seed=seed, learner=BadProposal([3.0, 1.0, 0.0, 0.0]))
    p = router.probabilities({"task_type": "chat", "region": "us"})
    expected = {"small": 0.9 * 0.75 + 0.05, "medium": 0.9 * 0.25 + 0.05, "eu": 0.0, "large": 0.0}
    assert_close(p, expected, "valid proposal")
