"""Parquet parts: a frame of one table written durably, one part per date partition.

::

    <log_dir>/<table>/date=YYYY-MM-DD/part-<writer>-<seq>.parquet     (a flush)
    <log_dir>/<table>/date=YYYY-MM-DD/part-<writer>-j<segment>.parquet (a compacted journal segment)

(In a Delta log, :mod:`banditroute.logs.delta`, the compacted parts are registered in the table's
Delta log too.)

A part is written to a hidden temporary file, fsync'ed, renamed into place and its directory
fsync'ed: a reader never sees a half-written part, and a part that exists survives a crash
of the process or of the machine.

>>> import tempfile
>>> from banditroute.logs.rows import TABLES, OutcomeRow
>>> from banditroute.logs.frames import TableBuffer
>>> buffer = TableBuffer(TABLES["outcomes"])
>>> _ = buffer.add_columns([[v] for v in OutcomeRow("w-0", 1_700_000_000_000_000, "w", 0, 1.0, None, 2.5, 0.9, "ok")])
>>> log_dir = Path(tempfile.mkdtemp())
>>> write_parts(log_dir, "outcomes", buffer.frame(), lambda: "part-w-00000000.parquet")
>>> [p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*.parquet")]
['outcomes/date=2023-11-14/part-w-00000000.parquet']
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import polars as pl

from ..errors import LogError
from .delta import commit_segment, is_delta_log
from .durable import fsync_dir, make_dirs
from .frames import segment_frame
from .rows import TABLES
from .segments import part_name, read_segment

__all__ = ["write_parts", "compact_segment"]


def write_parts(log_dir: Path, table: str, df: pl.DataFrame, name) -> None:
    """Write ``df`` durably as one part per date (``name()`` gives each part's file name): a
    hidden temporary file, fsync'ed, renamed into place, its directory fsync'ed. If a file
    cannot be written, no part is written (:class:`LogError`)."""
    ts = df.get_column("ts")
    if ts.min().date() == ts.max().date():  # the usual case: one partition, no filtering
        parts = [(ts.min().date(), df)]
    else:
        dates = ts.dt.date()
        parts = [(date, df.filter(dates == date)) for date in dates.unique().sort()]
    # every partition's file first, then their renames: a write that fails (a full disk) leaves
    # no part behind, so the caller may retry the whole frame without writing a row twice
    written = []
    try:
        for date, part in parts:
            directory = log_dir / table / f"date={date.isoformat()}"
            make_dirs(directory)  # the new partition's entry must survive too
            # unique per process and thread: two compactions of one segment may race (a dead
            # writer's compactor finishing while the next writer recovers it); both write the same rows
            file = name()
            tmp = directory / f".{file}.{os.getpid()}-{threading.get_ident()}.tmp"
            written.append((tmp, directory, file))
            with open(tmp, "wb") as fh:
                part.write_parquet(fh, compression="zstd", statistics=True)
                fh.flush()
                os.fsync(fh.fileno())
    except (OSError, pl.exceptions.ComputeError) as exc:  # polars reports a failed write (ENOSPC) as ComputeError
        for tmp, _, _ in written:
            _remove(tmp)
        raise LogError(f"log_dir/{table}", str(log_dir / table), f"cannot be written ({_reason(exc)})") from None
    try:
        for tmp, directory, file in written:
            os.replace(tmp, directory / file)
            fsync_dir(directory)
    except OSError as exc:
        raise LogError(f"log_dir/{table}", str(log_dir / table), f"cannot be written ({exc.strerror})") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text.rsplit("error: ", 1)[-1] if "No space left" in text else text


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def compact_segment(log_dir: Path, writer: str, number: int, path: Path) -> None:
    """Write a journal segment's rows as Parquet parts named after the segment (idempotent); in
    a Delta log, register them too, one commit per table (:func:`~banditroute.logs.delta.commit_segment`)."""
    commits = read_segment(path)
    name = part_name(writer, number)
    delta = is_delta_log(log_dir)
    for table in TABLES:
        frame = segment_frame(table, commits)
        if delta:
            commit_segment(log_dir, table, writer, number, frame,
                           lambda df, table=table: write_parts(Path(log_dir), table, df, lambda: name))
        elif frame is not None:
            write_parts(Path(log_dir), table, frame, lambda: name)
