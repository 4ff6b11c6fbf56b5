"""Outcomes on any replica on any host (issue 18, part 4): the pending decisions in Redis.

Real processes only: one ``redis-server`` started here on a free port (AOF, so a restart keeps
its keys) and ``python -m banditroute serve`` replicas with SEPARATE log directories sharing it
(``--redis-url``), as replicas on different hosts would. Decisions are made on A, outcomes posted
to B: each is applied exactly once, a repeat is a duplicate on either replica, two replicas racing
for one outcome apply it once, B's log holds the outcome rows and they join their decisions in
A's log exactly once (``scan_table`` of both directories, ``ope.join_logs`` of their parts);
Redis down at outcome time is a 503 naming Redis; after a SIGKILL of A, B applies the outcomes of
A's acknowledged decisions (and logs a late one as ``late``); a replica killed before it pushed
its increments has them adopted by its successor on its log directory, the decisions found in
Redis. See ``docs/redis-outcomes.md``.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
redis = pytest.importorskip("redis", reason="the service extra (redis) is not installed")

import banditroute as br
from test_shared_state import REDIS_SERVER, RedisServer, free_port

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found (apt-get install redis-server)")

TOKEN = "redis-outcomes-token"
ROUTES = """
[router]
task_types = ["chat", "code"]
wait_window_s = {wait}

[[profiles]]
name = "small"
cost_usd = 0.0004
latency_ms = 400

