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

When the log cannot be written (a full disk, an I/O error), nothing acknowledged is lost and
nothing is written twice: in sync mode the call that appended the rows raises
:class:`~banditroute.errors.LogError` and its rows are dropped (the router changed nothing
either, so the caller retries); in group mode the rows stay buffered and a later flush writes
them (an automatic flush that fails logs a warning and retries at the next threshold;
:meth:`LogWriter.flush` and :meth:`LogWriter.close` raise). Once ``16 * group_rows`` rows
wait behind a failing log, appends raise too, without buffering.
:meth:`LogWriter.commit_detached` (a service's group commit) raises and drops: its caller
answers every request of the commit with an error.

With ``journal=True`` a flush appends the buffered rows to the writer's journal (one line and
one ``fdatasync``, see :mod:`banditroute.logs.journal`) instead of writing a Parquet part per table;
the journal is compacted into Parquet parts every ``journal_segment_rows`` rows or
``journal_segment_s`` seconds, at :meth:`LogWriter.close`, and (for a process that died) when
the next writer opens the directory. :func:`scan_table` reads the journal's rows too. The
service commits this way: a commit costs a fraction of a millisecond instead of a Parquet
encoding per table.

With ``table_format="delta"`` (a router's ``log_table="delta"``) the tables are Delta Lake
tables and every flush goes through the journal; compaction registers the parts in the tables'
Delta logs (:mod:`banditroute.logs.delta`).

Rows are the record types of :mod:`banditroute.logs.rows` (one per table, their fields the
table's columns); this module re-exports the schemas derived from them, and the reader
(:func:`scan_table`, :mod:`banditroute.logs.scan`) and part writing (:func:`write_parts`,
:func:`compact_segment`, :mod:`banditroute.logs.parts`).

>>> import tempfile
>>> from banditroute.logs.rows import OutcomeRow
>>> log_dir = tempfile.mkdtemp()
>>> w = LogWriter(log_dir, durability="sync")
>>> w.durability
'sync'
>>> w.append(OutcomeRow("w-0", 1_700_000_000_000_000, "w", 0, quality=1.0, cost_usd=None,
...                     latency_ms=2.5, reward=0.9, status="applied"))
>>> scan_table(log_dir, "outcomes").collect().get_column("status").to_list()
['applied']
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from ..errors import ConfigError, LogError
from .delta import ensure_tables, is_delta_log, next_segment
from .durable import make_dirs
from .frames import TableBuffer
from .journal import Journal, recover
from .parts import compact_segment, write_parts
from .rows import (DECISION_SCHEMA, EVENT_SCHEMA, OUTCOME_SCHEMA, SCHEMA_VERSION, TABLES, Row, TableDef, padded,
                   table_def)
from .scan import scan_table

__all__ = ["LogWriter", "DECISION_SCHEMA", "OUTCOME_SCHEMA", "EVENT_SCHEMA", "SCHEMA_VERSION", "scan_table",
           "compact_segment", "write_parts"]

_log = logging.getLogger("banditroute.logs.store")
_BACKLOG_GROUPS = 16  # rows waiting behind a failing log, in groups of group_rows, before appends raise
_WIDTHS = {name: t.width for name, t in TABLES.items()}  # of a tuple handed to append() with its table's name


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
    table_format : {"parquet", "delta"} or None
        ``"delta"``: the tables are Delta Lake tables (:mod:`banditroute.logs.delta`; implies
        ``journal``); ``"parquet"``: plain Parquet parts (refused on a Delta log, whose readers
        would never see them); None (default): as the directory is.

    Appends never wait for disk I/O: a flush detaches the buffered rows under the buffer lock
    and writes them outside it.
    """

    def __init__(self, log_dir: str | os.PathLike, *, durability: str = "group", group_rows: int = 8192,
                 group_interval_s: float = 1.0, writer_id: str | None = None, auto_flush: bool = True,
                 journal: bool = False, journal_segment_rows: int = 20_000, journal_segment_s: float = 10.0,
                 journal_compactor: str = "thread", table_format: str | None = None):
        if durability not in ("group", "sync"):
            raise ConfigError("durability", durability, "must be 'group' or 'sync'")
        if isinstance(group_rows, bool) or not isinstance(group_rows, int) or group_rows < 1:
            raise ConfigError("group_rows", group_rows, "must be an integer >= 1")
        if table_format not in (None, "parquet", "delta"):
            raise ConfigError("log_table", table_format, "must be 'parquet' or 'delta'")
        self.log_dir = Path(log_dir)
        #: "parquet" or "delta" (see table_format)
        self.table_format = table_format or ("delta" if is_delta_log(log_dir) else "parquet")
        if self.table_format == "parquet" and is_delta_log(log_dir):
            raise ConfigError("log_table", "parquet", f"cannot write to {log_dir}: its tables are Delta tables "
                              "(log_table='delta')")
        journal = journal or self.table_format == "delta"  # the Delta log's write-ahead log
        self.durability = durability
        self.group_rows = group_rows
        self.group_interval_s = float(group_interval_s)
        self.writer_id = writer_id or uuid.uuid4().hex[:12]
        self.auto_flush = bool(auto_flush)
        # each table's buffer, under its name and its row type (append() looks it up by either)
        self._buffers: dict = {}
        for table in TABLES.values():
            self._new_buffer(table)
        self._n_buffered = 0  # rows in the buffers, all tables
        self._part_seq = itertools.count()  # next() is atomic: parts may be written concurrently
        self._oldest = None
        self._lock = threading.RLock()  # guards the buffers
        self._flush_lock = threading.Lock()  # orders flush() calls: each returns once all before it is on disk
        self._closed = False
        self._failing = False  # the last flush failed: rows wait in the buffers
        # The k-th detach that takes rows gives them ticket k; their commits may finish in any
        # order: every ticket up to _settled is committed (or failed), later finished ones are in
        # _settled_above (see wait_durable).
        self._n_detached = 0
        self._settled = 0
        self._settled_above: set[int] = set()
        self._settled_cv = threading.Condition(self._lock)
        try:
            for name in TABLES:
                make_dirs(self.log_dir / name)
        except OSError as exc:
            raise LogError("log_dir", str(log_dir), f"cannot be created ({exc.strerror})") from None
        if self.table_format == "delta":
            ensure_tables(self.log_dir)
        #: journal segments left by writers that are gone, compacted when this writer opened
        self.n_recovered = recover(self.log_dir, self._compact_segment)
        self._journal = None
        if journal:
            for name, value in (("journal_segment_rows", journal_segment_rows),
                                ("journal_segment_s", journal_segment_s)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ConfigError(name, value, "must be a number > 0")
            first = next_segment(self.log_dir, self.writer_id) if self.table_format == "delta" else 0
            self._journal = Journal(self.log_dir, self.writer_id, self._compact_segment,
                                    segment_rows=journal_segment_rows, segment_s=journal_segment_s,
                                    compactor=journal_compactor, first_segment=first)
        atexit.register(_flush_at_exit, weakref.ref(self))

    def append(self, row: Row | str, values: tuple | None = None, /) -> None:
        """Buffer one row: a :class:`~banditroute.logs.rows.DecisionRow`, ``OutcomeRow`` or
        ``EventRow`` (``ts`` in epoch microseconds); its type says which table it goes to.

        ``append(table, values)``, the table's name and a tuple in the row type's field order,
        does the same.
        """
        if values is None:
            key = type(row)
        else:
            key, row = row, values
            if len(row) != _WIDTHS.get(key):
                row = padded(key, row, _WIDTHS[key], lambda: None) if key in _WIDTHS else None
                if row is None:
                    _reject(key, values)
        if self._failing:
            self._check_backlog(1)
        with self._lock:
            try:
                t = self._buffers[key]
            except KeyError:
                raise ConfigError("row", type(row).__name__, "must be a DecisionRow, OutcomeRow or EventRow "
                                  "(or a tuple after its table's name)") from None
            t.rows.append(row)  # TableBuffer.add, inlined: this is the hot path
            t.n += 1
            self._n_buffered += 1
            due = self._flush_due()
        if due:  # outside the buffer lock: a flush in another thread may be waiting for it
            self._auto_flush()

    def append_columns(self, table: type[Row] | str, columns: Sequence[Sequence]) -> None:
        """Buffer a batch of rows given column by column: ``table`` is a row type
        (:class:`~banditroute.logs.rows.DecisionRow`, ...) or a table's name, ``columns`` one
        sequence of values per field, in the row type's order (``ts`` as in :meth:`append`)."""
        t = table_def(table)
        if columns and len(columns) != t.width:  # an older width: nulls in the columns added since
            columns = padded(t.name, columns, t.width, lambda: [None] * len(columns[0])) or columns
        if len(columns) != t.width:
            raise ConfigError("columns", len(columns), f"must hold {t.width} columns for {t.name} "
                              f"({', '.join(t.columns)})")
        if self._failing:
            self._check_backlog(len(columns[0]))
        with self._lock:
            self._n_buffered += self._buffers[t.name].add_columns(columns)
            due = self._flush_due()
        if due:
            self._auto_flush()

    def _new_buffer(self, table: TableDef) -> None:
        self._buffers[table.name] = self._buffers[table.row_type] = TableBuffer(table)

    def _flush_due(self) -> bool:
        if not self.auto_flush:
            return False
        if self.durability == "sync":
            return True
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        return self._n_buffered >= self.group_rows or now - self._oldest >= self.group_interval_s

    def flush(self) -> None:
        """Write every buffered row durably; on return they survive a crash. If the log cannot
        be written, raises :class:`LogError`; the rows stay buffered (group mode) or are
        dropped (sync mode), see the module docstring."""
        with self._flush_lock:
            tables = self.detach()
            try:
                self.commit_detached(tables)
            except LogError:
                self._failing = True
                if self.durability == "group":
                    self._requeue(tables)  # the ones not written (commit_detached keeps them)
                raise
            self._failing = False

    def _auto_flush(self) -> None:
        """A flush on the thresholds: in group mode a failure is a warning (the rows stay buffered)."""
        try:
            self.flush()
        except LogError as exc:
            if self.durability == "sync":
                raise
            _log.warning("log %s not written, %d rows kept buffered for the next flush: %s",
                         self.log_dir, self._n_buffered, exc)

    def _requeue(self, tables: list) -> None:
        with self._lock:
            for t in tables:
                self._buffers[t.name].prepend(t)
                self._n_buffered += t.n
            if self._oldest is None:
                self._oldest = time.monotonic()  # the next try after group_interval_s

    def _check_backlog(self, n: int) -> None:
        """Refuse ``n`` more rows when too many wait behind a failing log (after one more try)."""
        if self._n_buffered + n <= _BACKLOG_GROUPS * self.group_rows:
            return
        self.flush()  # raises if the log still cannot be written

    def detach(self) -> list:
        """Take the buffered rows (quickly, under the buffer lock), one item per non-empty
        table, for :meth:`write_detached`; appends go on into fresh buffers meanwhile."""
        with self._lock:
            if self._closed:
                return []
            full = [t for t in (self._buffers[name] for name in TABLES) if t.n]
            if full:
                self._n_detached += 1
            for t in full:
                self._new_buffer(t.table)
                t.ticket = self._n_detached
            self._oldest = None
            self._n_buffered = 0
            return full

    def commit_detached(self, tables: list) -> None:
        """Write detached tables durably: one journal line and fdatasync for all of them, or
        (without the journal) one fsync'ed part per table and date. Thread-safe. If writing
        fails (:class:`LogError`), ``tables`` is left holding the ones not written."""
        if not tables:
            return
        try:
            if self._journal is None:
                for i, table in enumerate(tables):
                    try:
                        self.write_detached(table)
                    except BaseException:
                        del tables[:i]  # the caller learns which were not written
                        raise
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
            target = self._n_detached + (self._n_buffered > 0)
        if self.auto_flush:
            self.flush()
        with self._settled_cv:
            self._settled_cv.wait_for(lambda: self._settled >= target or self._closed)

    def write_detached(self, table: TableBuffer) -> None:
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


def _flush_at_exit(ref) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - interpreter is exiting; nothing left to report to
            pass


def _reject(table, row) -> None:
    """Raise the error of a tuple that does not fit ``table`` (an unknown name, or the wrong length)."""
    t = table_def(table)
    raise ConfigError(f"{t.name} row", row, f"must have {t.width} values ({', '.join(t.columns)})")
