"""Tests that kill surviving mutants of the deciding core (batch, request, decision, linear).

Each test states the promise it checks; the mutants it was written against are named in
brackets, so a later mutation run can be read against this file. Known answers are derived
in the comments from the model's definition, not copied from the code's output.
"""

import itertools
import pickle

import numpy as np
import polars as pl
import pytest
from scipy import stats

import banditroute as br
from banditroute.policies.linear import LinearTS

# The LinearTS defaults the router uses (it passes none of them): prior precision lambda, the
# prior guess of the reward noise (worth one outcome) and the posterior scale c.
LAMBDA, NOISE_SD, SCALE = 1.0, 1.0, 0.3


def posterior(obs, dim, lam=LAMBDA, noise_sd=NOISE_SD, scale=SCALE):
    """Closed form of the model: the ridge solution ``mean = (lam I + X'X)^-1 X'r`` (it does not
    depend on the noise), ``cov = (lam I + X'X)^-1``, and the spread of the scenarios
    ``c * sqrt((noise_sd^2 + r'r - b . mean) / (1 + n))``, ``b = X'r`` (the learned noise)."""
    X = np.array([x for x, _ in obs], dtype=float).reshape(len(obs), dim)
    r = np.array([r for _, r in obs], dtype=float)
    A = lam * np.eye(dim) + X.T @ X
    mean = np.linalg.solve(A, X.T @ r)
    spread = scale * np.sqrt((noise_sd**2 + r @ r - (X.T @ r) @ mean) / (1 + len(obs)))
    return mean, np.linalg.inv(A), spread


# -- batch.py: the vectorised DataFrame path ---------------------------------------------------

def test_dataframe_task_probs_column_that_is_not_a_mapping_is_rejected_like_a_row():
    """[batch x_plan_frame 9, 11] A frame with a ``task_probs`` column goes to the row path, which
    validates it: a scalar is not a task posterior, even for a single-task router."""
    router = br.Router([br.Profile("a"), br.Profile("b")], seed=0)
    msg = r"^context\.task_probs must be a mapping task_type -> probability, got 0\.5$"
    with pytest.raises(br.InvalidRequestError, match=msg):
        router.decide({"task_probs": 0.5})
    with pytest.raises(br.InvalidRequestError, match=msg) as info:
        router.decide_batch(pl.DataFrame({"task_probs": [0.5, 0.5], "tokens": [1, 2]}))
    assert info.value.field == "context.task_probs"
    with pytest.raises(br.InvalidRequestError, match=r"^context\.task_probs must be a mapping .*, got 'code'$"):
        router.decide_batch(pl.DataFrame({"task_probs": ["code"]}))


