"""The log's journal: commits are durable lines, compacted into Parquet exactly once, and every
acknowledged row is visible to readers exactly once, before, during and after compaction."""

import threading
import time

import polars as pl
import pytest

import banditroute as br
from banditroute.logs import journal
from banditroute.logs.store import LogWriter, write_parts


def outcome(i: int, ts_us: int = 1_700_000_000_000_000) -> tuple:
    return (f"d{i}", ts_us + i, "w", i, 1.0, None, 2.5, 0.9, "applied")


def test_rows_round_trip_exactly_through_the_journal(tmp_path):
    floats = [0.1, 1 / 3, 2.0 ** -60, 1e300, float("nan")]
    w = LogWriter(tmp_path, journal=True, auto_flush=False)
    for i, q in enumerate(floats):
        w.append("outcomes", (f"d{i}", 1_700_000_000_000_000 + i, "w", i, q, None, 3.0, q, "applied"))
    w.flush()
    live = br.scan_table(tmp_path, "outcomes").collect()  # read from the journal
    w.close()
    assert not list((tmp_path / "_journal").glob("*.jsonl"))
    compacted = br.scan_table(tmp_path, "outcomes").collect()  # read from Parquet
    assert live.equals(compacted)
    got = compacted.get_column("quality").to_list()
    assert got[:4] == floats[:4] and got[4] != got[4]  # bit-exact floats; NaN stays NaN
    assert compacted.get_column("cost_usd").null_count() == 5


def test_segments_rotate_by_rows_and_compact_to_named_parts(tmp_path):
    w = LogWriter(tmp_path, journal=True, auto_flush=False, journal_segment_rows=10, journal_segment_s=3600)
    for i in range(35):
        w.append("outcomes", outcome(i))
        if i % 5 == 4:
            w.flush()
    w.close()
    parts = sorted(p.name for p in (tmp_path / "outcomes").rglob("*.parquet"))
    assert parts == [f"part-{w.writer_id}-j{n:08d}.parquet" for n in range(4)]  # 10, 10, 10 and 5 rows
    assert br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id").to_list() == [
        f"d{i}" for i in range(35)]


def test_an_idle_writer_still_reaches_parquet(tmp_path):
    w = LogWriter(tmp_path, journal=True, auto_flush=False, journal_segment_s=0.05)
    w.append("outcomes", outcome(0))
    w.flush()
    deadline = time.monotonic() + 10
    while not list((tmp_path / "outcomes").rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list((tmp_path / "outcomes").rglob("*.parquet"))  # compacted by the background thread
    w.close()


def test_readers_see_every_acknowledged_row_exactly_once_during_compactions(tmp_path):
    w = LogWriter(tmp_path, journal=True, auto_flush=False, journal_segment_rows=40, journal_segment_s=3600)
    acked = 0
    stop = threading.Event()
    problems = []

    def read_loop():
        while not stop.is_set():
            before = acked
            ids = br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id")
            if ids.len() != ids.n_unique():
                problems.append(f"duplicates after {before} acked")
            if ids.len() < before:
                problems.append(f"{ids.len()} rows visible, {before} acknowledged")

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(2000):
            w.append("outcomes", outcome(i))
            if i % 7 == 6:
                w.flush()
                acked = i + 1
    finally:
        stop.set()
        reader.join()
    w.close()
    assert problems == []
    assert w._journal.n_compacted >= 40  # segments of 42 rows (six commits of 7) compacted meanwhile


def test_a_compaction_cut_short_is_finished_once(tmp_path):
    """Parts of one date written, the next date's not, the segment not deleted (a crash in the
    middle of compacting): readers see no row twice, and recovery finishes it identically."""
    day = 86_400_000_000
    w = LogWriter(tmp_path, journal=True, auto_flush=False, writer_id="w1")
    rows = [outcome(i) for i in range(3)] + [outcome(i, 1_700_000_000_000_000 + day) for i in range(3, 5)]
    for row in rows:
        w.append("outcomes", row)
    w.flush()
    seg = w._journal._current
    first_day = br.scan_table(tmp_path, "outcomes").collect().filter(pl.col("decision_id").is_in(["d0", "d1", "d2"]))
    name = journal.part_name("w1", seg.number)
    write_parts(tmp_path, "outcomes", first_day, lambda: name)  # half a compaction
    both = br.scan_table(tmp_path, "outcomes").collect()
    assert sorted(both.get_column("decision_id")) == [f"d{i}" for i in range(5)]  # nothing twice
    w.close()  # compacts the segment again: same part names, same rows
    after = br.scan_table(tmp_path, "outcomes").collect()
    assert sorted(after.get_column("decision_id")) == [f"d{i}" for i in range(5)]
    assert len(list((tmp_path / "outcomes").rglob("part-w1-j*.parquet"))) == 2


def test_a_torn_tail_is_ignored_but_corruption_in_the_middle_is_an_error(tmp_path):
    seg = tmp_path / "w-00000000.jsonl"
    seg.write_bytes(b'{"outcomes": [["a"]]}\n{"outcomes": [["b"')
    assert journal.read_segment(seg) == [{"outcomes": [["a"]]}]
    seg.write_bytes(b'{"outcomes": [["a"]]}\n\x00\x00garbage\n{"outcomes": [["c"]]}\n')
    with pytest.raises(br.LogError, match="line 2 is unreadable"):
        journal.read_segment(seg)


def test_live_segments_are_not_recovered_by_another_writer(tmp_path):
    live = LogWriter(tmp_path, journal=True, auto_flush=False)
    live.append("outcomes", outcome(0))
    live.flush()
    other = LogWriter(tmp_path, journal=True)  # opening runs recovery: the live segment is locked
    assert other.n_recovered == 0 and list((tmp_path / "_journal").glob(f"{live.writer_id}-*.jsonl"))
    live.append("outcomes", outcome(1))
    live.flush()
    live.close()
    other.close()
    assert br.scan_table(tmp_path, "outcomes").collect().height == 2


def test_journal_settings_are_checked(tmp_path):
    with pytest.raises(br.ConfigError, match="journal_segment_rows must be a number > 0, got 0"):
        LogWriter(tmp_path, journal=True, journal_segment_rows=0)


def test_compaction_in_a_child_process_and_the_fallback_when_it_dies(tmp_path):
    w = LogWriter(tmp_path, journal=True, auto_flush=False, journal_segment_rows=10, journal_segment_s=3600,
                  journal_compactor="process")

    def write(lo, hi):
        for i in range(lo, hi):
            w.append("outcomes", outcome(i))
            if i % 5 == 4:
                w.flush()

    def wait_compacted(n):
        deadline = time.monotonic() + 60
        while w._journal.n_compacted < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert w._journal.n_compacted >= n

    write(0, 20)
    wait_compacted(1)
    child = w._journal._child
    assert child is not None and child.poll() is None  # compacted by the child process
    child.kill()
    child.wait()
    write(20, 40)  # the dead child's segments are compacted anyway (a new child, or the thread)
    wait_compacted(3)
    w.close()
    assert w._journal._child is None
    ids = br.scan_table(tmp_path, "outcomes").collect().get_column("decision_id").to_list()
    assert ids == [f"d{i}" for i in range(40)]
    assert not list((tmp_path / "_journal").glob("*.jsonl"))
