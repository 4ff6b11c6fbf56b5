"""The real service under load and faults (loopback only, bounded in time and count).

Starts uvicorn replicas (``python -m banditroute serve``) in subprocesses, drives them with
benchmarks/loadgen.py, SIGKILLs a replica and stops/restarts Redis mid-load, and fuzzes the
API from its OpenAPI description with schemathesis.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
redis = pytest.importorskip("redis", reason="the service extra (redis) is not installed")

import banditroute as br  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_service import free_port, start_service, stop_service  # noqa: E402
from test_shared_state import REDIS_SERVER, RedisServer  # noqa: E402

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found (apt-get install redis-server)")
TOKEN = "fault-test-token"


def loadgen(port, acked, duration_s, connections=8, max_pairs=20_000):
    return subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--port", str(port),
                             "--connections", str(connections), "--duration", str(duration_s), "--pairs",
                             str(max_pairs), "--acked", str(acked), "--token", TOKEN, "--json"],
                            stdout=subprocess.PIPE, text=True)


def finish(proc):
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def redis_evidence(url):
    raw = redis.Redis.from_url(url).hgetall("{banditroute}:evidence")
    return {k.decode(): float(v) for k, v in raw.items()}


def assert_shared_state_equals_logged_outcomes(url, *log_dirs):
    """Every applied outcome in the logs, as the router applies it (weights from the logged
    task posterior), summed per cell, equals Redis's totals."""
    expected = {}
    for logs in log_dirs:
        applied = br.scan_table(logs, "outcomes").filter(
            (pl.col("status") == "applied") & pl.col("quality").is_not_null()).select("decision_id", "quality")
        joined = applied.join(br.scan_table(logs, "decisions").select("decision_id", "profile", "task_types",
                                                                      "task_probs"), on="decision_id").collect()
        for row in joined.iter_rows(named=True):
            for task, w in zip(row["task_types"], row["task_probs"]):
                for kind, mass in (("alpha", w * row["quality"]), ("beta", w * (1 - row["quality"]))):
                    key = f"{kind}|{row['profile']}|{task}"
                    expected[key] = expected.get(key, 0.0) + mass
    shared = redis_evidence(url)
    assert sum(expected.values()) > 50
    keys = set(expected) | set(shared)
    assert max(abs(expected.get(k, 0.0) - shared.get(k, 0.0)) for k in keys) < 1e-6, (expected, shared)


def beliefs_match_shared(port, url):
    rows = get(port, "/v1/beliefs")["beliefs"]
    shared = redis_evidence(url)
    return all(row["alpha"] == 1.0 + shared.get(f"alpha|{row['profile']}|{row['task_type']}", 0.0)
               and row["beta"] == 1.0 + shared.get(f"beta|{row['profile']}|{row['task_type']}", 0.0) for row in rows)


def serve_args(url):
    return ["--token", TOKEN, "--redis-url", url, "--sync-interval-ms", "50"]


@needs_redis
def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path):
    server = RedisServer(tmp_path).start()
    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, extra=serve_args(server.url), log_dir=logs)
    try:
        load = loadgen(port, tmp_path / "acked.json", duration_s=5)
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)
        proc = start_service(tmp_path, port, extra=serve_args(server.url), log_dir=logs)
        result = finish(load)
        assert result["pairs"] > 50 and result["conn_errors"] >= 1
        assert set(result["errors"]) <= {"404"}  # outcomes for the killed replica's decisions
        time.sleep(0.3)  # a few sync rounds with no traffic
        assert beliefs_match_shared(port, server.url)
        stop_service(proc)  # graceful: pushes the rest
        # Redis holds exactly what both incarnations learned: the killed replica's outcomes that
        # never reached Redis were adopted from its log by the restarted one, none twice
        assert_shared_state_equals_logged_outcomes(server.url, logs)
    finally:
        stop_service(proc)
        server.stop()
    acked = json.loads((tmp_path / "acked.json").read_text())
    decisions = set(br.scan_table(logs, "decisions").collect().get_column("decision_id"))
    outcomes = set(br.scan_table(logs, "outcomes").collect().get_column("decision_id"))
    assert len(acked["decisions"]) > 50
    assert set(acked["decisions"]) <= decisions
    assert set(acked["outcomes"]) <= outcomes


