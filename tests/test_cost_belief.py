"""CostBelief: learned cost and latency per (profile, task type) and its fixed scenario bank."""

import tracemalloc

import numpy as np
import pytest
from scipy.stats import norm

from banditroute.beliefs.costs import CostBelief
from banditroute.errors import ConfigError, InvalidOutcomeError

M = 1024


def belief(n_profiles=3, n_tasks=2, **kwargs):
    cost0 = np.linspace(0.001, 0.01, n_profiles * n_tasks).reshape(n_profiles, n_tasks)
    latency0 = np.linspace(300.0, 3000.0, n_profiles * n_tasks).reshape(n_profiles, n_tasks)
    return CostBelief(cost0, latency0, **{"n_draws": M, **kwargs})


def random_outcomes(rng, n, n_profiles, n_tasks, missing=0.2):
    ks = rng.integers(n_profiles, size=n)
    w = rng.dirichlet(np.ones(n_tasks), size=n)
    w[rng.random(n) < 0.3] = np.eye(n_tasks)[rng.integers(n_tasks)]  # some certain task types
    cost = rng.lognormal(np.log(0.005), 0.7, size=n)
    latency = rng.lognormal(np.log(800.0), 0.4, size=n)
    cost[rng.random(n) < missing] = np.nan
    latency[rng.random(n) < missing] = np.nan
    return ks, w, cost, latency


def feed(b, outcomes):
    for k, w, c, lat in zip(*outcomes):
        b.update(int(k), w, None if np.isnan(c) else float(c), None if np.isnan(lat) else float(lat))


# -- the model ----------------------------------------------------------------------------------
def test_posterior_is_the_normal_inverse_gamma_one():
    """Known answer: m, and sd^2 = beta_n / (alpha_n kappa_n) of the NIG posterior."""
    n0, m0, cv = 5.0, 2.0, 0.5
    b = CostBelief(np.array([[m0]]), np.array([[100.0]]), prior_weight=n0, prior_cv=cv, n_draws=64,
                   refresh_every=1)
    x = np.array([1.0, 2.5, 4.0, 3.0])
    w = np.array([1.0, 0.5, 1.0, 0.25])
    for xi, wi in zip(x, w):
        b.update(0, np.array([wi]), xi, None)
    n, xbar = w.sum(), (w * x).sum() / w.sum()
    kappa = n0 + n
    mean = (n0 * m0 + n * xbar) / kappa
    alpha = (n0 + n) / 2
    beta = (n0 * (cv * m0) ** 2 + (w * (x - xbar) ** 2).sum() + n0 * n * (xbar - m0) ** 2 / kappa) / 2
    cost, latency = b.means()
    assert cost[0, 0] == pytest.approx(mean, rel=1e-12)
    assert b.summary_columns()["cost_sd"][0] == pytest.approx(np.sqrt(beta / (alpha * kappa)), rel=1e-12)
    assert b.summary_columns()["cost_n"][0] == pytest.approx(n)
    assert latency[0, 0] == 100.0 and b.summary_columns()["latency_n"][0] == 0.0  # not observed


def test_posterior_mean_converges_to_the_true_mean(seed):
    rng = np.random.default_rng(seed)
    m0, n0, s_log = 0.001, 5.0, 0.5
    true_mean = 100 * m0
    mu_log = np.log(true_mean) - s_log ** 2 / 2
    true_sd = true_mean * np.sqrt(np.exp(s_log ** 2) - 1)
    b = CostBelief(np.array([[m0]]), np.array([[500.0]]), prior_weight=n0, n_draws=256, refresh_every=1)
    x = rng.lognormal(mu_log, s_log, size=2000)
    for i, xi in enumerate(x, 1):
        b.update(0, np.array([1.0]), float(xi), None)
        if i == 20:
            assert b.means()[0][0, 0] > 10 * m0  # the data overrule a 100x-wrong prior quickly
    n = len(x)
    expected = (n0 * m0 + n * true_mean) / (n0 + n)  # E[m], prior pull included
    se = n / (n0 + n) * true_sd / np.sqrt(n)
    assert abs(b.means()[0][0, 0] - expected) < 4 * se
    # the model's sd of the mean estimates the true standard error (relative sd of the sample
    # sd of lognormal(0.5) data is ~3% at n = 2000; 15% is ~4 of those plus the prior's pull)
    assert b.sd_[0, 0, 0] == pytest.approx(true_sd / np.sqrt(n0 + n), rel=0.15)


