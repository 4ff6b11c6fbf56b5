"""Property tests of the LinearTS model (policy="linear", ``banditroute/policies/linear.py``):
many requests scored at once are, bit for bit, each request scored alone; the logged
propensities are the frequencies of the decisions; the learned noise is the rewards' noise;
the hashed text and category features are stable unit vectors.

Statistical tolerances come from the sampling error (chi-square of the decision counts, the
standard error of a variance estimate), never from one pinned draw; seeds from the ``seed``
fixture (``BR_TEST_SEED=7 pytest`` sweeps them).
"""

import zlib

import numpy as np
import polars as pl
import pytest
from scipy import stats

import banditroute as br
from banditroute.config.features import Category, Text
from banditroute.policies.featurize import Featurizer, buckets
from banditroute.policies.linear import CHUNK_ROWS, SMALL_DIM, LinearTS

# (task types, numeric features): dimensions 3, 3, 10 and 64 (= task types x (1 + features))
SHAPES = [(1, 2), (3, 0), (2, 4), (4, 15)]


def _learned(n_tasks, n_features, n_draws, seed, n_profiles=4):
    """A LinearTS that learned 300 noisy outcomes whose mean depends on the features, so that
    the profiles' posteriors differ and most requests' pmfs are mixed."""
    features = tuple((f"f{i}", float(10 ** (i % 3))) for i in range(n_features))
    tasks = [f"t{i}" for i in range(n_tasks)]
    lin = LinearTS(n_profiles, tasks, features, n_draws=n_draws, posterior_scale=1.0, seed=seed)
    rng = np.random.default_rng(seed)
    slopes = rng.normal(0.0, 0.3, (n_profiles, n_features))
    for _ in range(300):
        values = rng.normal(0.0, 1.0, n_features)
        ctx = {name: float(v * scale) for (name, scale), v in zip(features, values)}
        k = int(rng.integers(n_profiles))
        lin.learn_task(ctx, rng.dirichlet(np.ones(n_tasks)), k, float(slopes[k] @ values + rng.normal(0.0, 0.5)), 0.25)
    lin.refresh()
    return lin, features, tasks, rng


@pytest.mark.parametrize("n_draws", [1024, 1000, 1001])
@pytest.mark.parametrize("n_tasks,n_features", SHAPES)
def test_distribution_rows_is_distribution_row_by_row_bit_for_bit(n_tasks, n_features, n_draws, seed):
    """500 random requests (random task posteriors, feature values and feasibility masks, at
    least one profile feasible) scored at once by ``distribution_rows`` give exactly, as
    floats, what ``distribution`` gives for each request alone: through every chunk of
    CHUNK_ROWS rows (500 is not a multiple of it), with M a multiple of 8 (1024, 1000: the
    scenario wins counted 8 to a word) and not (1001), for dimensions 3, 10 (both elementwise,
    <= SMALL_DIM) and 64 (one product per row). The same for one mask shared by all rows and
    for the DataFrame path (``propose_frame``)."""
    lin, features, tasks, rng = _learned(n_tasks, n_features, n_draws, seed)
    assert (lin.dim <= SMALL_DIM) == (lin.dim < 64)
    n = 500
    assert n > CHUNK_ROWS and n % CHUNK_ROWS
    values = rng.normal(0.0, 1.0, (n, n_features)) * np.array([s for _, s in features])
    contexts = [{name: float(v) for (name, _), v in zip(features, row)} for row in values]
    task_probs = rng.dirichlet(np.ones(n_tasks), size=n)
    feasible = rng.random((n, 4)) < 0.6
    feasible[np.arange(n), rng.integers(4, size=n)] = True  # at least one profile feasible
    X = np.array([lin.featurize(c, w) for c, w in zip(contexts, task_probs)])
    rows = lin.distribution_rows(X, feasible)
    one = np.array([lin.distribution(c, w, f) for c, w, f in zip(contexts, task_probs, feasible)])
    assert rows.shape == (n, 4) and np.array_equal(rows, one)
    assert ((one > 0).sum(axis=1) >= 2).mean() > 0.3  # the test has teeth: many rows are mixed
    assert np.array_equal(np.round(one * n_draws) / n_draws, one) and np.all(one[~feasible] == 0.0)

    shared = np.array([True, False, True, True])
    rows = lin.distribution_rows(X, shared)
    one = np.array([lin.distribution(c, w, shared) for c, w in zip(contexts, task_probs)])
    assert np.array_equal(rows, one)

    frame = pl.DataFrame({name: values[:, i] for i, (name, _) in enumerate(features)}) if features else \
        pl.DataFrame({"other": np.zeros(n)})
    assert np.array_equal(lin.propose_frame(frame, task_probs, feasible), lin.distribution_rows(X, feasible))


