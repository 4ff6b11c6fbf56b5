"""record(): statuses, posterior updates, forgetting, replay, routing rules."""

import numpy as np
import polars as pl
import pytest

import banditroute as br
from conftest import TASKS, train

TRUTH = {"small": {"chat": 0.8, "code": 0.3, "math": 0.2},
         "medium": {"chat": 0.8, "code": 0.6, "math": 0.5},
         "large": {"chat": 0.8, "code": 0.9, "math": 0.9}}


def test_record_statuses(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed, wait_window_s=3600, max_pending=2)
    first, second, third = (router.decide({"task_type": "code"}) for _ in range(3))
    assert router.record(third.id, quality=1.0) == "applied"
    assert router.record(third.id, quality=0.0) == "duplicate"  # idempotent: never double-counted
    assert router.beliefs()["n"].sum() == pytest.approx(1.0)
    # max_pending=2: the oldest decision left the pending window, its outcome is late
    assert router.record(first.id, quality=1.0) == "late"
    assert router.beliefs()["n"].sum() == pytest.approx(1.0)
    assert router.record(second.id, quality=0.5) == "applied"
    with pytest.raises(br.UnknownDecisionError, match=r"decision_id was not issued by this router, got 'nope-1'"):
        router.record("nope-1", quality=1.0)
    with pytest.raises(br.UnknownDecisionError, match=r"decision_id was not issued by this router"):
        router.record(f"{third.id.rsplit('-', 1)[0]}-999", quality=1.0)  # our writer, never issued


def test_a_batch_past_max_pending_evicts_the_oldest(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed, max_pending=10)
    early = router.decide_batch([{"task_type": "code"}] * 4)
    assert router.record(early[0].id, quality=1.0) == "applied"
    batch = router.decide_batch([{"task_type": "chat"}] * 25)  # 29 pending > 10: 19 leave at once
    assert router.n_pending == 10
    assert [router.record(d.id, quality=1.0) for d in early[1:]] == ["late"] * 3
    assert [router.record(d.id, quality=1.0) for d in batch[:15]] == ["late"] * 15
    assert [router.record(d.id, quality=1.0) for d in batch[15:]] == ["applied"] * 10
    assert router.beliefs()["n"].sum() == pytest.approx(11.0)


def test_update_weights_by_logged_task_posterior(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed)
    d = router.decide({"task_probs": {"code": 0.75, "math": 0.25}})
    assert dict(d.task_probs) == {"chat": 0.0, "code": 0.75, "math": 0.25}
    router.record(d.id, quality=1.0)
    b = router.beliefs().filter(profile=d.profile)
    assert b["alpha"].to_list() == [1.0, 1.75, 1.25] and b["beta"].to_list() == [1.0, 1.0, 1.0]


def test_wait_window_makes_outcomes_late(profiles, seed, monkeypatch):
    router = br.Router(profiles, seed=seed, wait_window_s=10.0)
    d = router.decide({})
    import time

    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 11 * 10**9)
    router.decide({})  # a decision 11 s later evicts the first from the pending window
    assert router.record(d.id, quality=1.0) == "late"


def test_learns_the_best_profile(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed, exploration=0.02)
    train(router, TRUTH, 3000, np.random.default_rng(seed))
    for task in ("code", "math"):
        assert router.probabilities({"task_type": task})["large"] > 0.8
    means = router.beliefs().filter(profile="large", task_type="code")
    assert means["ci_low"].item() < 0.9 < means["ci_high"].item() or abs(means["mean"].item() - 0.9) < 0.05


def test_discounting_routes_around_a_degraded_profile(profiles, seed):
    rng = np.random.default_rng(seed)
    router = br.Router(profiles, task_types=["code"], seed=seed, discount=0.995, exploration=0.02)
    truth = {"small": {"code": 0.3}, "medium": {"code": 0.6}, "large": {"code": 0.9}}
    train(router, truth, 2000, rng, ["code"])
    assert router.probabilities({"task_type": "code"})["large"] > 0.7  # forgetting re-explores the others
    truth["large"]["code"] = 0.2  # degradation
    shares = []
    for _ in range(40):
        train(router, truth, 25, rng, ["code"])
        shares.append(router.probabilities({"task_type": "code"})["large"])
    assert min(shares) < 0.1  # falls below 10% within 1,000 requests
    # forgetting keeps re-checking the degraded profile now and then, but rarely
    assert np.mean(shares[20:]) < 0.1


def test_without_discounting_evidence_never_fades(profiles, seed):
    router = br.Router(profiles, task_types=["code"], seed=seed)
    train(router, {p.name: {"code": 0.5} for p in profiles}, 300, np.random.default_rng(seed), ["code"])
    assert router.beliefs()["n"].sum() == pytest.approx(300.0)


