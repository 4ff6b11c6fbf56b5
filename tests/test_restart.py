"""A restarted replica continues where the killed one stopped (issue 13, part 1).

Through the real service (``python -m banditroute serve``, one replica, no Redis): decisions
and outcomes over HTTP, SIGKILL, a restart on the same log directory. The restarted replica
must count every applied outcome in its beliefs and apply the outcomes of decisions issued
before the crash. Also the library's ``Router.resume`` on its own.
"""

import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import banditroute as br

pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_service import free_port, start_service, stop_service  # noqa: E402

TOKEN = "restart-test-token"
PROFILES = [br.Profile("a"), br.Profile("b"), br.Profile("c")]


def call(port, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="GET" if body is None else "POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def n_learned(port):
    return sum(row["n"] for row in call(port, "/v1/beliefs")[1]["beliefs"])


def test_sigkill_and_restart_keeps_the_beliefs_and_the_pending_decisions(tmp_path):
    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, extra=["--token", TOKEN], log_dir=logs)
    try:
        tasks = ["chat", "code", "math"]
        decisions = [call(port, "/v1/decide", {"context": {"task_type": tasks[i % 3], "tenant": "t"}})[1]
                     for i in range(90)]
        assert all("id" in d for d in decisions)
        answered, waiting = decisions[:60], decisions[60:]
        for i, d in enumerate(answered):
            status, body = call(port, "/v1/outcome", {"decision_id": d["id"], "quality": float(i % 2)})
            assert (status, body["status"]) == (200, "applied")
        assert n_learned(port) == 60
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

        proc = start_service(tmp_path, port, extra=["--token", TOKEN], log_dir=logs)
        health = call(port, "/healthz")[1]
        assert health["resumed"]["outcomes_applied"] == 60
        assert health["resumed"]["pending_restored"] == 30
        assert n_learned(port) == 60  # every applied outcome, none twice
        for d in waiting:  # issued before the crash, answered after it: applied here
            status, body = call(port, "/v1/outcome", {"decision_id": d["id"], "quality": 1.0})
            assert (status, body["status"]) == (200, "applied")
        status, body = call(port, "/v1/outcome", {"decision_id": waiting[0]["id"], "quality": 1.0})
        assert (status, body["status"]) == (200, "duplicate")
        assert n_learned(port) == 90
        live = call(port, "/v1/beliefs")[1]["beliefs"]
        d = call(port, "/v1/decide", {"context": {"task_type": "chat"}})[1]  # and it keeps deciding
        assert call(port, "/v1/outcome", {"decision_id": d["id"], "quality": 1.0})[1]["status"] == "applied"
    finally:
        stop_service(proc)
    applied = br.scan_table(logs, "outcomes").filter(pl.col("status") == "applied").collect()
    assert applied.height == 91 and applied.get_column("decision_id").n_unique() == 91
    # the beliefs the restarted replica served are a replay of the log (before its last outcome)
    replayed = br.Router.from_config(tmp_path / "routes.toml")
    replayed.replay(logs)
    n = replayed.beliefs().get_column("n").sum()
    assert n == 91 and sum(row["n"] for row in live) == 90


def test_resume_restores_beliefs_pending_decisions_and_learner_state(tmp_path):
    """Library level: beliefs equal the live router's, pending decisions get applied (with
    their logged context and propensity for a learning policy), answered ones are not pending."""
    live = br.Router(PROFILES, task_types=["x", "y"], policy="linear", features={"n": 10.0}, log_dir=tmp_path,
                     seed=0)
    rng = np.random.default_rng(0)
    ds = [live.decide({"task_type": "xy"[i % 2], "n": float(rng.integers(0, 20))}) for i in range(80)]
    for d in ds[:50]:
        live.record(d.id, quality=float(rng.random() < 0.5))
    live.flush()
    fresh = br.Router(PROFILES, task_types=["x", "y"], policy="linear", features={"n": 10.0}, log_dir=tmp_path,
                      seed=1)
    summary = fresh.resume()
    assert summary == {"outcomes_applied": 50, "pending_restored": 30, "writers": [live.writer_id],
                       "chains_restored": 0}
    assert fresh.beliefs().equals(live.beliefs())
    for d in ds[50:]:  # the same updates in both: the policies stay equal
        q = float(rng.random() < 0.5)
        assert fresh.record(d.id, quality=q) == live.record(d.id, quality=q) == "applied"
    assert np.allclose(fresh.policy.A_, live.policy.A_) and np.allclose(fresh.policy.b_, live.policy.b_)
    assert fresh.record(ds[0].id, quality=1.0) == "late"  # answered before: not pending, still known
    with pytest.raises(br.UnknownDecisionError):
        fresh.record(f"{live.writer_id}-999", quality=1.0)
    live.close()
    fresh.close()