def test_bank_moments_match_the_posterior(seed):
    rng = np.random.default_rng(seed)
    b = CostBelief(np.full((3, 2), 0.005), np.full((3, 2), 800.0), prior_cv=0.1, n_draws=M)  # no truncation at 0
    ks, w, cost, latency = random_outcomes(rng, 30, 3, 2, missing=0.0)
    b.update_many(ks, w, cost * 0 + rng.normal(0.005, 0.0002, 30), latency * 0 + rng.normal(800.0, 40.0, 30))
    b.refresh()
    for i in range(2):
        bank = b.scenarios_[i]  # (T, M, K)
        mean, sd = b.mean_[i].T, b.sd_[i].T  # (T, K)
        assert np.all(mean - 6 * sd > 0)
        # Monte Carlo tolerances of M independent draws (stratified draws do far better)
        assert np.all(np.abs(bank.mean(axis=1) - mean) < 3 * sd / np.sqrt(M))
        assert np.all(np.abs(bank.std(axis=1) / sd - 1) < 3 / np.sqrt(2 * M))


def test_bank_is_truncated_at_zero_with_the_truncated_mean():
    b = CostBelief(np.array([[1.0]]), np.array([[1.0]]), prior_cv=1.0, prior_weight=0.5, n_draws=M)
    m, sd = b.mean_[0, 0, 0], b.sd_[0, 0, 0]
    assert m / sd < 1  # a cell with a large share of the normal below 0
    bank = b.scenarios_[0, 0, :, 0]
    assert bank.min() == 0.0 and np.mean(bank == 0) == pytest.approx(norm.cdf(-m / sd), abs=1 / M)
    truncated_mean = m * norm.cdf(m / sd) + sd * norm.pdf(m / sd)  # E[max(0, N(m, sd^2))]
    assert bank.mean() == pytest.approx(truncated_mean, abs=3 * sd / np.sqrt(M))


def test_cost_and_latency_scenarios_are_independent():
    b = CostBelief(np.ones((2, 2)), np.ones((2, 2)), n_draws=M)  # same posterior for both metrics
    z = b.scenarios_  # (2, T, M, K)
    assert not np.array_equal(z[0], z[1])
    for t in range(2):
        for k in range(2):
            assert abs(np.corrcoef(z[0, t, :, k], z[1, t, :, k])[0, 1]) < 4 / np.sqrt(M)
        assert abs(np.corrcoef(z[0, t, :, 0], z[0, t, :, 1])[0, 1]) < 4 / np.sqrt(M)


# -- learning in bulk, determinism --------------------------------------------------------------
def test_update_many_equals_update_one_by_one(seed):
    rng = np.random.default_rng(seed)
    outcomes = random_outcomes(rng, 500, 3, 4, missing=0.3)
    one, many = belief(3, 4, refresh_every=7), belief(3, 4, refresh_every=7)
    feed(one, outcomes)
    many.update_many(*outcomes)
    np.testing.assert_allclose(many.evidence(), one.evidence(), rtol=1e-12, atol=0)
    assert many.n_updates_ == one.n_updates_ == 500
    assert many.refresh_due
    one.refresh(), many.refresh()
    assert not many.refresh_due
    np.testing.assert_allclose(many.scenarios_, one.scenarios_, rtol=1e-12, atol=0)
    seen = ~np.isnan(outcomes[2])
    assert one.evidence()[0, 0].sum() == pytest.approx(outcomes[1][seen].sum())  # only observed costs count


def test_bank_is_a_function_of_the_statistics_alone(seed):
    """Same statistics, different refresh histories: identical banks."""
    rng = np.random.default_rng(seed)
    outcomes = random_outcomes(rng, 200, 3, 2)
    every, rarely, bulk = belief(refresh_every=1), belief(refresh_every=50), belief()
    feed(every, outcomes)
    feed(rarely, outcomes)
    rarely.refresh()
    bulk.update_many(*outcomes)
    bulk.refresh()
    assert every.version_ > rarely.version_ > 1
    for other in (rarely, bulk):
        assert np.array_equal(other.evidence(), every.evidence())
        assert np.array_equal(other.scenarios_, every.scenarios_)
        assert np.array_equal(other.penalty_draws(1, 2.0, 0.5), every.penalty_draws(1, 2.0, 0.5))


