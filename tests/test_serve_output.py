"""What ``banditroute serve`` tells its operator on stderr, read from real server processes: the
address, a line per replica when it is ready saying what state it took over (the prior, a
snapshot and the outcomes replayed after it, the shared state from Redis), a line per replica
when it stops saying what it wrote, and with ``--access-log`` a line per request."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_service import free_port, start_service, stop_service  # noqa: E402

from banditroute.service.app import create_app  # noqa: E402
from banditroute.service.config import ServiceConfig  # noqa: E402
from banditroute.service.replica import resumed_words  # noqa: E402

READY = re.compile(r"^banditroute serve: replica (\w+) \(pid \d+\) ready: (.*)$", re.M)
STOPPED = re.compile(r"^banditroute serve: replica (\w+) \(pid \d+\) stopped: (.*)$", re.M)
ACCESS = re.compile(r'^banditroute serve: access (\w+) 127\.0\.0\.1:\d+ "(\w+) (\S+)" (\d{3}) (\d+\.\d\d) ms$', re.M)


def _call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _run(tmp_path: Path, extra=(), *, workers: int = 1, requests=None) -> tuple[str, int, object]:
    """Start ``serve``, make ``requests(port)``, stop it with SIGTERM; return its stderr, port and
    what ``requests`` returned."""
    port = free_port()
    proc = start_service(tmp_path, port, workers=workers, extra=list(extra))
    try:
        result = requests(port) if requests is not None else None
    finally:
        stop_service(proc)  # SIGTERM to its process group: uvicorn exits by the signal once shut down
    return (tmp_path / f"server-{port}.log").read_text(), port, result


def test_start_stop_restart_say_what_state_was_loaded_and_written(tmp_path):
    def first(port):
        made = [("GET", "/healthz", 200)]
        assert _call(port, "GET", "/healthz")[0] == 200
        ids = []
        for _ in range(3):
            status, body = _call(port, "POST", "/v1/decide", {"context": {"task_type": "code"}})
            assert status == 200
            ids.append(body["id"])
            made.append(("POST", "/v1/decide", 200))
        for decision_id in ids[:2]:
            assert _call(port, "POST", "/v1/outcome", {"decision_id": decision_id, "quality": 0.9})[1]["status"] \
                == "applied"
            made.append(("POST", "/v1/outcome", 200))
        assert _call(port, "GET", "/no/such/path")[0] == 404
        made.append(("GET", "/no/such/path", 404))
        assert _call(port, "POST", "/v1/outcome", {"decision_id": 7})[0] == 422
        made.append(("POST", "/v1/outcome", 422))
        return ids, made

    err, port, (ids, made) = _run(tmp_path, ["--access-log"], requests=first)
    assert f"on http://127.0.0.1:{port} (1 worker(s), log dir {tmp_path / 'logs'}, auth off" in err
    assert "access log on" in err
    (replica, ready), = READY.findall(err)
    assert ready == "started from the prior (empty log)"
    assert ids[0].startswith(replica + "-")
    # every request made appears, in order, with its path and status (after the readiness polls)
    lines = [(m, p, int(s)) for r, m, p, s, _ in ACCESS.findall(err)]
    assert all(r == replica for r, *_ in ACCESS.findall(err))
    assert lines[-len(made):] == made
    assert all(line == ("GET", "/healthz", 200) for line in lines[:-len(made)])
    (who, stopped), = STOPPED.findall(err)
    assert who == replica
    # 3 decisions + 2 outcomes + 1 refused outcome is not logged: 5 rows
    assert stopped.startswith("log flushed and closed (5 rows this run in ")
    assert "journal compacted into Parquet" in stopped and "; 2 outcomes learned this run; " in stopped
    snapshot, = re.findall(r"snapshot (\S+) written$", stopped)
    assert (tmp_path / "logs" / "_snapshots" / snapshot).is_file()

    # the restart starts from that snapshot; the third decision is pending here again. No
    # snapshot this time, so the next start replays the outcome recorded now.
    def second(port):
        assert _call(port, "POST", "/v1/outcome", {"decision_id": ids[2], "quality": 0.1})[1]["status"] == "applied"

    err, _, _ = _run(tmp_path, ["--snapshot-interval-s", "0"], requests=second)
    assert err.count("banditroute serve: ") == 3 and "access log off" in err  # no access lines by default
    (_, ready), = READY.findall(err)
    assert ready == (f"resumed from snapshot {snapshot} (2 outcomes) + replayed 0 outcomes logged after it; "
                     f"1 decision of earlier runs pending")
    (_, stopped), = STOPPED.findall(err)
    assert stopped == ("log flushed and closed (1 row this run in 1 group commit, journal compacted into Parquet); "
                       "1 outcome learned this run; snapshots off")

    err, _, _ = _run(tmp_path)
    (_, ready), = READY.findall(err)
    assert ready == f"resumed from snapshot {snapshot} (2 outcomes) + replayed 1 outcome logged after it"
    (_, stopped), = STOPPED.findall(err)
    assert stopped == ("log closed (nothing logged this run); 0 outcomes learned this run; "
                       "no snapshot written (nothing learned this run)")


def test_without_a_snapshot_the_whole_log_is_replayed(tmp_path):
    def decide_and_learn(port):
        for _ in range(4):
            decision = _call(port, "POST", "/v1/decide", {"context": {"task_type": "chat"}})[1]
            assert _call(port, "POST", "/v1/outcome", {"decision_id": decision["id"], "quality": 0.5})[0] == 200

    _run(tmp_path, ["--snapshot-interval-s", "0"], requests=decide_and_learn)
    err, _, _ = _run(tmp_path, ["--snapshot-interval-s", "0"])
    (_, ready), = READY.findall(err)
    assert ready == "replayed 4 outcomes from the log (no snapshot)"


def _redis_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server binary not found")
def test_with_redis_each_worker_says_it_took_the_shared_state(tmp_path):
    pytest.importorskip("redis", reason="the service extra (redis) is not installed")
    port = _redis_port()
    redis = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir",
                              str(tmp_path), "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

        def learn(port):
            log, deadline = tmp_path / f"server-{port}.log", time.monotonic() + 30
            while len(READY.findall(log.read_text())) < 2:  # both workers started
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            for _ in range(3):
                decision = _call(port, "POST", "/v1/decide", {"context": {"task_type": "math"}})[1]
                assert _call(port, "POST", "/v1/outcome", {"decision_id": decision["id"], "quality": 1.0})[0] == 200

        err, _, _ = _run(tmp_path, ["--redis-url", url], workers=2, requests=learn)
        ready = READY.findall(err)
        assert len(ready) == 2 and len({r for r, _ in ready}) == 2  # one line per worker
        assert all(text == "shared state from Redis (namespace 'banditroute'): evidence of 0 outcomes"
                   for _, text in ready)  # both were ready before the first decision
        stopped = STOPPED.findall(err)
        assert sorted(r for r, _ in stopped) == sorted(r for r, _ in ready)
        assert all(text.endswith("; last increments pushed to Redis") for _, text in stopped)
        assert sum(int(re.search(r"(\d+) outcomes? learned", text)[1]) for _, text in stopped) == 3

        err, _, _ = _run(tmp_path, ["--redis-url", url])
        (_, text), = READY.findall(err)
        assert text == "shared state from Redis (namespace 'banditroute'): evidence of 3 outcomes"
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def test_the_words_for_skipped_snapshots_and_a_restored_rollout():
    taken = {"outcomes_applied": 9, "outcomes_replayed": 9, "snapshot": None, "pending_restored": 0,
             "skipped_snapshots": [{"snapshot": "s1.npz", "reason": "snapshot policy was taken with another policy"}],
             "writers": ["a"], "chains_restored": 2,
             "rollout": {"commands": 2, "shadows": ["ucb"], "canary": {"name": "cheap", "fraction": 0.1}}}
    assert resumed_words(taken) == (
        "replayed 9 outcomes from the log (no valid snapshot); snapshot s1.npz skipped (snapshot policy was taken "
        "with another policy); 2 escalation chains restored; rollout stage restored (2 commands; canary cheap at "
        "0.1; shadows ucb)")
    assert resumed_words({"outcomes_applied": 0, "pending_restored": 4, "writers": ["a"]}) == \
        "started from the prior (no outcomes in the log); 4 decisions of earlier runs pending"


def test_without_the_access_log_requests_take_no_extra_step():
    app = create_app(ServiceConfig(config="routes.toml"))
    assert app._serve_http == app._http  # the request path itself, nothing wrapped around it
    logged = create_app(ServiceConfig(config="routes.toml", access_log=True))
    assert logged._serve_http == logged._http_logged
    with pytest.raises(ValueError, match="access_log must be true or false, got 'yes'"):
        ServiceConfig(config="routes.toml", access_log="yes")