@pytest.mark.parametrize("n_draws", [37, 2048])
def test_distribution_rows_is_bit_for_bit_for_unpacked_scenario_counts(n_draws, seed):
    """M smaller than a chunk of rows and not a multiple of 8 (37), or too large to count 8
    scenarios to a word without a byte overflowing (2048): still the same bits as one request
    at a time."""
    lin, features, tasks, rng = _learned(2, 4, n_draws, seed)
    n = 100
    contexts = [{name: float(v * s) for (name, s), v in zip(features, rng.normal(0.0, 1.0, 4))} for _ in range(n)]
    task_probs = rng.dirichlet(np.ones(2), size=n)
    feasible = rng.random((n, 4)) < 0.7
    feasible[:, 0] = True
    X = np.array([lin.featurize(c, w) for c, w in zip(contexts, task_probs)])
    one = np.array([lin.distribution(c, w, f) for c, w, f in zip(contexts, task_probs, feasible)])
    assert np.array_equal(lin.distribution_rows(X, feasible), one)
    assert np.array_equal(np.round(one * n_draws) / n_draws, one)  # shares of the M scenarios


def test_hashed_requests_are_scored_on_their_buckets_as_on_the_full_vector(seed):
    """With Text and Category features ``distribution`` scores a request on its non-zero
    buckets only (sparse); that must be the pmf of the full feature vector: the same floats as
    ``distribution_rows`` of the dense vectors (bit for bit) and as the share of scenarios won
    recomputed from the dense posterior (``u = x . mean_k + spread_k sqrt(x' cov_k x) z``)."""
    words = "fix the bug in my code please write a poem about cats and a sql query join".split()
    features = (("tokens", 1000.0), ("delta", 1.0), ("prompt", Text(bits=5, ngrams=2)), ("tenant", Category(bits=3)))
    lin = LinearTS(3, ["chat", "code"], features, n_draws=1000, posterior_scale=1.0, seed=seed)
    rng = np.random.default_rng(seed)

    def request():
        return {"tokens": float(rng.integers(0, 4000)), "delta": float(rng.uniform(-1.0, 1.0)),
                "prompt": " ".join(rng.choice(words, rng.integers(1, 8))),
                "tenant": str(rng.choice(["acme", "globex", "initech"]))}

    for _ in range(300):
        ctx = request()
        k = int(rng.integers(3))
        reward = float(rng.random() < 0.3 + 0.2 * k * ("bug" in ctx["prompt"]) + 0.1 * (ctx["tenant"] == "acme")
                       + 0.2 * ctx["delta"] * (k - 1))
        lin.learn_task(ctx, rng.dirichlet(np.ones(2)), k, reward, 0.3)
    lin.refresh()
    assert lin.dim == 2 * 3 + 32 + 8
    contexts = [request() for _ in range(200)]
    task_probs = rng.dirichlet(np.ones(2), size=200)
    feasible = rng.random((200, 3)) < 0.8
    feasible[:, 2] = True
    one = np.array([lin.distribution(c, w, f) for c, w, f in zip(contexts, task_probs, feasible)])
    X = np.array([lin.featurize(c, w) for c, w in zip(contexts, task_probs)])
    assert np.array_equal(lin.distribution_rows(X, feasible), one)
    assert ((one > 0).sum(axis=1) >= 2).mean() > 0.3  # the test has teeth: many rows are mixed
    ones_z = np.stack([np.ones_like(lin._z), lin._z], axis=1)
    for x, f, pmf in zip(X, feasible, one):
        sd = lin.spread_ * np.sqrt(np.einsum("i,kij,j->k", x, lin.cov_, x))
        u = np.matmul(np.stack([lin.mean_ @ x, sd], axis=1).astype(np.float32)[:, None, :], ones_z)[:, 0, :]
        u[~f] = -np.inf
        assert np.array_equal(pmf, np.bincount(u.argmax(axis=0), minlength=3) / 1000)