def test_add_profile_keeps_existing_cells_and_matches_a_fresh_belief():
    cost0 = np.array([[0.001, 0.002], [0.01, 0.02], [0.005, 0.004]])
    latency0 = np.array([[300.0, 400.0], [900.0, 1200.0], [700.0, 600.0]])
    b = CostBelief(cost0[:2], latency0[:2], n_draws=M)
    before, version = b.scenarios_.copy(), b.version_
    b.add_profile(cost0[2], latency0[2])
    assert b.shape == (3, 2) and b.version_ == version + 1
    assert np.array_equal(b.scenarios_[..., :2], before)
    fresh = CostBelief(cost0, latency0, n_draws=M)
    assert np.array_equal(b.scenarios_, fresh.scenarios_)
    b.update(2, np.array([0.0, 1.0]), 0.003, 650.0)
    assert b.evidence()[:, 0, 2, 1].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="latency0 must be an array of shape \\(2,\\)"):
        b.add_profile(np.ones(2), np.ones(3))


# -- reading --------------------------------------------------------------------------------
def test_expected_and_penalty_draws_for_a_task_index_and_a_posterior(seed):
    rng = np.random.default_rng(seed)
    b = belief(3, 3, refresh_every=1)
    feed(b, random_outcomes(rng, 100, 3, 3))
    cost, latency = b.means()
    c1, l1 = b.expected(1)
    assert np.array_equal(c1, cost[:, 1]) and np.array_equal(l1, latency[:, 1])
    post = np.array([0.2, 0.5, 0.3])
    cp, lp = b.expected(post)
    np.testing.assert_allclose(cp, cost @ post, rtol=1e-12)
    np.testing.assert_allclose(lp, latency @ post, rtol=1e-12)

    draws = b.penalty_draws(1, 10.0, 0.002)
    assert draws.shape == (M, 3)
    np.testing.assert_allclose(draws, 10.0 * b.scenarios_[0, 1] + 0.002 * b.scenarios_[1, 1], rtol=1e-12)
    np.testing.assert_allclose(b.penalty_draws(np.eye(3)[1], 10.0, 0.002), draws, rtol=1e-12)
    mixed = sum(p * b.penalty_draws(t, 10.0, 0.002) for t, p in enumerate(post))
    np.testing.assert_allclose(b.penalty_draws(post, 10.0, 0.002), mixed, rtol=1e-12)
    np.testing.assert_allclose(b.penalty_draws(post, 0.0, 1.0), np.tensordot(post, b.scenarios_[1], axes=(0, 0)),
                               rtol=1e-12)
    assert np.array_equal(b.penalty_draws(2, 1.0, 0.0), b.scenarios_[0, 2])
    assert b.penalty_draws(1, 0.0, 0.0) is None and b.penalty_draws(post, 0.0, 0.0) is None
    # a fresh array every call: changing it changes nothing inside
    draws[:] = -1.0
    assert np.all(b.penalty_draws(1, 10.0, 0.002) >= 0)
    assert np.all(b.scenarios_ >= 0)


def test_penalty_draws_for_a_task_index_allocates_no_task_by_draw_bank():
    """No (T, M, K) temporary per call: the allocation peak stays a few (M, K) arrays."""
    n_tasks, n_profiles = 16, 4
    b = CostBelief(np.ones((n_profiles, n_tasks)), np.ones((n_profiles, n_tasks)), n_draws=M)
    b.penalty_draws(3, 1.0, 1.0)  # warm up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        out = b.penalty_draws(3, 1.0, 1.0)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    one = M * n_profiles * 8
    assert out.nbytes == one
    assert one <= peak <= 3 * one < n_tasks * one


