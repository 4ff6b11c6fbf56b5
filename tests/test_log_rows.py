"""The log's row types: one definition per table, used by the writer, the journal and the reader.

A row type's fields are its table's columns, in order; a row appended as a row type reads back
field for field (from Parquet parts and from the journal); the older ``append(table, tuple)``
form writes the same bytes; a row that does not fit its table is refused when appended, with
the columns it should have had."""

import datetime as dt

import polars as pl

import ope.buckets
import pytest

import banditroute as br
from banditroute.logs import journal
from banditroute.logs.rows import TABLES, DecisionRow, EventRow, OutcomeRow
from banditroute.logs.store import DECISION_SCHEMA, EVENT_SCHEMA, OUTCOME_SCHEMA, SCHEMA_VERSION, LogWriter

TS_US = 1_700_000_000_000_000  # 2023-11-14 22:13:20 UTC
DAY_US = 86_400 * 10**6


def decision(i: int, **changes) -> DecisionRow:
    row = DecisionRow(decision_id=f"w-{i}", ts=TS_US + i, writer="w", seq=i, policy_version="v1",
                      context='{"task_type": "code"}', task_types=["chat", "code"], task_probs=[0.25, 0.75],
                      profiles=["small", "large"], probabilities=[0.4, 0.6], profile="large", propensity=0.6,
                      excluded='{"medium": "budget"}', fallback_reason=None, shadow=None, expected_quality=0.8)
    return row._replace(**changes)


def outcome(i: int, **changes) -> OutcomeRow:
    row = OutcomeRow(decision_id=f"w-{i}", ts=TS_US + i, writer="w", seq=100 + i, quality=1.0, cost_usd=None,
                     latency_ms=250.0, reward=0.9, status="applied")
    return row._replace(**changes)


def event(i: int, **changes) -> EventRow:
    row = EventRow(ts=TS_US + i, writer="w", seq=200 + i, event="canary", policy="linucb", fraction=0.1,
                   who="ops", why="try it", policy_version="v1")
    return row._replace(**changes)


# varied rows of every table: nulls and values, lists of other lengths, a second date
ROWS = {
    "decisions": [decision(0), decision(1, fallback_reason="no_feasible", shadow='{"ts": "small"}',
                                        expected_quality=None, task_types=[], task_probs=[]),
                  decision(2, ts=TS_US + DAY_US, profiles=["a", "b", "c"], probabilities=[0.2, 0.3, 0.5])],
    "outcomes": [outcome(0), outcome(1, quality=None, cost_usd=0.01, reward=None, status="late"),
                 outcome(2, ts=TS_US + DAY_US)],
    "events": [event(0), event(1, event="rollback", fraction=None), event(2, ts=TS_US + DAY_US)],
}
ROW_TYPES = {"decisions": DecisionRow, "outcomes": OutcomeRow, "events": EventRow}
SCHEMAS = {"decisions": DECISION_SCHEMA, "outcomes": OUTCOME_SCHEMA, "events": EVENT_SCHEMA}


def read_rows(log_dir, table: str) -> list[tuple]:
    """A table's rows as plain tuples in the row type's field order (``ts`` back in epoch us)."""
    frame = br.scan_table(log_dir, table).collect()
    assert frame.get_column("schema_version").to_list() == [SCHEMA_VERSION] * frame.height
    if table != "events":  # the writer's computed column: the stable hash of the id
        assert frame.get_column("bucket").to_list() == ope.buckets.stable_bucket(frame.get_column("decision_id")).tolist()
        frame = frame.drop("bucket")
    frame = frame.drop("schema_version").with_columns(pl.col("ts").dt.epoch("us"))
    return sorted(frame.rows(), key=lambda r: r[ROW_TYPES[table]._fields.index("seq")])


def log_files(log_dir) -> dict:
    """Every part and journal segment under ``log_dir``: relative path -> bytes."""
    return {p.relative_to(log_dir).as_posix(): p.read_bytes()
            for pattern in ("*/date=*/*.parquet", "_journal/*.jsonl") for p in log_dir.glob(pattern)}


# -- one definition per table --------------------------------------------------------------------

