"""Tests of the demo: the bar on runs short enough for CI, the summary, the logs and the JSON.

The bar's tolerances come from sweeps over seeds (see the final report of the demo work):
at 15,000 requests the stationary ratio to the oracle ranged 97.3-98.1% over seeds 0-9, the
re-routing took 186-416 code requests and onboarding 47-154 requests; the thresholds below
leave a wide margin so they are not flaky across seeds. ``BR_TEST_SEED=7 pytest`` shifts the
seeds to sweep more.
"""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import polars as pl
import pytest

import banditroute as br
import ope
from banditroute.errors import ConfigError
from banditroute.evaluation.candidates import load_feedback
from banditroute.sim import DEMO_OBJECTIVE, DEMO_ONBOARDING, DemoResult, Scenario, format_summary, run_demo
from banditroute.sim.demo_evaluation import PROGRESSIVE_BATCHES, _progressive


BASE_SEED = int(os.environ.get("BR_TEST_SEED", "0"))


@pytest.fixture(scope="module", params=[0, 1])
def short_run(request) -> DemoResult:
    return run_demo(n_requests=15_000, seed=BASE_SEED + request.param, log_dir=None, progress=False, out=None)


def test_bar_stationary_phase_near_oracle_and_above_static_table(short_run):
    st = short_run.phase("stationary")
    assert st["n"] == 6_000
    assert st["ratio_to_oracle"] >= 0.95
    assert st["ratio_to_static"] >= 1.04  # the benchmark-picked table loses where it misleads
    assert st["oracle"] >= st["router"] and st["regret"] > 0
    # realised reward is the same quantity with outcome noise: within a few standard errors
    assert abs(st["router_realised"] - st["router"]) <= 0.03


def test_bar_degraded_profile_routed_around_within_1000_requests(short_run):
    (d,) = short_run.degradations
    assert (d["profile"], d["task_type"]) == ("large", "code")
    assert d["share_before"] >= 0.6  # it carried the task type before, so re-routing means something
    assert d["reroute_requests"] is not None and d["reroute_requests"] <= 1_000
    assert d["share_after_reroute"] <= 0.10


def test_bar_new_profile_onboarded_where_it_is_best(short_run):
    (o,) = short_run.onboardings
    assert o["profile"] == "medium-v2" and o["best_for"] == ["code", "math", "summarize"]
    assert o["onboarding_requests"] is not None and o["onboarding_requests"] <= 1_000
    assert o["final_share"] >= 0.5
    after = short_run.phase("after medium-v2 joins")
    assert after["ratio_to_oracle"] >= 0.95 and after["ratio_to_static"] >= 1.1


def test_bar_stationary_scenario_over_20000_requests():
    r = run_demo(n_requests=20_000, seed=BASE_SEED + 3, scenario=Scenario.default(n_requests=20_000).stationary(),
                 log_dir=None, progress=False, out=None)
    (st, overall) = r.phases
    assert st["name"] == "stationary" and overall["name"] == "overall" and st["n"] == 20_000
    assert st["ratio_to_oracle"] >= 0.95 and st["ratio_to_static"] >= 1.04
    assert r.degradations == () and r.onboardings == ()


def test_every_outcome_is_recorded_once_and_windows_cover_the_run(short_run):
    assert short_run.record_status == {"applied": 15_000 + short_run.cascade["n_escalations"]}
    w = short_run.windows
    assert len(w) == 10 and w[0]["start"] == 0 and w[-1]["stop"] == 15_000
    assert w[-1]["cumulative_regret"] == pytest.approx(short_run.cumulative_regret)
    for window in w:
        for task, share in window["share"].items():
            assert sum(share.values()) == pytest.approx(1.0)
    # the late profile gets no traffic before it joins
    assert all(win["share"][t]["medium-v2"] == 0 for win in w if win["stop"] <= 10_500 for t in win["share"])


