"""The routing mechanisms of the design (issue 14), through the library API a user calls:
learned cost and latency, per-request budgets, escalation, bounded onboarding, provider
failures with cooldown. Statistics are checked as statistics (fixed seeds, tolerances from the
sampling error), every pmf is checked to be the one logged and drawn from."""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pytest
from scipy import stats

import banditroute as br


def _share_after(kind: str, seed: int, n: int = 500) -> tuple[float, int]:
    """A profile whose real cost (or latency) is 100x its configured one, equal quality: its
    logged probability after ``n`` requests, and the first request at which it was below 0.1."""
    if kind == "cost":
        profiles = [br.Profile("mispriced", cost_usd=0.0004), br.Profile("honest", cost_usd=0.0004)]
        objective = br.Objective(cost=10.0)
    else:
        profiles = [br.Profile("slow", latency_ms=400.0), br.Profile("honest", latency_ms=400.0)]
        objective = br.Objective(latency=1e-4)
    router = br.Router(profiles, objective=objective, seed=seed)
    rng = np.random.default_rng(seed)
    first_below = n
    for i in range(n):
        d = router.decide({})
        p = d.probabilities[profiles[0].name]
        if p < 0.1 and first_below == n:
            first_below = i
        true = 100.0 if d.profile == profiles[0].name else 1.0
        noise = float(rng.lognormal(0.0, 0.3))
        quality = float(rng.random() < 0.7)
        if kind == "cost":
            router.record(d.id, quality=quality, cost_usd=0.0004 * true * noise)
        else:
            router.record(d.id, quality=quality, latency_ms=400.0 * true * noise)
    return router.probabilities({})[profiles[0].name], first_below


@pytest.mark.parametrize("kind", ["cost", "latency"])
def test_a_profile_100x_dearer_than_configured_loses_its_traffic_within_500_requests(kind):
    results = [_share_after(kind, seed) for seed in range(8)]
    assert all(p < 0.10 for p, _ in results), results
    assert all(first < 500 for _, first in results), results


def test_learned_costs_show_in_beliefs_and_replay_rebuilds_them(tmp_path):
    profiles = [br.Profile("a", cost_usd=0.001, latency_ms=100.0), br.Profile("b", cost_usd=0.002, latency_ms=300.0)]
    live = br.Router(profiles, task_types=["chat", "code"], objective=br.Objective(cost=1.0), log_dir=tmp_path,
                     seed=3)
    rng = np.random.default_rng(3)
    for i in range(300):
        task = "chat" if i % 3 else "code"
        d = live.decide({"task_type": task})
        cost = 0.01 if (d.profile, task) == ("a", "code") else 0.001
        live.record(d.id, quality=float(rng.random() < 0.6), cost_usd=cost, latency_ms=float(rng.uniform(50, 150)))
    live.flush()
    beliefs = live.beliefs()
    cell = beliefs.filter((pl.col("profile") == "a") & (pl.col("task_type") == "code")).row(0, named=True)
    assert cell["cost_n"] > 10 and cell["cost_mean"] > 0.005  # moved from the prior 0.001 toward 0.01
    other = beliefs.filter((pl.col("profile") == "a") & (pl.col("task_type") == "chat")).row(0, named=True)
    assert abs(other["cost_mean"] - 0.001) < 1e-4
    fresh = br.Router(profiles, task_types=["chat", "code"], objective=br.Objective(cost=1.0), seed=9)
    fresh.replay(tmp_path)
    replayed = fresh.beliefs()
    for column in ("cost_mean", "cost_sd", "cost_n", "latency_mean", "latency_n", "mean", "availability"):
        np.testing.assert_allclose(replayed[column].to_numpy(), beliefs[column].to_numpy(), rtol=1e-9, err_msg=column)


