"""The log's blind spots found by a mutation probe, tested where the user meets them.

A. A commit that mixes batch frames (``decide_batch``) and single rows (``decide``, ``record``)
   keeps every row, once, with its values, in the journal, in Parquet and after compaction.
B. A journal compaction cut short between two tables (one table's part of a segment written,
   the other's not) hides no row and shows none twice; recovery completes it exactly once.
C. The durability discipline, checked by the order of the system calls (a SIGKILL cannot see
   it: the page cache survives a process kill): a part's data is fsync'ed before it is renamed
   into place, its directory after; a journal commit is fdatasync'ed before ``flush`` returns;
   every directory the writer creates on the way to an acknowledged row has its entry fsync'ed.
"""

import json
import os
import sys
import threading

import polars as pl
import pytest

import banditroute as br

TASKS = ["chat", "code", "math"]


# -- A: frames and single rows in one commit --------------------------------------------------------

def _mixed_traffic(router, round_: int):
    """Interleave list batches, DataFrame batches, single decisions and outcomes (no flush);
    returns (decisions with their contexts, logged outcomes as (id, quality, cost, latency))."""
    issued, outcomes = [], []

    def batch(contexts):
        ds = router.decide_batch(contexts)
        if isinstance(contexts, pl.DataFrame):
            contexts = list(contexts.iter_rows(named=True))
        assert len(ds) == len(contexts)
        issued.extend(zip(ds, contexts))
        return ds

    def single(context):
        d = router.decide(context)
        issued.append((d, context))
        return d

    def outcome(d, quality, cost_usd, latency_ms):
        assert router.record(d.id, quality=quality, cost_usd=cost_usd, latency_ms=latency_ms) == "applied"
        outcomes.append((d.id, quality, cost_usd, latency_ms))

    r = f"r{round_}"
    first = batch([{"task_type": "chat", "n": r + "a"}, {"task_type": "code", "n": r + "b"}])  # a frame...
    lone = single({"task_type": "math", "n": r + "c"})  # ...then a single row after it
    outcome(first[0], 0.25, 0.001, 120.0)
    frame = batch(pl.DataFrame({"task_type": ["code", "chat", "math"], "n": [r + "d", r + "e", r + "f"]}))
    single({"task_type": "chat", "n": r + "g"})
    single({"task_type": "code", "n": r + "h"})
    outcome(lone, 1.0, 0.002, 340.0)
    outcome(frame[1], 0.0, 0.0, 55.5)
    batch([{"task_type": "math", "n": r + "i"}])
    outcome(frame[2], 0.5, 0.004, 900.0)
    batch(pl.DataFrame({"task_type": ["chat", "chat"], "n": [r + "j", r + "k"]}))
    last = single({"task_type": "code", "n": r + "l"})  # the commit ends with a single after a frame
    assert router.record(first[0].id, quality=0.75) == "duplicate"  # not logged
    outcome(last, 0.125, 0.003, 10.0)
    return issued, outcomes


