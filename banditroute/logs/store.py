"""The decision log: append-only, date-partitioned Parquet, durable on acknowledgement.

Layout (DESIGN section 5)::

    <log_dir>/decisions/date=YYYY-MM-DD/part-<writer>-<seq>.parquet
    <log_dir>/outcomes/date=YYYY-MM-DD/part-<writer>-<seq>.parquet
    <log_dir>/events/date=YYYY-MM-DD/part-<writer>-<seq>.parquet      (canary, promotion, rollback)

Each writer (one per router process) has its own id, so several processes write side by side
without coordination. A part is written to a hidden temporary file, fsync'ed, renamed into
place and its directory fsync'ed: a reader never sees a half-written part, and a part that
exists survives a crash of the process or of the machine.

Durability modes:

``"sync"``
    every ``decide()`` and ``record()`` writes its part before returning: what returned is
    on disk. Costs a file and an fsync per call; for low volume.
``"group"`` (default)
    rows are buffered and written together (group commit) by ``flush()``, when the buffer
    reaches ``group_rows`` rows, or at the first append after ``group_interval_s`` seconds.
    What ``flush()`` returned for is on disk; rows appended after it are lost in a crash.

With ``journal=True`` a flush appends the buffered rows to the writer's journal (one line and
one ``fdatasync``, see :mod:`banditroute.logs.journal`) instead of writing a Parquet part per table;
the journal is compacted into Parquet parts every ``journal_segment_rows`` rows or
``journal_segment_s`` seconds, at :meth:`LogWriter.close`, and (for a process that died) when
the next writer opens the directory. :func:`scan_table` reads the journal's rows too. The
service commits this way: a commit costs a fraction of a millisecond instead of a Parquet
encoding per table.

>>> import tempfile
>>> w = LogWriter(tempfile.mkdtemp(), durability="sync")
>>> w.durability
'sync'
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
import uuid
import weakref
from itertools import chain
from pathlib import Path

import numpy as np
import polars as pl

from . import journal as _journal
from ..errors import ConfigError, LogError

__all__ = ["LogWriter", "DECISION_SCHEMA", "OUTCOME_SCHEMA", "EVENT_SCHEMA", "SCHEMA_VERSION", "scan_table"]

SCHEMA_VERSION = 2  # 2: decisions gained `shadow` and `expected_quality` (nullable); the `events` table
_TS = pl.Datetime("us", "UTC")

DECISION_SCHEMA = {
    "decision_id": pl.String,
    "ts": _TS,
    "writer": pl.String,
    "seq": pl.Int64,
    "policy_version": pl.String,
    "context": pl.String,
    "task_types": pl.List(pl.String),
    "task_probs": pl.List(pl.Float64),
    "profiles": pl.List(pl.String),
    "probabilities": pl.List(pl.Float64),
    "profile": pl.String,
    "propensity": pl.Float64,
    "excluded": pl.String,
    "fallback_reason": pl.String,
    "shadow": pl.String,
    "expected_quality": pl.Float64,
    "schema_version": pl.Int32,
}

OUTCOME_SCHEMA = {
    "decision_id": pl.String,
    "ts": _TS,
    "writer": pl.String,
    "seq": pl.Int64,
    "quality": pl.Float64,
    "cost_usd": pl.Float64,
    "latency_ms": pl.Float64,
    "reward": pl.Float64,
    "status": pl.String,
    "schema_version": pl.Int32,
}

EVENT_SCHEMA = {
    "ts": _TS,
    "writer": pl.String,
    "seq": pl.Int64,
    "event": pl.String,
    "policy": pl.String,
    "fraction": pl.Float64,
    "who": pl.String,
    "why": pl.String,
    "policy_version": pl.String,
    "schema_version": pl.Int32,
}

_SCHEMAS = {"decisions": DECISION_SCHEMA, "outcomes": OUTCOME_SCHEMA, "events": EVENT_SCHEMA}
# Row tuples handed to append() carry every column but schema_version, with ts in epoch us.
_ROW_SCHEMAS = {name: {c: (pl.Int64 if c == "ts" else t) for c, t in s.items() if c != "schema_version"}
                for name, s in _SCHEMAS.items()}


def scan_table(log_dir: str | os.PathLike, table: str) -> pl.LazyFrame:
    """Lazily scan every part of ``table`` ("decisions", "outcomes" or "events") under ``log_dir``.

    >>> import tempfile
    >>> scan_table(tempfile.mkdtemp(), "outcomes").collect().columns[:3]
    ['decision_id', 'ts', 'writer']
    """
    if table not in _SCHEMAS:
        raise ConfigError("table", table, "must be 'decisions', 'outcomes' or 'events'")
    # The journal first, then the parts: a segment compacted in between shows up as parts, and
    # its rows are skipped below for every date whose part exists (never missed, never twice).
    pending = []
    for writer, number, path in _journal.live_segments(log_dir):
        try:
            pending.append((writer, number, _journal.read_segment(path)))
        except FileNotFoundError:
            continue  # compacted meanwhile: its parts exist by now
    root = Path(log_dir) / table
    parts = sorted(root.glob("date=*/part-*.parquet"))
    frames = []
    if parts:
        frames.append(pl.scan_parquet([str(p) for p in parts], hive_partitioning=False,
                                      missing_columns="insert", extra_columns="ignore", schema=_SCHEMAS[table]))
    if pending:
        present = {(p.parent.name, p.name) for p in parts}
        for writer, number, commits in pending:
            frame = _journal_frame(table, commits)
            if frame is None:
                continue
            name = _journal.part_name(writer, number)
            dates = frame.get_column("ts").dt.date()
            done = [d for d in dates.unique().to_list() if (f"date={d.isoformat()}", name) in present]
            if done:
                frame = frame.filter(~dates.is_in(done))
            frames.append(frame.lazy())
    if not frames:
        return pl.LazyFrame(schema=_SCHEMAS[table])
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def _journal_frame(table: str, commits: list) -> pl.DataFrame | None:
    """One table's rows of a journal segment as a frame of the table's schema (None if none)."""
    columns = _journal.segment_columns(commits, table, len(_ROW_SCHEMAS[table]))
    if not columns[0]:
        return None
    t = _Table(table)
    t.frames.append(t.columns_frame(columns))
    t.n = len(columns[0])
    return t.frame()


def _column(name: str, values: tuple, dtype) -> pl.Series:
    """A column from row values; list columns are built flat (one Series, not one per row)."""
    if not isinstance(dtype, pl.List):
        return pl.Series(name, values, dtype=dtype)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    flat = pl.Series(name, list(chain.from_iterable(values)), dtype=dtype.inner)
    if lengths.size and (lengths == lengths[0]).all():
        return flat.reshape((lengths.size, int(lengths[0]))).cast(dtype)
    rows = pl.Series("row", np.repeat(np.arange(lengths.size), lengths))
    grouped = pl.DataFrame([rows, flat]).group_by("row", maintain_order=True).agg(pl.col(name))
    out = pl.DataFrame({"row": np.arange(lengths.size)}).join(grouped, on="row", how="left", maintain_order="left")
    return out.get_column(name).fill_null(pl.lit([], dtype=dtype)).cast(dtype)


class _Table:
    """Buffered rows of one table: single rows as tuples, batches as ready DataFrames."""

    def __init__(self, name: str):
        self.name = name
        self.rows: list[tuple] = []
        self.frames: list[pl.DataFrame] = []
        self.n = 0
        self.ticket = 0  # set by LogWriter.detach: which detach took these rows

    def frame(self) -> pl.DataFrame:
        self._seal()
        df = pl.concat(self.frames, how="vertical") if len(self.frames) > 1 else self.frames[0]
        return df.with_columns(pl.col("ts").cast(_TS), pl.lit(SCHEMA_VERSION, dtype=pl.Int32).alias("schema_version"))

    def _seal(self) -> None:
        if self.rows:
            self.frames.append(self.columns_frame(list(zip(*self.rows))))
            self.rows = []

    def journal_columns(self) -> list[list]:
        """The buffered rows as plain column lists (frames first: they are the older rows)."""
        columns = [[] for _ in _ROW_SCHEMAS[self.name]]
        for frame in self.frames:
            for acc, series in zip(columns, frame.get_columns()):
                acc.extend(series.to_list())
        if self.rows:
            for acc, values in zip(columns, zip(*self.rows)):
                acc.extend(values)
        return columns

    def columns_frame(self, columns: list) -> pl.DataFrame:
        return pl.DataFrame([_column(name, values, dtype) for (name, dtype), values
                             in zip(_ROW_SCHEMAS[self.name].items(), columns)])


class LogWriter:
    """Writes decision and outcome rows of one writer to a log directory.

    Parameters
    ----------
    log_dir : path
        Root of the log (created if missing).
    durability : {"group", "sync"}
        See the module docstring.
    group_rows : int
        In group mode, write when this many rows are buffered.
    group_interval_s : float
        In group mode, write at the first append once the oldest buffered row is this old.
    writer_id : str, optional
        Defaults to a fresh random id (unique across processes and restarts).
    auto_flush : bool
        Flush on the group thresholds (and per call in sync mode). False leaves every flush to
        the owner, e.g. a service committing groups of concurrent requests with
        :meth:`detach` and :meth:`commit_detached`.
    journal : bool
        Commit through the journal (see the module docstring) instead of a Parquet part per
        table and flush.
    journal_segment_rows, journal_segment_s :
        When the journal is compacted into Parquet parts.
    journal_compactor : {"thread", "process"}
        Where compaction runs (see :class:`banditroute.logs.journal.Journal`).

    Appends never wait for disk I/O: a flush detaches the buffered rows under the buffer lock
    and writes them outside it.
    """

    def __init__(self, log_dir: str | os.PathLike, *, durability: str = "group", group_rows: int = 8192,
                 group_interval_s: float = 1.0, writer_id: str | None = None, auto_flush: bool = True,
                 journal: bool = False, journal_segment_rows: int = 20_000, journal_segment_s: float = 10.0,
                 journal_compactor: str = "thread"):
        if durability not in ("group", "sync"):
            raise ConfigError("durability", durability, "must be 'group' or 'sync'")
        if isinstance(group_rows, bool) or not isinstance(group_rows, int) or group_rows < 1:
            raise ConfigError("group_rows", group_rows, "must be an integer >= 1")
        self.log_dir = Path(log_dir)
        self.durability = durability
        self.group_rows = group_rows
        self.group_interval_s = float(group_interval_s)
        self.writer_id = writer_id or uuid.uuid4().hex[:12]
        self.auto_flush = bool(auto_flush)
        self._tables = {name: _Table(name) for name in _SCHEMAS}
        self._part_seq = itertools.count()  # next() is atomic: parts may be written concurrently
        self._oldest = None
        self._lock = threading.RLock()  # guards the buffers
        self._flush_lock = threading.Lock()  # orders flush() calls: each returns once all before it is on disk
        self._closed = False
        # The k-th detach that takes rows gives them ticket k; their commits may finish in any
        # order: every ticket up to _settled is committed (or failed), later finished ones are in
        # _settled_above (see wait_durable).
        self._n_detached = 0
        self._settled = 0
        self._settled_above: set[int] = set()
        self._settled_cv = threading.Condition(self._lock)
        try:
            for name in _SCHEMAS:
                _journal.make_dirs(self.log_dir / name)
        except OSError as exc:
            raise LogError("log_dir", str(log_dir), f"cannot be created ({exc.strerror})") from None
        #: journal segments left by writers that are gone, compacted when this writer opened
        self.n_recovered = _journal.recover(self.log_dir, self._compact_segment)
        self._journal = None
        if journal:
            for name, value in (("journal_segment_rows", journal_segment_rows),
                                ("journal_segment_s", journal_segment_s)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ConfigError(name, value, "must be a number > 0")
            self._journal = _journal.Journal(self.log_dir, self.writer_id, self._compact_segment,
                                             segment_rows=journal_segment_rows, segment_s=journal_segment_s,
                                             compactor=journal_compactor)
        atexit.register(_flush_at_exit, weakref.ref(self))

    def append(self, table: str, row: tuple) -> None:
        """Buffer one row (a tuple in schema order, ``ts`` in epoch microseconds)."""
        with self._lock:
            t = self._tables[table]
            t.rows.append(row)
            t.n += 1
            due = self._flush_due()
        if due:  # outside the buffer lock: a flush in another thread may be waiting for it
            self.flush()

    def append_columns(self, table: str, columns: list) -> None:
        """Buffer a batch of rows given column by column, in schema order (as :meth:`append`)."""
        with self._lock:
            t = self._tables[table]
            t._seal()
            frame = t.columns_frame(columns)
            t.frames.append(frame)
            t.n += frame.height
            due = self._flush_due()
        if due:
            self.flush()

    def _flush_due(self) -> bool:
        if not self.auto_flush:
            return False
        if self.durability == "sync":
            return True
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        return (sum(t.n for t in self._tables.values()) >= self.group_rows
                or now - self._oldest >= self.group_interval_s)

    def flush(self) -> None:
        """Write every buffered row durably; on return they survive a crash."""
        with self._flush_lock:
            self.commit_detached(self.detach())

    def detach(self) -> list:
        """Take the buffered rows (quickly, under the buffer lock), one item per non-empty
        table, for :meth:`write_detached`; appends go on into fresh buffers meanwhile."""
        with self._lock:
            if self._closed:
                return []
            full = [t for t in self._tables.values() if t.n]
            if full:
                self._n_detached += 1
            for t in full:
                self._tables[t.name] = _Table(t.name)
                t.ticket = self._n_detached
            self._oldest = None
            return full

    def commit_detached(self, tables: list) -> None:
        """Write detached tables durably: one journal line and fdatasync for all of them, or
        (without the journal) one fsync'ed part per table and date. Thread-safe."""
        if not tables:
            return
        try:
            if self._journal is None:
                for table in tables:
                    self.write_detached(table)
            else:
                self._journal.append({t.name: t.journal_columns() for t in tables}, sum(t.n for t in tables))
        finally:
            self._settle(tables[0].ticket)

    def _settle(self, ticket: int) -> None:
        """Mark one detach's commit finished (durable, or failed: nothing more to wait for)."""
        if not ticket:
            return
        with self._settled_cv:
            self._settled_above.add(ticket)
            while self._settled + 1 in self._settled_above:
                self._settled += 1
                self._settled_above.remove(self._settled)
            self._settled_cv.notify_all()

    def wait_durable(self) -> None:
        """Return once every row appended before the call is durable (or its commit failed).

        With ``auto_flush`` the writer commits them itself (:meth:`flush`); without, it waits
        for its owner's commits (:meth:`detach` then :meth:`commit_detached`, however many overlap).
        """
        with self._settled_cv:
            target = self._n_detached + any(t.n for t in self._tables.values())
        if self.auto_flush:
            self.flush()
        with self._settled_cv:
            self._settled_cv.wait_for(lambda: self._settled >= target or self._closed)

    def write_detached(self, table: "_Table") -> None:
        """Write one detached table durably as Parquet (one fsync'ed part per date)."""
        self._write(table.name, table.frame())

    def close(self) -> None:
        """Flush, compact the journal, and stop accepting rows."""
        self.flush()
        with self._lock:
            self._closed = True
            self._settled_cv.notify_all()  # rows appended after closing are never committed
        if self._journal is not None:
            self._journal.close()

    def _compact_segment(self, writer: str, number: int, path: Path) -> None:
        compact_segment(self.log_dir, writer, number, path)

    def _write(self, table: str, df: pl.DataFrame) -> None:
        write_parts(self.log_dir, table, df, lambda: f"part-{self.writer_id}-{next(self._part_seq):08d}.parquet")