def test_resume_leaves_decisions_past_the_wait_window_and_refuses_after_a_decision(tmp_path, monkeypatch):
    live = br.Router(PROFILES, log_dir=tmp_path, seed=0, wait_window_s=60.0)
    old = [live.decide({}) for _ in range(5)]
    live.flush()
    import time

    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 120 * 10**9)  # two minutes later
    fresh = br.Router(PROFILES, log_dir=tmp_path, seed=1, wait_window_s=60.0)
    assert fresh.resume()["pending_restored"] == 0
    assert [fresh.record(d.id, quality=1.0) for d in old] == ["late"] * 5
    with pytest.raises(br.ConfigError, match="must resume before its first decision"):
        fresh.resume()
    live.close()
    fresh.close()


def test_a_dead_writers_lock_file_is_deleted_once_its_decisions_are_taken_over(tmp_path):
    """A SIGKILLed journal writer leaves its lock file; the router that resumes holds it while
    it lives and deletes it when closed: nothing is left behind in the journal directory."""
    import subprocess

    script = ("import sys, time, banditroute as br\n"
              "r = br.Router([br.Profile('a'), br.Profile('b'), br.Profile('c')], log_dir=sys.argv[1], log_journal=True)\n"
              "ds = [r.decide({}) for _ in range(10)]\n"
              "r.record(ds[0].id, quality=1.0)\n"
              "r.flush()\n"
              "print(r.writer_id, flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    dead = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    locks = lambda: sorted(p.name for p in (tmp_path / "_journal").glob("*.lock"))  # noqa: E731
    assert locks() == [f"{dead}.lock"]
    fresh = br.Router(PROFILES, log_dir=tmp_path, log_journal=True, seed=1)
    summary = fresh.resume()
    assert summary["writers"] == [dead] and summary["pending_restored"] == 9
    assert f"{dead}.lock" in locks()  # held while the new router serves its decisions
    assert fresh.record(f"{dead}-3", quality=0.0) == "applied"
    fresh.close()
    assert locks() == []


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_two_workers_stopped_and_restarted_apply_every_outcome_of_their_decisions(tmp_path, stop):
    """``serve --workers 2`` (no Redis), killed or stopped gracefully, restarted with two workers:
    each old replica's waiting decisions are taken over by one new worker only (its lock, created
    if the old one deleted its own at a clean stop), which also listens under the old one's id,
    so an outcome reaching either worker is applied exactly once (forwarded when it is the other's)."""
    import time

    port, logs = free_port(), tmp_path / "logs"
    proc = start_service(tmp_path, port, workers=2, extra=["--token", TOKEN], log_dir=logs)
    try:
        decisions = [call(port, "/v1/decide", {"context": {"task_type": "chat"}})[1] for _ in range(100)]
        if stop == "SIGKILL":
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            stop_service(proc)
        proc = start_service(tmp_path, port, workers=2, extra=["--token", TOKEN], log_dir=logs)
        deadline = time.monotonic() + 30
        while True:  # both workers up: their replies name two new replicas
            replicas = {call(port, "/healthz")[1]["replica"] for _ in range(20)}
            if len(replicas) == 2 or time.monotonic() > deadline:
                break
        statuses = [call(port, "/v1/outcome", {"decision_id": d["id"], "quality": 1.0}) for d in decisions]
        assert [(s, b.get("status")) for s, b in statuses] == [(200, "applied")] * 100, statuses[:3]
        again = [call(port, "/v1/outcome", {"decision_id": d["id"], "quality": 1.0}) for d in decisions]
        assert [(s, b.get("status")) for s, b in again] == [(200, "duplicate")] * 100  # whichever worker
    finally:
        stop_service(proc)
    applied = br.scan_table(logs, "outcomes").filter(pl.col("status") == "applied").collect()
    assert sorted(applied.get_column("decision_id").to_list()) == sorted(d["id"] for d in decisions)