def test_summary_json_and_logs(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    r = run_demo(n_requests=2_000, seed=5, log_dir=tmp_path / "logs", progress=True, out=out,
                 progress_stream=err)
    text = out.getvalue()
    assert text == format_summary(r)
    for needle in ("banditroute demo: 2,000 requests, seed 5", "Static routing table", "stationary",
                   "Routing share per task type", "large degrades on code", "medium-v2 joins",
                   "vs oracle", "cum. regret"):
        assert needle in text
    assert "2,000/2,000" in err.getvalue() and err.getvalue().endswith("\n")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["n_requests"] == 2_000 and d["log_dir"] == str(tmp_path / "logs")
    assert set(d) >= {"phases", "windows", "degradations", "onboardings", "static_table", "wall_time_s"}
    decisions = pl.read_parquet(tmp_path / "logs" / "decisions" / "**" / "*.parquet")
    outcomes = pl.read_parquet(tmp_path / "logs" / "outcomes" / "**" / "*.parquet")
    n = 2_000 + r.cascade["n_escalations"]  # first decisions and their escalations
    assert decisions.height == n and outcomes.height == n and decisions["parent_id"].null_count() == 2_000
    assert decisions["decision_id"].n_unique() == n
    assert set(outcomes["decision_id"]) == set(decisions["decision_id"])
    assert (decisions["propensity"] > 0).all()


def test_quiet_run_prints_nothing(capsys):
    r = run_demo(n_requests=300, seed=0, log_dir=None, progress=False, out=None)
    assert capsys.readouterr() == ("", "")
    assert r.n_requests == 300


def test_same_seed_same_numbers():
    a = run_demo(n_requests=1_500, seed=11, log_dir=None, progress=False, out=None).to_dict()
    b = run_demo(n_requests=1_500, seed=11, log_dir=None, progress=False, out=None).to_dict()
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b


@pytest.mark.parametrize("kw, match", [
    (dict(n_requests=0), "n_requests must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
])
def test_bad_arguments_name_field_and_value(kw, match):
    with pytest.raises(ConfigError, match=match):
        run_demo(**{"log_dir": None, "progress": False, "out": None, **kw})


def test_share_thresholds_measured_on_logged_probabilities(short_run):
    # consistency of the event measurement with the windows: after re-routing, the degraded
    # profile's executed share of code traffic in the last window is small
    last = short_run.windows[-1]["share"]["code"]
    assert last["large"] <= 0.10
    assert np.isclose(sum(last.values()), 1.0)


def test_evaluation_and_report_switches(tmp_path):
    r = run_demo(n_requests=1_500, seed=2, log_dir=tmp_path / "a" / "logs", progress=False, out=None, report=None)
    assert r.report_path is None and r.candidates and r.gate is not None
    assert not (tmp_path / "a" / "report.html").exists()
    r = run_demo(n_requests=1_500, seed=2, log_dir=tmp_path / "b" / "logs", progress=False, out=None,
                 report=tmp_path / "custom.html")
    assert r.report_path == str(tmp_path / "custom.html") and (tmp_path / "custom.html").exists()
    r = run_demo(n_requests=1_500, seed=2, log_dir=tmp_path / "c" / "logs", progress=False, out=None, evaluate=False)
    assert r.candidates == () and r.gate is None and r.report_path is None
    decisions = pl.read_parquet(tmp_path / "c" / "logs" / "decisions" / "**" / "*.parquet")
    assert decisions["shadow"].null_count() == decisions.height  # no shadow without evaluation


def ucb_router(profiles, **kw):
    return br.Router(profiles, task_types=list(Scenario.default().task_types), objective=DEMO_OBJECTIVE,
                     drift=br.DriftConfig(), onboarding=DEMO_ONBOARDING, policy="ucb", seed=0, **kw)


def test_ucb_is_a_learning_candidate_evaluated_progressively(tmp_path):
    """The UCB candidate is the demo's router with policy="ucb", scored on each batch of logged
    rounds before it learns them (ope.progressive, in the demo's batches), given the late profile
    when production got it; its estimates come with intervals and the simulator's truth."""
    out = io.StringIO()
    r = run_demo(n_requests=3_000, seed=BASE_SEED, log_dir=tmp_path / "logs", progress=False, out=out, report=None)
    ucb = [c for c in r.candidates if c["policy"] == "ucb"]
    assert [c["estimator"] for c in ucb] == ["IPS", "SNIPS", "DR"]
    for c in ucb:
        assert c["ci_low"] <= c["value"] <= c["ci_high"] and 0.3 < c["truth"] < 0.9
        assert f"  ucb           {c['estimator']:<10}{c['value']:>9.4f}  [{c['ci_low']:.4f}" in out.getvalue()
    # the demo's progressive loop is ope.progressive's (here without a join: the same array) ...
    fb = load_feedback(tmp_path / "logs", cohorts=["task_type"])
    assert fb.n_rounds == 3_000  # round i is request i (time order)
    profiles = [br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms) for p in Scenario.default().profiles]
    ours = _progressive(ucb_router(profiles), fb, np.arange(fb.n_rounds), [])
    theirs = ope.progressive(ucb_router(profiles), fb, batch_rounds=math.ceil(fb.n_rounds / PROGRESSIVE_BATCHES))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # ... and with the join, the late profile has no probability before it joined
    request = np.arange(fb.n_rounds)
    joined = _progressive(ucb_router(profiles[:3]), fb, request, [(2_100, profiles[3])])
    late = list(fb.action_names).index("medium-v2")
    assert (joined[request < 2_100, late] == 0).all() and (joined[request >= 2_100, late] > 0).all()
    np.testing.assert_allclose(joined.sum(axis=1), 1.0)


def test_ucb_plays_the_same_with_one_draw_as_with_a_thousand(seed):
    """The demo's UCB candidate uses n_draws=1 (cheaper learning): UCB reads the Beta evidence and
    the mean costs, never the posterior draws, so its distribution is the same."""
    profiles = [br.Profile(p.name, cost_usd=p.cost_usd, latency_ms=p.latency_ms)
                for p in Scenario.default().stationary().profiles]
    routers = [ucb_router(profiles, n_draws=n) for n in (1, 1024)]
    rng = np.random.default_rng(seed)
    tasks = Scenario.default().task_types
    for _ in range(2_000):
        context = {"task_type": tasks[int(rng.integers(len(tasks)))]}
        a, b = (router.decide(context) for router in routers)
        assert a.probabilities == b.probabilities and a.profile == b.profile
        quality, cost, latency = float(rng.random() < 0.7), float(rng.lognormal(-7, 0.5)), float(rng.lognormal(6, 0.3))
        for router, d in zip(routers, (a, b)):
            router.record(d.id, quality=quality, cost_usd=cost, latency_ms=latency)