@needs_redis
def test_redis_restart_mid_load_two_replicas_agree_exactly(tmp_path):
    server = RedisServer(tmp_path).start()
    ports = [free_port(), free_port()]
    procs = [start_service(tmp_path, p, extra=serve_args(server.url), log_dir=tmp_path / f"logs{i}")
             for i, p in enumerate(ports)]
    try:
        loads = [loadgen(p, tmp_path / f"acked{i}.json", duration_s=4, connections=4) for i, p in enumerate(ports)]
        time.sleep(1.0)
        server.stop()
        time.sleep(1.0)
        assert get(ports[0], "/healthz")["shared_state"] == "down"
        server.start()
        results = [finish(load) for load in loads]
        for r in results:
            assert r["errors"] == {} and r["conn_errors"] == 0 and r["pairs"] > 20  # Redis down: no failed request
        time.sleep(0.4)
        n = [sum(row["n"] for row in get(p, "/v1/beliefs")["beliefs"]) for p in ports]
        applied = sum(br.scan_table(tmp_path / f"logs{i}", "outcomes").filter(
            (pl.col("status") == "applied") & pl.col("quality").is_not_null()).collect().height for i in range(2))
        assert n[0] == n[1] == applied == sum(r["pairs"] for r in results)
        assert all(beliefs_match_shared(p, server.url) for p in ports)
        for proc in procs:
            stop_service(proc)
        assert_shared_state_equals_logged_outcomes(server.url, tmp_path / "logs0", tmp_path / "logs1")
    finally:
        for proc in procs:
            stop_service(proc)
        server.stop()


@pytest.mark.skipif(shutil.which("schemathesis") is None and not (Path(sys.executable).parent / "schemathesis").exists(),
                    reason="schemathesis is not installed")
def test_fuzzing_from_openapi_finds_no_5xx(tmp_path):
    port = free_port()
    proc = start_service(tmp_path, port, extra=["--token", TOKEN, "--max-body-bytes", "4096"])
    st = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    try:
        out = subprocess.run([st, "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "not_a_server_error",
                              "--max-examples", "40", "--seed", "1", "-H", f"Authorization: Bearer {TOKEN}",
                              "--request-timeout", "10", "--suppress-health-check", "all"],
                             capture_output=True, text=True, timeout=240, cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        assert proc.poll() is None  # no crash
    finally:
        stop_service(proc)
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # a fresh connection per request
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_any_worker_accepts_any_outcome(tmp_path):
    """Two workers on one port; every request on its own connection, so decisions and outcomes
    land on either worker: outcomes reaching the other worker are forwarded to the issuer."""
    import concurrent.futures as cf

    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, workers=2, extra=["--token", TOKEN], log_dir=logs)
    try:
        replicas, deadline = set(), time.monotonic() + 30
        while len(replicas) < 2 and time.monotonic() < deadline:  # both workers up (fresh connections)
            replicas.add(get(port, "/healthz")["replica"])
        with cf.ThreadPoolExecutor(8) as ex:
            decisions = list(ex.map(lambda i: post(port, "/v1/decide", {"context": {"task_type": "chat"}}), range(200)))
            assert all(status == 200 for status, _ in decisions)
            ids = [d["id"] for _, d in decisions]
            outcomes = list(ex.map(lambda i: post(port, "/v1/outcome", {"decision_id": i, "quality": 1.0}), ids))
            again = list(ex.map(lambda i: post(port, "/v1/outcome", {"decision_id": i, "quality": 0.0}), ids))
    finally:
        stop_service(proc)
    assert [o for o in outcomes if o != (200, {"decision_id": o[1].get("decision_id"), "status": "applied"})] == []
    assert {body["status"] for status, body in again} == {"duplicate"}  # the issuer knew, wherever it came in
    writers = {i.rpartition("-")[0] for i in ids}
    assert len(writers) == 2  # both workers issued decisions, so about half the outcomes were forwarded
    applied = br.scan_table(logs, "outcomes").filter(pl.col("status") == "applied").collect()
    assert sorted(applied.get_column("decision_id")) == sorted(ids)
    assert (applied.get_column("decision_id").str.replace(r"-\d+$", "") == applied.get_column("writer")).all()
