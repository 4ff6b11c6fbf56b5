"""The simulator's verifier cascade and learned costs, where the user meets them: the decision
log, the simulator's truth and the demo's lines.

Statistical checks compare an empirical rate with the simulator's truth within ``Z = 4``
standard errors of its sampling distribution (a false alarm has probability < 1e-4 per
check), under the ``seed`` fixture (``BR_TEST_SEED=7 pytest`` sweeps it).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

import banditroute as br
from banditroute.errors import ConfigError
from banditroute.sim.records import _concat
from banditroute.sim import (DEMO_OBJECTIVE, DEMO_ONBOARDING, Outage, Scenario, SimProfile, Simulator, Verifier,
                             format_summary, run_demo)

Z = 4.0


def play(scenario: Scenario, *, n: int, seed: int, verifier=Verifier(), log_dir=None, max_escalations=2,
         batch_size=16):
    """Route ``n`` requests as the demo does (decide a batch, submit, cascade, record what
    arrives); returns the simulator, the router (closed) and per-request arrays."""
    sim = Simulator(scenario, seed=seed, verifier=verifier)
    profiles = {p.name: br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms) for p in scenario.profiles}
    router = br.Router([profiles[p.name] for p in scenario.profiles if p.joins_at == 0], task_types=list(scenario.task_types), objective=DEMO_OBJECTIVE,
                       max_escalations=max_escalations, log_dir=log_dir, seed=seed + 1)
    index = {name: k for k, name in enumerate(sim.profile_names)}
    status: dict[str, int] = {}
    chosen, truth, cascades = [], [], []

    def record(arrived):
        for t, q, c, lat, e in zip(arrived.tickets.tolist(), arrived.quality.tolist(), arrived.cost_usd.tolist(),
                                   arrived.latency_ms.tolist(), arrived.error.tolist()):
            if e is None:
                s = router.record(t, quality=q, cost_usd=c, latency_ms=lat)
            else:  # a failed call: no quality
                s = router.record(t, error=e, cost_usd=c, latency_ms=lat)
            status[s] = status.get(s, 0) + 1

    cuts = sorted(set(range(0, n, batch_size)) | set(scenario.event_steps(n)))  # batches start at events
    for start, stop in zip(cuts, cuts[1:] + [n]):
        for name in sim.joining(start, stop):
            router.add_profile(profiles[name])
        record(sim.poll())
        batch = sim.next_requests(stop - start)
        decisions = router.decide_batch(batch.contexts())
        k = np.array([index[d.profile] for d in decisions])
        first = sim.submit(batch, k, tickets=[d.id for d in decisions])
        cascades.append(sim.cascade(batch, first, router))
        chosen.append(k)
        truth.append(sim.pass_probability(batch.step, batch.task)[np.arange(len(batch)), k])
    record(sim.drain())
    router.close()
    cat = {f: np.concatenate([getattr(c, f) for c in cascades])
           for f in ("first_passed", "passed", "n_calls", "cost_usd", "first_cost_usd")}
    return sim, router, {**cat, "chosen": np.concatenate(chosen), "truth": np.concatenate(truth),
                         "status": status, "n_exhausted": sum(c.n_exhausted for c in cascades)}


def graded(scenario: Scenario) -> Scenario:
    return Scenario(**{**{f: getattr(scenario, f) for f in scenario.__dataclass_fields__}, "quality": "graded"})


def chains(log_dir) -> tuple[pl.DataFrame, dict]:
    """The decision log joined with its outcomes, and each decision's chain of decisions from its root."""
    decisions = br.scan_table(log_dir, "decisions").collect()
    outcomes = (br.scan_table(log_dir, "outcomes").select("decision_id", "quality", "cost_usd", "error").collect()
                .with_columns(pl.col("quality").fill_null(0.0)))  # a failed call (error) answered nothing
    rows = decisions.join(outcomes, on="decision_id", how="left")
    parent = dict(zip(rows["decision_id"].to_list(), rows["parent_id"].to_list()))
    chain = {}
    for d in parent:
        path = [d]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
        chain[d] = path[::-1]
    return rows, chain


