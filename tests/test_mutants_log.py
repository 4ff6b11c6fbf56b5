"""The log's journal at its edges: numpy values in rows, the compactor settings and their
errors, the writer lock through a writer's life (alive, closed, dead, forgotten, and the race
with a closing holder), a stale segment file, and the compactor process protocol and fallback.

Each test was checked by planting the bug it is meant to catch (see TESTING.md)."""

import fcntl
import io
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import banditroute as br
from banditroute.logs import journal

TS_US = 1_700_000_000_000_000
PACKAGE_ROOT = str(Path(br.__file__).resolve().parents[1])  # children import this same banditroute


def outcome(i: int) -> tuple:
    return (f"d{i}", TS_US + i, "w", i, 1.0, None, 2.5, 0.9, "applied")


def record_compactions(calls: list):
    def compact(writer, number, path):
        calls.append((writer, number, journal.read_segment(path)))
    return compact


# -- numpy values in rows ------------------------------------------------------------------------

def test_numpy_scalars_in_rows_are_logged_as_plain_values_through_the_journal(tmp_path):
    rows = [(f"d{i}", np.int64(TS_US + i), "w", np.int64(i), np.float32(0.5), np.float64(0.25),
             np.int32(120), None, "applied") for i in range(3)]
    plain = br.LogWriter(tmp_path / "parquet", auto_flush=False)
    journaled = br.LogWriter(tmp_path / "journal", journal=True, auto_flush=False)
    for w in (plain, journaled):
        for row in rows:
            w.append("outcomes", row)
        w.flush()
    live = br.scan_table(tmp_path / "journal", "outcomes").collect()  # read back from the journal
    journaled.close()
    plain.close()
    expected = br.scan_table(tmp_path / "parquet", "outcomes").collect()
    assert live.equals(expected)
    assert br.scan_table(tmp_path / "journal", "outcomes").collect().equals(expected)  # and after compaction
    assert live.get_column("seq").to_list() == [0, 1, 2]
    assert live.get_column("quality").to_list() == [0.5] * 3
    assert live.get_column("latency_ms").to_list() == [120.0] * 3


def test_a_value_json_cannot_hold_fails_the_journal_commit_naming_its_type(tmp_path):
    class Opaque:
        pass

    w = br.LogWriter(tmp_path, journal=True, auto_flush=False)
    w.append("outcomes", ("d0", TS_US, "w", 0, Opaque(), None, 2.5, 0.9, "applied"))
    with pytest.raises(TypeError, match="^Opaque is not JSON serialisable$"):
        w.flush()
    w.close()


# -- settings ------------------------------------------------------------------------------------

def test_the_journal_compacts_in_a_thread_by_default(tmp_path):
    calls = []
    j = journal.Journal(tmp_path, "w1", record_compactions(calls))
    assert j.compactor == "thread"
    j.append({"outcomes": [["d0"]]}, 1)
    j.close()
    assert calls == [("w1", 0, [{"outcomes": [["d0"]]}])]
    assert journal.live_segments(tmp_path) == []  # compacted, then deleted


def test_an_unknown_compactor_is_a_config_error_naming_field_and_value(tmp_path):
    with pytest.raises(br.ConfigError, match=r"^journal_compactor must be 'thread' or 'process', got 'threads'$") as e:
        br.LogWriter(tmp_path, journal=True, journal_compactor="threads")
    assert e.value.field == "journal_compactor" and e.value.value == "threads"


def test_without_posix_file_locks_the_journal_is_refused_and_parquet_still_works(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "fcntl", None)  # what a system without fcntl (Windows) looks like
    with pytest.raises(br.ConfigError, match=r"^journal needs POSIX file locks \(fcntl\), not available on this "
                                             r"system, got True$") as e:
        br.LogWriter(tmp_path, journal=True)
    assert e.value.field == "journal" and e.value.value is True
    with journal.writer_lock(tmp_path, "w1") as state:
        assert state == "absent"
    w = br.LogWriter(tmp_path, durability="sync")
    w.append("outcomes", outcome(0))
    w.close()
    assert br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id").to_list() == ["d0"]


# -- the writer lock -----------------------------------------------------------------------------

DEAD_WRITER = """
import os, sys
import banditroute as br
w = br.LogWriter(sys.argv[1], journal=True, auto_flush=False, writer_id="w1")
w.append("outcomes", ("d0", 1_700_000_000_000_000, "w1", 0, 1.0, None, 2.5, 0.9, "applied"))
w.flush()
os._exit(0)  # dies without closing: its lock file and its segment stay behind
"""


def test_the_writer_lock_through_a_writers_life(tmp_path):
    with journal.writer_lock(tmp_path, "w1") as state:
        assert state == "absent"  # never wrote here
    w = br.LogWriter(tmp_path, journal=True, writer_id="w1")
    with journal.writer_lock(tmp_path, "w1") as state:
        assert state == "alive"
    w.close()
    with journal.writer_lock(tmp_path, "w1") as state:
        assert state == "absent"  # a closed writer leaves no lock behind
    # and its id can be used again at once
    again = br.LogWriter(tmp_path, journal=True, writer_id="w1")
    again.close()