def test_replay_rebuilds_the_same_beliefs(profiles, seed, tmp_path):
    kwargs = dict(task_types=TASKS, discount=0.995, exploration=0.05, seed=seed)
    live = br.Router(profiles, log_dir=tmp_path, **kwargs)
    rng = np.random.default_rng(seed)
    train(live, TRUTH, 500, rng)
    live.add_profile(br.Profile("new", cost_usd=0.001, latency_ms=300))
    truth = {**TRUTH, "new": {"chat": 0.9, "code": 0.9, "math": 0.9}}
    for i in range(500):  # mixtures, delayed and duplicate outcomes, missing quality
        d = live.decide({"task_probs": {"code": 0.6, "math": 0.4}} if i % 5 == 0 else {"task_type": TASKS[i % 3]})
        quality = None if i % 17 == 0 else float(rng.random() < truth[d.profile]["code"])
        live.record(d.id, quality=quality)
        live.record(d.id, quality=1.0)  # duplicate, ignored
    live.flush()
    fresh = br.Router(profiles, **kwargs)
    assert fresh.replay(tmp_path) == live.n_updates
    assert fresh.profiles == live.profiles
    assert all(np.array_equal(f, l) for f, l in zip(fresh.evidence(), live.evidence()))
    # the log does not hold the configuration of a profile added live: its configured cost and
    # latency (the prior of the learned ones) are unknown to the replay; all else is the same
    learned_usage = pl.col("^(cost|latency)_.*$")
    assert fresh.beliefs().drop(learned_usage).equals(live.beliefs().drop(learned_usage))
    with pytest.raises(br.ConfigError, match="router must be fresh"):
        fresh.replay(tmp_path)


def test_reliability_floor_excludes_a_confidently_bad_profile(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed, reliability_floor=0.5, floor_confidence=0.95,
                       exploration=0.3)
    train(router, TRUTH, 1500, np.random.default_rng(seed))
    d = router.decide({"task_type": "math"})
    assert d.probabilities["small"] == 0.0
    assert d.excluded["small"].startswith("reliability below floor 0.5")
    assert "small" not in router.decide({"task_type": "chat"}).excluded  # only where it is bad


def test_fallback_when_nothing_is_feasible(profiles, seed):
    budget = br.Budget(max_cost_usd=0.0001)
    router = br.Router(profiles, seed=seed, budget=budget, fallback="small")
    d = router.decide({})
    assert (d.profile, d.propensity, d.fallback_reason) == ("small", 1.0, "no feasible profile")
    assert set(d.excluded) == {"small", "medium", "large"}
    assert d.excluded["large"] == "expected cost_usd 0.012 > budget.max_cost_usd 0.0001"
    strict = br.Router(profiles, seed=seed, budget=budget)
    with pytest.raises(br.NoFeasibleProfileError, match=r"profiles has no feasible profile .*no fallback is configured"):
        strict.decide({})


def test_decision_timeout_uses_fallback(profiles, seed):
    router = br.Router(profiles, seed=seed, fallback="medium", decision_timeout_ms=1e-9)
    d = router.decide({})
    assert d.profile == "medium" and d.propensity == 1.0
    assert d.fallback_reason.startswith("decision took") and "decision_timeout_ms" in d.fallback_reason


def test_allow_lists(seed):
    router = br.Router([br.Profile("eu", allow={"region": ["eu"]}), br.Profile("any")], seed=seed)
    assert router.probabilities({"region": "us"}) == {"eu": 0.0, "any": 1.0}
    assert router.decide({"region": "us"}).excluded == {"eu": "not in the allow-list for region"}
    assert router.decide({}).excluded == {"eu": "not in the allow-list for region"}
    assert router.probabilities({"region": "eu"})["eu"] > 0


def test_new_profile_gets_exploratory_traffic(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed, exploration=0.0)
    train(router, TRUTH, 2000, np.random.default_rng(seed))
    router.add_profile(br.Profile("fresh"))
    share = router.probabilities({"task_type": "code"})["fresh"]
    assert share > 0.05  # a diffuse prior wins a real share of draws against a 0.9 incumbent
    with pytest.raises(br.ConfigError, match=r"profile\.name is already a profile of this router, got 'fresh'"):
        router.add_profile(br.Profile("fresh"))


def test_task_classifier_posterior(profiles, seed):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(seed)
    n = rng.integers(0, 2000, 600)
    labels = np.where(n > 1000, "code", "chat")
    history = [{"prompt_tokens": int(x)} for x in n]
    clf = br.TaskClassifier(make_pipeline(DictVectorizer(), LogisticRegression(max_iter=1000))).fit(history, labels)
    router = br.Router(profiles, task_types=TASKS, seed=seed, task_model=clf)
    d = router.decide({"prompt_tokens": 1900})
    assert d.task_probs["code"] > 0.9 and d.task_probs["math"] == 0.0
    assert sum(d.task_probs.values()) == pytest.approx(1.0)
    assert router.decide({"prompt_tokens": 5, "task_type": "math"}).task_probs["math"] == 1.0  # label wins


def test_pending_state_is_bounded(profiles, seed):
    router = br.Router(profiles, seed=seed, max_pending=1000)
    for chunk in range(20):
        router.decide_batch([{}] * 500)
    assert router.n_pending == 1000


def test_evidence_round_trip_and_validation(profiles, seed):
    router = br.Router(profiles, task_types=TASKS, seed=seed)
    train(router, TRUTH, 200, np.random.default_rng(seed))
    alpha_ev, beta_ev = router.evidence()
    assert alpha_ev.sum() + beta_ev.sum() == pytest.approx(200.0)
    other = br.Router(profiles, task_types=TASKS, seed=seed + 1)
    other.set_evidence(alpha_ev, beta_ev)
    reliability = ["profile", "task_type", "mean", "ci_low", "ci_high", "n", "alpha", "beta"]  # what evidence is
    assert other.beliefs().select(reliability).equals(router.beliefs().select(reliability))
    with pytest.raises(br.ConfigError, match=r"alpha_evidence must be a finite, non-negative array of shape \(3, 3\)"):
        other.set_evidence(alpha_ev[:2], beta_ev)