def test_dataframe_batch_of_a_linear_router_scores_every_row_on_its_own_features(seed):
    """[batch x_plan_frame 14] A contextual learner scores each row's features: rows of one task
    type with different feature values must not share a cached distribution (once it has
    learned: at its prior every profile has the same posterior, so the features do not move the pmf)."""
    kwargs = dict(task_types=["chat", "code"], policy="linear", features={"tokens": 1000.0}, seed=seed)
    profiles = [br.Profile("a"), br.Profile("b"), br.Profile("c")]
    router, twin = br.Router(profiles, **kwargs), br.Router(profiles, **kwargs)
    for r in (router, twin):  # at the prior the features cannot matter (every profile alike): learn first
        for i in range(60):
            tokens = float(500 * (i % 12))
            d = r.decide({"task_type": ["chat", "code"][i % 2], "tokens": tokens})
            r.record(d.id, quality=float((d.profile == "a") == (tokens < 3000)))
    rows = [{"task_type": ["chat", "code"][i % 2], "tokens": float(300 * (i // 2))} for i in range(40)]
    decisions = router.decide_batch(pl.DataFrame(rows))
    expected = [router.probabilities(r) for r in rows]
    # the test has teeth: the features do change the pmf within a task type
    assert len({tuple(e.values()) for e, r in zip(expected, rows) if r["task_type"] == "chat"}) > 1
    assert [dict(d.probabilities) for d in decisions] == expected
    assert [d.profile for d in decisions] == [d.profile for d in twin.decide_batch(rows)]


def _many_profiles(n):
    by_task = {"chat": br.BetaPrior(alpha=8.0, beta=2.0), "code": br.BetaPrior(alpha=2.0, beta=8.0)}
    flipped = {"chat": br.BetaPrior(alpha=2.0, beta=8.0), "code": br.BetaPrior(alpha=9.0, beta=1.0)}
    out = [br.Profile("p0", allow={"tier": ["gold"]}, prior=by_task)]
    out += [br.Profile(f"p{i}") for i in range(1, n - 1)]
    # the last profile's allow-list sets the highest bit of the grouping key
    out.append(br.Profile(f"p{n - 1}", allow={"region": ["eu"]}, prior=flipped))
    return out


@pytest.mark.parametrize("n_profiles", [60, 61, 62, 63])
def test_dataframe_batch_groups_rows_right_on_both_sides_of_the_int64_key_limit(n_profiles, seed):
    """[batch x_plan_frame 95, 107] With two task types (2 key bits) and 60..63 profiles the
    grouping key needs 62..65 bits: both the packed int64 key and the row-wise unique must give
    every row its own single-row distribution (task type and allow-lists vary independently)."""
    combos = list(itertools.product(["chat", "code"], ["gold", "silver", None], ["eu", "us", None]))
    order = np.random.default_rng(seed).permutation(np.tile(np.arange(len(combos)), 2))
    rows = [{"task_type": combos[i][0], "tier": combos[i][1], "region": combos[i][2]} for i in order]
    kwargs = dict(task_types=["chat", "code"], n_draws=256, seed=seed)
    router = br.Router(_many_profiles(n_profiles), **kwargs)
    decisions = router.decide_batch(pl.DataFrame(rows))
    as_dicts = [{k: v for k, v in r.items() if v is not None} for r in rows]
    twin = br.Router(_many_profiles(n_profiles), **kwargs).decide_batch(as_dicts)
    last = f"p{n_profiles - 1}"
    for d, ctx, t in zip(decisions, as_dicts, twin):
        assert dict(d.probabilities) == router.probabilities(ctx), ctx
        assert (d.probabilities[last] == 0.0) == (ctx.get("region") != "eu"), ctx
        assert (d.probabilities["p0"] == 0.0) == (ctx.get("tier") != "gold"), ctx
        assert d.profile == t.profile


# -- request.py: task model and explicit task posteriors ---------------------------------------

class _FixedModel:
    """A task model that always answers the same row of probabilities over ``classes_``."""

    def __init__(self, classes, row):
        self.classes_, self.row = classes, row

    def predict_proba(self, X):
        return [list(self.row) for _ in X]


def test_task_classifier_rejects_an_estimator_without_predict_proba():
    """[request TaskClassifier.__init__ 13, 14]"""
    with pytest.raises(br.ConfigError, match=r"^task_model must have predict_proba, got <object object at ") as info:
        br.TaskClassifier(object())
    assert info.value.field == "task_model"


@pytest.mark.parametrize("classes,row", [(["poetry"], [1.0]), (["chat", "poetry"], [0.0, 1.0])])
def test_task_model_that_puts_no_mass_on_the_router_task_types_is_an_invalid_request(classes, row):
    """[request predict_proba 27, 32] All of the model's mass on task types the router does not
    know: no posterior can be formed, and the error names the task model."""
    router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["chat", "code"],
                       task_model=br.TaskClassifier(_FixedModel(classes, row)), seed=0)
    msg = r"^task_model returned probabilities that are not finite or put no mass on the router's task types"
    with pytest.raises(br.InvalidRequestError, match=msg) as info:
        router.decide({"tokens": 12})
    assert info.value.field == "task_model"
    assert info.value.value == dict(zip(classes, row))  # what the model said, in the message too
    assert str(dict(zip(classes, row))) in str(info.value)


def test_task_model_posterior_is_reordered_and_renormalised_to_the_router_task_types():
    """Unknown classes are dropped and the rest renormalised: 0.2 / 0.6 of mass 0.8."""
    clf = br.TaskClassifier(_FixedModel(["code", "poetry", "chat"], [0.2, 0.2, 0.6]))
    assert clf.predict_proba([{}, {"x": 1}], ["chat", "code"]) == pytest.approx(np.array([[0.75, 0.25]] * 2))


def test_task_classifier_never_shows_the_task_label_or_posterior_to_the_estimator():
    """[request _features 4, 5] ``task_type`` and ``task_probs`` are what the model predicts, not
    features: neither fit nor predict_proba passes them to the estimator."""
    from sklearn.base import BaseEstimator

    class Recorder(BaseEstimator):
        def fit(self, X, y):
            self.fit_keys_ = [sorted(x) for x in X]
            self.classes_ = np.array(sorted(set(y)))
            return self

        def predict_proba(self, X):
            self.predict_keys_ = [sorted(x) for x in X]
            return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))

    history = [{"task_type": "code", "task_probs": {"code": 1.0}, "tokens": 3},
               {"task_probs": {"chat": 0.4, "code": 0.6}, "tokens": 5, "lang": "py"}]
    clf = br.TaskClassifier(Recorder()).fit(history, ["code", "chat"])
    assert clf.estimator.fit_keys_ == [["tokens"], ["lang", "tokens"]]
    clf.predict_proba([{"task_probs": {"chat": 1.0}, "task_type": "chat", "tokens": 7}], ["chat", "code"])
    assert clf.estimator.predict_keys_ == [["tokens"]]


def test_non_mapping_task_probs_is_rejected_with_its_field_name():
    """[request _explicit_probs 8]"""
    router = br.Router([br.Profile("a"), br.Profile("b")], task_types=["chat", "code"], seed=0)
    message = r"^context\.task_probs must be a mapping task_type -> probability, got \[0\.5, 0\.5\]$"
    with pytest.raises(br.InvalidRequestError, match=message) as info:
        router.decide({"task_probs": [0.5, 0.5]})
    assert info.value.field == "context.task_probs"


@pytest.mark.parametrize("probs", [{"chat": 0.0, "code": 1.0}, {"code": 1.0}, {"code": 1}])
def test_one_hot_task_probs_route_exactly_like_the_label(probs, seed):
    """[request _explicit_probs 61] A posterior with all its mass on one task type is that task."""
    prior = {"chat": br.BetaPrior(alpha=8.0, beta=2.0), "code": br.BetaPrior(alpha=2.0, beta=8.0)}
    profiles = [br.Profile("a", prior=prior), br.Profile("b")]
    router = br.Router(profiles, task_types=["chat", "code"], seed=seed)
    d = router.decide({"task_probs": probs})
    assert dict(d.task_probs) == {"chat": 0.0, "code": 1.0}
    assert dict(d.probabilities) == router.probabilities({"task_type": "code"})
    assert dict(d.probabilities) != router.probabilities({"task_type": "chat"})


# -- decision.py --------------------------------------------------------------------------------

def test_decision_repr_shows_the_distribution():
    """[decision __repr__ 1]"""
    d = br.Decision(id="w1-0", profile="small", propensity=0.9, probabilities={"small": 0.9, "large": 0.1},
                    task_probs={"code": 1.0}, policy_version="v", excluded={}, fallback_reason=None)
    assert repr(d) == ("Decision(id='w1-0', profile='small', propensity=0.9, "
                       "probabilities={'small': 0.9, 'large': 0.1}, fallback_reason=None)")
    live = br.Router([br.Profile("a")], seed=0).decide({})
    assert repr(live) == f"Decision(id={live.id!r}, profile='a', propensity=1.0, probabilities={{'a': 1.0}}, " \
                         "fallback_reason=None)"


# -- linear.py: LinearTS (policy="linear") -----------------------------------------------------

def test_featurize_divides_each_feature_by_its_scale_and_interacts_it_with_the_task_posterior():
    """[linear featurize 22] x = [p, p * tokens / 1000, p * turns / 10] for p = (0.25, 0.75)."""
    lin = LinearTS(1, ["chat", "code"], (("tokens", 1000.0), ("turns", 10.0)), n_draws=8, seed=0)
    x = lin.featurize({"tokens": 500, "turns": 2.0}, np.array([0.25, 0.75]))
    assert x == pytest.approx([0.25, 0.75, 0.125, 0.375, 0.05, 0.15])
    assert lin.featurize({}, np.array([1.0, 0.0])) == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])


