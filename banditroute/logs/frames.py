"""Rows into Polars frames: the writer's buffer of one table, and a journal segment's rows.

Rows arrive one at a time (a row type, or a tuple in its column order) or as a batch of
columns; both become frames of the table's row dtypes (:attr:`TableDef.row_schema
<banditroute.logs.rows.TableDef>`), and :meth:`TableBuffer.frame` turns them into the stored
table (``ts`` a UTC timestamp, ``bucket`` and ``schema_version`` added).

>>> from banditroute.logs.rows import TABLES, OutcomeRow
>>> buffer = TableBuffer(TABLES["outcomes"])
>>> buffer.add(OutcomeRow("w-0", 1_700_000_000_000_000, "w", 0, 1.0, None, 2.5, 0.9, "applied"))
>>> buffer.frame().select("decision_id", "ts", "schema_version").row(0)
('w-0', datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=zoneinfo.ZoneInfo(key='UTC')), 4)
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import polars as pl

from .rows import TABLES, TableDef
from .segments import segment_columns

__all__ = ["TableBuffer", "build_column", "columns_frame", "segment_frame"]


def build_column(name: str, values, dtype) -> pl.Series:
    """A column from row values; list columns are built flat (one Series, not one per row).

    >>> build_column("p", [("a", "b"), (), ("c",)], pl.List(pl.String)).to_list()
    [['a', 'b'], [], ['c']]
    """
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


def columns_frame(table: TableDef, columns) -> pl.DataFrame:
    """A frame of ``table``'s row dtypes from its columns (a sequence of value sequences, in order)."""
    return pl.DataFrame([build_column(name, values, dtype)
                         for (name, dtype), values in zip(table.row_schema.items(), columns)])


class TableBuffer:
    """Buffered rows of one table: single rows as tuples (``rows``), batches as ready frames.

    ``n`` counts every buffered row: :meth:`add` appends to ``rows`` and adds one to it (the
    writer's hot path does both inline). ``ticket`` is set by the writer that detaches the buffer.
    """

    __slots__ = ("table", "rows", "frames", "n", "ticket")

    def __init__(self, table: TableDef):
        self.table = table
        self.rows: list[tuple] = []
        self.frames: list[pl.DataFrame] = []
        self.n = 0
        self.ticket = 0

    @property
    def name(self) -> str:
        return self.table.name

    def add(self, row: tuple) -> None:
        """Buffer one row (a row type, or a tuple in its field order)."""
        self.rows.append(row)
        self.n += 1

    def add_columns(self, columns) -> int:
        """Buffer a batch given column by column; returns its number of rows."""
        self._seal()
        frame = columns_frame(self.table, columns)
        self.frames.append(frame)
        self.n += frame.height
        return frame.height

    def prepend(self, older: "TableBuffer") -> None:
        """Put the rows of ``older`` (a detached buffer whose commit failed) before these."""
        older._seal()  # own class
        self.frames[:0] = older.frames
        self.n += older.n

    def frame(self) -> pl.DataFrame:
        """Every buffered row as the stored table (at least one row must be buffered)."""
        self._seal()
        df = pl.concat(self.frames, how="vertical") if len(self.frames) > 1 else self.frames[0]
        return df.with_columns(*self.table.stored())

    def _seal(self) -> None:
        if self.rows:
            self.frames.append(columns_frame(self.table, list(zip(*self.rows))))
            self.rows = []

    def journal_columns(self) -> list[list]:
        """The buffered rows as plain column lists (frames first: they are the older rows)."""
        columns = [[] for _ in range(self.table.width)]
        for frame in self.frames:
            for acc, series in zip(columns, frame.get_columns()):
                acc.extend(series.to_list())
        if self.rows:
            for acc, values in zip(columns, zip(*self.rows)):
                acc.extend(values)
        return columns


def segment_frame(table: str, commits: list) -> pl.DataFrame | None:
    """One table's rows of a journal segment (its commits) as the stored table (None if none)."""
    t = TABLES[table]
    columns = segment_columns(commits, table, t.width)
    if not columns[0]:
        return None
    buffer = TableBuffer(t)
    buffer.add_columns(columns)
    return buffer.frame()
