"""Reading a table of the log: its Parquet parts and the rows still in journal segments.

In a Delta log (:mod:`banditroute.logs.delta`) the parts are the files of the table's current
Delta version, and a segment's rows are read unless the version holds the segment (its writer's
transaction version reaches it): never a row twice, nor one missed.

A damaged file (see :mod:`banditroute.logs.quarantine`) is named, never met as a bare Polars
error: ``on_corrupt`` says what happens to it.

``"raise"`` (default)
    :class:`~banditroute.errors.LogError` naming the file and what is wrong.
``"skip"``
    a damaged part is left out, a damaged segment's unreadable lines too (its readable lines
    are read, as recovery will compact them); each such file is listed in
    :attr:`TableScan.skipped`.
``"quarantine"``
    as ``"skip"``, and a damaged part is moved to ``_quarantine`` (a segment is not: its writer
    may be alive; :func:`~banditroute.logs.journal.recover` salvages a dead writer's).

The scan is lazy: the parts are read when the frame is collected, so damage inside a part shows
only then. The parts are read through a Polars IO source that streams the native Parquet scan;
when it fails, the parts are checked one by one (footers, then the columns the query needs) to
find the damaged ones, and the reading goes on past them without giving a row twice. A healthy
log pays only the streaming hand-over; :attr:`TableScan.skipped` grows as damage is found, so
read it after collecting.

>>> import tempfile
>>> scan_table(tempfile.mkdtemp(), "outcomes").collect().columns[:3]
['decision_id', 'ts', 'writer']
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import polars as pl

from ..errors import ConfigError, LogError
from .buckets import fill_bucket
from .delta import forget_files, table_state
from .frames import segment_frame
from .quarantine import READ_ERRORS, part_problem, quarantine, readable_commits
from .rows import TABLES
from .segments import live_segments, part_name, read_segment, read_segment_lines

try:
    from polars.io.plugins import register_io_source
except ImportError:  # polars < 1.13: a plain scan, whose errors at collect do not name the file
    register_io_source = None

__all__ = ["ON_CORRUPT", "SkippedFile", "TableScan", "scan_table", "scan_table_checked"]

ON_CORRUPT = ("raise", "skip", "quarantine")
_END = object()
_BATCH_ROWS = 262_144  # rows handed over at a time: fewer, larger batches cost less per row
_STREAMS: dict = {}  # stop event -> thread of every batch stream running
_log = logging.getLogger("banditroute.logs.scan")


class SkippedFile(NamedTuple):
    """A damaged file left out of a scan (wholly, or for a segment its unreadable lines):
    ``problem`` says what is wrong, ``n_rows_read`` how many of the table's rows were still read
    from it, ``quarantined`` where it was moved (None if it was not)."""

    path: Path
    problem: str
    n_rows_read: int
    quarantined: Path | None = None


@dataclass(frozen=True)
class TableScan:
    """A table's lazy frame and the damaged files left out of it (filled as they are found:
    segments when scanning, parts when the frame is collected)."""

    frame: pl.LazyFrame
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        """The number of damaged files left out (wholly or in part)."""
        return len(self.skipped)


def scan_table(log_dir: str | os.PathLike, table: str, *, on_corrupt: str = "raise") -> pl.LazyFrame:
    """Lazily scan every part of ``table`` ("decisions", "outcomes" or "events") under ``log_dir``.

    The columns are the table's schema (:data:`~banditroute.logs.rows.DECISION_SCHEMA`, ...);
    parts of an older schema version get nulls for the columns they lack, except ``bucket``,
    computed from ``decision_id`` (:mod:`banditroute.logs.buckets`). ``on_corrupt``: see
    the module docstring; :func:`scan_table_checked` also says which files were skipped.

    >>> import tempfile
    >>> scan_table(tempfile.mkdtemp(), "events").collect().columns[:3]
    ['ts', 'writer', 'seq']
    """
    return scan_table_checked(log_dir, table, on_corrupt=on_corrupt).frame


def scan_table_checked(log_dir: str | os.PathLike, table: str, *, on_corrupt: str = "raise") -> TableScan:
    """:func:`scan_table`, with the damaged files it skipped (``on_corrupt="skip"`` or ``"quarantine"``).

    >>> import tempfile
    >>> scan = scan_table_checked(tempfile.mkdtemp(), "outcomes", on_corrupt="skip")
    >>> scan.frame.collect().height, scan.n_skipped
    (0, 0)
    """
    if table not in TABLES:
        raise ConfigError("table", table, "must be 'decisions', 'outcomes' or 'events'")
    if on_corrupt not in ON_CORRUPT:
        raise ConfigError("on_corrupt", on_corrupt, "must be 'raise', 'skip' or 'quarantine'")
    schema = TABLES[table].schema
    skipped: list[SkippedFile] = []
    # The journal first, then the parts: a segment compacted in between shows up as parts, and
    # its rows are skipped below for every date whose part exists (never missed, never twice).
    pending = []
    for writer, number, path in live_segments(log_dir):
        try:
            frame = _segment_rows(path, table, on_corrupt, skipped)
        except FileNotFoundError:
            continue  # compacted meanwhile: its parts exist by now
        if frame is not None:
            pending.append((writer, number, frame))
    root = Path(log_dir) / table
    delta = table_state(log_dir, table)  # a Delta log: the files of its current version
    parts = sorted(root.glob("date=*/part-*.parquet")) if delta is None else delta.files
    frames = []
    if parts:
        frames.append(_parts_frame(Path(log_dir), table, parts, schema, on_corrupt, skipped, delta is not None))
    if pending:
        present = {(p.parent.name, p.name) for p in parts}
        for writer, number, frame in pending:
            if delta is not None:  # a segment is in the table whole (one commit), or not at all
                if delta.committed(writer) < number:
                    frames.append(frame.lazy())
                continue
            name = part_name(writer, number)
            dates = frame.get_column("ts").dt.date()
            done = [d for d in dates.unique().to_list() if (f"date={d.isoformat()}", name) in present]
            if done:
                frame = frame.filter(~dates.is_in(done))
            frames.append(frame.lazy())
    if not frames:
        return TableScan(pl.LazyFrame(schema=schema), skipped)
    frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    if "bucket" in schema:  # parts older than schema version 4 have none: computed when selected
        frame = frame.with_columns(fill_bucket())
    return TableScan(frame, skipped)


def _segment_rows(path: Path, table: str, on_corrupt: str, skipped: list) -> pl.DataFrame | None:
    """One table's rows of a segment, by ``on_corrupt``'s rule for a damaged one."""
    if on_corrupt == "raise":
        commits = read_segment(path)  # raises naming the file
        try:
            return segment_frame(table, commits)
        except Exception as exc:  # noqa: BLE001 - a malformed value, whatever it raises
            raise LogError("journal", str(path), f"holds {table} rows that cannot be read ({exc})") from None
    lines = read_segment_lines(path)
    commits, problem = lines.commits, None
    if lines.bad:
        problem = f"line(s) {', '.join(map(str, lines.bad))} unreadable"
    try:
        frame = segment_frame(table, commits)
    except Exception:  # noqa: BLE001 - find the lines that do not make rows, read the others
        commits, bad = readable_commits(commits)
        numbers = [lines.numbers[i] for i in bad]
        problem = f"line(s) {', '.join(map(str, sorted(lines.bad + numbers)))} unreadable"
        frame = segment_frame(table, commits)
    if problem is not None:
        skipped.append(SkippedFile(path, problem, 0 if frame is None else frame.height))
    return frame


def _query(files: list[Path], schema, columns, predicate, n_rows=None) -> pl.LazyFrame:
    if files:
        lf = pl.scan_parquet([str(p) for p in files], hive_partitioning=False, missing_columns="insert",
                             extra_columns="ignore", schema=schema)
    else:
        lf = pl.LazyFrame(schema=schema)
    if predicate is not None:
        lf = lf.filter(predicate)
    if columns is not None:
        lf = lf.select(columns)
    return lf if n_rows is None else lf.head(n_rows)


def _batches(lf: pl.LazyFrame):
    """A query's rows in order, a batch at a time, streamed: the reading overlaps the consumer's
    work. Polars' ``sink_batches`` runs in a thread and hands the batches over through a short
    queue (``collect_batches`` would end quietly where a damaged file makes Polars panic).
    Giving up never waits: the feeder sees the stop at its next batch, and Polars ends."""
    if not hasattr(lf, "sink_batches"):  # polars < 1.32
        yield lf.collect()
        return
    handover: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def feed(batch: pl.DataFrame) -> bool:
        while not stop.is_set():
            try:
                handover.put(batch, timeout=0.05)
                return False
            except queue.Full:
                continue
        return True  # no more batches are wanted

    def run() -> None:
        try:
            lf.sink_batches(feed, chunk_size=_BATCH_ROWS)
            item = _END
        except BaseException as exc:  # noqa: BLE001 - re-raised by the reader, whatever it is (a panic too)
            item = exc
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        _STREAMS.pop(stop, None)

    thread = _STREAMS[stop] = threading.Thread(target=run, name="banditroute-scan", daemon=True)
    thread.start()
    try:
        while (item := handover.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@atexit.register
def _stop_streams() -> None:
    """A stream a reader gave up on must not outlive the interpreter: its Polars thread would
    call into a Python being torn down."""
    for stop, thread in list(_STREAMS.items()):
        stop.set()
        thread.join(timeout=10)


def _reads(files: list[Path], schema, columns) -> bool:
    try:
        for _ in _batches(_query(files, schema, columns, None)):
            pass
    except READ_ERRORS:
        return False
    return True


def _damaged(files: list[Path], schema, columns) -> list[tuple[Path, str]]:
    """The parts among ``files`` whose ``columns`` fail to read, in order: halves are read (in
    parallel by Polars, streamed) until the failures come down to single files."""
    if len(files) == 1:
        why = part_problem(files[0], schema=schema, columns=columns)
        return [] if why is None else [(files[0], why)]
    halves = (files[: len(files) // 2], files[len(files) // 2:])
    return [bad for half in halves if not _reads(half, schema, columns) for bad in _damaged(half, schema, columns)]


def _parts_frame(log_dir: Path, table: str, parts: list[Path], schema, on_corrupt: str, skipped: list,
                 delta: bool = False):
    """The parts as a lazy frame whose reading names (or skips, or quarantines) a damaged part
    (``delta``: the parts of a Delta table, which forgets a quarantined one)."""
    if register_io_source is None:
        return _query(parts, schema, None, None)

    def source(with_columns, predicate, n_rows, _batch_size):
        needed = None if with_columns is None else sorted(
            {*with_columns, *([] if predicate is None else predicate.meta.root_names())})
        files, skip, left = list(parts), 0, n_rows  # the parts still read; rows of them already given
        while True:
            pos = 0
            try:
                for batch in _batches(_query(files, schema, with_columns, predicate,
                                             None if left is None else skip + left)):
                    start, pos = pos, pos + batch.height
                    if pos <= skip:
                        continue
                    batch = batch.slice(max(skip - start, 0), left)
                    if left is not None:
                        left -= batch.height
                    yield batch
                    if left == 0:
                        return
                return
            except READ_ERRORS as exc:
                bad = _damaged(files, schema, needed)
                if not bad:
                    raise  # every part reads on its own: not a damaged file
                files, skip = _leave_out(bad, files, max(pos, skip), exc, predicate)

    def _leave_out(bad, files, given, exc, predicate):
        """Skip (or quarantine) ``bad``; the parts to read on and how many of their rows were given."""
        if on_corrupt == "raise":
            path, why = bad[0]
            more = f"; {len(bad) - 1} more part(s) of this table too" if len(bad) > 1 else ""
            raise LogError(f"log_dir/{table} part", str(path), f"cannot be read: {why}{more}") from exc
        paths = {p for p, _ in bad}
        first = min(files.index(p) for p in paths)
        before = _query(files[:first], schema, None, predicate).select(pl.len()).collect().item() if first else 0
        for path, why in bad:
            moved = _quarantine(path, why) if on_corrupt == "quarantine" else None
            n_read = given - before if path == files[first] and given > before else 0
            if all(s.path != path for s in skipped):
                skipped.append(SkippedFile(path, why, n_read, None if moved is None else moved.path))
        if given <= before:  # nothing of a damaged part was given: read on past what was
            return [p for p in files if p not in paths], given
        # the first damaged part gave its readable first rows (row groups) before failing
        return [p for p in files[first + 1:] if p not in paths], 0

    def _quarantine(path: Path, why: str):
        try:
            moved = quarantine(log_dir, path, why)
        except OSError as exc:  # cannot move it (permissions...): skipped all the same
            _log.warning("damaged part %s left in place, cannot be moved aside: %s", path, exc)
            return None
        if delta and moved is not None:
            try:
                forget_files(log_dir, table, [path])
            except Exception as exc:  # noqa: BLE001 - Delta readers fail on it until `doctor --quarantine`
                _log.warning("damaged part %s moved aside but still in the Delta table: %s", path, exc)
        return moved

    return register_io_source(source, schema=pl.Schema(schema))