# learn() reads the task posterior from the context: a known label wins, then a task_probs
# mapping (missing task types 0), else uniform.
LEARN_CASES = [
    ({"task_type": "code"}, [0.0, 1.0]),
    ({"task_type": "code", "task_probs": {"chat": 1.0}}, [0.0, 1.0]),
    ({"task_probs": {"chat": 0.25, "code": 0.75}}, [0.25, 0.75]),
    ({"task_probs": {"code": 1.0}}, [0.0, 1.0]),
    ({}, [0.5, 0.5]),
    ({"task_type": "poetry"}, [0.5, 0.5]),
]


@pytest.mark.parametrize("context,x", LEARN_CASES)
def test_learn_updates_the_posterior_with_the_context_task_posterior(context, x, seed):
    """[linear learn 8, _task_probs 2/9/15/17/21/24/25, mean 2, learn_task 33, __init__ 2/23/26]
    One outcome r for profile 1 at x: A = lambda I + x x^T, b = x r, and by Sherman-Morrison the
    posterior mean (the ridge solution) is x * r / (lambda + |x|^2); e.g. x = (0.25, 0.75),
    r = 0.5 gives x * 0.5 / 1.625 = (1/13, 3/13). Profile 0 stays at its prior mean 0."""
    lin = LinearTS(2, ["chat", "code"], (), n_draws=16, seed=seed)
    lin.learn(context, 1, 0.5, 0.5)
    x = np.array(x)
    expected = x * 0.5 / (LAMBDA + x @ x)
    assert lin.mean() == pytest.approx(np.array([[0.0, 0.0], expected]), abs=1e-12)
    assert lin.mean() == pytest.approx(np.array([[0.0, 0.0], posterior([(x, 0.5)], 2)[0]]), abs=1e-12)
    assert lin.A_ == pytest.approx(np.array([LAMBDA * np.eye(2), LAMBDA * np.eye(2) + np.outer(x, x)]), abs=1e-15)
    assert lin.b_ == pytest.approx(np.array([[0.0, 0.0], 0.5 * x]), abs=1e-15)
    assert lin.rr_.tolist() == [0.0, 0.25] and lin.n_.tolist() == [0.0, 1.0]
    assert lin.n_updates_ == 1
    for _ in range(4):
        lin.learn_task(context, x, 0, 1.0, 0.5)
    assert lin.n_updates_ == 5 and lin.n_.tolist() == [4.0, 1.0]


