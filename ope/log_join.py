"""Scanning banditroute's Parquet logs lazily and joining decisions with their outcomes.

Layout (see DESIGN section 5)::

    <dir>/decisions/date=YYYY-MM-DD/part-<writer>-<seq>.parquet
    <dir>/outcomes/date=YYYY-MM-DD/part-<writer>-<seq>.parquet

Everything is a polars LazyFrame over ``scan_parquet`` globs collected with the streaming engine, so
only the selected columns are read and the data never has to fit in memory decompressed. Unknown
(newer) columns are ignored, missing ones read as nulls (``parent_id`` is read in every file).

The outcome join is explicit about late, duplicate and missing outcomes:

- ``wait_window``: an outcome counts only if ``outcome.ts - decision.ts <=
  wait_window`` (None: no limit); later outcomes are treated as missing;
- ``duplicates``: several outcome rows for one decision: ``"first"`` (earliest
  ``ts``, default), ``"last"`` (latest) or ``"mean"`` (mean of each metric);
- ``default_reward``: rounds with no (counted) outcome are dropped (None, default)
  or get this reward;
- ``escalations``: root decisions only (``"first"``, default) or all (``"all"``; :mod:`ope.escalations`).

A damaged Parquet file never surfaces as a bare Polars error: the files are read through an IO
source streaming the native scan; when it fails, halves are read down to the damaged files.
``LogSnapshot.take(log_dir, on_corrupt="raise")`` (default): :class:`~ope.errors.CorruptLogError`
names the file; ``"skip"``: left out, listed in :attr:`LogSnapshot.skipped` once collected.
"""

from __future__ import annotations

import atexit
import datetime as dt
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from ope.buckets import BUCKET_DTYPE, filled_bucket
from ope.errors import CorruptLogError, InvalidConfigError, LogsNotFoundError
from ope.escalations import check_escalations, select_rounds, with_parent_id

try:
    from polars.io.plugins import register_io_source
except ImportError:  # polars < 1.13: a plain scan, whose errors at collect do not name the file
    register_io_source = None

__all__ = ["LogSnapshot", "SkippedFile", "scan_decisions", "scan_outcomes", "join_logs", "action_space", "METRICS", "filled_bucket"]

METRICS = ("reward", "quality", "cost_usd", "latency_ms")
_DUPLICATE_RULES = ("first", "last", "mean")
_SEP = "\x1f"
_NO_OUTCOMES = {"decision_id": pl.String, "bucket": BUCKET_DTYPE, "ts": pl.Datetime("us", "UTC"), **dict.fromkeys(METRICS, pl.Float64)}
_READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError)
_END = object()
_STREAMS: dict = {}  # stop event -> thread of every batch stream running
_BATCH_ROWS = 262_144  # rows handed over at a time


class SkippedFile(NamedTuple):
    """A damaged Parquet file left out of a reading (``on_corrupt="skip"``): what is wrong with
    it, and how many of its rows were read before it failed."""

    path: str
    problem: str
    n_rows_read: int