def _assert_log_holds(router, log_dir, issued, outcomes):
    dec = br.scan_table(log_dir, "decisions").collect()
    # every decision exactly once, in the order issued
    assert dec.get_column("decision_id").to_list() == [d.id for d, _ in issued]
    for row, (d, context) in zip(dec.iter_rows(named=True), issued):
        assert row["profile"] == d.profile and row["propensity"] == d.propensity, d.id
        assert dict(zip(row["profiles"], row["probabilities"])) == dict(d.probabilities), d.id
        assert dict(zip(row["task_types"], row["task_probs"])) == dict(d.task_probs), d.id
        assert json.loads(row["context"]) == context, d.id
        assert row["policy_version"] == d.policy_version and row["schema_version"] == 4
    out = br.scan_table(log_dir, "outcomes").collect()
    assert out.get_column("decision_id").to_list() == [o[0] for o in outcomes]
    for row, (did, quality, cost_usd, latency_ms) in zip(out.iter_rows(named=True), outcomes):
        assert (row["quality"], row["cost_usd"], row["latency_ms"], row["status"]) == (
            quality, cost_usd, latency_ms, "applied"), did
        assert row["reward"] == router.objective.reward(quality=quality, cost_usd=cost_usd, latency_ms=latency_ms)
    # every decision id is unique across the log, and every outcome joins a logged decision
    assert dec.get_column("decision_id").is_unique().all()
    assert set(out.get_column("decision_id")) <= set(dec.get_column("decision_id"))


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "parquet"])
@pytest.mark.parametrize("setup", ["router_settings", "manual_commit"])
def test_batches_and_single_rows_in_one_commit_are_all_logged_once(profiles, tmp_path, journal, setup):
    if setup == "router_settings":  # group commit as the settings give it (every row well within 1 s)
        router = br.Router(profiles, task_types=TASKS, log_dir=tmp_path, log_journal=journal, seed=0)
    else:  # nothing flushes but flush(): everything appended lands in one commit, whatever the timing
        router = br.Router(profiles, task_types=TASKS, seed=0)
        router.use_log_writer(br.LogWriter(tmp_path, journal=journal, auto_flush=False))
    issued, outcomes = _mixed_traffic(router, 0)
    if setup == "manual_commit":
        assert br.scan_table(tmp_path, "decisions").collect().height == 0  # still one buffered commit
    router.flush()
    _assert_log_holds(router, tmp_path, issued, outcomes)  # journal: read from the segment
    more_issued, more_outcomes = _mixed_traffic(router, 1)  # a second commit of the same shape
    issued += more_issued
    outcomes += more_outcomes
    router.flush()
    _assert_log_holds(router, tmp_path, issued, outcomes)
    router.close()  # journal: compaction into Parquet
    assert not list(tmp_path.glob("_journal/*.jsonl"))
    assert list(tmp_path.glob("decisions/date=*/*.parquet")) and list(tmp_path.glob("outcomes/date=*/*.parquet"))
    _assert_log_holds(router, tmp_path, issued, outcomes)


# -- B: a compaction cut short between tables -------------------------------------------------------

@pytest.mark.parametrize("missing", ["outcomes", "decisions"])
def test_a_compaction_cut_between_tables_hides_nothing_and_is_finished_once(profiles, tmp_path, missing):
    """One table's part of a segment is written, the other's is not, the segment is still there
    (the process died between the two tables): readers see every row of both tables once."""
    router = br.Router(profiles, task_types=TASKS, log_dir=tmp_path, log_journal=True, seed=0)
    issued, outcomes = _mixed_traffic(router, 0)
    router.flush()
    segments = list(tmp_path.glob("_journal/*.jsonl"))
    assert len(segments) == 1
    segment, content = segments[0], segments[0].read_bytes()
    router.close()  # a full compaction: both tables' parts, then the segment deleted
    assert not segment.exists()
    parts = {table: sorted(p.relative_to(tmp_path) for p in tmp_path.glob(f"{table}/date=*/*.parquet"))
             for table in ("decisions", "outcomes")}
    assert parts["decisions"] and parts["outcomes"]
    for part in parts[missing]:  # now the state of a compaction that died before this table
        (tmp_path / part).unlink()
    segment.write_bytes(content)
    visible = br.scan_table(tmp_path, missing).collect().height
    assert visible > 0, f"the {missing} rows of the segment are hidden by the other table's part"
    _assert_log_holds(router, tmp_path, issued, outcomes)  # every row of both tables, exactly once

    recovering = br.LogWriter(tmp_path)  # the next writer to open the directory completes it
    assert recovering.n_recovered == 1
    assert not segment.exists()
    for table in ("decisions", "outcomes"):  # the same part names as the full compaction: nothing twice
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.glob(f"{table}/date=*/*.parquet")) == parts[table]
    _assert_log_holds(router, tmp_path, issued, outcomes)
    recovering.close()
    assert br.LogWriter(tmp_path).n_recovered == 0
    _assert_log_holds(router, tmp_path, issued, outcomes)