@pytest.mark.parametrize("table", ["decisions", "outcomes", "events"])
def test_a_row_types_fields_are_its_tables_columns_in_order(table):
    row_type, schema = ROW_TYPES[table], SCHEMAS[table]
    computed = ["bucket"] if table != "events" else []  # no row carries it: the writer computes it
    assert list(schema) == [*row_type._fields, *computed, "schema_version"]
    assert schema["schema_version"] == pl.Int32 and schema["ts"] == pl.Datetime("us", "UTC")
    assert row_type.table == table and TABLES[table].row_type is row_type
    # in a row, ts is epoch microseconds; every other column has the stored dtype
    assert TABLES[table].row_schema == {**{c: t for c, t in schema.items() if c not in ("schema_version", "bucket")},
                                        "ts": pl.Int64}


def test_the_schemas_are_the_ones_logs_were_written_with():
    """SCHEMA_VERSION 4, spelled out: a change here must come with a new schema version."""
    assert SCHEMA_VERSION == 4
    assert list(DECISION_SCHEMA.items()) == [
        ("decision_id", pl.String), ("ts", pl.Datetime("us", "UTC")), ("writer", pl.String), ("seq", pl.Int64),
        ("policy_version", pl.String), ("context", pl.String), ("task_types", pl.List(pl.String)),
        ("task_probs", pl.List(pl.Float64)), ("profiles", pl.List(pl.String)),
        ("probabilities", pl.List(pl.Float64)), ("profile", pl.String), ("propensity", pl.Float64),
        ("excluded", pl.String), ("fallback_reason", pl.String), ("shadow", pl.String),
        ("expected_quality", pl.Float64), ("parent_id", pl.String), ("bucket", pl.Int64),
        ("schema_version", pl.Int32)]
    assert list(OUTCOME_SCHEMA.items()) == [
        ("decision_id", pl.String), ("ts", pl.Datetime("us", "UTC")), ("writer", pl.String), ("seq", pl.Int64),
        ("quality", pl.Float64), ("cost_usd", pl.Float64), ("latency_ms", pl.Float64), ("reward", pl.Float64),
        ("status", pl.String), ("error", pl.String), ("bucket", pl.Int64), ("schema_version", pl.Int32)]
    assert list(EVENT_SCHEMA.items()) == [
        ("ts", pl.Datetime("us", "UTC")), ("writer", pl.String), ("seq", pl.Int64), ("event", pl.String),
        ("policy", pl.String), ("fraction", pl.Float64), ("who", pl.String), ("why", pl.String),
        ("policy_version", pl.String), ("schema_version", pl.Int32)]


# -- rows read back field for field --------------------------------------------------------------

@pytest.mark.parametrize("use_journal", [False, True], ids=["parquet", "journal"])
def test_rows_appended_as_row_types_read_back_field_for_field(tmp_path, use_journal):
    w = LogWriter(tmp_path, auto_flush=False, journal=use_journal, writer_id="w")
    for rows in ROWS.values():
        for row in rows:
            w.append(row)
    w.flush()
    if use_journal:  # acknowledged, not compacted yet: read from the journal segment
        assert [s[:2] for s in journal.live_segments(tmp_path)] == [("w", 0)]
        assert not list(tmp_path.glob("*/date=*/*.parquet"))
        for table, rows in ROWS.items():
            assert read_rows(tmp_path, table) == [tuple(r) for r in rows]
    w.close()
    assert journal.live_segments(tmp_path) == []
    for table, rows in ROWS.items():
        got = read_rows(tmp_path, table)
        assert got == [tuple(r) for r in rows]
        assert [ROW_TYPES[table](*g) for g in got] == rows  # and as row types: field for field
    # the second date got a partition of its own in every table
    assert {p.parent.name for p in tmp_path.glob("*/date=*/*.parquet")} == {"date=2023-11-14", "date=2023-11-15"}


def test_the_timestamp_is_stored_as_utc_microseconds(tmp_path):
    w = LogWriter(tmp_path, durability="sync")
    w.append(outcome(0, ts=TS_US + 7))
    ts = br.scan_table(tmp_path, "outcomes").collect().get_column("ts").item()
    assert ts == dt.datetime(2023, 11, 14, 22, 13, 20, 7, tzinfo=dt.timezone.utc)


