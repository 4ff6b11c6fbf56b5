"""The log as Delta Lake tables (``log_table="delta"``, the ``delta`` extra: ``deltalake``).

Layout: each table directory is a Delta table, partitioned by ``date`` (hive ``date=YYYY-MM-DD``
directories, as in a plain log), its transaction log inside it::

    <log_dir>/decisions/_delta_log/00000000000000000000.json ...
    <log_dir>/decisions/date=YYYY-MM-DD/part-<writer>-j<segment>.parquet

The Delta schema is the stored schema (:data:`~banditroute.logs.rows.DECISION_SCHEMA`, ...:
``bucket`` and ``schema_version`` included) plus the partition column ``date`` (a date, the UTC
day of ``ts``), so ``polars.scan_delta(log_dir + "/decisions")``, DuckDB's ``delta_scan`` and
Spark read it; :func:`banditroute.scan_table` returns the stored columns, as for a plain log.

The journal stays the write-ahead log (a Delta log always commits through it): compacting a
segment writes its Parquet parts as in a plain log (:func:`~banditroute.logs.parts.compact_segment`,
the same file names) and then *registers* them, one Delta commit per table and segment: the
parts' add actions and the application transaction ``(app_id="banditroute-<writer>",
version=<segment>)``, no rewrite. Before writing, the table's transaction version of that
writer is read; a segment at or below it is already in and is skipped, so a compaction
repeated after a crash (between the commit and the segment's deletion) adds nothing. A crash
between writing the parts and committing leaves files no Delta reader sees (``vacuum`` removes
them); the segment stays in the journal until committed, and its next compaction registers
the parts (rewritten, or left by the attempt that died) exactly once. A concurrent commit of
the same writer's transaction fails (Delta's check of application ids), the transaction
version is read again, and the segment counts as in. This needs each writer's segments
committed in order (the journal compacts them in order, and recovery skips the later segments
of a writer whose earlier one another process holds), and a writer id's segment numbers never
reused (a writer starts after its id's transaction version: :func:`next_segment`).

Writers in several processes commit to one table concurrently: delta-rs's optimistic
concurrency on the local file system (a commit file is created only if absent) retries an
append that lost the race, and appends never conflict.

>>> table_uri("logs", "decisions")
'logs/decisions'
>>> is_delta_log("/nonexistent")
False
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import polars as pl

from ..errors import ConfigError, LogError
from .rows import TABLES
from .segments import live_segments, part_name

try:
    import fcntl
except ImportError:  # not POSIX: no journal, so no Delta log either (it commits through the journal)
    fcntl = None

__all__ = ["DELTA_LOG", "APP_PREFIX", "DeltaState", "is_delta_log", "require", "table_uri", "delta_schema",
           "ensure_tables", "next_segment", "commit_segment", "table_state", "forget_files", "table_report",
           "optimize", "vacuum"]

DELTA_LOG = "_delta_log"
APP_PREFIX = "banditroute-"  # + writer id: the application id of a writer's segment transactions
PARTITION = "date"
_STAT_CHARS = 32  # string min/max only where no value is longer (Delta truncates longer ones)
_RETRIES = 100  # delta-rs's own retries of a commit that lost the race to another writer
_ATTEMPTS = 5  # our retries of a commit that failed anyway (after re-reading the transaction version)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_log = logging.getLogger("banditroute.logs.delta")


def is_delta_log(log_dir: str | os.PathLike) -> bool:
    """Whether ``log_dir``'s tables are Delta tables (``decisions/_delta_log`` exists)."""
    return (Path(log_dir) / "decisions" / DELTA_LOG).is_dir()


def require():
    """The ``deltalake`` module, or :class:`ConfigError` saying how to install it."""
    try:
        import deltalake
        import deltalake.transaction  # AddAction, create_table_with_add_actions
    except ImportError:
        raise ConfigError("log_table", "delta", "needs the delta extra: pip install 'banditroute[delta]'") from None
    return deltalake


def table_uri(log_dir: str | os.PathLike, table: str) -> str:
    """The Delta table of ``table`` under ``log_dir`` (its directory)."""
    return os.path.join(os.fspath(log_dir), table)