# -- C: the order of fsync and rename ---------------------------------------------------------------

_SYNCS = ("fsync", "fdatasync")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps fds to paths through /proc (Linux)")


class DiskCalls:
    """Records fsync/fdatasync (with the path and size of the file synced), replace/rename,
    unlink and mkdir, in order, from every thread; calls through to the real functions.
    Patched on ``os`` and on any banditroute module holding its own reference to one of them
    (``journal`` binds ``fdatasync`` at import). File descriptors are mapped to paths through
    ``/proc/self/fd``."""

    def __init__(self, monkeypatch):
        self.events = []
        self._lock = threading.Lock()
        for name in ("fsync", "fdatasync", "replace", "rename", "unlink", "mkdir"):
            real = getattr(os, name, None)
            if real is None:
                continue
            wrapper = self._sync(name, real) if name in _SYNCS else self._path_op(name, real)
            monkeypatch.setattr(os, name, wrapper)
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("banditroute"):
                    for attr, value in list(vars(module).items()):
                        if value is real:
                            monkeypatch.setattr(module, attr, wrapper)

    def _record(self, event):
        with self._lock:
            self.events.append(event)

    def _sync(self, name, real):
        def wrapper(fd):
            number = fd if isinstance(fd, int) else fd.fileno()
            path = os.readlink(f"/proc/self/fd/{number}")
            size = os.fstat(number).st_size
            real(fd)
            self._record((name, path, size))
        return wrapper

    def _path_op(self, name, real):
        def wrapper(*args, **kwargs):
            paths = tuple(os.path.realpath(a) for a in args[:2] if isinstance(a, (str, os.PathLike)))
            result = real(*args, **kwargs)
            self._record((name, *paths))
            return result
        return wrapper

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def syncs_of(self, path, start=0, stop=None):
        return [i for i, e in enumerate(self.events[start:stop], start) if e[0] in _SYNCS and e[1] == path]

    def renames_into(self, suffix, start=0, stop=None):
        return [(i, e) for i, e in enumerate(self.events[start:stop], start)
                if e[0] in ("replace", "rename") and e[2].endswith(suffix)]


def _assert_parts_durable(calls, log_dir, start=0, stop=None) -> list:
    """Each part renamed into place (between events start and stop) had all its bytes fsync'ed
    under its temporary name before the rename, and its directory fsync'ed after it."""
    renames = calls.renames_into(".parquet", start, stop)
    assert renames, "no part was written"
    for i, (_, tmp, final) in renames:
        assert os.path.dirname(final).startswith(os.path.realpath(log_dir))
        assert tmp != final and os.path.basename(tmp).startswith(".")  # written under a hidden name
        size = os.stat(final).st_size
        synced = [j for j in calls.syncs_of(tmp, start, i) if calls.events[j][2] == size]
        assert synced, f"{final} was renamed into place before its {size} bytes were fsync'ed"
        assert calls.syncs_of(os.path.dirname(final), i + 1, stop), f"{final}: directory not fsync'ed after the rename"
    return renames


@needs_proc
def test_parquet_parts_are_fsynced_before_the_rename_and_their_directory_after(profiles, tmp_path, monkeypatch):
    router = br.Router(profiles, task_types=TASKS, log_dir=tmp_path, seed=0)
    calls = DiskCalls(monkeypatch)
    issued, outcomes = _mixed_traffic(router, 0)
    router.flush()
    done = calls.mark()
    renames = _assert_parts_durable(calls, tmp_path, 0, done)
    assert {os.path.basename(os.path.dirname(os.path.dirname(e[2]))) for _, e in renames} == {"decisions", "outcomes"}
    for _, (_, _, final) in renames:  # a new partition's own entry is made durable as well
        assert calls.syncs_of(os.path.dirname(os.path.dirname(final)), 0, done)
    router.close()
    _assert_log_holds(router, tmp_path, issued, outcomes)