[[profiles]]
name = "large"
cost_usd = 0.012
latency_ms = 2500
"""


def call(port, path, body=None):
    """One request on a fresh connection: (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET" if data is None else "POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    return status, (text if path == "/metrics" else json.loads(text))


def decide(port, task="code"):
    status, body = call(port, "/v1/decide", {"context": {"task_type": task}})
    assert status == 200, body
    return body["id"]


def outcome(port, decision_id, quality=1.0):
    return call(port, "/v1/outcome", {"decision_id": decision_id, "quality": quality})


def metric(port, name):
    text = call(port, "/metrics")[1]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


class Serve:
    """One ``banditroute serve`` replica (its own log directory) on a free port."""

    def __init__(self, workdir: Path, name: str, redis_url: str, *, wait: float = 3600, sync_ms: int = 50,
                 extra=()):
        self.port, self.log_dir = free_port(), workdir / f"logs-{name}"
        routes = workdir / f"routes-{wait:g}.toml"
        routes.write_text(ROUTES.format(wait=wait))
        cmd = [sys.executable, "-m", "banditroute", "serve", "--config", str(routes), "--port", str(self.port),
               "--log-dir", str(self.log_dir), "--token", TOKEN, "--redis-url", redis_url,
               "--sync-interval-ms", str(sync_ms), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / f"serve-{name}.log", "ab"),
                                     start_new_session=True)

    def ready(self) -> "Serve":
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                status, body = call(self.port, "/healthz")
                if status == 200:
                    self.replica = body["replica"]
                    return self
            except (OSError, ValueError):  # not listening yet (or another server got the port first)
                pass
            assert self.proc.poll() is None, f"serve exited ({self.proc.returncode})"
            time.sleep(0.05)
        raise RuntimeError("serve did not become healthy")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(*serves):
    """Wait until each is ready; if one is not, stop them all (nothing outlives the test)."""
    try:
        return [s.ready() for s in serves]
    except BaseException:
        for s in serves:
            s.stop(signal.SIGKILL)
        raise


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Redis, and replicas A and B (separate log directories) sharing it."""
    workdir = tmp_path_factory.mktemp("redis-outcomes")
    server = RedisServer(workdir).start()
    try:
        a, b = start(Serve(workdir, "a", server.url), Serve(workdir, "b", server.url))
        yield server, a, b
        for s in (a, b):
            s.stop()
    finally:
        server.stop()


def test_outcomes_posted_to_another_replica_are_applied_once_and_logged_there(cluster):
    server, a, b = cluster
    ids = [decide(a.port, ("chat", "code")[i % 2]) for i in range(24)]
    assert all(i.startswith(a.replica + "-") for i in ids)
    client = redis.Redis.from_url(server.url)
    key = "{banditroute}:p:" + ids[0]
    assert 0 < client.pttl(key) <= 3600 * 1000 and json.loads(client.get(key))[1] in ("small", "large")
    assert client.memory_usage(key) < 256  # bytes per pending decision (docs/redis-outcomes.md)
    taken = metric(b.port, "banditroute_redis_outcomes_taken_total")
    learned = sum(row["n"] for row in call(a.port, "/v1/beliefs")[1]["beliefs"])
    for i, did in enumerate(ids):
        assert outcome(b.port, did, float(i % 3 == 0)) == (200, {"decision_id": did, "status": "applied"})
    for port in (a.port, b.port):  # a repeat, wherever it goes
        for did in ids:
            assert outcome(port, did) == (200, {"decision_id": did, "status": "duplicate"})
    assert metric(b.port, "banditroute_redis_outcomes_taken_total") - taken == len(ids)
    assert client.exists(key) == 0 and client.exists("{banditroute}:d:" + ids[0]) == 1
    rows = br.scan_table(b.log_dir, "outcomes").filter(pl.col("decision_id").is_in(ids)).collect()
    assert rows.height == len(ids) and set(rows["status"]) == {"applied"} and set(rows["writer"]) == {b.replica}
    assert br.scan_table(a.log_dir, "outcomes").filter(pl.col("decision_id").is_in(ids)).collect().height == 0
    deadline = time.monotonic() + 10  # B's increments reach A through the shared state
    while sum(row["n"] for row in call(a.port, "/v1/beliefs")[1]["beliefs"]) < learned + len(ids) - 1e-9:
        assert time.monotonic() < deadline, "A never saw B's outcomes"
        time.sleep(0.05)


def test_one_outcome_posted_to_both_replicas_at_once_is_applied_once(cluster):
    _, a, b = cluster
    ids = [decide(a.port) for _ in range(16)]
    for did in ids:
        answers, gate = {}, threading.Barrier(2)

        def post(port):
            gate.wait()
            answers[port] = outcome(port, did)

        threads = [threading.Thread(target=post, args=(p,)) for p in (a.port, b.port)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(body["status"] for status, body in answers.values()) == ["applied", "duplicate"], answers
    logged = pl.concat([br.scan_table(d, "outcomes").filter(pl.col("decision_id").is_in(ids)).collect()
                        .select("decision_id", "status") for d in (a.log_dir, b.log_dir)])
    assert logged.height == len(ids) and logged["decision_id"].n_unique() == len(ids)


def test_an_escalation_s_outcome_goes_anywhere_and_an_unknown_id_is_404(cluster):
    _, a, b = cluster
    parent = decide(a.port)
    status, child = call(a.port, "/v1/escalate", {"decision_id": parent})
    assert status == 200 and child["parent_id"] == parent
    assert outcome(b.port, child["id"])[1]["status"] == "applied"
    assert outcome(b.port, parent)[1]["status"] == "applied"
    for port in (a.port, b.port):
        for did in ("0123456789ab-0", f"{a.replica}-99999999"):
            status, body = outcome(port, did)
            assert status == 404 and body["error"]["code"] == "unknown_decision", body
    assert outcome(b.port, parent, quality=2.0)[0] == 422  # checked before Redis is asked


def test_a_decision_redis_no_longer_holds_is_forwarded_to_its_issuer_on_this_host(cluster):
    server, a, b = cluster
    did = decide(a.port)
    redis.Redis.from_url(server.url).delete("{banditroute}:p:" + did)  # as if its entry had expired
    assert outcome(b.port, did)[1]["status"] == "applied"  # still pending on A: forwarded there, applied
    assert outcome(b.port, did)[1]["status"] == "duplicate"  # A set the tombstone
    assert br.scan_table(a.log_dir, "outcomes").filter(pl.col("decision_id") == did).collect().height == 1


def test_redis_down_at_outcome_time_is_a_503_naming_redis_and_a_retry_applies_it(cluster):
    server, a, b = cluster
    before, other = decide(a.port), decide(a.port)
    server.stop()
    try:
        status, body = outcome(b.port, before)  # pending on A, not here: cannot be taken
        assert status == 503 and body["error"]["code"] == "redis_unavailable" and "Redis" in body["error"]["message"]
        assert metric(b.port, "banditroute_redis_outcomes_unavailable_total") >= 1
        # pending on A: A applies it (as without Redis), its entry is taken once Redis is back
        assert outcome(a.port, other)[1]["status"] == "applied"
        assert metric(a.port, "banditroute_redis_outcomes_deferred") == 1
        during = decide(a.port)  # acknowledged all the same (its row is durable): recorded on A only
        assert metric(a.port, "banditroute_redis_pending_write_failures_total") >= 1
        assert metric(a.port, "banditroute_redis_outcomes_up") == 0
        assert outcome(a.port, during)[1]["status"] == "applied"
    finally:
        server.start()
    assert outcome(b.port, before)[1]["status"] == "applied"  # nothing was lost
    assert outcome(a.port, before)[1]["status"] == "duplicate"
    deadline = time.monotonic() + 10
    while metric(a.port, "banditroute_redis_outcomes_deferred"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert outcome(b.port, other)[1]["status"] == "duplicate"
    assert outcome(b.port, during)[1]["status"] == "duplicate"  # not in Redis: forwarded to A on this host
    assert metric(a.port, "banditroute_redis_outcomes_up") == 1
    assert metric(a.port, "banditroute_redis_outcomes_conflicts_total") == 0


def test_every_outcome_joins_its_decision_exactly_once_across_the_two_logs(cluster, tmp_path):
    _, a, b = cluster
    for s in (a, b):  # a graceful stop compacts the journals into Parquet parts
        s.stop()
    decisions = pl.concat([br.scan_table(d, "decisions").select("decision_id").collect() for d in (a.log_dir, b.log_dir)])
    outcomes = pl.concat([br.scan_table(d, "outcomes").select("decision_id", "writer").collect()
                          for d in (a.log_dir, b.log_dir)])
    assert (outcomes["writer"] == b.replica).sum() >= 24 and outcomes["decision_id"].n_unique() == outcomes.height
    joined = outcomes.join(decisions, on="decision_id", how="inner")
    assert joined.height == outcomes.height  # every outcome, wherever logged, finds its decision once

    from ope.log_join import LogSnapshot, join_logs

    parts = {kind: tuple(sorted(str(p) for d in (a.log_dir, b.log_dir) for p in (d / kind).glob("**/*.parquet")))
             for kind in ("decisions", "outcomes")}
    both = LogSnapshot(str(tmp_path), parts["decisions"], parts["outcomes"])
    rounds = join_logs(both, escalations="all").collect()
    assert rounds.height == outcomes.height and set(rounds["n_outcomes"]) == {1}
    merged = tmp_path / "merged"  # or copy both directories' parts into one (their names never clash)
    for d in (a.log_dir, b.log_dir):
        for kind in ("decisions", "outcomes"):
            shutil.copytree(d / kind, merged / kind, dirs_exist_ok=True)
    assert join_logs(merged, escalations="all").collect().height == outcomes.height
    from ope import LoggedFeedback
    from ope.cli import main as ope_main

    assert LoggedFeedback.from_logs(merged, escalations="all").n_rounds == outcomes.height  # what python -m ope reads
    assert ope_main([str(merged), "--escalations", "all", "--json", str(tmp_path / "ope.json")]) == 0
    assert join_logs(a.log_dir, escalations="all").collect().height < outcomes.height  # A's log alone lacks B's rows


def test_after_a_sigkill_of_the_issuer_another_replica_applies_its_outcomes(tmp_path):
    server = RedisServer(tmp_path).start()
    wait = 10.0  # the tombstones live this long: the successor must start (and adopt) within it
    a = b = successor = None
    try:
        a, b = start(Serve(tmp_path, "a", server.url, wait=wait),
                     Serve(tmp_path, "b", server.url, wait=wait, sync_ms=60_000))
        old, made = decide(a.port), time.monotonic()
        ids = [decide(a.port, ("chat", "code")[i % 2]) for i in range(12)]
        a.stop(signal.SIGKILL)  # right after acknowledging them
        for did in ids:
            assert outcome(b.port, did, 1.0)[1]["status"] == "applied"
        assert outcome(b.port, f"{a.replica}-999")[0] == 404
        # B dies before it pushed those increments (its sync interval is a minute): its successor on
        # the same log directory adopts them, finding A's decisions (logged elsewhere) in Redis
        b.stop(signal.SIGKILL)
        successor = start(Serve(tmp_path, "b", server.url, wait=wait))[0]
        evidence = redis.Redis.from_url(server.url).hgetall("{banditroute}:evidence")
        assert sum(float(v) for v in evidence.values()) == pytest.approx(len(ids))
        time.sleep(max(0.0, made + wait + 0.1 - time.monotonic()))  # past old's wait window: its entry expired
        assert outcome(successor.port, old) == (200, {"decision_id": old, "status": "late"})  # issued: not a 404
        assert outcome(successor.port, old)[1]["status"] == "duplicate"
        statuses = br.scan_table(b.log_dir, "outcomes").collect().get_column("status").value_counts(sort=True)
        assert dict(statuses.iter_rows()) == {"applied": len(ids), "late": 1}
    finally:
        for s in (a, b, successor):
            if s is not None:
                s.stop(signal.SIGKILL)
        server.stop()


def test_without_redis_outcomes_only_the_issuer_records(tmp_path):
    """``--no-redis-outcomes``: Redis shares the posteriors only; no pending entry goes to Redis and an
    outcome posted to B for A's decision is forwarded to A (same host) and logged in A's log, not B's."""
    server = RedisServer(tmp_path).start()
    try:
        a, b = start(Serve(tmp_path, "a", server.url, extra=["--no-redis-outcomes"]),
                     Serve(tmp_path, "b", server.url, extra=["--no-redis-outcomes"]))
        try:
            did = decide(a.port)
            assert outcome(b.port, did) == (200, {"decision_id": did, "status": "applied"})
            assert outcome(b.port, did)[1]["status"] == "duplicate"
            assert not list(redis.Redis.from_url(server.url).scan_iter("*:p:*"))  # no pending entries
        finally:
            for s in (a, b):
                s.stop()
        assert br.scan_table(a.log_dir, "outcomes").collect().get_column("decision_id").to_list() == [did]
        assert br.scan_table(b.log_dir, "outcomes").collect().height == 0
    finally:
        server.stop()