def compact_segment(log_dir: Path, writer: str, number: int, path: Path) -> None:
    """Write a journal segment's rows as Parquet parts named after the segment (idempotent)."""
    commits = _journal.read_segment(path)
    name = _journal.part_name(writer, number)
    for table in _SCHEMAS:
        frame = _journal_frame(table, commits)
        if frame is not None:
            write_parts(Path(log_dir), table, frame, lambda: name)


def write_parts(log_dir: Path, table: str, df: pl.DataFrame, name) -> None:
    """Write ``df`` durably as one part per date (``name()`` gives each part's file name): a
    hidden temporary file, fsync'ed, renamed into place, its directory fsync'ed."""
    ts = df.get_column("ts")
    if ts.min().date() == ts.max().date():  # the usual case: one partition, no filtering
        parts = [(ts.min().date(), df)]
    else:
        dates = ts.dt.date()
        parts = [(date, df.filter(dates == date)) for date in dates.unique().sort()]
    for date, part in parts:
        directory = log_dir / table / f"date={date.isoformat()}"
        file = name()
        try:
            _journal.make_dirs(directory)  # the new partition's entry must survive too
            # unique per process and thread: two compactions of one segment may race (a dead
            # writer's compactor finishing while the next writer recovers it); both write the same rows
            tmp = directory / f".{file}.{os.getpid()}-{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                part.write_parquet(fh, compression="zstd", statistics=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, directory / file)
            _journal.fsync_dir(directory)
        except OSError as exc:
            raise LogError(f"log_dir/{table}", str(directory), f"cannot be written ({exc.strerror})") from None


def _flush_at_exit(ref) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - interpreter is exiting; nothing left to report to
            pass