def delta_schema(table: str):
    """The Delta schema of ``table``: its stored schema, then the partition column ``date``."""
    import arro3.core  # a dependency of deltalake: Arrow schemas without pyarrow

    empty = pl.DataFrame(schema={**TABLES[table].schema, PARTITION: pl.Date})
    return require().Schema.from_arrow(arro3.core.Table.from_arrow(empty).schema)


def _load(uri: str):
    return require().DeltaTable(uri)


def _version_of(delta_table, writer: str) -> int:
    """The highest segment of ``writer`` committed to the table (-1: none)."""
    version = delta_table.transaction_version(APP_PREFIX + writer)
    return -1 if version is None else version


# -- add actions -----------------------------------------------------------------------------------
def _ms_iso(us: int) -> str:
    """A timestamp statistic as Delta writes it: ISO 8601, UTC, truncated to milliseconds."""
    ms = us // 1000
    when = _EPOCH + dt.timedelta(milliseconds=ms)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _stats(frame: pl.DataFrame) -> dict:
    """Delta file statistics of a part's rows: numRecords, and per scalar column its null
    count and (for numbers, timestamps and short strings) its min and max."""
    mins, maxs, nulls = {}, {}, {}
    for s in frame.get_columns():
        if s.dtype.is_nested():
            continue
        nulls[s.name] = s.null_count()
        values = s.drop_nulls()
        if values.is_empty():
            continue
        if s.dtype.is_integer():
            lo, hi = int(values.min()), int(values.max())
        elif s.dtype.is_float():
            lo, hi = float(values.min()), float(values.max())
            if not (math.isfinite(lo) and math.isfinite(hi)) or values.is_nan().any():
                continue
        elif isinstance(s.dtype, pl.Datetime):
            us = values.dt.epoch("us")
            lo, hi = _ms_iso(us.min()), _ms_iso(us.max())
        elif s.dtype == pl.String and values.str.len_chars().max() <= _STAT_CHARS:
            lo, hi = values.min(), values.max()
        else:
            continue
        mins[s.name], maxs[s.name] = lo, hi
    return {"numRecords": frame.height, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def _add(uri: str, file: Path, frame: pl.DataFrame | None):
    """The add action of a part already in the table's directory (``frame``: its rows, for the
    statistics; None: only the row count, from the file's footer)."""
    from deltalake.transaction import AddAction

    st = os.stat(file)
    stats = _stats(frame) if frame is not None else {
        "numRecords": pl.scan_parquet(file).select(pl.len()).collect().item()}
    return AddAction(path=file.relative_to(uri).as_posix(), size=st.st_size,
                     partition_values={PARTITION: file.parent.name[len(PARTITION) + 1:]},
                     modification_time=int(st.st_mtime * 1000), data_change=True,
                     stats=json.dumps(stats, separators=(",", ":")))


def _by_date(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """A frame's rows per ``date=`` directory name, as :func:`~banditroute.logs.parts.write_parts` splits them."""
    ts = frame.get_column("ts")
    if ts.min().date() == ts.max().date():
        return {f"{PARTITION}={ts.min().date().isoformat()}": frame}
    dates = ts.dt.date()
    return {f"{PARTITION}={d.isoformat()}": frame.filter(dates == d) for d in dates.unique().sort()}


# -- the tables --------------------------------------------------------------------------------------
def ensure_tables(log_dir: str | os.PathLike) -> None:
    """Make each table of ``log_dir`` a Delta table if it is not one yet. A plain log's parts
    are registered by the first commit (no rewrite), except those of segments still in the
    journal (their compaction registers them): a plain log becomes a Delta log with its history.
    Switch with no writer running on the directory: a plain writer's later parts are not registered."""
    deltalake = require()
    if all(deltalake.DeltaTable.is_deltatable(table_uri(log_dir, t)) for t in TABLES):
        return
    with _creating(log_dir):
        _create_tables(log_dir, deltalake)


@contextmanager
def _creating(log_dir: str | os.PathLike):
    """One process at a time creates tables (delta-rs would commit a racing creation again on top)."""
    fd = os.open(os.path.join(os.fspath(log_dir), ".delta-create.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create_tables(log_dir: str | os.PathLike, deltalake) -> None:
    from deltalake.transaction import create_table_with_add_actions

    pending = {part_name(writer, number) for writer, number, _ in live_segments(log_dir)}
    for table in TABLES:
        uri = table_uri(log_dir, table)
        if deltalake.DeltaTable.is_deltatable(uri):
            continue
        actions = []
        for f in sorted(Path(uri).glob(f"{PARTITION}=*/part-*.parquet")):
            if f.name not in pending:
                try:
                    actions.append(_add(uri, f, None))
                except (pl.exceptions.PolarsError, OSError) as exc:  # a damaged part: `banditroute doctor` lists it
                    _log.warning("part %s left out of the Delta table: %s", f, exc)
        try:
            create_table_with_add_actions(uri, delta_schema(table), actions, mode="error", partition_by=[PARTITION],
                                          name=table)
        except deltalake.exceptions.DeltaError as exc:
            if not deltalake.DeltaTable.is_deltatable(uri):  # not created meanwhile by another writer
                raise LogError(f"log_dir/{table}", uri, f"cannot be made a Delta table ({exc})") from None


def next_segment(log_dir: str | os.PathLike, writer: str) -> int:
    """The first segment number a writer may use: above every segment of its id committed already,
    and every part of its id on disk (a plain log's, registered without a transaction)."""
    prefix = f"part-{writer}-j"
    on_disk = [int(f.name[len(prefix):-len(".parquet")]) for t in TABLES
               for f in Path(table_uri(log_dir, t)).glob(f"{PARTITION}=*/{prefix}*.parquet")
               if f.name[len(prefix):-len(".parquet")].isdigit()]
    return 1 + max([*on_disk, *(_version_of(_load(table_uri(log_dir, t)), writer) for t in TABLES)], default=-1)


def commit_segment(log_dir: str | os.PathLike, table: str, writer: str, number: int,
                   frame: pl.DataFrame | None, write) -> bool:
    """Write (``write(frame)``) and register one table's parts of segment ``number`` of ``writer``
    in one Delta commit carrying the transaction ``(banditroute-<writer>, number)``; nothing if the
    table's transaction version for the writer is ``number`` or more. Parts of the segment left in
    the table's directory by an attempt that died before its commit are registered too (the same
    rows). Returns whether this call committed. Raises :class:`LogError` if the commit fails."""
    deltalake = require()
    uri = table_uri(log_dir, table)
    delta_table = _load(uri)
    if _version_of(delta_table, writer) >= number:
        return False  # committed already: a compaction repeated after a crash
    frames = {}
    if frame is not None:
        write(frame)
        frames = _by_date(frame)
    name = part_name(writer, number)
    files = sorted(Path(uri).glob(f"{PARTITION}=*/{name}"))
    if not files:
        return False
    actions = [_add(uri, f, frames.get(f.parent.name)) for f in files]
    app = deltalake.Transaction(APP_PREFIX + writer, number, int(time.time() * 1000))
    props = deltalake.CommitProperties(max_commit_retries=_RETRIES, app_transactions=[app])
    error = None
    for _ in range(_ATTEMPTS):
        try:
            delta_table.create_write_transaction(actions, "append", delta_table.schema(), partition_by=[PARTITION],
                                                 commit_properties=props)
            return True
        except deltalake.exceptions.DeltaError as exc:  # lost to this writer's own commit, or a real failure
            error = exc
            delta_table = _load(uri)
            if _version_of(delta_table, writer) >= number:
                return False
    raise LogError(f"log_dir/{table}", uri, f"Delta commit of {name} failed ({error})")


class DeltaState(NamedTuple):
    """One version of a Delta table: its data ``files`` and its ``delta_table`` (None: the
    table is being created)."""

    files: list[Path]
    delta_table: object

    def committed(self, writer: str) -> int:
        """The highest segment of ``writer`` in this version (-1: none)."""
        return -1 if self.delta_table is None else _version_of(self.delta_table, writer)


def table_state(log_dir: str | os.PathLike, table: str) -> DeltaState | None:
    """The current version of ``table``'s Delta table; None if the log is plain Parquet."""
    uri = table_uri(log_dir, table)
    if not os.path.isdir(os.path.join(uri, DELTA_LOG)):
        return None
    deltalake = require()
    try:
        delta_table = deltalake.DeltaTable(uri)
    except deltalake.exceptions.TableNotFoundError:
        return DeltaState([], None)  # its first commit is on its way
    return DeltaState(sorted(Path(p) for p in delta_table.file_uris()), delta_table)


def forget_files(log_dir: str | os.PathLike, table: str, paths: list[Path]) -> None:
    """Commit the removal of ``paths`` (parts of ``table`` moved aside: damaged) from its Delta table."""
    deltalake = require()
    remove = getattr(deltalake.transaction, "RemoveAction", None)
    if remove is None:
        raise LogError(f"log_dir/{table}", table_uri(log_dir, table),
                       f"cannot forget a damaged part with deltalake {deltalake.__version__} (needs >= 1.6.6)")
    uri = os.path.abspath(table_uri(log_dir, table))
    delta_table = _load(uri)
    active = {os.path.abspath(p) for p in delta_table.file_uris()}
    now = int(time.time() * 1000)
    actions = [remove(
        Path(p).relative_to(uri).as_posix(), True, now,
        partition_values={PARTITION: Path(p).parent.name[len(PARTITION) + 1:]})
        for p in map(os.path.abspath, paths) if p in active]
    if actions:
        delta_table.create_write_transaction(actions, "append", delta_table.schema(), partition_by=[PARTITION],
                                             commit_properties=deltalake.CommitProperties(max_commit_retries=_RETRIES))


def _on_disk(uri: str) -> dict[str, int]:
    """The data files in a table's directory (hidden temporary files aside), by path, with their sizes."""
    return {f.relative_to(uri).as_posix(): f.stat().st_size for f in Path(uri).glob(f"{PARTITION}=*/*.parquet")
            if not f.name.startswith(".")}


def table_report(log_dir: str | os.PathLike) -> list[dict]:
    """Per table: its Delta version, its files, rows and bytes, the files in its directory it
    does not reference (removed by optimize, or written by a compaction that died before its
    commit: ``vacuum`` deletes them), and those it references that are missing (moved aside)."""
    out = []
    for table in TABLES:
        uri = table_uri(log_dir, table)
        delta_table = _load(uri)
        adds = pl.DataFrame(delta_table.get_add_actions(flatten=True))
        active = set(adds.get_column("path").to_list()) if adds.height else set()
        on_disk = _on_disk(uri)
        unreferenced = {p: n for p, n in on_disk.items() if p not in active}
        out.append({"table": table, "version": delta_table.version(), "files": len(active),
                    "rows": int(adds.get_column("num_records").sum()) if adds.height else 0,
                    "bytes": int(adds.get_column("size_bytes").sum()) if adds.height else 0,
                    "unreferenced": sorted(unreferenced), "unreferenced_bytes": sum(unreferenced.values()),
                    "missing": sorted(active - set(on_disk))})
    return out


def optimize(log_dir: str | os.PathLike, *, target_size: int | None = None) -> dict[str, dict]:
    """Rewrite each table's small files into larger ones (``optimize.compact()``, per date; the
    rows are unchanged, the small files stay on disk until :func:`vacuum`). Writers may run."""
    deltalake = require()
    props = deltalake.CommitProperties(max_commit_retries=_RETRIES)
    return {t: _load(table_uri(log_dir, t)).optimize.compact(target_size=target_size, commit_properties=props)
            for t in TABLES}


def vacuum(log_dir: str | os.PathLike, retention_hours: int) -> dict[str, list[str]]:
    """Delete the files each table no longer references (removed by optimize, or left by a
    compaction that died before its commit) that are older than ``retention_hours``. Readers
    still reading an older version lose its removed files; below an hour, a running writer's
    compaction could lose the parts it is about to commit (``banditroute compact`` refuses that)."""
    return {t: _load(table_uri(log_dir, t)).vacuum(retention_hours=retention_hours, dry_run=False,
                                                    enforce_retention_duration=False, full=True)
            for t in TABLES}