@needs_proc
def test_journal_compaction_parts_are_durable_before_the_segment_is_deleted(profiles, tmp_path, monkeypatch):
    router = br.Router(profiles, task_types=TASKS, log_dir=tmp_path, log_journal=True, seed=0)
    calls = DiskCalls(monkeypatch)
    issued, outcomes = _mixed_traffic(router, 0)
    router.flush()
    assert not calls.renames_into(".parquet")  # committed to the journal, not yet compacted
    router.close()
    renames = _assert_parts_durable(calls, tmp_path)
    unlinks = [i for i, e in enumerate(calls.events) if e[0] == "unlink" and e[1].endswith(".jsonl")]
    assert len(unlinks) == 1
    # the segment goes only once every part of it is durable (renamed and its directory synced)
    assert all(i < unlinks[0] for i, _ in renames)
    for i, (_, _, final) in renames:
        assert calls.syncs_of(os.path.dirname(final), i + 1, unlinks[0]), final
    _assert_log_holds(router, tmp_path, issued, outcomes)


@needs_proc
def test_a_journal_commit_is_fdatasynced_before_flush_returns(profiles, tmp_path, monkeypatch):
    router = br.Router(profiles, task_types=TASKS, log_dir=tmp_path, log_journal=True, seed=0)
    calls = DiskCalls(monkeypatch)
    issued, outcomes = [], []
    for round_ in range(3):
        start = calls.mark()
        more = _mixed_traffic(router, round_)
        issued += more[0]
        outcomes += more[1]
        router.flush()
        stop = calls.mark()
        segments = list(tmp_path.glob("_journal/*.jsonl"))
        assert len(segments) == 1
        segment = os.path.realpath(segments[0])
        size = segments[0].stat().st_size
        synced = [j for j in calls.syncs_of(segment, start, stop) if calls.events[j][2] == size]
        assert synced, f"commit {round_}: the segment's {size} bytes were not synced before flush() returned"
        if round_ == 0:  # a new segment: its name is made durable before the first acknowledgement
            born = calls.renames_into(".jsonl", start, stop)
            assert [e[2] for _, e in born] == [segment]
            assert calls.syncs_of(os.path.dirname(segment), born[0][0] + 1, stop)
    _assert_log_holds(router, tmp_path, issued, outcomes)
    router.close()


@needs_proc
@pytest.mark.parametrize("journal", [True, False], ids=["journal", "parquet"])
def test_every_directory_created_on_the_way_to_an_acknowledged_row_is_durable(profiles, tmp_path, monkeypatch,
                                                                              journal):
    """A part or segment that was fsync'ed and renamed is still lost in a machine crash if a
    directory on its path was created and its entry never fsync'ed in its parent. The writer
    does this for a new date partition (``write_parts``); the same holds for the log directory,
    the table directories and ``_journal``, which it creates too."""
    calls = DiskCalls(monkeypatch)
    log_dir = tmp_path / "log"  # created by the writer
    router = br.Router(profiles, task_types=TASKS, log_dir=log_dir, log_journal=journal, seed=0)
    _mixed_traffic(router, 0)
    router.flush()
    acked = calls.mark()
    files = [os.path.realpath(p) for p in log_dir.glob("*/*.jsonl" if journal else "*/date=*/*.parquet")]
    assert files
    created = {e[1]: i for i, e in enumerate(calls.events[:acked]) if e[0] == "mkdir"}
    assert os.path.realpath(log_dir) in created
    needed = sorted({d for f in files for d in created if f.startswith(d + os.sep)})
    not_durable = [d for d in needed if not calls.syncs_of(os.path.dirname(d), created[d] + 1, acked)]
    assert not not_durable, f"created but never fsync'ed in their parent before flush() returned: {not_durable}"
    router.close()