def test_cost_learning_can_be_switched_off_and_read_from_the_routes_file(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text('[cost_learning]\nenabled = false\n[onboarding]\nmax_share = 0.1\nmin_outcomes = 50\n'
                    '[cooldown]\nerrors = 2\nseconds = 5\n[router]\nmax_escalations = 1\nerror_quality = 0.0\n'
                    '[[profiles]]\nname = "a"\ncost_usd = 0.001\n[[profiles]]\nname = "b"\n')
    router = br.Router.from_config(path, seed=0)
    cfg = router.config
    assert (cfg.cost_learning.enabled, cfg.onboarding.max_share, cfg.cooldown.errors, cfg.max_escalations,
            cfg.error_quality) == (False, 0.1, 2, 1, 0.0)
    d = router.decide({})
    router.record(d.id, quality=1.0, cost_usd=5.0)
    assert router.beliefs()["cost_mean"].to_list() == [0.001, 0.0]  # configured, never learned
    path.write_text('[cooldown]\nerrors = 0\n[[profiles]]\nname = "a"\n')
    with pytest.raises(br.ConfigError, match=r"routes.toml: cooldown.errors must be an integer >= 1, got 0"):
        br.Router.from_config(path)


# -- per-request budgets -------------------------------------------------------------------------
def test_a_request_budget_excludes_what_does_not_fit_with_a_reason_naming_it():
    router = br.Router([br.Profile("small", cost_usd=0.001, latency_ms=300.0),
                        br.Profile("large", cost_usd=0.02, latency_ms=2500.0)], seed=0)
    d = router.decide({}, budget=br.Budget(max_cost_usd=0.005))
    assert d.profile == "small" and d.probabilities["large"] == 0.0 and d.propensity == 1.0
    assert d.excluded == {"large": "expected cost_usd 0.02 > request budget.max_cost_usd 0.005"}
    d = router.decide({}, budget={"max_latency_ms": 800})
    assert d.excluded == {"large": "expected latency_ms 2500 > request budget.max_latency_ms 800"}
    free = router.decide({})
    assert free.excluded == {} and free.probabilities["large"] > 0
    with pytest.raises(br.NoFeasibleProfileError, match="request budget.max_cost_usd 0.0001"):
        router.decide({}, budget={"max_cost_usd": 0.0001})
    with pytest.raises(br.InvalidRequestError, match=r"budget.max_cost_usd must be >= 0, got -1"):
        router.decide({}, budget={"max_cost_usd": -1})
    with pytest.raises(br.InvalidRequestError, match=r"budget.max_tokens is not a budget field"):
        router.decide({}, budget={"max_tokens": 10})
    with pytest.raises(br.InvalidRequestError, match=r"budget must be a Budget"):
        router.decide({}, budget="cheap")


def test_the_fallback_applies_when_no_profile_fits_the_request_budget(tmp_path):
    router = br.Router([br.Profile("small", cost_usd=0.001), br.Profile("large", cost_usd=0.02)], fallback="small",
                       log_dir=tmp_path, seed=0)
    d = router.decide({}, budget={"max_cost_usd": 0.0001})
    assert (d.profile, d.propensity, d.fallback_reason) == ("small", 1.0, "no feasible profile")
    assert set(d.excluded) == {"small", "large"}
    router.flush()
    row = br.scan_table(tmp_path, "decisions").collect().row(0, named=True)
    assert "request budget.max_cost_usd 0.0001" in json.loads(row["excluded"])["large"]


def test_budgets_compare_the_learned_expected_cost():
    router = br.Router([br.Profile("a", cost_usd=0.001), br.Profile("b", cost_usd=0.001)], seed=1)
    for _ in range(60):
        d = router.decide({})
        router.record(d.id, quality=1.0, cost_usd=0.05 if d.profile == "a" else 0.001)
    d = router.decide({}, budget={"max_cost_usd": 0.01})
    assert d.profile == "b" and d.excluded["a"].startswith("expected cost_usd ")


# -- escalation ----------------------------------------------------------------------------------
def _cascade_router(**kw):
    return br.Router([br.Profile(n) for n in ("p0", "p1", "p2", "p3")], exploration=0.2, seed=5, **kw)


def test_escalation_never_repeats_a_tried_profile_and_links_child_to_parent(tmp_path):
    router = _cascade_router(log_dir=tmp_path, max_escalations=3)
    for _ in range(50):
        d = router.decide({"q": 1})
        assert d.parent_id is None
        chain, node = [d.profile], d
        while len(chain) < 4:
            parent, node = node, router.escalate(node.id, reason="verifier_failed")
            assert node.parent_id == parent.id and node.to_dict()["parent_id"] == parent.id
            assert node.profile not in chain
            assert all(node.probabilities[p] == 0.0 for p in chain)
            assert node.propensity == node.probabilities[node.profile] > 0
            assert set(chain) <= set(node.excluded)
            assert node.excluded[chain[0]] == "already tried in this escalation chain (verifier_failed)"
            chain.append(node.profile)
        with pytest.raises(br.EscalationError, match=r"is escalation 3 below .*max_escalations is 3"):
            router.escalate(node.id)
    router.flush()
    rows = br.scan_table(tmp_path, "decisions").collect()
    assert rows["parent_id"].null_count() == 50 and rows.height == 200
    linked = rows.join(rows.select(pl.col("decision_id").alias("parent_id"), pl.col("profile").alias("parent_profile"),
                                   pl.col("context").alias("parent_context")), on="parent_id", how="inner")
    assert linked.height == 150
    assert (linked["profile"] != linked["parent_profile"]).all()
    assert (linked["context"] == linked["parent_context"]).all()


def test_escalated_choices_follow_their_logged_probabilities():
    # chi-square over children of a fixed parent profile distribution: executed vs logged
    router = _cascade_router()  # nothing is recorded: the pmf is fixed per tried set
    counts: dict[str, dict[str, float]] = {}
    for _ in range(4000):
        d = router.decide({})
        child = router.escalate(d.id)
        key = d.profile
        c = counts.setdefault(key, {"n": 0, **{p: 0.0 for p in router.profiles}})
        c["n"] += 1
        c[child.profile] += 1
        c.setdefault("pmf", child.probabilities)
    for parent, c in counts.items():
        pmf = c["pmf"]
        assert pmf[parent] == 0.0
        names = [p for p in router.profiles if pmf[p] > 0]
        observed = np.array([c[p] for p in names])
        expected = np.array([pmf[p] for p in names]) * c["n"]
        assert stats.chisquare(observed, expected).pvalue > 1e-3, (parent, observed, expected)


def test_escalation_errors_are_clear():
    router = _cascade_router(max_escalations=1)
    d = router.decide({})
    child = router.escalate(d.id)
    with pytest.raises(br.EscalationError, match=f"was already escalated, to {child.id}"):
        router.escalate(d.id)
    with pytest.raises(br.EscalationError, match="max_escalations is 1"):
        router.escalate(child.id)
    with pytest.raises(br.UnknownDecisionError, match="was not issued by this router"):
        router.escalate("nope-1")
    with pytest.raises(br.UnknownDecisionError, match="decision_id must be a decision id string, got 123"):
        router.escalate(123)
    with pytest.raises(br.ConfigError, match="onboarding must be an Onboarding or None"):
        br.Router([br.Profile("a")], onboarding={"max_share": 0.1})
    with pytest.raises(br.ConfigError, match="onboard must be true or false, got 'yes'"):
        router.add_profile(br.Profile("x"), onboard="yes")
    with pytest.raises(br.InvalidRequestError, match="reason must be a short identifier"):
        router.escalate(router.decide({}).id, reason="has spaces")
    assert isinstance(br.EscalationError("x"), br.BanditrouteError) and router.n_escalations == 1
    two = br.Router([br.Profile("a"), br.Profile("b")], seed=0)
    d = two.decide({})
    child = two.escalate(d.id)
    with pytest.raises(br.NoFeasibleProfileError, match="already tried in this escalation chain"):
        two.escalate(child.id)


def test_an_escalation_keeps_the_request_budget_given_again():
    router = br.Router([br.Profile("a", cost_usd=0.001), br.Profile("b", cost_usd=0.001),
                        br.Profile("c", cost_usd=0.1)], seed=2)
    d = router.decide({}, budget={"max_cost_usd": 0.01})
    child = router.escalate(d.id, budget={"max_cost_usd": 0.01})
    assert child.profile not in (d.profile, "c") and child.probabilities["c"] == 0.0


# -- onboarding ----------------------------------------------------------------------------------
def test_onboarding_caps_a_new_profile_until_it_graduates_then_it_takes_the_traffic(tmp_path):
    router = br.Router([br.Profile("old")], onboarding=br.Onboarding(max_share=0.05, min_outcomes=100),
                       log_dir=tmp_path, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = router.decide({})
        router.record(d.id, quality=float(rng.random() < 0.5))
    router.add_profile(br.Profile("new"))
    assert router.beliefs().filter(pl.col("profile") == "new")["onboarding"].to_list() == [True]
    before, after = [], []
    for _ in range(4000):
        d = router.decide({})
        onboarding = bool(router.beliefs().filter(pl.col("profile") == "new")["onboarding"][0])
        (before if onboarding else after).append(d.probabilities["new"])
        p = 0.9 if d.profile == "new" else 0.5
        router.record(d.id, quality=float(rng.random() < p))
    assert before and max(before) <= 0.05 + 1e-12
    assert after and np.mean(after[-500:]) > 0.9  # the better new profile took the traffic
    router.flush()
    events = br.scan_table(tmp_path, "events").collect()
    assert events.filter(pl.col("event") == "onboarding_start")["policy"].to_list() == ["new"]
    graduated = events.filter(pl.col("event") == "onboarding_graduated")
    assert graduated["policy"].to_list() == ["new"] and "min_outcomes 100" in graduated["why"][0]


def test_onboarding_survives_a_restart_and_covers_a_profile_the_log_never_saw(tmp_path):
    onboarding = br.Onboarding(max_share=0.1, min_outcomes=50)
    live = br.Router([br.Profile("a"), br.Profile("b")], onboarding=onboarding, log_dir=tmp_path, seed=0)
    for _ in range(100):
        live.record(live.decide({}).id, quality=1.0)
    live.add_profile(br.Profile("c"))
    for _ in range(10):
        live.record(live.decide({}).id, quality=1.0)
    live.close()
    restarted = br.Router([br.Profile("a"), br.Profile("b"), br.Profile("c"), br.Profile("d")],
                          onboarding=onboarding, log_dir=tmp_path, seed=1)
    restarted.resume()
    flags = dict(restarted.beliefs().select("profile", "onboarding").iter_rows())
    assert flags == {"a": False, "b": False, "c": True, "d": True}
    pmf = restarted.probabilities({})
    assert pmf["c"] <= 0.1 + 1e-12 and pmf["d"] <= 0.1 + 1e-12
    restarted.close()


# -- provider failures and cooldown --------------------------------------------------------------
def test_three_errors_cool_a_profile_down_with_a_reason_and_it_returns_after(tmp_path):
    router = br.Router([br.Profile("flaky"), br.Profile("steady")], cooldown=br.Cooldown(errors=3, seconds=0.5),
                       log_dir=tmp_path, seed=0)
    errors = 0
    while errors < 3:
        d = router.decide({})
        if d.profile == "flaky":
            assert router.record(d.id, error="server_error") == "applied"
            errors += 1
        else:
            router.record(d.id, quality=1.0)
    d = router.decide({})
    assert d.profile == "steady" and d.probabilities["flaky"] == 0.0
    until = dict(router.beliefs().select("profile", "cooldown_until").iter_rows())
    assert time.time() < until["flaky"] <= time.time() + 0.5 and until["steady"] is None
    assert d.excluded["flaky"].startswith("cooldown: 3 failed calls in a row (last: server_error)")
    time.sleep(0.6)
    assert router.probabilities({})["flaky"] > 0
    beliefs = router.beliefs()
    row = beliefs.filter(pl.col("profile") == "flaky").row(0, named=True)
    assert row["failed_calls"] == 3 and row["availability"] < 0.5
    assert row["n"] == 0  # a failure is not a judgement of quality by default
    router.flush()
    outcomes = br.scan_table(tmp_path, "outcomes").collect()
    assert outcomes["error"].drop_nulls().to_list() == ["server_error"] * 3
    assert br.scan_table(tmp_path, "events").collect().filter(pl.col("event") == "cooldown").height == 1


def test_errors_are_checked_and_can_teach_quality_when_configured():
    router = br.Router([br.Profile("a"), br.Profile("b")], error_quality=0.0, seed=0)
    d = router.decide({})
    with pytest.raises(br.InvalidOutcomeError, match="quality must not be given with error='timeout'"):
        router.record(d.id, quality=1.0, error="timeout")
    with pytest.raises(br.InvalidOutcomeError, match="error must be a short identifier"):
        router.record(d.id, error="a b")
    router.record(d.id, error="timeout")
    row = router.beliefs().filter(pl.col("profile") == d.profile).row(0, named=True)
    assert (row["beta"], row["failed_calls"]) == (2.0, 1.0)  # error_quality 0: one failure of quality


def test_logs_of_the_previous_schema_still_read_and_replay(tmp_path):
    live = br.Router([br.Profile("a"), br.Profile("b")], log_dir=tmp_path, seed=0)
    for _ in range(30):
        live.record(live.decide({}).id, quality=1.0)
    live.close()
    for table, column in (("decisions", "parent_id"), ("outcomes", "error")):
        for part in (tmp_path / table).rglob("*.parquet"):
            old = pl.read_parquet(part).drop(column).with_columns(pl.lit(2, pl.Int32).alias("schema_version"))
            old.write_parquet(part)
    assert br.scan_table(tmp_path, "decisions").collect()["parent_id"].null_count() == 30
    fresh = br.Router([br.Profile("a"), br.Profile("b")], seed=1)
    assert fresh.replay(tmp_path) == 30


def test_a_failed_call_logs_a_reward_so_offline_evaluation_sees_the_failure(tmp_path):
    import ope

    router = br.Router([br.Profile("flaky"), br.Profile("steady")], objective=br.Objective(cost=1.0),
                       log_dir=tmp_path, seed=0)
    for _ in range(200):
        d = router.decide({})
        if d.profile == "flaky":
            router.record(d.id, error="timeout", cost_usd=0.001, latency_ms=30_000.0)
        else:
            router.record(d.id, quality=1.0, cost_usd=0.001)
    router.flush()
    outcomes = br.scan_table(tmp_path, "outcomes").collect()
    failed = outcomes.filter(pl.col("error").is_not_null())
    assert failed.height > 0 and failed["quality"].null_count() == failed.height
    assert failed["reward"].to_list() == [pytest.approx(-0.001)] * failed.height  # quality 0 - cost
    feedback = ope.LoggedFeedback.from_logs(tmp_path)
    assert feedback.n_rounds == 200 and np.isfinite(feedback.rewards).all()


def _cost_drift_run(log_dir, seed: int) -> tuple[int, list, float]:
    """400 outcomes at the configured price, then 300 with profile a's price up 10x: the drift
    events of the stationary part, those after, and a's learned cost at the end."""
    drift = br.DriftConfig(delta=0.05, threshold=5.0, min_samples=20)
    router = br.Router([br.Profile("a", cost_usd=0.001), br.Profile("b", cost_usd=0.001)], drift=drift,
                       log_dir=log_dir, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(400):
        d = router.decide({})
        router.record(d.id, quality=0.5, cost_usd=0.001 * float(rng.lognormal(-0.02, 0.2)))
    router.flush()
    before = br.scan_table(log_dir, "events").collect().filter(pl.col("event") == "drift").height
    for _ in range(300):
        d = router.decide({})
        price = 0.01 if d.profile == "a" else 0.001
        router.record(d.id, quality=0.5, cost_usd=price * float(rng.lognormal(-0.02, 0.2)))
    router.close()
    after = br.scan_table(log_dir, "events").collect().filter(pl.col("event") == "drift").slice(before)
    rows = list(zip(after["policy"].to_list(), after["why"].to_list()))
    return before, rows, router.beliefs().filter(pl.col("profile") == "a")["cost_mean"].item()


def test_a_change_in_a_profiles_cost_is_detected_and_recalibrated(tmp_path):
    runs = [_cost_drift_run(tmp_path / str(seed), seed) for seed in range(5)]
    assert sum(before for before, _, _ in runs) <= 1  # 2,000 stationary outcomes: at most one false alarm
    for _, after, cost_a in runs:
        assert after and after[0][0] == "a/default" and "cost Page-Hinkley increase" in after[0][1]
        assert len(after) <= 2  # steady at the new price: no alarm after alarm
        assert cost_a > 0.008  # the old evidence is gone: close to the new price (0.01), not a blend
    drift = br.DriftConfig(delta=0.05, threshold=5.0, min_samples=20)
    fresh = br.Router([br.Profile("a", cost_usd=0.001), br.Profile("b", cost_usd=0.001)], drift=drift, seed=9)
    fresh.replay(tmp_path / "4")
    assert fresh.beliefs()["cost_mean"][0] == runs[4][2]  # the replay detects the same change


def test_a_journal_commit_of_the_previous_schema_reads_with_nulls(tmp_path):
    from banditroute.logs.segments import segment_columns

    old = [{"outcomes": [["d0"], [1], ["w"], [0], [1.0], [None], [2.0], [0.9], ["applied"]]}]  # 9 columns
    columns = segment_columns(old, "outcomes", 10)
    assert columns[-1] == [None] and columns[0] == ["d0"]


def test_escalation_chains_survive_a_restart_and_a_withdrawn_child_frees_its_parent(tmp_path):
    profiles = [br.Profile(n) for n in ("p0", "p1", "p2", "p3")]
    live = br.Router(profiles, log_dir=tmp_path, max_escalations=2, seed=0)
    root = live.decide({"x": 1})
    child = live.escalate(root.id)
    live.close()
    restarted = br.Router(profiles, log_dir=tmp_path, max_escalations=2, seed=1)
    assert restarted.resume()["chains_restored"] == 1
    with pytest.raises(br.EscalationError, match=f"was already escalated, to {child.id}"):
        restarted.escalate(root.id)
    grandchild = restarted.escalate(child.id)
    assert grandchild.probabilities[root.profile] == 0.0 and grandchild.probabilities[child.profile] == 0.0
    with pytest.raises(br.EscalationError, match="max_escalations is 2"):
        restarted.escalate(grandchild.id)
    restarted.close()
    router = br.Router(profiles, seed=0)
    d = router.decide({})
    refused = router.escalate(d.id)
    assert router.withdraw(refused.id)  # its row was not committed (the service's 503)
    retried = router.escalate(d.id)
    assert retried.parent_id == d.id and router.n_escalations == 1


def test_thompson_sampling_draws_the_cost_from_its_posterior():
    """Equal, certain quality; 'dear' configured at twice 'cheap''s cost: with cost learning the
    cost scenarios overlap (prior sd of the mean cv * cost / sqrt(prior_weight)), so 'dear' wins a
    share of them; with the configured costs it wins none (only the exploration floor)."""
    prior = br.BetaPrior(alpha=5000.0, beta=5000.0)
    profiles = [br.Profile("cheap", cost_usd=0.005, prior=prior), br.Profile("dear", cost_usd=0.01, prior=prior)]
    objective = br.Objective(cost=100.0)
    learned = br.Router(profiles, objective=objective, exploration=0.0, seed=0).probabilities({})
    fixed = br.Router(profiles, objective=objective, exploration=0.0, seed=0,
                      cost_learning=br.CostLearning(enabled=False)).probabilities({})
    # P(N(0.01, 0.0045) < N(0.005, 0.0022)) ~ 0.16 (the quality draws, sd 0.005 x 1, barely matter)
    assert 0.10 < learned["dear"] < 0.25 and fixed["dear"] < 0.01


def test_replay_and_a_snapshot_rebuild_availability_and_learned_costs(tmp_path):
    profiles = [br.Profile("a", cost_usd=0.001), br.Profile("b", cost_usd=0.002)]
    live = br.Router(profiles, log_dir=tmp_path, seed=0)
    rng = np.random.default_rng(0)
    for i in range(300):
        d = live.decide({})
        if rng.random() < 0.2:
            live.record(d.id, error="timeout", latency_ms=float(rng.uniform(1000, 2000)))
        else:
            live.record(d.id, quality=float(rng.random() < 0.6), cost_usd=float(rng.uniform(0.001, 0.01)))
        if i == 150:
            live.flush()
            live.snapshot()
    live.close()
    columns = ["availability", "failed_calls", "cost_mean", "cost_n", "latency_mean", "latency_n", "alpha", "beta"]
    expected = live.beliefs().select(columns)
    replayed = br.Router(profiles, seed=1)
    replayed.replay(tmp_path)
    resumed = br.Router(profiles, log_dir=tmp_path, seed=2)
    resumed.resume()
    full = br.Router(profiles, log_dir=tmp_path, seed=3)
    full.resume(snapshot=False)
    for other in (replayed, resumed, full):
        got = other.beliefs().select(columns)
        for column in columns:
            np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-12, err_msg=column)
    assert expected["failed_calls"].sum() > 30
    for router in (resumed, full):
        router.close()


def test_an_escalation_never_goes_to_a_tried_profile_even_with_a_canary_running():
    profiles = [br.Profile(n) for n in ("p0", "p1", "p2")]
    router = br.Router(profiles, seed=0)
    canary = br.Router(profiles, prior=br.BetaPrior(alpha=1.0, beta=1.0), seed=1)
    router.start_canary("c", canary, fraction=0.9, who="t", why="test")
    for _ in range(300):
        d = router.decide({})
        child = router.escalate(d.id)
        assert child.profile != d.profile and child.probabilities[d.profile] == 0.0
