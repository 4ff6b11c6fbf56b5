"""A full disk loses nothing acknowledged and logs nothing twice (issue 13, part 2).

The log lives on a real, small tmpfs (mounted here; root only, else the tests are skipped with
the reason) that is filled with a file until writes fail with ENOSPC, then emptied again.
Through the library (sync and group durability, with and without the journal) and through the
real service (``python -m banditroute serve``): while the disk is full a decision or an
outcome is refused with an error and changes nothing; retried once space returns, it is applied
and logged exactly once; the live beliefs equal a replay of the log.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

import banditroute as br

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [br.Profile("a"), br.Profile("b"), br.Profile("c")]


@pytest.fixture
def tmpfs(tmp_path):
    """A 16 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    path = mount / f"filler-{uuid.uuid4().hex}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


def replayed(log_dir, **kwargs) -> pl.DataFrame:
    fresh = br.Router(PROFILES, **kwargs)
    fresh.replay(log_dir)
    return fresh.beliefs()


def assert_logged_once(log_dir, decision_ids: set, outcome_ids: set) -> None:
    decisions = br.scan_table(log_dir, "decisions").collect().get_column("decision_id")
    outcomes = br.scan_table(log_dir, "outcomes").collect().get_column("decision_id")
    assert decisions.n_unique() == decisions.len(), "a decision row was written twice"
    assert outcomes.n_unique() == outcomes.len(), "an outcome row was written twice"
    assert set(decisions.to_list()) == decision_ids
    assert set(outcomes.to_list()) == outcome_ids


def test_sync_mode_refuses_while_full_and_applies_the_retry_once(tmpfs):
    log_dir = tmpfs / "logs"
    router = br.Router(PROFILES, log_dir=log_dir, durability="sync", seed=1)
    made = [router.decide({}) for _ in range(20)]
    for d in made[:10]:
        assert router.record(d.id, quality=1.0) == "applied"
    before = router.beliefs()
    n_pending = router.n_pending
    filler = fill(tmpfs)
    # a new Parquet part per call: nothing fits, every call is refused and changes nothing
    with pytest.raises(br.LogError, match="cannot be written"):
        router.decide({})
    assert router.n_pending == n_pending
    for d in made[10:]:
        with pytest.raises(br.LogError):
            router.record(d.id, quality=0.0)
    assert router.beliefs().equals(before)
    filler.unlink()
    for d in made[10:]:  # the retries: applied once, then duplicates
        assert router.record(d.id, quality=0.0) == "applied"
        assert router.record(d.id, quality=0.0) == "duplicate"
    router.close()
    assert_logged_once(log_dir, {d.id for d in made}, {d.id for d in made})
    assert router.beliefs().equals(replayed(log_dir))
    assert router.beliefs().get_column("n").sum() == 20


@pytest.mark.parametrize("journal", [False, True])
def test_group_mode_keeps_the_rows_of_a_failed_flush_and_writes_them_once(tmpfs, journal, caplog):
    log_dir = tmpfs / "logs"
    router = br.Router(PROFILES, log_dir=log_dir, durability="group", log_journal=journal, seed=2)
    made = [router.decide({}) for _ in range(50)]
    router.flush()
    filler = fill(tmpfs)
    more = [router.decide({}) for _ in range(300)]  # buffered: group mode acknowledges before the disk
    for i, d in enumerate(made + more):
        assert router.record(d.id, quality=float(i % 2)) == "applied"
    with pytest.raises(br.LogError, match="cannot be written"):
        router.flush()  # the explicit flush says so; the rows stay buffered
    with pytest.raises(br.LogError):
        router.flush()  # and again: still nothing written twice
    filler.unlink()
    router.flush()
    router.close()
    ids = {d.id for d in made + more}
    assert_logged_once(log_dir, ids, ids)
    assert router.beliefs().equals(replayed(log_dir))


def test_group_mode_refuses_rows_beyond_the_backlog_bound(tmpfs):
    log_dir = tmpfs / "logs"
    router = br.Router(PROFILES, log_dir=log_dir, durability="group", seed=3)
    router.log_writer.group_rows = 4  # a backlog bound of 16 * 4 rows
    router.log_writer.group_interval_s = 0.0  # every append is due: each tries to flush
    filler = fill(tmpfs)
    accepted, refused = [], 0
    for _ in range(200):
        try:
            accepted.append(router.decide({}))
        except br.LogError:
            refused += 1
    assert refused > 0 and len(accepted) <= 16 * 4
    assert router.n_pending == len(accepted)  # a refused decision is not pending
    filler.unlink()
    router.close()
    assert_logged_once(log_dir, {d.id for d in accepted}, set())