@dataclass(frozen=True)
class LogSnapshot:
    """The Parquet files of a log directory at one moment (sorted paths per table).

    Pass it wherever a ``log_dir`` is taken: every scan of one reading then sees the same
    files, though writers keep adding parts (a reader that lists the directory more than once
    could count rows it then cannot find).

    >>> import tempfile
    >>> snap = LogSnapshot.take(tempfile.mkdtemp())
    >>> snap.decisions, snap.outcomes
    ((), ())
    """

    root: str
    decisions: tuple[str, ...]
    outcomes: tuple[str, ...]
    #: "raise" (a damaged file raises CorruptLogError naming it) or "skip" (left out, listed in ``skipped``)
    on_corrupt: str = "raise"
    #: the damaged files left out so far (filled as the scans are collected)
    skipped: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def take(cls, log_dir: "str | Path | LogSnapshot", *, on_corrupt: str = "raise") -> "LogSnapshot":
        """The files of ``log_dir`` now (a snapshot is returned as it is); ``on_corrupt``: see above."""
        if isinstance(log_dir, LogSnapshot):
            return log_dir
        if on_corrupt not in ("raise", "skip"):
            raise InvalidConfigError("on_corrupt", f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        root = Path(log_dir)
        return cls(str(log_dir), _table_files(root, "decisions"), _table_files(root, "outcomes"), on_corrupt=on_corrupt)

    def __str__(self) -> str:
        return self.root


def _table_files(root: Path, kind: str) -> tuple[str, ...]:
    """A table's Parquet files, sorted; of a Delta table (``log_table="delta"``) only its current version's."""
    table = root / kind
    if (table / "_delta_log").is_dir():
        try:
            from deltalake import DeltaTable
        except ImportError:
            raise InvalidConfigError("log_dir", f"{table} is a Delta table: pip install 'banditroute[delta]'") from None
        return tuple(sorted(uri.removeprefix("file://") for uri in DeltaTable(str(table)).file_uris()))
    return tuple(sorted(str(p) for p in table.glob("**/*.parquet"))) if table.is_dir() else ()


def _scan(log_dir: "str | Path | LogSnapshot", kind: str) -> pl.LazyFrame:
    snapshot = LogSnapshot.take(log_dir)
    files = list(getattr(snapshot, kind))
    if not files:
        raise LogsNotFoundError("log_dir", f"log_dir has no {kind}/**/*.parquet files: {log_dir}")
    if register_io_source is None:
        return _query(files, None, None, None)
    schema = None
    while schema is None:  # the first file's, as Polars takes it
        try:
            schema = pl.read_parquet_schema(files[0])
        except _READ_ERRORS as exc:
            _leave_out(snapshot, kind, [(files[0], _first_line(exc))], files, 0, None, None, exc)
            files = files[1:]
            if not files:
                raise LogsNotFoundError("log_dir", f"log_dir has no readable {kind} files: {log_dir}") from None
    return _io_source(snapshot, kind, files, {**(with_parent_id(schema) if kind == "decisions" else schema), "bucket": BUCKET_DTYPE})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def _query(files: list[str], schema, columns, predicate, n_rows=None) -> pl.LazyFrame:
    lf = pl.scan_parquet(files, hive_partitioning=False, missing_columns="insert", extra_columns="ignore",
                         schema=schema) if files else pl.LazyFrame(schema=schema)
    lf = lf if predicate is None else lf.filter(predicate)
    lf = lf if columns is None else lf.select(columns)
    return lf if n_rows is None else lf.head(n_rows)


def _put(handover: queue.Queue, stop: threading.Event, item) -> bool:
    """Hand ``item`` over unless the reader stopped (False: it did)."""
    while not stop.is_set():
        try:
            handover.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _batches(lf: pl.LazyFrame):
    """A query's rows in order, a batch at a time: ``sink_batches`` in a thread, through a short
    queue (``collect_batches`` would end quietly where a damaged file makes Polars panic). Giving
    up never waits: the feeder sees the stop at its next batch."""
    if not hasattr(lf, "sink_batches"):  # polars < 1.32
        yield lf.collect()
        return
    handover, stop = queue.Queue(maxsize=2), threading.Event()

    def run() -> None:
        try:
            lf.sink_batches(lambda batch: not _put(handover, stop, batch), chunk_size=_BATCH_ROWS)
            item = _END
        except BaseException as exc:  # noqa: BLE001 - re-raised by the reader, a panic too
            item = exc
        _put(handover, stop, item)
        _STREAMS.pop(stop, None)

    thread = _STREAMS[stop] = threading.Thread(target=run, name="ope-scan", daemon=True)
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
    """No stream may outlive the interpreter (its Polars thread would call into Python)."""
    for stop, thread in list(_STREAMS.items()):
        stop.set()
        thread.join(timeout=10)


def _damaged(files: list[str], schema, columns) -> list[tuple[str, str]]:
    """The files whose ``columns`` fail to read: halves are read until failures are single files."""
    if len(files) == 1:
        try:
            _query(files, schema, columns, None).collect()
        except _READ_ERRORS as exc:
            return [(files[0], _first_line(exc))]
        return []
    out = []
    for half in (files[: len(files) // 2], files[len(files) // 2:]):
        try:
            for _ in _batches(_query(half, schema, columns, None)):
                pass
        except _READ_ERRORS:
            out += _damaged(half, schema, columns)
    return out


def _leave_out(snapshot: LogSnapshot, kind: str, bad, files, given: int, schema, predicate, exc):
    """Raise naming the first of ``bad``, or skip them: the files to read on and how many of
    their rows were given already."""
    if snapshot.on_corrupt == "raise":
        path, why = bad[0]
        more = f" ({len(bad) - 1} more {kind} file(s) too)" if len(bad) > 1 else ""
        raise CorruptLogError(kind, f"{kind} file {path} cannot be read: {why}{more}", path=path) from exc
    paths = {p for p, _ in bad}
    first = min(files.index(p) for p in paths)
    before = _query(files[:first], schema, None, predicate).select(pl.len()).collect().item() if first else 0
    for path, why in bad:
        if all(s.path != path for s in snapshot.skipped):
            snapshot.skipped.append(SkippedFile(path, why, max(given - before, 0) if path == files[first] else 0))
    if given <= before:  # nothing of a damaged file was given: read on past what was
        return [p for p in files if p not in paths], given
    return [p for p in files[first + 1:] if p not in paths], 0  # it gave its first row groups


def _io_source(snapshot: LogSnapshot, kind: str, parts: list[str], schema) -> pl.LazyFrame:
    def source(with_columns, predicate, n_rows, _batch_size):
        needed = None if with_columns is None else sorted(
            {*with_columns, *([] if predicate is None else predicate.meta.root_names())})
        files, skip, left = list(parts), 0, n_rows  # the files still read; rows of them already given
        while True:
            pos = 0
            try:
                for batch in _batches(_query(files, schema, with_columns, predicate,
                                             None if left is None else skip + left)):
                    start, pos = pos, pos + batch.height
                    if pos <= skip:
                        continue
                    batch = batch.slice(max(skip - start, 0), left)
                    left = None if left is None else left - batch.height
                    yield batch
                    if left == 0:
                        return
                return
            except _READ_ERRORS as exc:
                bad = _damaged(files, schema, needed)
                if not bad:
                    raise  # every file reads on its own: not a damaged file
                files, skip = _leave_out(snapshot, kind, bad, files, max(pos, skip), schema, predicate, exc)

    return register_io_source(source, schema=schema)


def scan_decisions(log_dir: str | Path) -> pl.LazyFrame:
    """Lazily scan every decision file under ``log_dir/decisions``.

    >>> scan_decisions("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no decisions/**/*.parquet files: /nonexistent
    """
    return _scan(log_dir, "decisions")


def scan_outcomes(log_dir: str | Path) -> pl.LazyFrame:
    """Lazily scan every outcome file under ``log_dir/outcomes``.

    >>> scan_outcomes("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no outcomes/**/*.parquet files: /nonexistent
    """
    return _scan(log_dir, "outcomes")


def _check_join_options(wait_window: dt.timedelta | None, default_reward: float | None, duplicates: str) -> None:
    if wait_window is not None and (not isinstance(wait_window, dt.timedelta) or wait_window < dt.timedelta(0)):
        raise InvalidConfigError("wait_window", f"wait_window must be a non-negative timedelta or None, got {wait_window!r}")
    if default_reward is not None and (isinstance(default_reward, bool) or not isinstance(default_reward, (int, float))
                                       or not np.isfinite(default_reward)):
        raise InvalidConfigError("default_reward", f"default_reward must be a finite number or None, got {default_reward!r}")
    if duplicates not in _DUPLICATE_RULES:
        raise InvalidConfigError("duplicates", f"duplicates must be one of {_DUPLICATE_RULES}, got {duplicates!r}")


def _collapse(outcomes: pl.LazyFrame, duplicates: str) -> pl.LazyFrame:
    metrics = [pl.col(m) for m in METRICS]
    if duplicates == "mean":
        aggs = [m.mean() for m in metrics] + [pl.col("outcome_ts").min(), pl.len().alias("n_outcomes")]
    else:
        pick = pl.col("outcome_ts").arg_min() if duplicates == "first" else pl.col("outcome_ts").arg_max()
        aggs = [m.get(pick) for m in [*metrics, pl.col("outcome_ts")]] + [pl.len().alias("n_outcomes")]
    return outcomes.group_by("decision_id").agg(aggs)


def join_logs(
    log_dir: str | Path,
    *,
    wait_window: dt.timedelta | None = None,
    default_reward: float | None = None,
    duplicates: str = "first",
    escalations: str = "first",
    partition: tuple[int, int] | None = None,
    row_index: str = "log",
) -> pl.LazyFrame:
    """Decisions joined with their outcomes, as a LazyFrame.

    Parameters
    ----------
    log_dir : str or Path
        Directory holding ``decisions/`` and ``outcomes/``.
    wait_window : datetime.timedelta or None
        Count an outcome only if it arrived within this time after the decision.
    default_reward : float or None
        Reward of rounds without a counted outcome; None drops them.
    duplicates : {"first", "last", "mean"}
        How several outcomes for one decision are combined.
    escalations : {"first", "all"}
        Root decisions only (``"first"``: escalated ones are left out with their outcomes) or all.
    partition : (int, int) or None
        ``(i, n)``: keep only decisions (and outcomes) whose stable ``bucket`` (:mod:`ope.buckets`)
        is ``i`` modulo ``n``: the same rounds on every machine and library version. Collecting
        the ``n`` partitions one after the other needs about ``1/n`` of the join's memory.
    row_index : {"log", "partition"}
        What ``row_index`` numbers: every decision of the log, or only the partition's (then the
        partition is filtered as the files are read: the scan's memory is bounded by the partition).

    Returns
    -------
    polars.LazyFrame
        Every decision column (``bucket`` filled: :func:`filled_bucket`) plus ``row_index`` (the
        decision's position in the scan of the sorted decision files; rows come in no particular order),
        ``reward``, ``quality``, ``cost_usd``, ``latency_ms``, ``outcome_ts`` and
        ``n_outcomes`` (0 for a missing outcome).

    >>> join_logs("/nonexistent", duplicates="median")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: duplicates must be one of ('first', 'last', 'mean'), got 'median'
    """
    _check_join_options(wait_window, default_reward, duplicates)
    check_escalations(escalations)
    if row_index not in ("log", "partition"):
        raise InvalidConfigError("row_index", f"row_index must be 'log' or 'partition', got {row_index!r}")
    decisions = scan_decisions(log_dir)
    outcomes = scan_outcomes(log_dir) if LogSnapshot.take(log_dir).outcomes else pl.LazyFrame(schema=_NO_OUTCOMES)
    if partition is not None:
        index, count = partition
        if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
            raise InvalidConfigError("partition", f"partition must be (i, n) with 0 <= i < n, got {partition!r}")
        # the stored bucket's test is pushed into the file scans; files older than schema 4 have none: computed
        stored, mine = pl.col("bucket").is_null() | (pl.col("bucket") % count == index), filled_bucket() % count == index
        outcomes = outcomes.filter(stored).filter(mine)
        decisions = decisions.filter(stored).filter(mine) if row_index == "partition" else decisions
    decisions = select_rounds(decisions.with_row_index("row_index"), escalations).with_columns(filled_bucket())
    if partition is not None and row_index == "log":
        decisions = decisions.filter(pl.col("bucket") % count == index)
    outcomes = outcomes.select(pl.col("decision_id"), pl.col("ts").alias("outcome_ts"), *[pl.col(m).cast(pl.Float64) for m in METRICS])
    if wait_window is not None:
        stamps = decisions.select(pl.col("decision_id"), pl.col("ts").alias("decision_ts"))
        outcomes = (outcomes.join(stamps, on="decision_id", how="inner")
                    .filter((pl.col("outcome_ts") - pl.col("decision_ts")) <= pl.lit(wait_window)).drop("decision_ts"))
    collapsed = _collapse(outcomes, duplicates)
    how = "inner" if default_reward is None else "left"
    joined = decisions.join(collapsed, on="decision_id", how=how)
    joined = joined.with_columns(pl.col("n_outcomes").fill_null(0).cast(pl.UInt32))
    if default_reward is not None:
        joined = joined.with_columns(pl.col("reward").fill_null(float(default_reward)))
    return joined


def action_space(log_dir: str | Path) -> tuple[str, ...]:
    """Union of the logged ``profiles`` lists, in order of first appearance.

    >>> action_space("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no decisions/**/*.parquet files: /nonexistent
    """
    lists = (scan_decisions(log_dir).group_by("profiles").agg(pl.col("ts").min())
             .with_columns(pl.col("profiles").list.join(_SEP).alias("__key")).sort("ts", "__key").collect(engine="streaming"))
    names: dict[str, None] = {}
    for profiles in lists.get_column("profiles").to_list():
        for name in profiles or ():
            names.setdefault(name, None)
    return tuple(names)