def test_means_lag_the_statistics_until_a_refresh():
    b = belief(refresh_every=4)
    version, before = b.version_, b.means()[0].copy()
    for _ in range(3):
        b.update(0, np.array([1.0, 0.0]), 1.0, None)
    assert np.array_equal(b.means()[0], before) and b.version_ == version and not b.refresh_due
    assert b.summary_columns()["cost_mean"][0] > before[0, 0]  # the summary shows the statistics
    b.update(0, np.array([1.0, 0.0]), 1.0, None)  # the 4th: refresh
    assert b.version_ == version + 1 and b.means()[0][0, 0] > before[0, 0]
    assert np.array_equal(b.means()[0][1:], before[1:]) and b.means()[0][0, 1] == before[0, 1]
    assert not b.refresh()  # nothing new: no new version
    assert b.version_ == version + 1


def test_an_observation_at_the_mean_still_narrows_the_bank():
    b = CostBelief(np.array([[1.0]]), np.array([[1.0]]), n_draws=M, refresh_every=1)
    version, bank = b.version_, b.scenarios_[0].copy()
    b.update(0, np.array([1.0]), 1.0, None)  # m stays (5 * 1 + 1) / 6 = 1, sd shrinks
    assert b.means()[0][0, 0] == 1.0 and b.version_ == version + 1
    assert b.scenarios_[0].std() < bank.std()


def test_summary_columns_are_profile_major():
    b = belief(3, 2, refresh_every=1)
    b.update(2, np.array([0.0, 1.0]), 0.5, 100.0)
    cols = b.summary_columns()
    assert set(cols) == {"cost_mean", "cost_sd", "cost_n", "latency_mean", "latency_sd", "latency_n"}
    assert all(c.shape == (6,) for c in cols.values())
    assert cols["cost_n"].tolist() == [0, 0, 0, 0, 0, 1.0]
    np.testing.assert_array_equal(cols["latency_mean"], b.means()[1].ravel())
    np.testing.assert_array_equal(cols["cost_sd"], b.sd_[0].ravel())


# -- recalibration, merging, state --------------------------------------------------------------
def test_shrink_keeps_the_given_fraction(seed):
    rng = np.random.default_rng(seed)
    b = belief(refresh_every=1000)
    feed(b, random_outcomes(rng, 300, 3, 2, missing=0.0))
    before, version = b.evidence(), b.version_
    b.shrink(1, 0, "latency", 0.25)
    after = b.evidence()
    np.testing.assert_allclose(after[1, :, 1, 0], 0.25 * before[1, :, 1, 0], rtol=1e-15)
    after[1, :, 1, 0] = before[1, :, 1, 0]
    assert np.array_equal(after, before)  # nothing else changed
    assert b.version_ == version + 1
    assert b.means()[1][1, 0] == pytest.approx(b.summary_columns()["latency_mean"][2])  # refreshed
    with pytest.raises(ConfigError, match="metric must be one of"):
        b.shrink(0, 0, "price", 0.5)
    with pytest.raises(ConfigError, match="keep must be in"):
        b.shrink(0, 0, "cost", 1.5)


def test_set_evidence_merges_replicas(seed):
    rng = np.random.default_rng(seed)
    first, second = random_outcomes(rng, 100, 3, 2), random_outcomes(rng, 150, 3, 2)
    a, b, both = belief(), belief(), belief()
    a.update_many(*first)
    b.update_many(*second)
    both.update_many(*(np.concatenate(pair) for pair in zip(first, second)))
    merged = belief()
    version = merged.version_
    merged.set_evidence(a.evidence() + b.evidence())
    both.refresh()
    assert merged.version_ == version + 1
    np.testing.assert_allclose(merged.means()[0], both.means()[0], rtol=1e-12)
    np.testing.assert_allclose(merged.scenarios_, both.scenarios_, rtol=1e-9)
    bad = merged.evidence()
    bad[0, 0, 0, 0] = -1.0
    with pytest.raises(ConfigError, match="stats must be a finite, non-negative array of shape"):
        merged.set_evidence(bad)
    bad = merged.evidence()
    bad[1, 1, 2, 1] = -0.5  # a negative sum of non-negative latencies
    with pytest.raises(ConfigError, match="stats must be"):
        merged.set_evidence(bad)
    with pytest.raises(ConfigError, match="stats must be"):
        merged.set_evidence(np.zeros((2, 3, 2, 2)))