# -- through the service --------------------------------------------------------------------------
def test_service_disk_full_episode_every_acknowledged_outcome_logged_once(tmpfs, tmp_path):
    pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_service import ROUTES, free_port, start_service, stop_service
    from test_restart import TOKEN, call

    port, log_dir = free_port(), tmpfs / "logs"
    proc = start_service(tmp_path, port, extra=["--token", TOKEN], log_dir=log_dir)
    acked_decisions, acked_outcomes, refused = set(), {}, []
    try:
        decisions = []
        for i in range(80):
            status, body = call(port, "/v1/decide", {"context": {"task_type": ["chat", "code", "math"][i % 3]}})
            assert status == 200
            decisions.append(body["id"])
        acked_decisions.update(decisions)
        filler = fill(tmpfs)
        for i, did in enumerate(decisions):
            status, body = call(port, "/v1/outcome", {"decision_id": did, "quality": float(i % 2)})
            if status == 200:
                acked_outcomes[did] = body["status"]
            else:
                assert (status, body["error"]["code"]) == (503, "log_unavailable"), body
                refused.append((did, float(i % 2)))
        for _ in range(20):  # decisions while full: refused, or (if a line still fits) acknowledged
            status, body = call(port, "/v1/decide", {"context": {"task_type": "chat"}})
            if status == 200:
                acked_decisions.add(body["id"])
            else:
                assert (status, body["error"]["code"]) == (503, "log_unavailable"), body
        assert len(refused) >= 10, "the disk was not full enough to refuse outcomes"
        filler.unlink()
        deadline = time.monotonic() + 60
        while refused and time.monotonic() < deadline:  # a client retrying what was refused
            did, quality = refused[0]
            status, body = call(port, "/v1/outcome", {"decision_id": did, "quality": quality})
            if status == 200:
                acked_outcomes[did] = body["status"]
                refused.pop(0)
            else:
                time.sleep(0.1)
        assert not refused, "refused outcomes were still refused after the disk was freed"
        assert set(acked_outcomes.values()) == {"applied"}
        for did in decisions[:5]:  # retries of acknowledged ones are duplicates
            assert call(port, "/v1/outcome", {"decision_id": did, "quality": 1.0})[1]["status"] == "duplicate"
        live = call(port, "/v1/beliefs")[1]["beliefs"]
    finally:
        stop_service(proc)  # graceful: compacts the journal
    assert sum(row["n"] for row in live) == len(acked_outcomes) == 80
    assert_logged_once(log_dir, acked_decisions, set(acked_outcomes))
    routes = tmp_path / "routes.toml"
    assert routes.read_text() == ROUTES
    fresh = br.Router.from_config(routes)
    fresh.replay(log_dir)
    for mine, theirs in zip(sorted(live, key=lambda r: (r["profile"], r["task_type"])),
                            sorted(fresh.beliefs().to_dicts(), key=lambda r: (r["profile"], r["task_type"]))):
        assert (mine["profile"], mine["task_type"], mine["n"]) == (theirs["profile"], theirs["task_type"], theirs["n"])
        assert mine["alpha"] == pytest.approx(theirs["alpha"], abs=1e-9)
        assert mine["beta"] == pytest.approx(theirs["beta"], abs=1e-9)


# -- an outcome counts only once its row is committed ---------------------------------------------
def test_an_outcome_being_committed_makes_a_second_one_wait_and_a_failed_commit_changes_nothing():
    router = br.Router(PROFILES, seed=4)
    d = router.decide({})
    before = router.beliefs()
    claim = router.begin_record(d.id, quality=1.0)  # the service's first step: claimed, row appended
    assert claim.status == "applied" and router.beliefs().equals(before)
    with pytest.raises(br.OutcomeInFlightError, match="decision_id"):
        router.record(d.id, quality=1.0)  # neither applied nor a duplicate while it is committed
    router.settle_record(claim, committed=False)  # the commit failed: nothing changed
    assert router.beliefs().equals(before)
    assert router.record(d.id, quality=1.0) == "applied"  # the retry is applied, once
    assert router.record(d.id, quality=1.0) == "duplicate"
    assert router.beliefs().get_column("n").sum() == 1


