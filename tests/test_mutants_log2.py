"""The log at more edges: sync durability without a flush, ``wait_durable`` (auto-flushed and
owner-committed), list columns whose values mix ints and floats, journal segments rotating at
exactly ``segment_rows`` rows and (when idle) not before ``segment_s``, and a compaction that
fails: the thread fallback's warning, and an error kept for ``close()`` with the segment left
for recovery.

Each test was checked by planting the bug it is meant to catch (see TESTING.md)."""

import logging
import re
import threading
import time
import types

import polars as pl
import pytest

import banditroute as br
from banditroute.logs import journal

TS_US = 1_700_000_000_000_000


def outcome(i: int) -> tuple:
    return (f"d{i}", TS_US + i, "w", i, 1.0, None, 2.5, 0.9, "applied")


def decision(i: int, probabilities: tuple) -> tuple:
    profiles = tuple(f"p{k}" for k in range(len(probabilities)))
    return (f"d{i}", TS_US + i, "w", i, "v1", "{}", ("chat",), (1.0,), profiles, probabilities,
            "p0", float(probabilities[0]), "{}", None, None, None)


def ids(log_dir, table="outcomes") -> list:
    return br.scan_table(log_dir, table).collect().get_column("decision_id").to_list()


def in_thread(fn):
    """Run ``fn`` in a thread; return it (still alive if ``fn`` is blocked) and its outcome."""
    outcome_ = {}

    def run():
        try:
            outcome_["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome_["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome_


# -- durability ----------------------------------------------------------------------------------

def test_sync_durability_writes_each_row_before_append_returns(tmp_path):
    w = br.LogWriter(tmp_path, durability="sync", group_rows=1000, group_interval_s=3600)
    assert w.durability == "sync"
    w.append("outcomes", outcome(0))
    # no flush: a group writer would still hold the row in memory
    assert len(list((tmp_path / "outcomes").rglob("*.parquet"))) == 1
    assert ids(tmp_path) == ["d0"]
    w.close()


def test_wait_durable_returns_once_the_rows_before_it_are_on_disk(tmp_path):
    w = br.LogWriter(tmp_path, group_rows=1000, group_interval_s=3600)
    nothing, result = in_thread(w.wait_durable)  # nothing appended yet: nothing to wait for
    nothing.join(timeout=10)
    assert not nothing.is_alive() and "error" not in result
    for round_ in range(3):  # every later call too (not only the first ticket)
        w.append("outcomes", outcome(round_))
        waiter, result = in_thread(w.wait_durable)
        waiter.join(timeout=10)
        blocked = waiter.is_alive()
        if blocked:
            w.close()  # releases the waiter
        assert not blocked, f"wait_durable blocked in round {round_}"
        assert "error" not in result, result.get("error")
        assert ids(tmp_path) == [f"d{i}" for i in range(round_ + 1)]
    w.close()


def test_wait_durable_without_auto_flush_waits_for_the_owners_commit(tmp_path):
    w = br.LogWriter(tmp_path, auto_flush=False)
    idle, result = in_thread(w.wait_durable)
    idle.join(timeout=10)
    assert not idle.is_alive() and "error" not in result
    w.append("outcomes", outcome(0))
    taken = w.detach()
    waiter, result = in_thread(w.wait_durable)
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # the rows are detached but not committed yet
    w.commit_detached(taken)
    waiter.join(timeout=10)
    blocked = waiter.is_alive()
    if blocked:
        w.close()
    assert not blocked and "error" not in result, result.get("error")
    assert ids(tmp_path) == ["d0"]
    w.close()


# -- list columns ----------------------------------------------------------------------------------

def test_list_columns_mixing_ints_and_floats_are_logged_as_floats(tmp_path):
    w = br.LogWriter(tmp_path, auto_flush=False)
    w.append("decisions", decision(0, (1, 0)))  # a deterministic choice, given as ints
    w.append("decisions", decision(1, (0.25, 0.75)))
    w.flush()
    w.close()
    got = br.scan_table(tmp_path, "decisions").collect()
    assert got.get_column("probabilities").to_list() == [[1.0, 0.0], [0.25, 0.75]]


# -- journal segments ------------------------------------------------------------------------------

def test_a_segment_holds_exactly_segment_rows_rows(tmp_path):
    w = br.LogWriter(tmp_path, journal=True, auto_flush=False, journal_segment_rows=2, journal_segment_s=3600,
                     writer_id="w1")
    for i in range(4):
        w.append("outcomes", outcome(i))
        w.flush()
    w.close()
    parts = sorted((tmp_path / "outcomes").rglob("*.parquet"))
    assert [p.name for p in parts] == ["part-w1-j00000000.parquet", "part-w1-j00000001.parquet"]
    assert [pl.read_parquet(p).get_column("decision_id").to_list() for p in parts] == [["d0", "d1"], ["d2", "d3"]]


class FrozenClock:
    """Stands in for the journal's ``time`` module: ``monotonic`` moves only when told."""

    def __init__(self):
        self.now = 1000.0
        self.calls = 0

    def monotonic(self):
        self.calls += 1
        return self.now


def test_an_idle_segment_is_not_rotated_before_segment_s(tmp_path, monkeypatch):
    clock = FrozenClock()
    monkeypatch.setattr(journal, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    w = br.LogWriter(tmp_path, journal=True, auto_flush=False, journal_segment_s=0.2, writer_id="w1")
    try:
        w.append("outcomes", outcome(0))
        w.flush()
        parts = lambda: list((tmp_path / "outcomes").rglob("*.parquet"))  # noqa: E731
        checked = clock.calls
        deadline = time.monotonic() + 10
        # the compactor wakes every 0.05 s and looks at the segment's age (reading the clock)
        while clock.calls < checked + 3 and not parts() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert clock.calls >= checked + 3  # it did look, three times
        assert not parts()  # and left the young segment alone
        assert [s[:2] for s in journal.live_segments(tmp_path)] == [("w1", 0)]
        clock.now += 0.2  # now it is segment_s old: the next look rotates and compacts it
        deadline = time.monotonic() + 10
        while journal.live_segments(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert journal.live_segments(tmp_path) == []
        assert [p.name for p in parts()] == ["part-w1-j00000000.parquet"]
        assert ids(tmp_path) == ["d0"]
    finally:
        w.close()


# -- failing compactions -----------------------------------------------------------------------------

def test_the_fallback_warning_names_the_failure_and_what_happens_instead(tmp_path, monkeypatch, caplog):
    calls = []
    missing = tmp_path / "no-python"
    monkeypatch.setattr(journal.sys, "executable", str(missing))  # the child cannot even start
    j = journal.Journal(tmp_path, "w1", lambda *args: calls.append(args), compactor="process")
    j.append({"outcomes": [["d0"]]}, 1)
    with caplog.at_level(logging.WARNING, logger="banditroute.logs.journal"):
        j.close()
    assert [(writer, number) for writer, number, _ in calls] == [("w1", 0)]
    messages = [r.getMessage() for r in caplog.records if r.name == "banditroute.logs.journal"]
    assert len(messages) == 1
    assert re.fullmatch(r"journal compactor process failed \(\[Errno 2\] No such file or directory: "
                        + re.escape(repr(str(missing))) + r"\); compacting in a thread", messages[0]), messages[0]


def test_a_failed_compaction_is_raised_by_close_and_its_segment_is_recovered_later(tmp_path):
    def compact(writer, number, path):
        raise OSError(28, "No space left on device")

    j = journal.Journal(tmp_path, "w1", compact)
    row = outcome(0)
    j.append({"outcomes": [[v] for v in row]}, 1)
    with pytest.raises(OSError, match="No space left on device"):
        j.close()
    assert [s[:2] for s in journal.live_segments(tmp_path)] == [("w1", 0)]  # kept for recovery
    assert ids(tmp_path) == ["d0"]  # and still read from it
    adopter = br.LogWriter(tmp_path)
    assert adopter.n_recovered == 1
    adopter.close()
    assert journal.live_segments(tmp_path) == []
    assert ids(tmp_path) == ["d0"]