# -- the tuple form and the row form write the same ---------------------------------------------

def write_both_ways(log_dir, *, row_api: bool, batch: bool, use_journal: bool) -> LogWriter:
    w = LogWriter(log_dir, auto_flush=False, journal=use_journal, writer_id="w")
    for table, rows in ROWS.items():
        if batch:
            columns = [list(c) for c in zip(*rows)]
            w.append_columns(ROW_TYPES[table] if row_api else table, columns)
        else:
            for row in rows:
                if row_api:
                    w.append(row)
                else:
                    w.append(table, tuple(row))
    w.flush()
    return w


@pytest.mark.parametrize("batch", [False, True], ids=["append", "append_columns"])
@pytest.mark.parametrize("use_journal", [False, True], ids=["parquet", "journal"])
def test_the_tuple_form_and_the_row_form_write_the_same_bytes(tmp_path, batch, use_journal):
    by_tuple = write_both_ways(tmp_path / "tuple", row_api=False, batch=batch, use_journal=use_journal)
    by_row = write_both_ways(tmp_path / "row", row_api=True, batch=batch, use_journal=use_journal)
    files = log_files(tmp_path / "tuple")
    assert files and files == log_files(tmp_path / "row")  # the journal segment too, before compaction
    by_tuple.close()
    by_row.close()
    files = log_files(tmp_path / "tuple")
    assert files and files == log_files(tmp_path / "row")
    for table in ROWS:
        assert br.scan_table(tmp_path / "tuple", table).collect().equals(
            br.scan_table(tmp_path / "row", table).collect())


# -- rows that do not fit ------------------------------------------------------------------------

@pytest.mark.parametrize("use_journal", [False, True], ids=["parquet", "journal"])
def test_a_tuple_of_the_wrong_length_is_refused_and_the_log_stays_readable(tmp_path, use_journal):
    w = LogWriter(tmp_path, auto_flush=False, journal=use_journal)
    w.append("outcomes", tuple(outcome(0)))
    short = tuple(outcome(1))[:-2]
    message = (r"^outcomes row must have 10 values \(decision_id, ts, writer, seq, quality, cost_usd, latency_ms, "
               r"reward, status, error\), got \('w-1', ")
    with pytest.raises(br.ConfigError, match=message) as info:
        w.append("outcomes", short)
    assert info.value.field == "outcomes row" and info.value.value == short
    with pytest.raises(br.ConfigError, match=r"^events row must have 9 values \(ts, writer, "):
        w.append("events", tuple(decision(2)))  # a row of another table
    with pytest.raises(br.ConfigError, match=r"^columns must hold 10 columns for outcomes \(decision_id, .*\), got 8$"):
        w.append_columns(OutcomeRow, [[v] for v in short])
    w.append("outcomes", tuple(outcome(3))[:-1])  # schema version 2's width: taken, error null
    w.append("outcomes", (*outcome(4), 12345))  # the stored columns, a bucket last: taken, the bucket recomputed
    w.append_columns("outcomes", [[v] for v in (*outcome(5), None)])
    w.close()
    assert read_rows(tmp_path, "outcomes") == [tuple(outcome(i)) for i in (0, 3, 4, 5)]  # nothing torn


def test_an_unknown_table_or_a_bare_tuple_is_refused(tmp_path):
    w = LogWriter(tmp_path, auto_flush=False)
    with pytest.raises(br.ConfigError, match=r"^table must be 'decisions', 'outcomes' or 'events', got 'outcome'$"):
        w.append("outcome", tuple(outcome(0)))
    with pytest.raises(br.ConfigError, match=r"^table must be 'decisions', 'outcomes' or 'events', got 'outcome'$"):
        w.append_columns("outcome", [[v] for v in outcome(0)])
    message = r"^row must be a DecisionRow, OutcomeRow or EventRow \(or a tuple after its table's name\), got 'tuple'$"
    with pytest.raises(br.ConfigError, match=message):
        w.append(tuple(outcome(0)))  # the table's name forgotten
    w.close()
    assert br.scan_table(tmp_path, "outcomes").collect().height == 0