def log_stats(log_dir, threshold: float) -> dict:
    """The cascade's statistics computed from the decision log alone."""
    rows, chain = chains(log_dir)
    quality = dict(zip(rows["decision_id"].to_list(), rows["quality"].to_list()))
    roots = rows.filter(pl.col("parent_id").is_null())
    last = {}
    for path in chain.values():  # the longest chain below each root ends with its last answer
        if len(path) > len(last.get(path[0], ())):
            last[path[0]] = path
    n = roots.height
    return {"n_requests": n, "first_pass_rate": int((roots["quality"] >= threshold).sum()) / n,
            "pass_rate": sum(quality[path[-1]] >= threshold for path in last.values()) / n,
            "calls_per_request": rows.height / n, "cost_per_request_usd": rows["cost_usd"].sum() / n,
            "first_cost_per_request_usd": roots["cost_usd"].sum() / n, "n_escalations": rows.height - n}


def check_same(stats: dict, from_log: dict) -> None:
    for key, value in from_log.items():
        assert stats[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


# -- configuration ------------------------------------------------------------------------------------
def test_verifier_settings_are_checked_and_named():
    with pytest.raises(ConfigError, match="verifier.threshold must be > 0, got 0.0"):
        Verifier(threshold=0.0)
    with pytest.raises(ConfigError, match="verifier.threshold must be <= 1, got 1.5"):
        Verifier(threshold=1.5)
    with pytest.raises(ConfigError, match="verifier.reason must be a short identifier .*, got 'tests failed'"):
        Verifier(reason="tests failed")  # refused here, not at the first escalation
    with pytest.raises(ConfigError, match="verifier must be a Verifier or None, got 'yes'"):
        Simulator(Scenario.default(), seed=0, verifier="yes")
    sim = Simulator(Scenario.default(), seed=0)
    batch = sim.next_requests(4)
    first = sim.submit(batch, np.zeros(4, dtype=int), tickets=["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match=r"verifier must be set \(Simulator\(\.\.\., verifier=Verifier\(\)\)\)"):
        sim.cascade(batch, first, router=None)
    with pytest.raises(ConfigError, match=r"profiles\[x\].actual_cost_usd must be >= 0, got -1"):
        SimProfile(name="x", cost_usd=0.001, latency_ms=1, reliability={"chat": 0.5}, actual_cost_usd=-1)


def test_a_verifier_does_not_change_the_first_answers_drawn():
    """Escalated calls draw from their own stream: the first answers are the draws of a
    simulator without a verifier, cascade or not (existing users keep their numbers)."""
    s = Scenario.default(n_requests=2_000).stationary()
    firsts = []
    for verifier in (None, Verifier()):
        sim = Simulator(s, seed=4, verifier=verifier)
        router = br.Router([br.Profile(p.name) for p in s.profiles], task_types=list(s.task_types), seed=0)
        for _ in range(3):
            batch = sim.next_requests(200)
            ids = [d.id for d in router.decide_batch(batch.contexts())]
            firsts.append(sim.submit(batch, np.arange(200) % 3, tickets=ids))
            if verifier is not None:
                assert sim.cascade(batch, firsts[-1], router).n_calls.sum() > 200  # some were escalated
    for plain, verified in zip(firsts[:3], firsts[3:]):
        np.testing.assert_array_equal(plain.quality, verified.quality)
        np.testing.assert_array_equal(plain.cost_usd, verified.cost_usd)


# -- the cascade in the decision log -------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("cascade") / "logs"
    sim, router, run = play(Scenario.default(n_requests=3_000, cost_gap=True), n=3_000, seed=5, log_dir=log_dir)
    return log_dir, sim, router, run


def test_children_never_repeat_a_tried_profile_and_name_their_parent(logged):
    log_dir, sim, router, run = logged
    rows, chain = chains(log_dir)
    by_id = {r["decision_id"]: r for r in rows.iter_rows(named=True)}
    children = rows.filter(pl.col("parent_id").is_not_null())
    assert children.height == router.n_escalations == run["n_calls"].sum() - 3_000 > 100
    assert rows.filter(pl.col("parent_id").is_null()).height == 3_000
    assert children["parent_id"].n_unique() == children.height  # one child per decision at most
    for child in children.iter_rows(named=True):
        path = [by_id[d] for d in chain[child["decision_id"]]]
        tried = [d["profile"] for d in path]
        assert len(set(tried)) == len(tried), tried  # never the same profile twice in a chain
        assert 2 <= len(path) <= 1 + router.config.max_escalations
        assert all(d["context"] == path[0]["context"] for d in path)  # the same request
        parent = by_id[child["parent_id"]]
        assert parent["quality"] < sim.verifier.threshold  # escalated because its answer failed
        probs = dict(zip(child["profiles"], child["probabilities"]))
        assert all(probs[p] == 0.0 for p in tried[:-1]) and child["propensity"] == probs[child["profile"]] > 0
        assert "already tried in this escalation chain (verifier_failed)" in child["excluded"]
    # every outcome arrived and was applied, children's included (after their parents')
    assert run["status"] == {"applied": rows.height} and rows["quality"].null_count() == 0


def test_the_cascade_passes_at_least_what_the_first_choice_passed(logged):
    _, sim, _, run = logged
    assert np.all(run["passed"] >= run["first_passed"])  # per request: an escalation never un-passes
    assert np.all(run["n_calls"][run["first_passed"]] == 1)  # a passed answer is not escalated
    assert np.all(run["n_calls"] <= 3) and np.all(run["cost_usd"] >= run["first_cost_usd"])
    stats = sim.cascade_stats_.to_dict()
    assert stats["pass_rate"] > stats["first_pass_rate"] + 0.05
    # a request still failing used every escalation (or ran out of untried profiles)
    failed = ~run["passed"]
    assert np.sum(failed & (run["n_calls"] < 3)) == run["n_exhausted"]


def test_the_simulators_stats_are_the_logs(logged):
    log_dir, sim, _, run = logged
    from_log = log_stats(log_dir, sim.verifier.threshold)
    check_same(sim.cascade_stats_.to_dict(), from_log)
    assert from_log["pass_rate"] == run["passed"].mean() and from_log["first_pass_rate"] == run["first_passed"].mean()


# -- statistics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("quality", ["binary", "graded"])
def test_first_choice_pass_rate_matches_the_true_pass_probability(seed, quality):
    """The rate at which first answers pass is the mean of the routed profiles' true pass
    probabilities (Bernoulli per request: s.e. = sqrt(sum p (1 - p)) / n)."""
    scenario = Scenario.default(n_requests=4_000)
    scenario = scenario if quality == "binary" else graded(scenario)
    _, _, run = play(scenario, n=4_000, seed=seed, verifier=Verifier(threshold=0.6))
    p, passed = run["truth"], run["first_passed"]
    se = math.sqrt(np.sum(p * (1 - p))) / p.size
    assert abs(passed.mean() - p.mean()) <= Z * se, (passed.mean(), p.mean(), se)
    if quality == "graded":  # the threshold cuts the grade: fewer pass than the mean grade
        assert 0.3 < p.mean() < 0.9


@pytest.mark.parametrize("quality", ["binary", "graded"])
def test_pass_probability_is_the_reliability_or_the_beta_tail(seed, quality):
    s = Scenario.default(n_requests=10**9).stationary()
    s = s if quality == "binary" else graded(s)
    sim = Simulator(s, seed=seed, verifier=Verifier(threshold=0.7))
    n = 30_000
    batch = sim.next_requests(n)
    p = sim.pass_probability(batch.step, batch.task)
    for k in range(len(s.profiles)):
        passed = sim.verifier.passes(sim.sample_outcomes(batch, np.full(n, k)).quality)
        se = math.sqrt(np.sum(p[:, k] * (1 - p[:, k]))) / n
        assert abs(passed.mean() - p[:, k].mean()) <= Z * se, s.profiles[k].name


def test_simulated_cost_is_the_true_cost_not_the_configured_one(seed):
    s = Scenario.default(n_requests=10, cost_gap=True)
    sim = Simulator(s, seed=seed)
    sim.next_requests(10)  # medium-v2 joins at request 7
    n = 30_000
    batch = sim.next_requests(n)
    k = s.profile_names.index("medium-v2")
    cost = sim.sample_outcomes(batch, np.full(n, k)).cost_usd
    spec = s.profiles[k]
    assert spec.cost_usd == 0.0020 and spec.true_cost_usd == 0.0032
    assert abs(cost.mean() - spec.true_cost_usd) <= Z * cost.std(ddof=1) / math.sqrt(n)


# -- the demo's lines -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("demo") / "logs"
    out = io.StringIO()
    r = run_demo(n_requests=3_000, seed=3, log_dir=log_dir, progress=False, out=out, evaluate=False)
    return log_dir, r, out.getvalue()


def test_the_demos_cascade_line_is_the_logs(demo):
    log_dir, r, text = demo
    c, from_log = r.cascade, log_stats(log_dir, r.cascade["threshold"])
    check_same(c, from_log)
    assert from_log["n_requests"] == 3_000 and sum(r.record_status.values()) == 3_000 + from_log["n_escalations"]
    line = (f"  cascade: {1 - from_log['first_pass_rate']:.1%} of first answers failed the verifier; after escalation "
            f"{from_log['pass_rate']:.1%} passed ({from_log['calls_per_request']:.2f} calls per request, "
            "max_escalations 2)")
    assert line in text.splitlines() and text == format_summary(r)
    assert (f"    cost per request: ${from_log['cost_per_request_usd']:.4f} with escalations, "
            f"${from_log['first_cost_per_request_usd']:.4f} for the first answers alone") in text.splitlines()
    # the reward tables stay the first choice's: the evaluation's rounds are the roots
    assert "expected reward of the first choice, before any escalation" in text


def test_the_demos_learned_cost_line_names_the_profile_furthest_from_its_configuration(demo):
    _, r, text = demo
    top = r.learned_costs[0]
    assert top["profile"] == "medium-v2" and top["configured_cost_usd"] == 0.0020 and top["true_cost_usd"] == 0.0032
    beliefs = [b for b in r.beliefs if b["profile"] == "medium-v2"]
    n = sum(b["cost_n"] for b in beliefs)
    assert top["learned_cost_usd"] == pytest.approx(sum(b["cost_mean"] * b["cost_n"] for b in beliefs) / n)
    assert top["learned_cost_usd"] > 0.0026  # learned: far above the configured price, near the truth
    ratios = [abs(math.log(x["learned_cost_usd"] / x["configured_cost_usd"])) for x in r.learned_costs]
    assert ratios == sorted(ratios, reverse=True)
    assert (f"  learned cost: medium-v2 ${top['learned_cost_usd']:.4f} per call (configured $0.0020; "
            "true mean in the simulator $0.0032)") in text.splitlines()
    json.dumps(r.to_dict())


def test_the_demo_without_a_verifier_escalates_nothing(tmp_path):
    r = run_demo(n_requests=600, seed=0, log_dir=tmp_path / "logs", progress=False, out=None, evaluate=False,
                 verifier=None)
    assert r.cascade is None and r.record_status == {"applied": 600}
    assert br.scan_table(tmp_path / "logs", "decisions").collect()["parent_id"].null_count() == 600
    assert "cascade:" not in format_summary(r) and "learned cost:" in format_summary(r)


# -- provider failures in the simulator ----------------------------------------------------------------
def test_failure_settings_are_checked_and_named():
    with pytest.raises(ConfigError, match=r"outage.stop must be an integer >= 11, got 10"):
        Outage(profile="small", start=10, stop=10)
    with pytest.raises(ConfigError, match=r"outage.error_rate must be <= 1, got 1.5"):
        Outage(profile="small", start=0, stop=10, error_rate=1.5)
    with pytest.raises(ConfigError, match=r"outage.error must be a short identifier .*, got 'http 503'"):
        Outage(profile="small", start=0, stop=10, error="http 503")
    with pytest.raises(ConfigError, match=r"outage.profile must be one of \['small', 'medium', 'large'\], got 'tiny'"):
        replace(Scenario.default().stationary(), outages=(Outage(profile="tiny", start=0, stop=10),))
    with pytest.raises(ConfigError, match=r"profiles\[x\].error_rate must be <= 1, got 2"):
        SimProfile(name="x", cost_usd=0.001, latency_ms=1, reliability={"chat": 0.5}, error_rate=2)


def test_failures_do_not_move_the_other_draws_and_fail_at_their_rate(seed):
    """Failures come from a stream of their own: with an outage and an error rate, every request,
    cost and latency is the draw of the same world without them, and only the failed calls'
    quality changes (to 0). Inside the outage every call of its profile fails, outside a call
    fails at the profile's error rate (binomial tolerance)."""
    base = Scenario.default(n_requests=10**9).stationary()
    rate = 0.3
    profiles = (replace(base.profiles[0], error_rate=rate),) + base.profiles[1:]
    failing = replace(base, profiles=profiles, outages=(Outage(profile="medium", start=1_000, stop=3_000),))
    n = 20_000
    runs = []
    for s in (base, failing):
        sim = Simulator(s, seed=seed)
        batches = [sim.next_requests(n // 2) for _ in range(2)]  # the second's draws follow the first's
        outs = [sim.sample_outcomes(b, np.arange(n // 2) % 3) for b in batches]
        runs.append((batches[0], _concat(*outs)))
    (b0, plain), (b1, out) = runs
    np.testing.assert_array_equal(b0.task, b1.task)
    np.testing.assert_array_equal(plain.cost_usd, out.cost_usd)
    np.testing.assert_array_equal(plain.latency_ms, out.latency_ms)
    failed = out.error != None  # noqa: E711 (an object array)
    assert set(out.error[failed]) == {"server_error"} and plain.error.tolist() == [None] * n
    np.testing.assert_array_equal(out.quality[failed], 0.0)
    np.testing.assert_array_equal(out.quality[~failed], plain.quality[~failed])
    small, medium = out.profile == 0, out.profile == 1
    in_outage = (out.step >= 1_000) & (out.step < 3_000)
    assert failed[medium & in_outage].all() and not failed[medium & ~in_outage].any()
    assert not failed[out.profile == 2].any()
    assert abs(failed[small].mean() - rate) <= Z * math.sqrt(rate * (1 - rate) / small.sum())


def test_expected_reward_counts_a_failed_call_as_quality_zero(seed):
    """A failed call is charged and timed, and delivers nothing: E[reward] = (1 - fail) * w_q * rel
    - w_c * cost - w_l * latency is the mean realised reward, request by request."""
    base = Scenario.default(n_requests=10**9).stationary()
    s = replace(base, profiles=(replace(base.profiles[0], error_rate=0.4),) + base.profiles[1:])
    sim = Simulator(s, seed=seed)
    n = 40_000
    batch = sim.next_requests(n)
    expected = sim.expected_reward(batch, DEMO_OBJECTIVE)[:, 0]
    out = sim.sample_outcomes(batch, np.zeros(n, dtype=int))
    o = DEMO_OBJECTIVE
    realised = o.quality * out.quality - o.cost * out.cost_usd - o.latency * out.latency_ms
    resid = realised - expected
    assert abs(resid.mean()) <= Z * resid.std(ddof=1) / math.sqrt(n)
    assert expected.mean() < Simulator(base, seed=seed).expected_reward(batch, DEMO_OBJECTIVE)[:, 0].mean() - 0.2


def test_a_failed_call_is_escalated_with_its_error_as_the_reason(tmp_path):
    s = replace(Scenario.default(n_requests=600).stationary(), outages=(Outage(profile="small", start=0, stop=600),))
    sim, router, run = play(s, n=600, seed=2, log_dir=tmp_path / "logs")
    rows, chain = chains(tmp_path / "logs")
    by_id = {r["decision_id"]: r for r in rows.iter_rows(named=True)}
    outcomes = br.scan_table(tmp_path / "logs", "outcomes").collect()
    failed = set(outcomes.filter(pl.col("error") == "server_error")["decision_id"])
    assert failed and all(by_id[d]["profile"] == "small" for d in failed)
    roots = {d for d in failed if by_id[d]["parent_id"] is None}
    children = rows.filter(pl.col("parent_id").is_in(list(failed)))
    assert roots and set(children["parent_id"]) >= roots  # every failed first call was escalated
    for child in children.iter_rows(named=True):
        assert "already tried in this escalation chain (server_error)" in child["excluded"]
        assert child["profile"] != "small"


# -- bounded onboarding, failures and cooldowns in the demo -------------------------------------------
@pytest.fixture(scope="module")
def mechanisms(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("mechanisms") / "logs"
    out = io.StringIO()
    r = run_demo(n_requests=6_000, seed=1, log_dir=log_dir, progress=False, out=out, evaluate=False)
    decisions = br.scan_table(log_dir, "decisions").sort("seq").collect()
    events = br.scan_table(log_dir, "events").sort("seq").collect()
    return log_dir, r, out.getvalue(), decisions, events


def request_index(decisions: pl.DataFrame, seq: int) -> int:
    """The request decided first after the log row ``seq``: the first decisions (no parent) are the
    requests in order, and every row of one writer has its own sequence number."""
    return decisions.filter(pl.col("parent_id").is_null() & (pl.col("seq") < seq)).height


def test_a_new_profile_stays_under_its_cap_until_it_graduates(mechanisms):
    log_dir, r, text, decisions, events = mechanisms
    (o,) = r.onboardings
    cap = DEMO_ONBOARDING.max_share
    start = events.filter(pl.col("event") == "onboarding_start")
    (graduated,) = events.filter(pl.col("event") == "onboarding_graduated").iter_rows(named=True)
    assert start["policy"].to_list() == ["medium-v2"] and graduated["policy"] == "medium-v2"
    assert f"{DEMO_ONBOARDING.min_outcomes} outcomes >= onboarding.min_outcomes" in graduated["why"]
    assert request_index(decisions, start["seq"][0]) == o["joined_at"] == 4_200
    assert request_index(decisions, graduated["seq"]) == o["graduated_at"] > o["joined_at"]
    share = decisions.with_columns(p=pl.col("probabilities").list.get(pl.col("profiles").list.eval(
        pl.element() == "medium-v2").list.arg_max(), null_on_oob=True))
    share = share.with_columns(p=pl.when(pl.col("profiles").list.contains("medium-v2")).then("p").otherwise(0.0))
    before, after = share.filter(pl.col("seq") < graduated["seq"]), share.filter(pl.col("seq") > graduated["seq"])
    assert before["p"].max() <= cap + 1e-12  # every decision under the cap, escalations included
    assert before.filter(pl.col("p") > 0).height > 500 and before["p"].max() > 0.9 * cap  # it was played, capped
    assert after["p"].max() > 0.5  # then it earned its share
    line = (f"  onboarding: medium-v2 joined at request 4,200, capped at {cap:.0%} of each request until "
            f"{DEMO_ONBOARDING.min_outcomes} outcomes; graduated at request {o['graduated_at']:,} "
            f"(events in {log_dir}/events)")
    assert o["from_log"] and line in text.splitlines() and text == format_summary(r)


def test_failed_calls_are_recorded_with_their_error_and_cooldowns_exclude_the_profile(mechanisms):
    log_dir, r, text, decisions, events = mechanisms
    (f,) = r.failures
    (outage,) = Scenario.default(n_requests=6_000, outage=True).outages
    outcomes = br.scan_table(log_dir, "outcomes").collect().join(
        decisions.select("decision_id", "profile", "parent_id"), on="decision_id")
    failed = outcomes.filter(pl.col("error").is_not_null())
    assert failed.height == f["n_failed"] > 0 and set(failed["error"]) == {"server_error"}
    assert set(failed["profile"]) == {"small"} and failed["quality"].null_count() == failed.height
    o = DEMO_OBJECTIVE  # the logged reward of a failed call: quality 0, its cost and latency
    np.testing.assert_allclose(failed["reward"], -o.cost * failed["cost_usd"] - o.latency * failed["latency_ms"])
    assert failed["cost_usd"].null_count() == 0 and failed["latency_ms"].null_count() == 0
    cooldowns = events.filter(pl.col("event") == "cooldown")
    assert cooldowns.height == len(f["cooldown_at"]) > 0 and f["from_log"]
    assert set(cooldowns["policy"]) == {"small"}
    assert all(w.startswith("cooldown: 3 failed calls in a row (last: server_error)") for w in cooldowns["why"])
    cooling = decisions.filter(pl.col("excluded").map_elements(
        lambda e: json.loads(e).get("small", "").startswith("cooldown: "), return_dtype=pl.Boolean))
    for row in cooling.iter_rows(named=True):  # excluded: probability 0, never played
        assert dict(zip(row["profiles"], row["probabilities"]))["small"] == 0.0 and row["profile"] != "small"
    roots = cooling.filter(pl.col("parent_id").is_null())
    assert roots.height == f["n_excluded"] > 0
    # each cooldown lasted the requests of its 0.2 s at the demo's 500 requests per second, no more
    first = [request_index(decisions, s) for s in cooldowns["seq"]]
    assert first == f["cooldown_at"]
    excluded = sorted(request_index(decisions, s + 1) - 1 for s in roots["seq"])
    assert min(excluded) == first[0] and outage.start <= first[0] < outage.stop + 60
    covered = {i for c in first for i in range(c, c + f["cooldown_requests"])}  # each request of a cooldown ...
    assert covered <= set(excluded)  # ... excluded it (a batch of 16 may start before its end)
    assert all(any(c <= i < c + f["cooldown_requests"] + 16 for c in first) for i in excluded)
    assert f["overruns"] == 0
    availability = [b["availability"] for b in r.beliefs if b["profile"] == "small"][0]
    lines = text.splitlines()
    assert (f"  provider failures: small down at requests {outage.start:,}-{outage.stop - 1:,} (server_error): "
            f"{failed.height} failed calls, recorded with record(id, error=...)") in lines
    assert (f"    cooldown (3 failures in a row -> out for 0.2 s, the time of 100 requests here): {cooldowns.height} "
            f"cooldown events (events in {log_dir}/events) kept small out of {roots.height} requests; availability "
            f"now {availability:.1%}") in lines


def test_the_watch_sees_what_the_log_says(mechanisms):
    """Without a log the demo counts onboarding and cooldowns as it runs; the same seed gives the
    numbers the log gives (the run is deterministic: the cooldowns last a fixed number of requests)."""
    _, r, _, _, _ = mechanisms
    live = run_demo(n_requests=6_000, seed=1, log_dir=None, progress=False, out=None)
    assert not live.onboardings[0]["from_log"] and not live.failures[0]["from_log"]
    assert {**live.onboardings[0], "from_log": True} == r.onboardings[0]
    assert {**live.failures[0], "from_log": True} == r.failures[0]


def test_the_cooldowns_are_the_same_on_every_run_of_a_seed():
    """The cooldown runs on the wall clock; the demo holds the run at its end so that it covers the
    same requests whatever the machine's speed (and the final beliefs hold no running cooldown)."""
    runs = [run_demo(n_requests=3_000, seed=4, log_dir=None, progress=False, out=None) for _ in range(2)]
    assert runs[0].failures[0]["cooldown_at"] and runs[0].failures[0]["n_excluded"] > 0
    a, b = (r.to_dict() for r in runs)
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b
    assert all(row["cooldown_until"] is None for row in runs[0].beliefs)
