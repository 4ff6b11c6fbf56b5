"""Contract checks every policy must pass, and the exactness of logged propensities."""

import copy
import json
import pickle

import numpy as np
import pytest
from scipy import stats

import banditroute as br
from conftest import TASKS, train

POLICIES = ["thompson", "greedy"]
TRUTH = {"small": {"chat": 0.80, "code": 0.40, "math": 0.30},
         "medium": {"chat": 0.82, "code": 0.70, "math": 0.60},
         "large": {"chat": 0.85, "code": 0.90, "math": 0.85}}


def trained(profiles, policy, seed, **kwargs):
    router = br.Router(profiles, task_types=TASKS, policy=policy, exploration=0.05, seed=seed,
                       objective=br.Objective(quality=1.0, cost=10.0), **kwargs)
    train(router, TRUTH, 300, np.random.default_rng(seed))
    return router


@pytest.mark.parametrize("policy", POLICIES)
def test_same_seed_same_decisions(profiles, policy, seed):
    a, b = trained(profiles, policy, seed), trained(profiles, policy, seed)
    ctxs = [{"task_type": t} for t in TASKS * 30]
    assert [d.profile for d in a.decide_batch(ctxs)] == [d.profile for d in b.decide_batch(ctxs)]
    assert a.beliefs().equals(b.beliefs())