def test_router_linear_posterior_after_two_outcomes_matches_the_closed_form(seed):
    """[linear __init__ 2, 23, 26, featurize 22] Through the router with its defaults (lambda = 1,
    noise prior 1, c = 0.3): profile a learns reward 1 and profile b reward 0 at tokens = 1000
    (x = (1, 1)). At a query z the scores are independent normals N(z.m_k, s_k^2),
    s_k = spread_k sqrt(z'C_k z), so a wins Phi(z.(m_a - m_b) / sqrt(s_a^2 + s_b^2)) of the
    scenarios, up to Monte Carlo error sqrt(p(1-p)/M). E.g. m_a = (1/3, 1/3),
    spread_a = 0.3 sqrt((1 + 1 - 2/3) / 2), spread_b = 0.3 sqrt(1 / 2); at z = (1, 0) p ~ 0.90."""
    n_draws = 40_000
    profiles = [br.Profile("a", allow={"lane": ["a", "both"]}), br.Profile("b", allow={"lane": ["b", "both"]})]
    router = br.Router(profiles, policy="linear", features={"tokens": 1000.0}, exploration=0.0,
                       n_draws=n_draws, refresh_every=1, seed=seed)
    for lane, quality in (("a", 1.0), ("b", 0.0)):
        d = router.decide({"lane": lane, "tokens": 1000.0})
        assert d.profile == lane and d.propensity == 1.0
        assert router.record(d.id, quality=quality) == "applied"
    m_a, C_a, s_a = posterior([((1.0, 1.0), 1.0)], 2)
    m_b, C_b, s_b = posterior([((1.0, 1.0), 0.0)], 2)
    assert m_a == pytest.approx([1 / 3, 1 / 3]) and s_a == pytest.approx(0.3 * np.sqrt(2 / 3))
    assert router.policy.spread_ == pytest.approx([s_a, s_b], rel=1e-12)
    for tokens in (0.0, 1000.0, 3000.0, 6000.0):
        z = np.array([1.0, tokens / 1000.0])
        p = stats.norm.cdf(z @ (m_a - m_b) / np.sqrt(s_a**2 * (z @ C_a @ z) + s_b**2 * (z @ C_b @ z)))
        got = router.probabilities({"lane": "both", "tokens": tokens})["a"]
        assert abs(got - p) < 5 * np.sqrt(p * (1 - p) / n_draws), (tokens, got, p)


