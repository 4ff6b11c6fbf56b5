"""``serve --workers 2`` as Prometheus and a hostile client meet it (issue 13, item 5).

Through the real service (``python -m banditroute serve`` in a subprocess, real sockets):
every scrape of ``/metrics``, whichever worker answers it, counts the decisions, outcomes,
errors and latencies of every worker; a worker killed with SIGKILL (uvicorn's supervisor
starts a new one) keeps its counts in the sums; a new ``serve`` on the same log directory
counts from zero. A request head past the limits (1 MB, 1,000 header fields, 64 MB) is refused
with 431 (or the connection closed) without being read, while ``/healthz`` keeps answering.
"""

import concurrent.futures as cf
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

from banditroute.service.metrics import Metrics, metrics_directory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_service import free_port, start_service, stop_service

TOKEN = "workers-test-token"


def call(port, path, body=None, raw=None):
    """One request on a fresh connection (so requests spread over the workers): (status, text)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET" if data is None else "POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text):
    """The Prometheus text's samples as (name, labels, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = [p.split("=", 1) for p in labels.rstrip("}").split('",') if p]
        out.append((name, {k: v.strip('"') for k, v in pairs}, float(value)))
    return out


def total(text, name, **labels):
    return sum(v for n, lab, v in samples(text) if n == name and all(lab.get(k) == w for k, w in labels.items()))


def replicas(text, up):
    return {lab["replica"] for n, lab, v in samples(text) if n == "banditroute_replica_up" and v == up}


def both_workers_up(port):
    seen, deadline = set(), time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        seen.add(json.loads(call(port, "/healthz")[1])["replica"])
    assert len(seen) == 2
    return seen


def worker_pids(serve_pid):
    """uvicorn's worker processes: the spawned children of the serve process."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def assert_counts(port, *, decisions, applied, invalid_json, scrapes=10):
    for _ in range(scrapes):  # fresh connections: both workers answer some of them
        status, text = call(port, "/metrics")
        assert status == 200
        assert total(text, "banditroute_decisions_total") == decisions
        assert total(text, "banditroute_decision_latency_seconds_count") == decisions
        assert total(text, "banditroute_decision_latency_seconds_bucket", le="+Inf") == decisions
        assert total(text, "banditroute_outcomes_total", status="applied") == applied
        assert total(text, "banditroute_errors_total", code="invalid_json") == invalid_json
        shares = [v for n, _, v in samples(text) if n == "banditroute_profile_share"]
        assert sum(shares) == pytest.approx(1.0 if decisions else 0.0)
    return text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find uvicorn's workers")
def test_every_scrape_counts_every_worker_even_one_killed_and_a_new_serve_starts_from_zero(tmp_path):
    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, workers=2, extra=["--token", TOKEN], log_dir=logs)
    try:
        first = both_workers_up(port)
        with cf.ThreadPoolExecutor(8) as ex:
            decided = list(ex.map(lambda i: call(port, "/v1/decide", {"context": {"task_type": "chat"}}), range(200)))
            ids = [json.loads(text)["id"] for status, text in decided if status == 200]
            assert len(ids) == 200 and len({i.rpartition("-")[0] for i in ids}) == 2  # both workers decided
            outcomes = list(ex.map(lambda i: call(port, "/v1/outcome", {"decision_id": i, "quality": 1.0}), ids[:60]))
            assert {status for status, _ in outcomes} == {200}
            errors = list(ex.map(lambda i: call(port, "/v1/decide", raw=b"{"), range(7)))
            assert {status for status, _ in errors} == {400}
        text = assert_counts(port, decisions=200, applied=60, invalid_json=7)
        assert replicas(text, up=1) == first and replicas(text, up=0) == set()
        deadline = time.monotonic() + 10  # the workers' own counters are published every 0.5 s
        while time.monotonic() < deadline:
            text = call(port, "/metrics")[1]
            forwarded = total(text, "banditroute_outcomes_forwarded_total")
            if forwarded and forwarded == total(text, "banditroute_outcomes_received_forwarded_total"):
                break
            time.sleep(0.2)
        assert 0 < forwarded == total(text, "banditroute_outcomes_received_forwarded_total") <= 60
        assert {lab["replica"] for n, lab, _ in samples(text) if n == "banditroute_commits_total"} == first
        commits = total(text, "banditroute_commits_total")
        assert commits >= 2

        pids = worker_pids(proc.pid)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)  # uvicorn's supervisor notices and starts another worker
        deadline, seen = time.monotonic() + 30, set()
        while time.monotonic() < deadline and not seen - first:
            text = assert_counts(port, decisions=200, applied=60, invalid_json=7, scrapes=1)
            assert total(text, "banditroute_commits_total") >= commits  # the dead worker's too
            seen.add(json.loads(call(port, "/healthz")[1])["replica"])
        assert seen - first, "uvicorn started no new worker"
        text = assert_counts(port, decisions=200, applied=60, invalid_json=7)
        assert len(replicas(text, up=0)) == 1 and replicas(text, up=0) < first  # the killed one, counts kept
        assert len(replicas(text, up=1)) == 2
        more = [call(port, "/v1/decide", {"context": {"task_type": "code"}})[0] for _ in range(20)]
        assert more == [200] * 20
        assert_counts(port, decisions=220, applied=60, invalid_json=7)
    finally:
        stop_service(proc)

    proc = start_service(tmp_path, port, workers=2, extra=["--token", TOKEN], log_dir=logs)
    try:  # the same log directory: the beliefs are resumed, the counts start again from zero
        second = both_workers_up(port)
        text = assert_counts(port, decisions=0, applied=0, invalid_json=0)
        assert replicas(text, up=1) == second and not second & first and replicas(text, up=0) == set()
    finally:
        stop_service(proc)


def send_head(port, head: bytes, timeout_s=20.0):
    """Send a request head on a fresh connection: the response's status line, or the error that
    ended the exchange (the server may close before the client has sent everything)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        try:
            s.sendall(head)
        except OSError as exc:  # closed (reset) before the whole head was sent: not read
            return type(exc).__name__
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            return data.split(b"\r\n")[0].decode() or type(exc).__name__
        return data.split(b"\r\n")[0].decode() or "closed"