def _chisquare_merged(observed, expected, min_expected=5.0):
    """Chi-square test with the cells of expected count < min_expected pooled into one (cells
    of expected count 0 must be empty and are left out)."""
    observed, expected = np.asarray(observed, dtype=float), np.asarray(expected, dtype=float)
    assert observed[expected == 0].sum() == 0, "a profile of probability 0 was chosen"
    keep = expected > 0
    observed, expected = observed[keep], expected[keep]
    small = expected < min_expected
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return stats.chisquare(observed, expected)


def test_router_decisions_follow_the_logged_propensities(seed):
    """Through the router (its defaults: 1024 scenarios, its exploration floor): the policy
    learns 201 outcomes, then stops learning (nothing more is recorded). Deciding the same
    request N = 20,000 times then chooses each profile with the frequency of its logged
    probability (chi-square, p > 0.001, cells of expected count < 5 pooled), every decision
    logs the same probability vector and its ``propensity`` is the probability of the chosen
    profile. a and b learn the same outcomes (so they split the scenarios about evenly, by
    their scenario normals), c slightly worse ones; d, excluded by the request's allow-list,
    has probability 0 and is never chosen."""
    profiles = [br.Profile(n, allow={"lane": [n, "open"]}) for n in "abc"]
    profiles.append(br.Profile("d", allow={"lane": ["closed"]}))
    router = br.Router(profiles, task_types=["chat"], policy="linear", features={"tokens": 1000.0}, seed=seed)
    for i in range(67):
        tokens = float(300 * (i % 10))
        for name, successes in (("a", 6), ("b", 6), ("c", 5)):
            d = router.decide({"lane": name, "tokens": tokens})
            assert d.profile == name
            router.record(d.id, quality=float((7 * i) % 10 < successes))
    context = {"lane": "open", "tokens": 1500.0}
    probabilities = router.probabilities(context)
    assert probabilities["d"] == 0.0
    assert min(probabilities["a"], probabilities["b"]) > 0.2  # the test has teeth: a mixed pmf
    n = 20_000
    counts = dict.fromkeys(router.profiles, 0)
    for _ in range(n):
        d = router.decide(context)
        assert d.probabilities == probabilities
        assert d.propensity == d.probabilities[d.profile]
        counts[d.profile] += 1
    result = _chisquare_merged([counts[p] for p in router.profiles], [probabilities[p] * n for p in router.profiles])
    assert result.pvalue > 1e-3, (counts, probabilities)


def test_the_learned_noise_is_the_rewards_noise(seed):
    """Rewards r = x . theta_k + N(0, sigma_k^2) with sigma = 0.2 for profile 0 and 0.5 for
    profile 1, 5,000 outcomes each: the learned noise ``spread_ / c`` estimates sigma_k.
    Tolerance on the variance: 5 standard errors of a variance estimate, sd(s^2) / s^2 =
    sqrt(2 / n), plus the pull of the prior (noise_sd^2 + lambda |theta|^2 + (d + 1) sigma^2,
    worth about one outcome) spread over n outcomes."""
    sigmas, n = np.array([0.2, 0.5]), 5000
    lin = LinearTS(2, ["chat", "code"], (("tokens", 1000.0),), seed=seed)
    rng = np.random.default_rng(seed)
    theta = np.array([[0.3, 0.6, 0.2, -0.4], [0.5, 0.1, -0.3, 0.2]])
    for _ in range(n):
        for k in (0, 1):
            ctx, w = {"tokens": float(rng.integers(0, 3000))}, rng.dirichlet(np.ones(2))
            x = lin.featurize(ctx, w)
            lin.learn_task(ctx, w, k, float(x @ theta[k] + rng.normal(0.0, sigmas[k])), 0.5)
    lin.refresh()
    learned = lin.spread_ / lin.posterior_scale
    assert lin.noise_sd() == pytest.approx(learned, rel=1e-15)
    pull = (1.0 + (theta ** 2).sum(axis=1) + (lin.dim + 1) * sigmas ** 2) / (n * sigmas ** 2)
    tolerance = 5 * np.sqrt(2 / n) + pull
    assert np.all(np.abs(learned ** 2 / sigmas ** 2 - 1) < tolerance), (learned, tolerance)
    assert np.all(tolerance < 0.12)  # a few percent on the sd


