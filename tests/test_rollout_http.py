"""Rollout over HTTP (issue 12, item 4): ``POST|GET /v1/rollout`` on real ``banditroute serve`` processes.

Through ``python -m banditroute serve`` in subprocesses (real sockets, no mocks): a canary
posted to one worker of ``serve --workers 2`` is in effect at both within the stated bound
(``PROPAGATION_S``: every decision either worker makes from then on is drawn from the logged
mixture); a worker killed with SIGKILL (uvicorn starts another) and a restarted service still run
the canary with its fraction, its learning candidate re-taught the outcomes since it started;
each command is one event row (who, what, why); bad input is a 422 naming the field (as on every endpoint), no token a
401, a command that does not fit the stage a 409 (two racing canaries: exactly one wins); two
replicas sharing Redis (separate log directories) both apply a command, and a restarted one
restores the stage from Redis.
"""

import concurrent.futures as cf
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

import banditroute as br  # noqa: E402
from banditroute.service.rollout_store import PROPAGATION_S  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_service import free_port, start_service, stop_service  # noqa: E402

TOKEN = "rollout-test-token"
# the service's routes (bench_service.ROUTES): small, medium, large x chat, code, math
BIG = '[router]\ntask_types = ["chat", "code", "math"]\n[[profiles]]\nname = "large"\n'  # plays large, always
SMALL = '[router]\ntask_types = ["chat", "code", "math"]\n[[profiles]]\nname = "small"\n'


