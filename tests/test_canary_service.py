"""The canary monitor inside ``banditroute serve`` (issue 12, items 3 and 4): a real 2-worker
service, a canary started over HTTP, traffic driven through ``/v1/decide`` and ``/v1/outcome``
with qualities the test chooses per profile.

A clearly worse candidate is rolled back by the monitor on both workers within a bounded time,
as one stored command (one ``rollback`` event row by ``who="monitor"`` with the monitor's numbers
as JSON in ``why``), and stays rolled back after the service restarts; a candidate that is not
worse, given the same traffic and more time, is not rolled back.
"""

import concurrent.futures as cf
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

import banditroute as br  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_service import free_port, start_service, stop_service  # noqa: E402
from test_rollout_http import TOKEN, call, command, replicas_up, stages  # noqa: E402  (the same HTTP helpers)

# the service's routes (bench_service.ROUTES): small, medium, large x chat, code, math
ALWAYS = '[router]\ntask_types = ["chat", "code", "math"]\n[[profiles]]\nname = "{}"\n'
QUALITY = {"small": 0.0, "medium": 1.0, "large": 1.0}  # the test's world: small always fails
MONITOR = ["--monitor-interval-s", "0.5", "--monitor-wait-s", "1"]
N_ROUNDS = 400  # per canary


def one_round(port, i):
    status, d = call(port, "/v1/decide", {"context": {"task_type": ("chat", "code", "math")[i % 3]}})
    assert status == 200, d
    status, answer = call(port, "/v1/outcome", {"decision_id": d["id"], "quality": QUALITY[d["profile"]]})
    assert status == 200, answer
    return d["profile"]


def traffic(port, n):
    with cf.ThreadPoolExecutor(8) as ex:
        return list(ex.map(lambda i: one_round(port, i), range(n)))


def monitor_events(log_dir):
    return (br.scan_table(log_dir, "events").filter((pl.col("event") == "rollback") & (pl.col("who") == "monitor"))
            .select("policy", "fraction", "why").collect().rows())


def test_a_worse_canary_is_rolled_back_on_every_worker_and_a_good_one_is_not(tmp_path):
    port, logs = free_port(), tmp_path / "logs"
    for name in ("small", "large"):
        (tmp_path / f"{name}.toml").write_text(ALWAYS.format(name))
    serve = ["--token", TOKEN, "--candidate-config", f"bad={tmp_path / 'small.toml'}",
             "--candidate-config", f"good={tmp_path / 'large.toml'}", *MONITOR]
    proc = start_service(tmp_path, port, workers=2, extra=serve, log_dir=logs)
    try:
        workers = replicas_up(port)
        traffic(port, 300)  # production learns that small fails
        # (a) a candidate that always plays small: clearly worse, rolled back by the monitor on both workers
        started = time.monotonic()
        answer = command(port, action="canary_start", name="bad", candidate_config="bad", fraction=0.5)
        stages(port, workers, until=lambda s: s["canary"] is not None)  # every round from now on is a canary round
        traffic(port, N_ROUNDS)
        waited = time.monotonic()
        seen = stages(port, workers, until=lambda s: s["canary"] is None, timeout_s=30.0)
        took_s = waited - started + max(t for t, _ in seen.values())
        assert took_s < 30.0
        for _, stage in seen.values():
            last = stage["last_command"]
            assert last["action"] == "rollback" and last["who"] == "monitor" and last["name"] == "bad"
            assert last["command_id"] == f"monitor-rollback-{answer['rollout']['canary']['since_us']}"
        (row,) = monitor_events(logs)  # one stored command, one event row, however many workers decided
        numbers = json.loads(row[2])
        assert row[:2] == ("bad", 0.5) and numbers["decision"] == "rollback"
        assert numbers["difference"]["high"] < 0 and numbers["n_rounds"] > 0
        print(f"worse canary rolled back on both workers {took_s:.1f} s after it started, "
              f"decided at round {numbers['decided_at_round']}")

        # (b) a candidate that always plays large (not worse): the same traffic, more time, no rollback
        command(port, action="canary_start", name="good", candidate_config="good", fraction=0.5)
        stages(port, workers, until=lambda s: s["canary"] is not None)
        traffic(port, N_ROUNDS)
        time.sleep(max(5.0, took_s))
        for _, stage in stages(port, workers, until=lambda s: True).values():
            assert stage["canary"] is not None and stage["canary"]["name"] == "good"
        metrics = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10).read()
        gauges = {tuple(line.split()) for line in metrics.decode().splitlines()
                  if line.startswith("banditroute_monitor_")}
        rounds = [float(v) for k, v in gauges if k.startswith("banditroute_monitor_canary_rounds")]
        rollbacks = [float(v) for k, v in gauges if k.startswith("banditroute_monitor_rollbacks_total")]
        failures = [float(v) for k, v in gauges if k.startswith("banditroute_monitor_poll_failures_total")]
        print(f"good canary: rounds seen by each worker's monitor {rounds}")
        # each worker's monitor read every round of the good canary (both workers'), more than the bad one took
        assert rounds == [N_ROUNDS, N_ROUNDS] and N_ROUNDS > numbers["decided_at_round"], (rounds, numbers)
        assert sorted(rollbacks) == [0, 1] and failures == [0, 0]
        command(port, action="rollback", why="done")
    finally:
        stop_service(proc)

    proc = start_service(tmp_path, port, workers=2, extra=serve, log_dir=logs)
    try:  # restarted: the canary stays rolled back, nothing more rolled back
        workers = replicas_up(port)
        for _, stage in stages(port, workers, until=lambda s: True).values():
            assert stage["canary"] is None and stage["position"] == 4
        traffic(port, 30)
        time.sleep(2.0)
    finally:
        stop_service(proc)
    assert len(monitor_events(logs)) == 1
    events = br.scan_table(logs, "events").filter(pl.col("event") != "quarantine").sort("ts").select(
        "event", "policy", "who").collect().rows()
    assert events == [("canary_start", "bad", "alice"), ("rollback", "bad", "monitor"),
                      ("canary_start", "good", "alice"), ("rollback", "good", "alice")]
    assert "Traceback" not in (tmp_path / f"server-{port}.log").read_text()
