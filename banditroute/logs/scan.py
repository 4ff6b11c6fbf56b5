"""Reading a table of the log: its Parquet parts and the rows still in journal segments.

>>> import tempfile
>>> scan_table(tempfile.mkdtemp(), "outcomes").collect().columns[:3]
['decision_id', 'ts', 'writer']
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from ..errors import ConfigError
from .frames import segment_frame
from .rows import TABLES
from .segments import live_segments, part_name, read_segment

__all__ = ["scan_table"]


def scan_table(log_dir: str | os.PathLike, table: str) -> pl.LazyFrame:
    """Lazily scan every part of ``table`` ("decisions", "outcomes" or "events") under ``log_dir``.

    The columns are the table's schema (:data:`~banditroute.logs.rows.DECISION_SCHEMA`, ...);
    parts of an older schema version get nulls for the columns they lack.

    >>> import tempfile
    >>> scan_table(tempfile.mkdtemp(), "events").collect().columns[:3]
    ['ts', 'writer', 'seq']
    """
    if table not in TABLES:
        raise ConfigError("table", table, "must be 'decisions', 'outcomes' or 'events'")
    schema = TABLES[table].schema
    # The journal first, then the parts: a segment compacted in between shows up as parts, and
    # its rows are skipped below for every date whose part exists (never missed, never twice).
    pending = []
    for writer, number, path in live_segments(log_dir):
        try:
            pending.append((writer, number, read_segment(path)))
        except FileNotFoundError:
            continue  # compacted meanwhile: its parts exist by now
    root = Path(log_dir) / table
    parts = sorted(root.glob("date=*/part-*.parquet"))
    frames = []
    if parts:
        frames.append(pl.scan_parquet([str(p) for p in parts], hive_partitioning=False,
                                      missing_columns="insert", extra_columns="ignore", schema=schema))
    if pending:
        present = {(p.parent.name, p.name) for p in parts}
        for writer, number, commits in pending:
            frame = segment_frame(table, commits)
            if frame is None:
                continue
            name = part_name(writer, number)
            dates = frame.get_column("ts").dt.date()
            done = [d for d in dates.unique().to_list() if (f"date={d.isoformat()}", name) in present]
            if done:
                frame = frame.filter(~dates.is_in(done))
            frames.append(frame.lazy())
    if not frames:
        return pl.LazyFrame(schema=schema)
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
