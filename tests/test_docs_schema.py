"""The README's tables of the log's columns are the schema the writer uses (names, order, types).

The README is what a user (and outside code reading the Parquet) relies on; a column added to
``banditroute/logs/rows.py`` without its row in the README fails here, and so does a README
row whose type is not the stored dtype.
"""

import re
from pathlib import Path

import polars as pl
import pytest

from banditroute.logs.rows import TABLES

README = Path(__file__).resolve().parent.parent / "README.md"

#: how the README writes each stored dtype
DTYPE_WORDS = {
    pl.String: "string", pl.Int64: "int64", pl.Int32: "int32", pl.Float64: "float64",
    pl.Datetime("us", "UTC"): "datetime (us, UTC)",
    pl.List(pl.String): "list[string]", pl.List(pl.Float64): "list[float64]",
}


def documented_columns(text: str, table: str) -> list[tuple[str, str]]:
    """The (column, type) rows of the README table headed ``| <table> column | type | ...``."""
    lines = text.splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith(f"| {table} column |")]
    assert len(head) == 1, f"README.md needs exactly one '| {table} column | type | ...' table, found {len(head)}"
    rows = []
    for line in lines[head[0] + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([a-z_]+)`", cells[0])
        assert match, f"README.md {table} table: a column cell is not a `name`: {line!r}"
        rows.append((match.group(1), re.sub(r" \(JSON\)$", "", cells[1])))
    return rows


def stored_columns(table: str) -> list[tuple[str, str]]:
    return [(name, DTYPE_WORDS[dtype]) for name, dtype in TABLES[table].schema.items()]


@pytest.mark.parametrize("table", ["decisions", "outcomes", "events"])
def test_readme_columns_are_the_schema(table):
    documented = documented_columns(README.read_text(), table)
    stored = stored_columns(table)
    missing = [c for c, _ in stored if c not in dict(documented)]
    extra = [c for c, _ in documented if c not in dict(stored)]
    assert not missing and not extra, f"README.md {table} table: missing {missing}, not in the schema {extra}"
    assert [c for c, _ in documented] == [c for c, _ in stored], f"README.md {table} table: column order differs"
    wrong = [(c, d, s) for (c, d), (_, s) in zip(documented, stored) if d != s]
    assert not wrong, f"README.md {table} table: types (column, README, stored): {wrong}"


def test_a_missing_or_mistyped_column_is_noticed():
    """The check is not vacuous: a README without one column, or with a wrong type, differs."""
    text = README.read_text()
    assert documented_columns(text, "outcomes") == stored_columns("outcomes")
    dropped = text.replace("| `error` | string | a failed call's kind (null for an answer) |\n", "")
    assert dropped != text
    assert [c for c, _ in documented_columns(dropped, "outcomes")] != [c for c, _ in stored_columns("outcomes")]
    retyped = text.replace("| `propensity` | float64 |", "| `propensity` | float32 |")
    assert retyped != text
    assert documented_columns(retyped, "decisions") != stored_columns("decisions")


def test_schema_version_is_documented():
    from banditroute.logs.rows import SCHEMA_VERSION
    assert f"Schema version {SCHEMA_VERSION};" in README.read_text()