def test_state_round_trip_continues_exactly(seed):
    rng = np.random.default_rng(seed)
    original = belief(refresh_every=16)
    feed(original, random_outcomes(rng, 40, 3, 2))  # 8 updates pending since the last refresh
    arrays = original.state_arrays()
    restored = belief(refresh_every=16)
    restored.update(0, np.array([1.0, 0.0]), 5.0, 5.0)  # a history of its own, overwritten
    restored.load_state_arrays(arrays)
    assert restored.version_ > original.version_ and restored.n_updates_ == 40
    post = np.array([0.3, 0.7])
    for task in (0, 1, post):
        assert np.array_equal(restored.penalty_draws(task, 3.0, 0.01), original.penalty_draws(task, 3.0, 0.01))
    more = random_outcomes(rng, 30, 3, 2)
    feed(original, more)
    feed(restored, more)
    assert np.array_equal(restored.scenarios_, original.scenarios_)
    assert np.array_equal(restored.means()[1], original.means()[1])


def test_load_state_refuses_bad_arrays_before_changing_anything():
    b = belief()
    good = b.state_arrays()
    snapshot = b.state_arrays()
    cases = [("stats", np.zeros((2, 3, 3, 3)), "costs.stats must be an array of shape \\(2, 3, 3, 2\\)"),
             ("prior", good["prior"].astype(np.float32), "costs.prior must be an array of shape"),
             ("sd", np.full((2, 3, 2), np.nan), "costs.sd must be finite"),
             ("mean", -good["mean"], "costs.mean must be >= 0"),
             ("counters", np.array([1, -1, 0]), "costs.counters must be non-negative")]
    for name, value, message in cases:
        with pytest.raises(ConfigError, match=message):
            b.load_state_arrays({**good, name: value})
    with pytest.raises(ConfigError, match="costs.sd is missing"):
        b.load_state_arrays({k: v for k, v in good.items() if k != "sd"})
    after = b.state_arrays()
    assert all(np.array_equal(after[k], snapshot[k]) for k in snapshot)


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"prior_weight": 0.0}, "prior_weight must be > 0, got 0.0"),
    ({"prior_weight": np.nan}, "prior_weight must be > 0"),
    ({"prior_cv": -0.1}, "prior_cv must be >= 0, got -0.1"),
    ({"n_draws": 0}, "n_draws must be an integer >= 1"),
    ({"refresh_every": 2.5}, "refresh_every must be an integer >= 1"),
    ({"cost0": [[0.1, -1.0]]}, "cost0 must be finite and >= 0"),
    ({"latency0": [[np.inf, 1.0]]}, "latency0 must be finite and >= 0"),
    ({"latency0": [[1.0, 1.0, 1.0]]}, "latency0 must have the shape of cost0"),
    ({"cost0": [1.0, 1.0], "latency0": [1.0, 1.0]}, "cost0 must be an array of shape \\(n_profiles, n_task_types\\)"),
])
def test_constructor_checks_name_the_field(kwargs, message):
    args = {"cost0": [[0.1, 0.2]], "latency0": [[100.0, 200.0]], **kwargs}
    with pytest.raises(ConfigError, match=message):
        CostBelief(args.pop("cost0"), args.pop("latency0"), **args)


def test_bad_outcomes_are_refused_before_anything_changes():
    b = belief(refresh_every=1)
    before = b.evidence()
    for cost, latency, message in [(-1.0, 10.0, "cost_usd must be a finite number >= 0, got -1.0"),
                                   (1.0, np.nan, "latency_ms must be a finite number >= 0, got nan"),
                                   (np.inf, None, "cost_usd must be")]:
        with pytest.raises(InvalidOutcomeError, match=message):
            b.update(0, np.array([1.0, 0.0]), cost, latency)
    with pytest.raises(ValueError, match="latency_ms must be a finite number >= 0 \\(or NaN"):
        b.update_many(np.array([0, 1]), np.eye(2), np.array([1.0, np.nan]), np.array([1.0, -np.inf]))
    with pytest.raises(ValueError, match="update_many needs"):
        b.update_many(np.array([0]), np.eye(2), np.array([1.0]), np.array([1.0]))
    assert np.array_equal(b.evidence(), before) and b.n_updates_ == 0