# -- hashed features (policies/featurize.py) ---------------------------------------------------

def test_text_buckets_are_a_stable_unit_vector():
    """A Text feature's buckets: ``crc32(n-gram, seed=crc32(field)) mod 2**bits`` of the UTF-8
    bytes, counts scaled to unit norm. The bucket numbers are a promise (a model learned on them
    must mean the same after an upgrade): "Fix the bug" in field ``prompt`` with the default
    Text (word unigrams, 256 buckets) is buckets 28 ("bug"), 104 ("fix") and 238 ("the")."""
    index, value = buckets("prompt", Text(), "Fix the bug")
    assert index.tolist() == [28, 104, 238] and value == pytest.approx([3 ** -0.5] * 3, rel=1e-15)
    seed = zlib.crc32(b"prompt")
    assert sorted(zlib.crc32(g, seed) % 256 for g in (b"fix", b"the", b"bug")) == [28, 104, 238]
    # a repeated gram counts twice: "fix" twice and 5 other grams (bigrams too), norm sqrt(4 + 5) = 3
    index, value = buckets("prompt", Text(ngrams=2), "Fix the bug fix")
    assert index.tolist() == [28, 67, 101, 104, 230, 238]
    assert value.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3], rel=1e-15)
    index, _ = buckets("prompt", Text(analyzer="char", ngrams=3, bits=6), "abcab")  # abc, bca, cab
    assert index.tolist() == [10, 49, 62]
    assert buckets("tenant", Category(), "acme")[0].tolist() == [32]
    assert buckets("tenant", Category(), "acme")[0] == zlib.crc32(b"acme", zlib.crc32(b"tenant")) % 64

    featurizer = Featurizer(["chat", "code"], (("tokens", 1000.0), ("prompt", Text()), ("tenant", Category())))
    assert featurizer.dim == 2 * 2 + 256 + 64
    for text in ("Fix the bug", "a a a a b", "Übersetze: «Grüße» 🙂 " * 5, "x"):
        x = featurizer.one({"prompt": text, "tokens": 10}, np.array([0.5, 0.5]))
        assert np.linalg.norm(x[4:260]) == pytest.approx(1.0, rel=1e-12), text
        assert not x[260:].any()
    x = featurizer.one({"prompt": "Fix the bug", "tenant": "acme"}, np.array([1.0, 0.0]))
    assert np.flatnonzero(x).tolist() == [0, 4 + 28, 4 + 104, 4 + 238, 260 + 32]


def test_a_missing_hashed_field_is_zeros_and_a_wrong_type_names_the_field():
    """A missing (or None) text or category field contributes nothing; a text that is not a
    string, or a category that is neither a string nor an integer, is an invalid request naming
    ``context.<field>``, for the policy and through the router."""
    featurizer = Featurizer(["chat"], (("prompt", Text(bits=4)), ("tenant", Category(bits=3))))
    for context in ({}, {"prompt": None, "tenant": None}, {"prompt": ""}):
        assert featurizer.one(context, np.array([1.0])).tolist() == [1.0] + [0.0] * 24, context
    tenant = featurizer.one({"tenant": 7}, np.array([1.0]))[17:]  # an integer is a category value
    assert sorted(tenant.tolist()) == [0.0] * 7 + [1.0]
    for field, value, kind in (("prompt", 42, r"a string \(a text feature\)"),
                               ("prompt", ["fix", "bug"], r"a string \(a text feature\)"),
                               ("tenant", True, r"a string or an integer \(a category feature\)"),
                               ("tenant", 1.5, r"a string or an integer \(a category feature\)")):
        with pytest.raises(br.InvalidRequestError, match=rf"^context\.{field} must be {kind}") as info:
            featurizer.one({field: value}, np.array([1.0]))
        assert info.value.field == f"context.{field}"

    router = br.Router([br.Profile("a"), br.Profile("b")], policy="linear", features={"prompt": Text()}, seed=0)
    assert sum(router.probabilities({}).values()) == pytest.approx(1.0)
    with pytest.raises(br.InvalidRequestError, match=r"^context\.prompt must be a string \(a text feature\)") as info:
        router.decide({"prompt": 3})
    assert info.value.field == "context.prompt"