def test_linear_router_same_seed_same_distributions_and_decisions(seed):
    """[linear __init__ 32] The learner's draws come from the router's seed."""
    def make():
        return br.Router([br.Profile("a"), br.Profile("b"), br.Profile("c")], task_types=["chat", "code"],
                         policy="linear", features={"tokens": 1000.0}, seed=seed)

    first, second = make(), make()
    contexts = [{"task_type": t, "tokens": float(n)} for t in ("chat", "code") for n in (0, 800, 2500, 9000)]
    assert [first.probabilities(c) for c in contexts] == [second.probabilities(c) for c in contexts]
    assert [d.profile for d in first.decide_batch(contexts * 5)] == \
        [d.profile for d in second.decide_batch(contexts * 5)]


def test_ties_go_to_the_first_maximiser_and_the_pmf_still_covers_every_profile(seed):
    """[linear distribution 35] When scenarios tie, the pmf is recounted by argmax: it must still
    have one entry per profile even if the last profiles win no scenario (here: infeasible).
    Profiles 1 and 2 learn the same outcomes and get the same scenario normals, so they tie in
    every scenario and 1, the first maximiser, wins them all."""
    lin = LinearTS(4, ["chat"], (("tokens", 1000.0),), n_draws=512, posterior_scale=1.0, seed=seed)
    lin._z[2] = lin._z[1]
    for tokens, r0, r in ((200.0, 1.0, 0.0), (1500.0, 0.0, 1.0), (800.0, 1.0, 1.0)):
        lin.learn({"tokens": tokens}, 0, r0, 0.5)
        for k in (1, 2):
            lin.learn({"tokens": tokens}, k, r, 0.5)
    lin.refresh()
    assert np.array_equal(lin.mean_[1], lin.mean_[2]) and np.array_equal(lin.cov_[1], lin.cov_[2])
    assert lin.spread_[1] == lin.spread_[2]
    ctx, w, feasible = {"tokens": 700.0}, np.array([1.0]), np.array([True, True, True, False])
    pmf = lin.distribution(ctx, w, feasible)
    x = lin.featurize(ctx, w)
    sd = lin.spread_[:2] * np.sqrt(np.einsum("i,kij,j->k", x, lin.cov_[:2], x))
    coef = np.stack([lin.mean_[:2] @ x, sd], axis=1).astype(np.float32)[:, None, :]
    u = np.matmul(coef, np.stack([np.ones_like(lin._z[:2]), lin._z[:2]], axis=1))[:, 0, :]
    share0 = np.mean(u[0] > u[1])
    assert 0 < share0 < 1
    assert pmf.shape == (4,)
    assert pmf == pytest.approx([share0, 1.0 - share0, 0.0, 0.0], abs=1e-12)


