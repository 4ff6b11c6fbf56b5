"""Shadow and canary stages: logged propensities stay exact, events are recorded."""

import json

import numpy as np
import pytest
from scipy import stats

import banditroute as br
from conftest import TASKS, train

TRUTH = {"small": {"chat": 0.8, "code": 0.3, "math": 0.2},
         "medium": {"chat": 0.8, "code": 0.6, "math": 0.5},
         "large": {"chat": 0.8, "code": 0.9, "math": 0.9}}


class Table:
    """A static routing table as a candidate policy."""

    def __init__(self, table):
        self.table = table

    def probabilities(self, context):
        return {self.table[context["task_type"]]: 1.0}


def trained(profiles, seed, **kwargs):
    router = br.Router(profiles, task_types=TASKS, seed=seed, exploration=0.05, **kwargs)
    train(router, TRUTH, 600, np.random.default_rng(seed))
    return router


def test_shadow_is_logged_and_changes_nothing(profiles, seed, tmp_path):
    a, b = trained(profiles, seed), trained(profiles, seed, log_dir=tmp_path)
    table = Table({"chat": "small", "code": "medium", "math": "medium"})
    b.add_shadow("table", table, who="alice", why="compare with the benchmark table")
    ctxs = [{"task_type": t} for t in TASKS * 40]
    assert [d.profile for d in a.decide_batch(ctxs)] == [d.profile for d in b.decide_batch(ctxs)]
    b.flush()
    rows = br.scan_table(tmp_path, "decisions").filter(br_shadow_filter()).collect()
    assert rows.height == len(ctxs)
    for row in rows.iter_rows(named=True):
        shadow = json.loads(row["shadow"])["table"]
        expected = table.probabilities(json.loads(row["context"]))
        assert dict(zip(row["profiles"], shadow)) == {p: expected.get(p, 0.0) for p in row["profiles"]}
    events = br.scan_table(tmp_path, "events").collect()
    assert events.select("event", "policy", "who", "why").row(0) == (
        "shadow_start", "table", "alice", "compare with the benchmark table")


def br_shadow_filter():
    import polars as pl

    return pl.col("shadow").is_not_null()


def test_canary_propensity_is_the_mixture_and_exact(profiles, seed, tmp_path):
    router = trained(profiles, seed, log_dir=tmp_path)
    table = Table({"chat": "medium", "code": "medium", "math": "small"})
    prod = {t: router.probabilities({"task_type": t}) for t in TASKS}
    router.start_canary("table", table, fraction=0.3, who="bob", why="cheaper on math")
    n = 20_000
    for task in TASKS:
        decisions = router.decide_batch([{"task_type": task}] * n)
        cand = table.probabilities({"task_type": task})
        mixture = {p: 0.7 * prod[task][p] + 0.3 * cand.get(p, 0.0) for p in router.profiles}
        assert dict(decisions[0].probabilities) == pytest.approx(mixture, abs=1e-12)
        assert all(d.propensity == d.probabilities[d.profile] for d in decisions)
        names = [p for p in router.profiles if mixture[p] > 0]
        observed = [sum(d.profile == p for d in decisions) for p in names]
        assert stats.chisquare(observed, [mixture[p] * n for p in names]).pvalue > 1e-3


def test_canary_logs_pass_the_weight_mean_check_and_ips_recovers_the_candidate(profiles, seed, tmp_path):
    """Mean importance weight ~ 1 within its standard error; IPS of the candidate ~ its true value."""
    rng = np.random.default_rng(seed + 7)
    router = trained(profiles, seed, log_dir=tmp_path, refresh_every=10**9)  # a frozen bank
    table = Table({"chat": "small", "code": "large", "math": "large"})
    router.start_canary("table", table, fraction=0.2, who="carol", why="test")
    weights, ips = [], []
    for i in range(30_000):
        task = TASKS[i % 3]
        d = router.decide({"task_type": task})
        quality = float(rng.random() < TRUTH[d.profile][task])
        router.record(d.id, quality=quality)
        target = table.probabilities({"task_type": task}).get(d.profile, 0.0)
        weights.append(target / d.propensity)
        ips.append(target / d.propensity * quality)
    w, v = np.array(weights), np.array(ips)
    assert abs(w.mean() - 1.0) <= 4 * w.std(ddof=1) / np.sqrt(w.size)
    truth = np.mean([TRUTH[table.table[t]][t] for t in TASKS])
    assert abs(v.mean() - truth) <= 4 * v.std(ddof=1) / np.sqrt(v.size)


def test_promote_and_rollback_are_recorded(profiles, seed, tmp_path):
    router = trained(profiles, seed, log_dir=tmp_path)
    candidate = br.Router(profiles, task_types=TASKS, seed=seed, policy="greedy", exploration=0.0)
    router.start_canary("greedy", candidate, fraction=0.1, who="dana", why="exploit more")
    d = router.decide({"task_type": "code"})
    router.record(d.id, quality=1.0)
    assert candidate.beliefs()["n"].sum() == pytest.approx(1.0)  # the candidate learns too
    assert router.promote(who="dana", why="gate passed") is candidate
    assert router.probabilities({"task_type": "math"}) == candidate.probabilities({"task_type": "math"})
    router.rollback(who="erin", why="latency regression")
    assert router.probabilities({"task_type": "math"}) != candidate.probabilities({"task_type": "math"})
    events = br.scan_table(tmp_path, "events").collect()  # durable at once, no flush needed
    assert events.select("event", "policy", "fraction", "who", "why").rows() == [
        ("canary_start", "greedy", 0.1, "dana", "exploit more"),
        ("promote", "greedy", 1.0, "dana", "gate passed"),
        ("rollback", "greedy", 1.0, "erin", "latency regression")]


def test_rollout_errors(profiles):
    router = br.Router(profiles, task_types=TASKS, seed=0)
    with pytest.raises(br.ConfigError, match=r"fraction must be <= 1, got 1\.5"):
        router.start_canary("t", Table({}), fraction=1.5, who="a", why="b")
    with pytest.raises(br.ConfigError, match=r"policy must have probabilities\(context\)"):
        router.add_shadow("x", object())
    with pytest.raises(br.ConfigError, match=r"canary is not running"):
        router.rollback(who="a", why="b")
    router.start_canary("t", Table({"code": "unknown"}), fraction=0.5, who="a", why="b")
    with pytest.raises(br.ConfigError, match=r"t\.probabilities is not a profile of this router .*got 'unknown'"):
        router.decide({"task_type": "code"})
    with pytest.raises(br.ConfigError, match=r"canary is already running"):
        router.start_canary("u", Table({}), fraction=0.5, who="a", why="b")