def _every_profile_scored(pol, means, var, feasible):
    """The pmf with no pruning: every feasible profile's M scenarios, row by row, first maximiser wins."""
    n, k = means.shape
    sd = pol.spread_ * np.sqrt(np.maximum(var, 0.0))
    coef = np.empty((k, 1, 2), np.float32)
    ones_z = np.stack([np.ones_like(pol._z), pol._z], axis=1)
    out = np.zeros((n, k))
    for i in range(n):
        coef[:, 0, 0], coef[:, 0, 1] = means[i], sd[i]
        u = np.matmul(coef, ones_z)[:, 0]
        u[~feasible[i]] = -np.inf
        out[i] = np.bincount(u.argmax(axis=0), minlength=k)
    return out / pol.n_draws


@pytest.mark.parametrize("dim,n_profiles,n_draws", [(10, 8, 1024), (3, 4, 1000), (20, 13, 512), (5, 2, 1024)])
def test_scoring_only_contenders_gives_the_counts_of_scoring_every_profile(dim, n_profiles, n_draws, seed):
    """A batch scores only the profiles whose best scenario reaches another's worst (grouped by
    that set): the counts must equal scoring every feasible profile, exactly, on learned states
    where many profiles are out of contention and with random feasibility masks."""
    rng = np.random.default_rng(seed)
    pol = LinearTS(n_profiles, ["t"], tuple((f"f{i}", 1.0) for i in range(dim)), n_draws=n_draws, seed=seed)
    for t in range(600):
        x = {f"f{i}": float(v) for i, v in enumerate(rng.standard_normal(dim))}
        pol.learn(x, int(rng.integers(n_profiles)), float(rng.random() < 0.3 + 0.05 * (t % n_profiles)), 0.5)
    X = np.column_stack([np.ones(1500), rng.standard_normal((1500, dim))])
    feasible = rng.random((1500, n_profiles)) < 0.85
    feasible[:, 0] = True
    means, var = pol.moments(X)
    got = pol._shares(means, var, feasible)
    assert np.array_equal(got, _every_profile_scored(pol, means, var, feasible))
    contenders = (got > 0).sum(axis=1)
    assert (contenders == 1).any() and contenders.mean() < 0.8 * n_profiles or n_profiles == 2


def test_decide_batch_turns_the_cyclic_collector_back_on():
    import gc

    router = br.Router([br.Profile("a"), br.Profile("b")], policy="linear", features={"x": 1.0}, seed=0)
    frame = pl.DataFrame({"x": [0.1, 0.2, 0.3]})
    assert gc.isenabled()
    router.decide_batch(frame)
    router.decide_batch([{"x": 1.0}])
    assert gc.isenabled()
    gc.disable()
    try:
        router.decide_batch(frame)
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_more_profiles_than_a_bit_key_holds_are_grouped_by_their_own_feasible_sets(seed):
    """With 63 profiles or more the rows are grouped by their contender sets as arrays (no int64
    key): rows with different feasible profiles must not be scored over one another's set."""
    rng = np.random.default_rng(seed)
    pol = LinearTS(70, ["t"], (("f0", 1.0), ("f1", 1.0)), n_draws=256, seed=seed)
    for t in range(2000):
        pol.learn({"f0": float(rng.standard_normal()), "f1": float(rng.standard_normal())}, int(rng.integers(70)),
                  float(rng.random() < 0.2 + 0.6 * (t % 70) / 70), 0.5)
    X = np.column_stack([np.ones(300), rng.standard_normal((300, 2))])
    feasible = rng.random((300, 70)) < 0.5
    feasible[:, 0] = True
    means, var = pol.moments(X)
    got = pol._shares(means, var, feasible)
    assert np.array_equal(got, _every_profile_scored(pol, means, var, feasible))
    assert not (got[~feasible] > 0).any()