@pytest.mark.parametrize("policy", POLICIES)
def test_probabilities_sum_to_one_over_feasible(profiles, policy, seed):
    router = trained(profiles, policy, seed, budget=br.Budget(max_latency_ms=1000))
    for task in TASKS:
        d = router.decide({"task_type": task})
        assert sum(d.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
        assert d.probabilities["large"] == 0.0 and "large" in d.excluded
        assert min(d.probabilities["small"], d.probabilities["medium"]) >= 0.05 / 2 - 1e-12  # exploration floor
        assert d.propensity == d.probabilities[d.profile] and d.profile != "large"


@pytest.mark.parametrize("policy", POLICIES)
def test_empirical_frequencies_match_logged_propensities(profiles, policy, seed, tmp_path):
    """With a frozen posterior, the executed profiles are a multinomial sample of the logged pmf."""
    router = trained(profiles, policy, seed, log_dir=tmp_path)
    n = 30_000
    for task in TASKS:
        decisions = router.decide_batch([{"task_type": task}] * (n // 2)) + [
            router.decide({"task_type": task}) for _ in range(n // 2)]
        pmf = decisions[0].probabilities
        assert all(d.probabilities == pmf for d in decisions)  # no learning in between: frozen
        names = [p for p in router.profiles if pmf[p] > 0]
        observed = np.array([sum(d.profile == p for d in decisions) for p in names])
        expected = np.array([pmf[p] for p in names]) * n
        assert stats.chisquare(observed, expected).pvalue > 1e-3
    # and what was logged is what was used
    router.flush()
    logged = br.scan_table(tmp_path, "decisions").tail(1).collect().row(0, named=True)
    assert dict(zip(logged["profiles"], logged["probabilities"])) == router.probabilities({"task_type": "math"})
    assert logged["propensity"] == dict(zip(logged["profiles"], logged["probabilities"]))[logged["profile"]]


@pytest.mark.parametrize("policy", POLICIES)
def test_probabilities_is_pure_and_equals_logged_vector(profiles, policy, seed, tmp_path):
    router = trained(profiles, policy, seed, log_dir=tmp_path)
    ctx = {"task_type": "code", "tenant": "acme"}
    before = router.probabilities(ctx)
    state = pickle.dumps(router)
    for _ in range(5):
        assert router.probabilities(ctx) == before
    assert pickle.dumps(router) == state  # no side effect: not even the generator moved
    d = router.decide(ctx)
    assert dict(d.probabilities) == before
    router.flush()
    row = br.scan_table(tmp_path, "decisions").filter(decision_id=d.id).collect().row(0, named=True)
    assert dict(zip(row["profiles"], row["probabilities"])) == before
    assert json.loads(row["context"]) == ctx and row["profile"] == d.profile


@pytest.mark.parametrize("policy", POLICIES)
def test_pickle_round_trip_continues_identically(profiles, policy, seed):
    router = trained(profiles, policy, seed)
    clone = pickle.loads(pickle.dumps(router))
    assert clone.beliefs().equals(router.beliefs())
    ctxs = [{"task_type": t} for t in TASKS * 20]
    assert [d.profile for d in clone.decide_batch(ctxs)] == [d.profile for d in router.decide_batch(ctxs)]


@pytest.mark.parametrize("policy", POLICIES)
def test_save_load_round_trip(profiles, policy, seed, tmp_path):
    router = trained(profiles, policy, seed)
    pending = router.decide({"task_type": "math"})
    router.save(tmp_path / "state.pkl")
    loaded = br.Router.load(tmp_path / "state.pkl")
    assert loaded.beliefs().equals(router.beliefs())
    assert loaded.probabilities({"task_type": "chat"}) == router.probabilities({"task_type": "chat"})
    assert loaded.record(pending.id, quality=1.0) == "applied"  # pending decisions survive a restart
    assert loaded.record(pending.id, quality=1.0) == "duplicate"


@pytest.mark.parametrize("policy", POLICIES)
def test_deciding_does_not_mutate_the_request(profiles, policy, seed):
    router = trained(profiles, policy, seed)
    ctx = {"task_type": "code", "tenant": "acme", "meta": {"tags": ["a", "b"]}, "prompt_tokens": 812}
    snapshot = copy.deepcopy(ctx)
    router.decide(ctx)
    router.decide_batch([ctx, ctx])
    router.probabilities(ctx)
    assert ctx == snapshot


@pytest.mark.parametrize("policy", POLICIES)
def test_batch_equals_sequential(profiles, policy, seed):
    a, b = trained(profiles, policy, seed), trained(profiles, policy, seed)
    ctxs = [{"task_type": t, "i": i} for i, t in enumerate(TASKS * 50)]
    batch = a.decide_batch(ctxs)
    seq = [b.decide(c) for c in ctxs]
    assert [(d.profile, d.propensity, dict(d.probabilities)) for d in batch] == \
           [(d.profile, d.propensity, dict(d.probabilities)) for d in seq]


def test_decisions_are_read_only_and_picklable(profiles, seed):
    d = br.Router(profiles, seed=seed).decide({})
    with pytest.raises(TypeError):
        d.probabilities["small"] = 1.0
    again = pickle.loads(pickle.dumps(d))
    assert again == d and dict(again.probabilities) == dict(d.probabilities)


def test_action_distribution_matches_probabilities(profiles, seed):
    import polars as pl

    router = trained(profiles, "thompson", seed)
    ctxs = [{"task_type": t} for t in TASKS]
    names = ["large", "unknown", "small", "medium"]
    dist = router.action_distribution(ctxs, names)
    assert dist.shape == (3, 4) and np.allclose(dist.sum(axis=1), 1.0) and (dist[:, 1] == 0).all()
    for row, ctx in zip(dist, ctxs):
        p = router.probabilities(ctx)
        assert row.tolist() == [p["large"], 0.0, p["small"], p["medium"]]
    frame = pl.DataFrame({"task_type": TASKS, "tenant": [None, "acme", None]})
    assert np.array_equal(router.action_distribution(frame, names), dist)
    with pytest.raises(br.ConfigError, match=r"profiles must include every profile the router can play"):
        router.action_distribution(ctxs, ["small", "medium"])


@pytest.mark.parametrize("policy", POLICIES)
def test_dataframe_batch_equals_row_batch(policy, seed, tmp_path):
    import polars as pl

    profiles = [br.Profile("eu", allow={"region": ["eu"]}), br.Profile("any"), br.Profile("cheap", cost_usd=0.001)]
    rows = [{"task_type": TASKS[i % 3], "region": ["eu", "us", None][i % 3], "n": float(i)} for i in range(300)]
    a = br.Router(profiles, task_types=TASKS, policy=policy, seed=seed, log_dir=tmp_path / "a")
    b = br.Router(profiles, task_types=TASKS, policy=policy, seed=seed, log_dir=tmp_path / "b")
    by_frame = a.decide_batch(pl.DataFrame(rows))
    by_rows = b.decide_batch([{k: v for k, v in r.items() if v is not None} for r in rows])
    assert [(d.profile, d.propensity, dict(d.probabilities), dict(d.excluded)) for d in by_frame] == \
           [(d.profile, d.propensity, dict(d.probabilities), dict(d.excluded)) for d in by_rows]
    a.flush()
    logged = br.scan_table(tmp_path / "a", "decisions").collect()
    assert json.loads(logged["context"][1]) == {"task_type": "code", "region": "us", "n": 1.0}
    assert logged["propensity"].to_list() == [d.propensity for d in by_frame]


def test_dataframe_batch_reports_bad_rows_like_the_row_path(profiles):
    import polars as pl

    router = br.Router(profiles, task_types=TASKS, seed=0)
    with pytest.raises(br.InvalidRequestError, match=r"context\.x must be a finite number, got nan"):
        router.decide_batch(pl.DataFrame({"task_type": ["chat", "code"], "x": [1.0, float("nan")]}))
    with pytest.raises(br.InvalidRequestError, match=r"context\.task_type must be one of .*, got 'poetry'"):
        router.decide_batch(pl.DataFrame({"task_type": ["chat", "poetry"]}))
    assert router.decide_batch(pl.DataFrame({"task_type": []}, schema={"task_type": pl.String})) == []
