"""The canary watcher: a real Router with a canary, its log read back, the monitor's rollback
recorded as an event carrying the numbers."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pytest

import banditroute as br
from banditroute.evaluation.canary import CanaryWatcher, canary_rounds, canary_run
from conftest import TASKS, train
from ope import MonitorOptions

TRUTH = {"small": {"chat": 0.8, "code": 0.3, "math": 0.2},
         "medium": {"chat": 0.8, "code": 0.6, "math": 0.5},
         "large": {"chat": 0.8, "code": 0.9, "math": 0.9}}
COST = {"small": 0.0004, "medium": 0.002, "large": 0.012}
HOUR = dt.timedelta(hours=1)


class Table:
    """A static routing table as a candidate policy."""

    def __init__(self, table):
        self.table = table

    def probabilities(self, context):
        return {self.table[context["task_type"]]: 1.0}


def trained(profiles, seed, tmp_path):
    router = br.Router(profiles, task_types=TASKS, seed=seed, exploration=0.05, log_dir=tmp_path,
                       refresh_every=10 ** 9)  # a frozen bank: production's pmf stays put
    train(router, TRUTH, 600, np.random.default_rng(seed))
    return router


def serve(router, rng, n, tasks=TASKS):
    """``n`` decisions with Bernoulli(TRUTH) quality and the profile's cost, then a flush."""
    decisions = router.decide_batch([{"task_type": tasks[i % len(tasks)]} for i in range(n)])
    for i, d in enumerate(decisions):
        router.record(d.id, quality=float(rng.random() < TRUTH[d.profile][tasks[i % len(tasks)]]),
                      cost_usd=COST[d.profile])
    router.flush()
    return decisions


def now_plus(window: dt.timedelta) -> int:
    """A poll time at which everything decided so far is ``window`` old."""
    return time.time_ns() // 1000 + window // dt.timedelta(microseconds=1) + 1


def events(log_dir):
    return br.scan_table(log_dir, "events").collect().select("event", "policy", "fraction", "who", "why").rows()


def test_a_worse_canary_is_rolled_back_with_the_numbers_in_the_event(profiles, seed, tmp_path):
    router = trained(profiles, seed, tmp_path)
    rng = np.random.default_rng(seed + 1)
    router.start_canary("cheap", Table(dict.fromkeys(TASKS, "small")), fraction=0.2, who="alice", why="cheaper")
    watcher = CanaryWatcher(router, tmp_path, options=MonitorOptions(max_weight=5.0), wait_window=HOUR)
    result, served = None, 0
    while served < 30_000 and not watcher.rolled_back_:
        serve(router, rng, 300)
        served += 300
        result = watcher.poll(now_us=now_plus(HOUR))
    assert result.decision == "rollback" and result.failed_guardrail is None
    assert result.difference.high < 0 and result.n_rounds == served  # the 600 training rounds are left out
    (event, policy, fraction, who, why) = events(tmp_path)[-1]
    assert (event, policy, fraction, who) == ("rollback", "cheap", 0.2, "monitor")
    numbers = json.loads(why)
    assert numbers["decision"] == "rollback" and numbers["n_rounds"] == served
    assert numbers["difference"]["high"] == pytest.approx(result.difference.high)
    assert numbers["alpha"] == 0.05 and numbers["reason"].startswith("reward: candidate - baseline upper bound")
    # production decides again; polling on neither feeds nor rolls back twice
    assert router.probabilities({"task_type": "code"})["small"] < 0.5
    serve(router, rng, 300)
    again = watcher.poll(now_us=now_plus(HOUR))
    assert again.decision == "rollback" and again.n_rounds == served
    assert [e[0] for e in events(tmp_path)].count("rollback") == 1


def test_a_better_but_expensive_canary_fails_its_cost_guardrail(profiles, seed, tmp_path):
    router = trained(profiles, seed, tmp_path)
    rng = np.random.default_rng(seed + 2)
    router.start_canary("large", Table(dict.fromkeys(TASKS, "large")), fraction=0.25, who="bob", why="quality")
    options = MonitorOptions(max_weight=4.0, guardrails={"cost_usd": 0.0005}, metric_ranges={"cost_usd": (0.0, 0.02)})
    watcher = CanaryWatcher(router, tmp_path, options=options, wait_window=HOUR)
    for _ in range(40):
        serve(router, rng, 300)
        result = watcher.poll(now_us=now_plus(HOUR))
        if watcher.rolled_back_:
            break
    assert result.decision == "rollback" and result.failed_guardrail == "cost_usd"
    numbers = json.loads(events(tmp_path)[-1][4])
    assert numbers["failed_guardrail"] == "cost_usd"
    (rail,) = numbers["guardrails"]
    assert rail["status"] == "fail" and rail["difference"]["low"] > 0.0005