def test_a_withdrawn_decision_is_not_pending_and_the_window_still_evicts_in_order():
    router = br.Router(PROFILES, seed=5, max_pending=3)
    ds = [router.decide({}) for _ in range(3)]
    assert router.withdraw(ds[1].id) and not router.withdraw(ds[1].id)
    assert router.n_pending == 2
    more = [router.decide({}) for _ in range(3)]  # evicts the two oldest left, skipping the hole
    assert router.n_pending == 3
    assert [router.record(d.id, quality=1.0) for d in more] == ["applied"] * 3
    assert router.record(ds[0].id, quality=1.0) == "late"


def test_a_journal_segment_that_cannot_be_compacted_is_retried_once_space_returns(tmpfs):
    from banditroute.logs.rows import OutcomeRow

    log_dir = tmpfs / "logs"
    writer = br.LogWriter(log_dir, journal=True, journal_segment_rows=2, journal_segment_s=2.0)
    row = lambda i: OutcomeRow(f"w-{i}", 1_700_000_000_000_000, "w", i, 1.0, None, None, None, "applied")  # noqa: E731
    writer.append(row(0))
    writer.flush()  # the segment's first line: its page has room for the next one
    filler = fill(tmpfs)
    writer.append(row(1))
    writer.flush()  # fits in the page: durable; the full segment is handed to the compactor, which fails
    segments = list((log_dir / "_journal").glob("*.jsonl"))
    assert len(segments) == 1
    assert br.scan_table(log_dir, "outcomes").collect().height == 2  # read from the journal meanwhile
    time.sleep(1.0)
    assert segments[0].exists() and not list((log_dir / "outcomes").rglob("*.parquet"))
    filler.unlink()
    deadline = time.monotonic() + 30
    while segments[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not segments[0].exists(), "the compactor did not retry the segment"
    assert len(list((log_dir / "outcomes").rglob("*.parquet"))) == 1
    assert br.scan_table(log_dir, "outcomes").collect().get_column("decision_id").to_list() == ["w-0", "w-1"]
    writer.close()


def test_a_rollout_command_the_log_refuses_did_not_happen(tmpfs):
    class Static:
        def probabilities(self, context):
            return {"a": 1.0}

    router = br.Router(PROFILES, log_dir=tmpfs / "logs", durability="sync", seed=6)
    filler = fill(tmpfs)
    with pytest.raises(br.LogError):
        router.start_canary("static", Static(), fraction=0.5, who="ops", why="try it")
    filler.unlink()
    with pytest.raises(br.ConfigError, match="canary"):
        router.promote(who="ops", why="nothing is running")  # the refused command left no canary
    router.start_canary("static", Static(), fraction=0.5, who="ops", why="try it")  # and it can be retried
    router.close()
    events = br.scan_table(tmpfs / "logs", "events").collect()
    assert events.get_column("event").to_list() == ["canary_start"]


def test_a_request_cancelled_while_its_outcome_is_committed_still_learns_it_once(tmp_path):
    """The service learns an outcome when its commit's result is known, not when the request's
    coroutine resumes: a request cancelled while waiting (its row committed anyway) leaves the
    outcome learned, and a retry is a duplicate (never a second row)."""
    pytest.importorskip("uvicorn", reason="the service extra (uvicorn) is not installed")
    import asyncio

    from banditroute.service import app as service_app
    from banditroute.service.config import ServiceConfig
    from banditroute.service.replica import start_replica

    routes = tmp_path / "routes.toml"
    routes.write_text('[[profiles]]\nname = "a"\n[[profiles]]\nname = "b"\n')

    async def scenario():
        svc = await start_replica(ServiceConfig(config=str(routes), log_dir=str(tmp_path / "logs")),
                                  handle_forwarded=service_app._forwarded)
        try:
            d = svc.router.decide({})
            await svc.commit.ack()
            body = {"decision_id": d.id, "quality": 1.0}
            task = asyncio.ensure_future(service_app._record(svc, d.id, body))
            await asyncio.sleep(0)  # it appended its row and waits for the commit
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await svc.commit.ack()  # the commit holding the row is done
            await asyncio.sleep(0.01)
            learned = svc.router.n_updates
            retry = await service_app._record(svc, d.id, body)
        finally:
            await svc.stop()
        return learned, retry["status"]

    learned, retry = asyncio.run(scenario())
    assert (learned, retry) == (1, "duplicate")
    outcomes = br.scan_table(tmp_path / "logs", "outcomes").collect()
    assert outcomes.get_column("status").to_list() == ["applied"]