def test_a_dead_writer_is_told_apart_and_forgotten_once_its_rows_are_adopted(tmp_path):
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    child = subprocess.run([sys.executable, "-c", DEAD_WRITER, str(tmp_path)], env=env, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    with journal.writer_lock(tmp_path, "w1") as state:
        assert state == "dead"
        with journal.writer_lock(tmp_path, "w1") as other:
            assert other == "alive"  # the lock is ours until the block ends
        adopter = br.LogWriter(tmp_path)  # recovers the dead writer's segment
        assert adopter.n_recovered == 1
        adopter.close()
        journal.forget_writer(tmp_path, "w1")
    with journal.writer_lock(tmp_path, "w1") as state:
        assert state == "absent"
    journal.forget_writer(tmp_path, "w1")  # forgetting twice is harmless
    assert br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id").to_list() == ["d0"]


def test_a_holder_closing_between_open_and_lock_is_absent_not_dead(tmp_path, monkeypatch):
    w = br.LogWriter(tmp_path, journal=True, writer_id="w1")
    real_flock = fcntl.flock
    holder_closed = []

    def flock(fd, op):
        if not holder_closed:  # the holder unlinks its lock file and lets go right now
            holder_closed.append(True)
            w.close()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with journal.writer_lock(tmp_path, "w1") as state:
        assert holder_closed and state == "absent"


def test_a_stale_temporary_segment_file_does_not_leak_into_the_new_segment(tmp_path):
    """A leftover of the same writer id under the segment's temporary name, longer than the
    first commit, must not survive behind it."""
    root = tmp_path / "_journal"
    root.mkdir()
    ghost = b'{"outcomes":[["ghost"],[1700000000000000],["w"],[9],[1.0],[null],[2.5],[0.9],["applied"]]}\n'
    (root / ".w1-00000000.tmp").write_bytes(b"x" * 4096 + b"\n" + ghost)
    w = br.LogWriter(tmp_path, journal=True, auto_flush=False, writer_id="w1")
    w.append("outcomes", outcome(0))
    w.flush()
    assert br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id").to_list() == ["d0"]
    w.close()
    assert br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id").to_list() == ["d0"]


# -- the compactor process -----------------------------------------------------------------------

def test_a_failing_compactor_process_is_reported_and_the_thread_takes_over(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PYTHONPATH", PACKAGE_ROOT)
    calls = []
    j = journal.Journal(tmp_path, "w1", record_compactions(calls), compactor="process")
    # one column instead of an outcome row's nine: the child's Parquet compaction rejects it
    j.append({"outcomes": [["d0"]]}, 1)
    with caplog.at_level(logging.WARNING, logger="banditroute.logs.journal"):
        j.close()
    assert calls == [("w1", 0, [{"outcomes": [["d0"]]}])]  # compacted by the thread instead
    assert journal.live_segments(tmp_path) == []
    assert j._child is None
    messages = [r.getMessage() for r in caplog.records if r.name == "banditroute.logs.journal"]
    assert len(messages) == 1
    assert "compacting in a thread" in messages[0]
    # the child's own answer is passed on, with the segment it was about
    assert re.search(r"journal compactor process answered [\"']error ShapeError: ", messages[0])
    assert "got '" + str(tmp_path / "_journal" / "w1-00000000.jsonl") + "'" in messages[0]


def test_the_compactor_protocol_one_answer_line_per_request_line(tmp_path):
    calls = []

    def compact(writer, number, path):
        calls.append((writer, number, path))
        if number == 4:
            raise ValueError("bad\nsegment")

    first = tmp_path / "_journal" / "w1-00000003.jsonl"
    odd = tmp_path / "a dir" / "w2-00000004.jsonl "  # the path is taken verbatim, trailing blank and all
    stdin = io.StringIO(f"w1\t3\t{first}\nw2\t4\t{odd}\n")
    stdout = io.StringIO()
    # in a thread of its own: on Linux, os.nice() in the loop lowers only the calling thread
    server = threading.Thread(target=journal.serve_compactions, args=(str(tmp_path), compact, stdin, stdout))
    server.start()
    server.join(timeout=30)
    assert not server.is_alive()  # returned once its stdin ended
    assert calls == [("w1", 3, first), ("w2", 4, odd)]
    assert stdout.getvalue().splitlines() == ["ok", "error ValueError: bad segment"]


def test_recovery_counts_every_dead_writers_segment(tmp_path):
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    three = DEAD_WRITER.replace('w = br.LogWriter(sys.argv[1], journal=True, auto_flush=False, writer_id="w1")',
                                'ws = [br.LogWriter(sys.argv[1], journal=True, auto_flush=False, writer_id=f"w{i}")'
                                ' for i in range(3)]\nfor w in ws:')
    three = three.replace("\nw.append", "\n    w.append").replace("\nw.flush", "\n    w.flush")
    child = subprocess.run([sys.executable, "-c", three, str(tmp_path)], env=env, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0, child.stderr
    adopter = br.LogWriter(tmp_path)  # three writers died in one process, a segment each
    assert adopter.n_recovered == 3
    adopter.close()
    assert br.scan_table(tmp_path, "outcomes").collect().height == 3
    assert br.LogWriter(tmp_path).n_recovered == 0  # nothing left to recover


@pytest.mark.parametrize("group_rows", [0, -3, 2.5, True, "8"])
def test_group_rows_must_be_a_positive_integer(tmp_path, group_rows):
    message = rf"^group_rows must be an integer >= 1, got {re.escape(repr(group_rows))}$"
    with pytest.raises(br.ConfigError, match=message) as info:
        br.LogWriter(tmp_path, group_rows=group_rows)
    assert info.value.field == "group_rows"