def call(port, path, body=None, *, token=TOKEN, raw=None):
    """One request on a fresh connection (so requests spread over the workers): (status, JSON)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers,
                                 method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def command(port, **body):
    status, answer = call(port, "/v1/rollout", {"who": "alice", "why": "cheaper on chat", **body})
    assert status == 200, answer
    return answer


def stages(port, replicas, *, until, timeout_s=30.0):
    """GET /v1/rollout on fresh connections until every replica of ``replicas`` has answered with
    ``until(stage)`` true: {replica: (seconds it took, its stage)}."""
    seen, start = {}, time.monotonic()
    while set(seen) < set(replicas) and time.monotonic() - start < timeout_s:
        status, stage = call(port, "/v1/rollout")
        assert status == 200, stage
        if stage["replica"] in replicas and stage["replica"] not in seen and until(stage):
            seen[stage["replica"]] = (time.monotonic() - start, stage)
    assert set(seen) == set(replicas), (seen, replicas)
    return seen


def replicas_up(port, n=2, timeout_s=30.0):
    seen, deadline = set(), time.monotonic() + timeout_s
    while len(seen) < n and time.monotonic() < deadline:
        seen.add(call(port, "/healthz")[1]["replica"])
    assert len(seen) == n
    return seen


def decide_on_all(port, writers, *, n_each=8, task="chat"):
    """Decisions on fresh connections until each writer of ``writers`` made ``n_each``: their ids."""
    ids, counts = [], dict.fromkeys(writers, 0)
    for _ in range(400):
        status, d = call(port, "/v1/decide", {"context": {"task_type": task}})
        assert status == 200, d
        ids.append(d["id"])
        writer = d["id"].rpartition("-")[0]
        counts[writer] = counts.get(writer, 0) + 1
        if all(counts[w] >= n_each for w in writers):
            return ids
    raise AssertionError(f"not every worker decided: {counts}")


def assert_mixture(log_dir, ids, name, fraction):
    """Each decision's logged probabilities are (1 - f) * production + f * candidate, the
    candidate's pmf logged beside it: production's share comes out a pmf."""
    rows = br.scan_table(log_dir, "decisions").filter(pl.col("decision_id").is_in(ids)).collect()
    assert rows.height == len(ids)
    for row in rows.iter_rows(named=True):
        candidate = np.array(json.loads(row["shadow"])[name])
        mixed = np.array(row["probabilities"])
        production = (mixed - fraction * candidate) / (1.0 - fraction)
        assert production.min() > -1e-9 and abs(production.sum() - 1.0) < 1e-9, (row, fraction)
        assert row["propensity"] == mixed[row["profiles"].index(row["profile"])]


def worker_pids(serve_pid):
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def rollout_events(log_dir):
    return br.scan_table(log_dir, "events").filter(pl.col("event") != "quarantine").sort("ts").select(
        "event", "policy", "fraction", "who", "why").collect().rows()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find uvicorn's workers")
def test_canary_reaches_both_workers_within_the_bound_and_survives_sigkill_and_restart(tmp_path):
    port, logs = free_port(), tmp_path / "logs"
    (tmp_path / "big.toml").write_text(BIG)
    serve = ["--token", TOKEN, "--candidate-config", f"big={tmp_path / 'big.toml'}"]
    proc = start_service(tmp_path, port, workers=2, extra=serve, log_dir=logs)
    try:
        first = replicas_up(port)
        before = decide_on_all(port, first, n_each=2)
        answer = command(port, action="canary_start", name="big", candidate_config="big", fraction=0.5,
                         command_id="canary-big-1")
        accepted = time.monotonic()
        assert answer["status"] == "applied" and answer["rollout"]["canary"]["fraction"] == 0.5
        assert answer["command"]["candidate"]["config"] == "big"
        # (a) both workers run the canary within the bound: GET says so, and every decision made
        # from then on, by either worker, is drawn from the logged mixture
        seen = stages(port, first, until=lambda s: s["canary"] and s["canary"]["fraction"] == 0.5)
        assert max(t for t, _ in seen.values()) <= PROPAGATION_S + 0.5  # the GETs' own time on top
        time.sleep(max(0.0, accepted + PROPAGATION_S - time.monotonic()))
        canary_ids = decide_on_all(port, first)
        assert_mixture(logs, canary_ids, "big", 0.5)
        shadows = br.scan_table(logs, "decisions").filter(pl.col("decision_id").is_in(before)).collect()
        assert shadows.get_column("shadow").null_count() == len(before)  # before: production alone
        # a retry with the same command id is applied once; a second canary is a conflict
        assert command(port, action="canary_start", name="big", candidate_config="big", fraction=0.5,
                       command_id="canary-big-1")["status"] == "duplicate"
        status, err = call(port, "/v1/rollout", {"action": "canary_start", "name": "other", "candidate_toml": BIG,
                                                 "fraction": 0.1, "who": "bob", "why": "x"})
        assert status == 409 and err["error"]["field"] == "canary"
        # the candidate learns the outcomes each worker applies (its profile's: large)
        for i in canary_ids:
            assert call(port, "/v1/outcome", {"decision_id": i, "quality": 1.0})[0] == 200
        command(port, action="canary_fraction", fraction=0.25, why="halve the canary")
        live = stages(port, first, until=lambda s: s["canary"]["fraction"] == 0.25)
        large = br.scan_table(logs, "decisions").filter(pl.col("decision_id").is_in(canary_ids)
                                                        & (pl.col("profile") == "large")).collect().height
        assert large > 0 and sum(s["canary"]["n_updates"] for _, s in live.values()) == large  # each its own

        # (c) one event row per command, with who, what and why
        assert rollout_events(logs) == [("canary_start", "big", 0.5, "alice", "cheaper on chat"),
                                        ("canary_fraction", "big", 0.25, "alice", "halve the canary")]

        # (b) SIGKILL a worker: uvicorn starts another, which restores the canary from the log
        # directory's commands, its candidate re-taught every applied outcome since the canary began
        os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)
        deadline, new = time.monotonic() + 30, set()
        while not new and time.monotonic() < deadline:
            new = {call(port, "/healthz")[1]["replica"]} - first
        assert new, "uvicorn started no new worker"
        (t, stage), = stages(port, new, until=lambda s: True).values()
        assert stage["canary"]["fraction"] == 0.25 and stage["canary"]["name"] == "big"
        assert stage["position"] == 2 and stage["last_command"]["why"] == "halve the canary"
        assert stage["canary"]["since"] == answer["rollout"]["canary"]["since"]
        assert stage["canary"]["n_updates"] == large  # every worker's, from the log
    finally:
        stop_service(proc)

    (tmp_path / "big.toml").write_text(SMALL)  # the named file changes: the stored candidate does not
    proc = start_service(tmp_path, port, workers=2, extra=serve, log_dir=logs)
    try:  # the whole service restarted on the same log directory: the canary is still in effect
        second = replicas_up(port)
        for _, stage in stages(port, second, until=lambda s: True).values():
            assert stage["canary"]["name"] == "big" and stage["canary"]["fraction"] == 0.25
        restarted = decide_on_all(port, second, n_each=4)
        assert_mixture(logs, restarted, "big", 0.25)
        shadow = br.scan_table(logs, "decisions").filter(pl.col("decision_id").is_in(restarted)).collect()["shadow"]
        assert {tuple(json.loads(s)["big"]) for s in shadow} == {(0.0, 0.0, 1.0)}  # still plays large
        command(port, action="rollback", who="bob", why="latency regression")
        stages(port, second, until=lambda s: s["canary"] is None and s["position"] == 3)
        after = decide_on_all(port, second, n_each=2)
        # canaries posted at once, landing on either worker: one position, one winner, the rest 409
        with cf.ThreadPoolExecutor(16) as ex:
            race = list(ex.map(lambda i: call(port, "/v1/rollout", {
                "action": "canary_start", "name": f"c{i}", "candidate_toml": BIG, "fraction": 0.1, "who": "ops",
                "why": f"race {i}"}), range(16)))
        assert sorted(s for s, _ in race) == [200] + [409] * 15, race
        winner = next(a["command"]["name"] for s, a in race if s == 200)
        for _, stage in stages(port, second, until=lambda s: s["position"] == 4).values():
            assert stage["canary"]["name"] == winner
    finally:
        stop_service(proc)
    assert br.scan_table(logs, "decisions").filter(pl.col("decision_id").is_in(after)).collect() \
        .get_column("shadow").null_count() == len(after)
    assert rollout_events(logs)[-2:] == [("rollback", "big", 0.25, "bob", "latency regression"),
                                        ("canary_start", winner, 0.1, "ops", f"race {winner[1:]}")]
    assert "Traceback" not in (tmp_path / f"server-{port}.log").read_text()


BAD = [  # (body, field): 422 naming the field
    ({"action": "launch", "who": "a", "why": "b"}, "action"),
    ({"action": "canary_start", "name": "c", "candidate_toml": BIG, "why": "b"}, "who"),
    ({"action": "canary_start", "name": "c", "candidate_toml": BIG, "fraction": 0.1, "who": "a", "why": " "}, "why"),
    ({"action": "canary_start", "name": "c", "candidate_toml": BIG, "fraction": 1.5, "who": "a", "why": "b"},
     "fraction"),
    ({"action": "canary_start", "name": "c", "candidate_toml": BIG, "fraction": "0.1", "who": "a", "why": "b"},
     "fraction"),
    ({"action": "canary_start", "name": "c", "candidate_toml": BIG, "who": "a", "why": "b"}, "fraction"),
    ({"action": "canary_start", "name": "c", "fraction": 0.1, "who": "a", "why": "b"}, "candidate_toml"),
    ({"action": "canary_start", "name": "c", "fraction": 0.1, "candidate_config": "/etc/passwd", "who": "a",
      "why": "b"}, "candidate_config"),
    ({"action": "canary_start", "name": "c", "fraction": 0.1, "candidate_toml": "[[profiles]]\nname = 'huge'\n",
      "who": "a", "why": "b"}, "candidate_toml"),
    ({"action": "canary_start", "name": "c", "fraction": 0.1, "candidate_toml": "not = [toml", "who": "a",
      "why": "b"}, "candidate_toml"),
    ({"action": "canary_start", "name": "c", "fraction": 0.1, "candidate_toml": "x" * 70_000, "who": "a",
      "why": "b"}, "candidate_toml"),
    ({"action": "shadow_start", "name": "../etc", "candidate_toml": BIG, "who": "a", "why": "b"}, "name"),
    ({"action": "shadow_stop", "who": "a", "why": "b"}, "name"),
    ({"action": "rollback", "fraction": 0.2, "who": "a", "why": "b"}, "fraction"),
    ({"action": "rollback", "candidate_toml": BIG, "who": "a", "why": "b"}, "candidate_toml"),
    ({"action": "rollback", "who": "a" * 300, "why": "b"}, "who"),
    ({"action": "rollback", "who": "a", "why": "b", "command_id": "x"}, "command_id"),
    ({"action": "rollback", "who": "a", "why": "b", "force": True}, "force"),
    ([1, 2], "body"),
]


def test_bad_input_is_a_422_naming_the_field_and_no_token_a_401(tmp_path):
    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, extra=["--token", TOKEN, "--max-body-bytes", "131072"], log_dir=logs)
    try:
        for body, field in BAD:
            status, err = call(port, "/v1/rollout", body)
            assert (status, err["error"]["field"]) == (422, field), (body, err)
            assert err["error"]["message"].startswith(field) or field in ("body", "force"), err
        assert call(port, "/v1/rollout", raw=b"{")[0] == 400
        for token in (None, "wrong-token-123"):
            assert call(port, "/v1/rollout", token=token)[0] == 401
            status, err = call(port, "/v1/rollout", {"action": "rollback", "who": "a", "why": "b"}, token=token)
            assert status == 401 and err["error"]["field"] == "authorization"
        status, err = call(port, "/v1/rollout", {"action": "rollback", "who": "a", "why": "b"})
        assert status == 409 and err["error"]["field"] == "canary"  # fits no stage: nothing is running
        status, err = call(port, "/v1/rollout", {"action": "shadow_stop", "name": "s", "who": "a", "why": "b"})
        assert status == 409 and err["error"]["field"] == "name"
        stage = call(port, "/v1/rollout")[1]
        assert stage["position"] == 0 and stage["canary"] is None and stage["shadows"] == []
        spec = call(port, "/openapi.json")[1]
        assert set(spec["paths"]["/v1/rollout"]) == {"get", "post"}
        assert spec["paths"]["/v1/rollout"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "required"] == ["action", "who", "why"]
    finally:
        stop_service(proc)
    assert rollout_events(logs) == []  # nothing refused was logged
    assert "Traceback" not in (tmp_path / f"server-{port}.log").read_text()


redis = pytest.importorskip("redis", reason="the service extra (redis) is not installed")
from test_shared_state import REDIS_SERVER, RedisServer  # noqa: E402


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found (apt-get install redis-server)")
def test_replicas_sharing_redis_both_apply_commands_and_a_restart_restores_them(tmp_path):
    server = RedisServer(tmp_path).start()
    ports, logs = [free_port(), free_port()], [tmp_path / "logs0", tmp_path / "logs1"]
    serve = ["--token", TOKEN, "--redis-url", server.url, "--sync-interval-ms", "50"]
    procs = [start_service(tmp_path, p, extra=serve, log_dir=d) for p, d in zip(ports, logs)]
    try:
        ids = [call(p, "/healthz")[1]["replica"] for p in ports]
        command(ports[0], action="shadow_start", name="small", candidate_toml=SMALL, why="compare")
        accepted = time.monotonic()
        (t, stage), = stages(ports[1], [ids[1]], until=lambda s: s["shadows"]).values()
        assert t <= PROPAGATION_S + 0.5 and stage["shadows"][0]["name"] == "small"
        time.sleep(max(0.0, accepted + PROPAGATION_S - time.monotonic()))
        decided = [call(ports[1], "/v1/decide", {"context": {"task_type": "code"}})[1]["id"] for _ in range(5)]
        rows = br.scan_table(logs[1], "decisions").filter(pl.col("decision_id").is_in(decided)).collect()
        assert all(json.loads(s)["small"] == [1.0, 0.0, 0.0] for s in rows.get_column("shadow"))
        # two canaries posted at once to the two replicas: exactly one is stored, the other is a 409
        with cf.ThreadPoolExecutor(2) as ex:
            answers = list(ex.map(lambda i: call(ports[i], "/v1/rollout", {
                "action": "canary_start", "name": f"big{i}", "candidate_toml": BIG, "fraction": 0.3, "who": "ops",
                "why": f"race {i}"}), range(2)))
        assert sorted(s for s, _ in answers) == [200, 409]
        winner = next(i for i, (s, _) in enumerate(answers) if s == 200)
        for port, replica in zip(ports, ids):
            stages(port, [replica], until=lambda s: s["canary"] and s["canary"]["name"] == f"big{winner}")
        os.killpg(procs[1].pid, signal.SIGKILL)  # the second replica dies; a new one restores from Redis
        procs[1].wait()
        procs[1] = start_service(tmp_path, ports[1], extra=serve, log_dir=logs[1])
        stage = call(ports[1], "/v1/rollout")[1]
        assert stage["replica"] != ids[1] and stage["store"] == "redis" and stage["position"] == 2
        assert [s["name"] for s in stage["shadows"]] == ["small"]
        assert stage["canary"]["name"] == f"big{winner}" and stage["canary"]["fraction"] == 0.3
        assert_mixture(logs[1], [call(ports[1], "/v1/decide", {"context": {"task_type": "math"}})[1]["id"]
                                 for _ in range(5)], f"big{winner}", 0.3)
        command(ports[1], action="promote", name=f"big{winner}", who="ops", why="gate passed")
        command(ports[1], action="shadow_stop", name="small", who="ops", why="done")
        (_, stage), = stages(ports[0], [ids[0]], until=lambda s: s["position"] == 4).values()
        assert stage["canary"]["fraction"] == 1.0 and stage["shadows"] == []
        assert stage["last_command"]["action"] == "shadow_stop"
    finally:
        for proc in procs:
            stop_service(proc)
        server.stop()
    # each command is an event row in the log of the replica that accepted it
    assert rollout_events(logs[0])[0] == ("shadow_start", "small", None, "alice", "compare")
    assert ("canary_start", f"big{winner}", 0.3, "ops", f"race {winner}") in rollout_events(logs[winner])
    assert rollout_events(logs[1])[-2:] == [("promote", f"big{winner}", 1.0, "ops", "gate passed"),
                                            ("shadow_stop", "small", None, "ops", "done")]
    assert len(rollout_events(logs[0]) + rollout_events(logs[1])) == 4
