"""The log's tables, defined once: one row type per table, its fields the table's columns.

A :class:`DecisionRow`, :class:`OutcomeRow` or :class:`EventRow` is what a router hands to
:meth:`LogWriter.append <banditroute.logs.store.LogWriter.append>`. Each field is annotated
with the Polars dtype of its column, and everything else is derived from these definitions:
the table schemas (:data:`DECISION_SCHEMA`, ...), the writer's column handling and the
journal's column count. A column is added, renamed or moved here and nowhere else (and
:data:`SCHEMA_VERSION` goes up).

Three things differ between a row and the stored table: ``ts`` is an int of epoch
microseconds in a row and a UTC timestamp in the table; the decisions and outcomes have a
column no row carries, ``bucket`` (computed from ``decision_id`` when a batch is stored:
:mod:`banditroute.logs.buckets`); and every table has ``schema_version``, written last.

Row types are plain named tuples: building one costs what building a tuple costs, and the
writer buffers it as it is.

>>> row = OutcomeRow("w1-0", 1_700_000_000_000_000, "w1", 1, quality=1.0, cost_usd=None,
...                  latency_ms=250.0, reward=0.9, status="applied")
>>> row.table, row.status
('outcomes', 'applied')
>>> list(OUTCOME_SCHEMA) == [*TABLES["outcomes"].columns, "bucket", "schema_version"]
True
>>> OUTCOME_SCHEMA["ts"]
Datetime(time_unit='us', time_zone='UTC')
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, NamedTuple, Optional, Union, get_type_hints

import polars as pl

from ..errors import ConfigError
from .buckets import BUCKET_DTYPE, bucket_column

__all__ = ["ADDED_SINCE_V2", "padded", "DecisionRow", "OutcomeRow", "EventRow", "Row", "TableDef", "TABLES", "table_def", "SCHEMA_VERSION",
           "DECISION_SCHEMA", "OUTCOME_SCHEMA", "EVENT_SCHEMA"]

SCHEMA_VERSION = 4  # 2: decisions gained `shadow` and `expected_quality` (nullable); the `events` table
# 3: decisions gained `parent_id` (an escalation's parent decision), outcomes `error` (a failed call); nullable
# 4: decisions and outcomes gained `bucket` (a stable hash of decision_id, computed by the writer: logs/buckets.py)
SCHEMA_VERSION_DTYPE = pl.Int32
TS = pl.Datetime("us", "UTC")


class Stored(NamedTuple):
    """The dtype of a column whose values in a row differ from those stored (see ``EPOCH_US``)."""

    row: pl.DataType
    table: pl.DataType


#: ``ts``: epoch microseconds (int) in a row, a UTC timestamp in the table
EPOCH_US = Stored(pl.Int64, TS)

Str = Annotated[str, pl.String]
OptStr = Annotated[Optional[str], pl.String]
Int = Annotated[int, pl.Int64]
Float = Annotated[float, pl.Float64]
OptFloat = Annotated[Optional[float], pl.Float64]
Strs = Annotated[Sequence[str], pl.List(pl.String)]
Floats = Annotated[Sequence[float], pl.List(pl.Float64)]
EpochUs = Annotated[int, EPOCH_US]


class DecisionRow(NamedTuple):
    """One decision (table ``decisions``).

    >>> TABLES["decisions"].columns[:4]
    ('decision_id', 'ts', 'writer', 'seq')
    """

    decision_id: Str  # "<writer>-<seq>", unique
    ts: EpochUs
    writer: Str
    seq: Int  # the writer's sequence number, shared by its three tables
    policy_version: Str
    context: Str  # the request, as JSON text
    task_types: Strs
    task_probs: Floats  # the task-type posterior used, aligned with task_types
    profiles: Strs  # the eligible profiles, in order
    probabilities: Floats  # aligned with profiles
    profile: Str  # the one executed
    propensity: Float  # its probability
    excluded: Str  # profile -> reason, JSON text
    fallback_reason: OptStr
    shadow: OptStr  # the shadow policies' choices, JSON text
    expected_quality: OptFloat
    parent_id: OptStr = None  # the decision this one escalates (Router.escalate); None for a first choice

    table = "decisions"


class OutcomeRow(NamedTuple):
    """One outcome reported for a decision (table ``outcomes``).

    >>> TABLES["outcomes"].columns[4:]
    ('quality', 'cost_usd', 'latency_ms', 'reward', 'status', 'error')
    """

    decision_id: Str
    ts: EpochUs
    writer: Str
    seq: Int
    quality: OptFloat
    cost_usd: OptFloat
    latency_ms: OptFloat
    reward: OptFloat  # the objective's value
    status: Str  # "applied", "late", "duplicate", ...
    error: OptStr = None  # a failed call's kind ("rate_limited", "timeout", ...); None for an answer

    table = "outcomes"


class EventRow(NamedTuple):
    """A rollout event: canary, promotion, rollback (table ``events``).

    >>> TABLES["events"].columns[3:]
    ('event', 'policy', 'fraction', 'who', 'why', 'policy_version')
    """

    ts: EpochUs
    writer: Str
    seq: Int
    event: Str
    policy: Str
    fraction: OptFloat
    who: Str
    why: Str
    policy_version: Str

    table = "events"


@dataclass(frozen=True, eq=False)
class TableDef:
    """One table as the writer and the reader need it, derived from its row type.

    Attributes
    ----------
    name : str
        The table's directory name ("decisions", ...).
    row_type : type
        Its row type.
    columns : tuple of str
        The row's fields: the table's columns without ``schema_version``.
    row_schema : dict
        Column -> dtype of the values in a row (``ts``: Int64).
    schema : dict
        Column -> dtype stored (``ts``: UTC timestamp), then the computed columns (``bucket``
        for decisions and outcomes), ``schema_version`` last.

    >>> TABLES["events"].width, TABLES["events"].row_schema["ts"]
    (9, Int64)
    """

    name: str
    row_type: type
    columns: tuple
    row_schema: dict
    schema: dict

    @property
    def width(self) -> int:
        """The number of values in a row."""
        return len(self.columns)

    def stored(self) -> list:
        """Expressions turning a frame of rows (``row_schema``) into the stored table (``schema``)."""
        casts = [pl.col(c).cast(dtype) for c, dtype in self.schema.items()
                 if c in self.row_schema and dtype != self.row_schema[c]]
        computed = [bucket_column()] if "bucket" in self.schema else []
        return [*casts, *computed, pl.lit(SCHEMA_VERSION, dtype=SCHEMA_VERSION_DTYPE).alias("schema_version")]


def _define(row_type: type) -> TableDef:
    hints = get_type_hints(row_type, include_extras=True)
    row_schema, schema = {}, {}
    for column, hint in hints.items():
        (dtype,) = hint.__metadata__
        stored = dtype if isinstance(dtype, Stored) else Stored(dtype, dtype)
        row_schema[column], schema[column] = stored.row, stored.table
    if "decision_id" in row_schema:  # the stable hash every reader partitions and resamples by
        schema["bucket"] = BUCKET_DTYPE
    schema["schema_version"] = SCHEMA_VERSION_DTYPE
    return TableDef(row_type.table, row_type, tuple(hints), row_schema, schema)


#: a row of any table
Row = Union[DecisionRow, OutcomeRow, EventRow]

#: every table of the log, by name
TABLES: dict[str, TableDef] = {t.name: t for t in map(_define, (DecisionRow, OutcomeRow, EventRow))}
_BY_KEY = {**TABLES, **{t.row_type: t for t in TABLES.values()}}

#: trailing nullable columns added since schema version 2 (a tuple or column list of an older
#: width is taken with nulls there: code written against version 2 keeps working)
ADDED_SINCE_V2 = {"decisions": 1, "outcomes": 1, "events": 0}


def padded(table: str, values: Sequence, width: int, fill) -> Sequence | None:
    """``values`` of one of ``table``'s accepted widths, padded with ``fill()`` to ``width``
    (None if its width is not accepted). Accepted: the row's width, the width of schema version 2
    (the columns added since padded), and the stored columns without ``schema_version`` (a
    ``bucket`` value given last is dropped: the writer computes it)."""
    n = len(values)
    if n == width:
        return values
    if n == width + 1 and "bucket" in TABLES[table].schema:  # the stored columns, bucket included:
        return values[:width]  # the writer computes the bucket from decision_id (it is nothing else)
    if ADDED_SINCE_V2[table] and n == width - ADDED_SINCE_V2[table]:
        return (*values, *(fill() for _ in range(width - n)))
    return None


DECISION_SCHEMA = TABLES["decisions"].schema
OUTCOME_SCHEMA = TABLES["outcomes"].schema
EVENT_SCHEMA = TABLES["events"].schema


def table_def(table) -> TableDef:
    """The table named ``table`` ("decisions", "outcomes" or "events") or of row type ``table``.

    >>> table_def(DecisionRow) is table_def("decisions")
    True
    >>> table_def("decision")
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: table must be 'decisions', 'outcomes' or 'events', got 'decision'
    """
    try:
        return _BY_KEY[table]
    except (KeyError, TypeError):  # TypeError: unhashable
        raise ConfigError("table", table, "must be 'decisions', 'outcomes' or 'events'") from None