def read_response(s) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def request(headers: bytes = b"", path: bytes = b"/healthz") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n"


def fields(n: int) -> bytes:
    return b"".join(b"X-F%d: v\r\n" % i for i in range(n))


REFUSED = ("HTTP/1.1 431 Request Header Fields Too Large", "BrokenPipeError", "ConnectionResetError")


def test_oversized_heads_are_refused_without_being_read_while_healthz_answers(tmp_path):
    port = free_port()
    proc = start_service(tmp_path, port, workers=2)
    try:
        assert send_head(port, request(b"X-Big: " + b"a" * 60_000 + b"\r\n")) == "HTTP/1.1 200 OK"
        assert send_head(port, request(fields(98))) == "HTTP/1.1 200 OK"  # 100 fields with Host and Connection
        assert send_head(port, request(fields(99))) == "HTTP/1.1 431 Request Header Fields Too Large"
        assert send_head(port, request(fields(1000))) == "HTTP/1.1 431 Request Header Fields Too Large"
        assert send_head(port, request(path=b"/" + b"a" * (1 << 20))) in REFUSED
        assert send_head(port, request(b"X-Big: " + b"a" * 100_000 + b"\r\n")) in REFUSED  # may come in one read
        hostile = [request(b"X-Big: " + b"a" * (1 << 20) + b"\r\n"), request(fields(1000)),
                   request(b"X-Big: " + b"a" * (64 << 20) + b"\r\n")]
        with cf.ThreadPoolExecutor(4) as ex:
            refused = [ex.submit(lambda h=h: [send_head(port, h) for _ in range(15)]) for h in hostile * 2]
            health = [call(port, "/healthz")[0] for _ in range(60)]  # meanwhile (urllib's timeout: 10 s)
            answers = [a for f in refused for a in f.result(timeout=120)]
        assert health == [200] * 60
        assert set(answers) <= set(REFUSED) and "HTTP/1.1 431 Request Header Fields Too Large" in answers
        body = b'{"context": {"task_type": "chat"}}'  # a keep-alive connection: limits apply per request
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert read_response(s).startswith(b"HTTP/1.1 200 OK")
            s.sendall(request(fields(150)))
            answer = read_response(s)
        assert answer.startswith(b"HTTP/1.1 431") and b'"code": "header_too_large"' in answer
    finally:
        stop_service(proc)
    assert "Traceback" not in (tmp_path / f"server-{port}.log").read_text()


def test_the_head_limits_are_serve_flags(tmp_path):
    port = free_port()
    proc = start_service(tmp_path, port, extra=["--max-header-bytes", "4096", "--max-headers", "10"])
    try:
        assert send_head(port, request(fields(8))) == "HTTP/1.1 200 OK"
        assert send_head(port, request(fields(9))) == "HTTP/1.1 431 Request Header Fields Too Large"
        assert send_head(port, request(b"X-Big: " + b"a" * 3000 + b"\r\n")) == "HTTP/1.1 200 OK"
        assert send_head(port, request(b"X-Big: " + b"a" * 5000 + b"\r\n")) in REFUSED
    finally:
        stop_service(proc)


def test_a_metrics_directory_left_by_a_killed_serve_is_removed_and_a_live_one_kept(tmp_path):
    with metrics_directory(str(tmp_path)) as live:
        table = Metrics(["small"], replica="w1", directory=live)
        table.decision("small", 0.01)
        dead, young = tmp_path / "banditroute-metrics-dead", tmp_path / "banditroute-metrics-young"
        for path in (dead, young):
            path.mkdir()
            (path / ".lock").touch()  # nobody holds its lock: its serve process is gone (or not there yet)
        os.utime(dead / ".lock", (time.time() - 3600,) * 2)
        os.utime(live + "/.lock", (time.time() - 3600,) * 2)
        with metrics_directory(str(tmp_path)) as other:
            assert not dead.exists() and young.exists() and Path(live).exists() and other != live
            fresh = Metrics([], replica="w2", directory=other)
            assert [t.replica for t in fresh.tables()] == ["w2"]  # not w1's counts
            fresh.close()
        assert not Path(other).exists()
        table.close()
    assert not Path(live).exists()