def test_linear_add_profile_starts_the_new_profile_at_its_prior(seed):
    """[linear add_profile 2, 6, 14, 28] The new profile has precision lambda I, no evidence
    (b = 0, no outcomes), mean 0, covariance I / lambda and the prior spread c * noise_sd; its
    scenario normals are fresh standard normals (mean within 5 / sqrt(M), sd within 5 standard
    errors sqrt(1 / (2M))) and the other profiles keep theirs."""
    n_draws = 4000
    lin = LinearTS(2, ["chat"], (("tokens", 1000.0),), n_draws=n_draws, seed=seed)
    lin.learn({"tokens": 1000.0}, 0, 1.0, 0.5)
    z_before = lin._z.copy()
    lin.add_profile()
    assert lin.A_.shape == (3, 2, 2) and np.array_equal(lin.A_[2], LAMBDA * np.eye(2))
    assert lin.b_[2].tolist() == [0.0, 0.0] and lin.rr_[2] == 0.0 and lin.n_[2] == 0.0
    assert lin.mean()[2] == pytest.approx([0.0, 0.0])
    assert lin.mean_[2].tolist() == [0.0, 0.0] and np.array_equal(lin.cov_[2], np.eye(2) / LAMBDA)
    assert lin.spread_[2] == pytest.approx(SCALE * NOISE_SD, rel=1e-12)
    mean0, cov0, spread0 = posterior([((1.0, 1.0), 1.0)], 2)
    assert lin.mean()[0] == pytest.approx(mean0)
    assert lin.mean_[0] == pytest.approx(mean0) and lin.cov_[0] == pytest.approx(cov0)  # refreshed
    assert lin.spread_[0] == pytest.approx(spread0, rel=1e-12)
    assert lin._z.shape == (3, n_draws) and lin._z.dtype == np.float32
    assert np.array_equal(lin._z[:2], z_before)
    z = lin._z[2].astype(np.float64)
    assert abs(z.mean()) < 5 / np.sqrt(n_draws) and abs(z.std() - 1.0) < 5 * np.sqrt(1 / (2 * n_draws))
    assert np.abs(np.corrcoef(lin._z.astype(np.float64))[2, :2]).max() < 5 / np.sqrt(n_draws)  # not a copy
    pmf = lin.distribution({"tokens": 300.0}, np.array([1.0]), np.ones(3, dtype=bool))
    assert pmf.shape == (3,) and pmf.sum() == pytest.approx(1.0) and pmf[2] > 0

    router = br.Router([br.Profile("a"), br.Profile("b")], policy="linear", features={"tokens": 1000.0}, seed=seed)
    router.add_profile(br.Profile("c"))
    probs = router.probabilities({"tokens": 100.0})
    assert list(probs) == ["a", "b", "c"] and sum(probs.values()) == pytest.approx(1.0) and probs["c"] > 0


def test_linear_state_pickled_with_the_old_bank_is_refused(seed):
    """[linear __setstate__ 10] A pickle of the old LinearTS (a bank of coefficient draws:
    ``bank_`` of shape (dim, K, M) or ``theta_`` of shape (K, M, dim)) cannot be read as the
    sufficient statistics: loading it is a ConfigError telling to replay the log. A pickle of
    the current model loads and decides exactly as the original."""
    lin = LinearTS(3, ["chat"], (("tokens", 1000.0),), n_draws=64, seed=seed)
    ctx, w, mask = {"tokens": 500.0}, np.array([1.0]), np.ones(3, dtype=bool)
    loaded = pickle.loads(pickle.dumps(lin))
    assert np.array_equal(loaded.distribution(ctx, w, mask), lin.distribution(ctx, w, mask))
    for name, old in (("bank_", np.zeros((2, 3, 64), dtype=np.float32)), ("theta_", np.zeros((3, 64, 2)))):
        state = {k: v for k, v in lin.__dict__.items() if k not in ("A_", "b_", "mean_", "cov_")}
        state[name] = old
        fresh = LinearTS.__new__(LinearTS)
        message = r"^policy was saved by an older banditroute .*replaying the log"
        with pytest.raises(br.ConfigError, match=message) as info:
            fresh.__setstate__(state)
        assert info.value.field == "policy" and info.value.value == "LinearTS"
        assert "A_" not in fresh.__dict__  # nothing of the old state was taken


class _RowsModel:
    """A task model that answers one given row per context, in order."""

    classes_ = ["chat", "code"]

    def __init__(self, rows):
        self.rows = rows

    def predict_proba(self, X):
        return [list(r) for r in self.rows[:len(X)]]


def test_task_model_error_reports_the_first_context_it_failed_on():
    """Only the second context gets a non-finite posterior: the error shows that one."""
    clf = br.TaskClassifier(_RowsModel([[0.25, 0.75], [float("inf"), 0.0], [0.5, 0.5]]))
    with pytest.raises(br.InvalidRequestError, match=r"task_model returned probabilities") as info:
        clf.predict_proba([{}, {}, {}], ["chat", "code"])
    assert info.value.value == {"chat": float("inf"), "code": 0.0}