def test_a_better_canary_is_not_rolled_back_and_promotion_is_left_to_a_person(profiles, seed, tmp_path):
    # the best profile per task (value 0.87) against the frozen, near-uniform production (about 0.63);
    # a false rollback has probability <= alpha / 6 at every poll together
    router = trained(profiles, seed, tmp_path)
    rng = np.random.default_rng(seed + 3)
    router.start_canary("best", Table(dict.fromkeys(TASKS, "large")), fraction=0.2, who="carol", why="test")
    watcher = CanaryWatcher(router, tmp_path, options=MonitorOptions(max_weight=5.0), wait_window=HOUR)
    for _ in range(10):
        serve(router, rng, 300)
        result = watcher.poll(now_us=now_plus(HOUR))
        assert result.decision != "rollback"
    assert result.n_rounds == 3000 and result.decision == "promote" and result.difference.low > 0
    assert [e[0] for e in events(tmp_path)] == ["canary_start"]  # the watcher does not promote


def test_the_rounds_read_back_are_the_monitor_inputs_even_when_the_fraction_changes(profiles, seed, tmp_path):
    router = trained(profiles, seed, tmp_path)
    rng = np.random.default_rng(seed + 4)
    production = router.probabilities({"task_type": "code"})
    table = Table({"chat": "small", "code": "medium", "math": "small"})
    router.start_canary("t", table, fraction=0.2, who="dana", why="test")
    first = serve(router, rng, 200, tasks=["code"])
    router.set_canary_fraction(0.6, who="dana", why="ramp up")
    second = serve(router, rng, 200, tasks=["code"])
    run = canary_run(tmp_path)
    assert run.name == "t" and run.running and run.fractions.tolist() == [0.2, 0.6]
    rounds = canary_rounds(tmp_path, run, since_us=0, until_us=now_plus(HOUR), wait_window=HOUR)
    decisions = first + second
    assert rounds["candidate_probs"].tolist() == [float(d.profile == "medium") for d in decisions]
    assert rounds["baseline_probs"] == pytest.approx([production[d.profile] for d in decisions], abs=1e-12)
    assert rounds["propensities"].tolist() == [d.propensity for d in decisions]
    assert rounds["rewards"].shape == (400,)
    # after the canary ends, no round is read as a canary round
    router.rollback(who="dana", why="done")
    serve(router, rng, 100, tasks=["code"])
    ended = canary_run(tmp_path)
    assert not ended.running
    assert canary_rounds(tmp_path, ended, since_us=0, until_us=now_plus(HOUR), wait_window=HOUR)["rewards"].size == 400


def test_each_round_is_fed_once_and_a_new_canary_gets_a_new_monitor(profiles, seed, tmp_path):
    router = trained(profiles, seed, tmp_path)
    rng = np.random.default_rng(seed + 5)
    watcher = CanaryWatcher(router, tmp_path, wait_window=HOUR)
    assert watcher.poll(now_us=now_plus(HOUR)) is None  # no canary yet
    router.start_canary("a", Table(dict.fromkeys(TASKS, "medium")), fraction=0.3, who="e", why="x")
    serve(router, rng, 150)
    assert watcher.poll(now_us=now_plus(HOUR)).n_rounds == 150
    assert watcher.poll(now_us=now_plus(HOUR)).n_rounds == 150  # nothing new
    # rounds younger than the wait window are not fed yet
    serve(router, rng, 150)
    assert watcher.poll().n_rounds == 150
    assert watcher.poll(now_us=now_plus(HOUR)).n_rounds == 300
    first = watcher.monitor_
    router.rollback(who="e", why="next")
    router.start_canary("b", Table(dict.fromkeys(TASKS, "large")), fraction=0.3, who="e", why="y")
    serve(router, rng, 90)
    result = watcher.poll(now_us=now_plus(HOUR))
    assert watcher.monitor_ is not first and result.n_rounds == 90


@pytest.mark.parametrize("kw, field, match", [
    (dict(metric="tokens"), "metric", r"^metric must be one of .*, got 'tokens'$"),
    (dict(wait_window=60), "wait_window", r"^wait_window must be a non-negative timedelta, got 60$"),
    (dict(options={"alpha": 0.1}), "options", r"^options must be an ope\.MonitorOptions"),
    (dict(options=MonitorOptions(guardrails={"tokens": (5, "lower")}, metric_ranges={"tokens": (0, 10)})),
     "options.guardrails", r"^options\.guardrails must be logged metrics other than 'reward'"),
])
def test_bad_watcher_options_name_the_field(profiles, tmp_path, kw, field, match):
    router = br.Router(profiles, task_types=TASKS, seed=0, log_dir=tmp_path)
    with pytest.raises(br.ConfigError, match=match) as info:
        CanaryWatcher(router, tmp_path, **kw)
    assert info.value.field == field
