"""The journal's files: where segments live, how they are named, and what a line holds.

Layout::

    <log_dir>/_journal/<writer>-<segment>.jsonl
    <log_dir>/_journal/<writer>.lock         (held while the writer lives)

A segment holds one line per commit: a JSON object mapping a table's name to its column
lists, in the order of the table's row type (:mod:`banditroute.logs.rows`), ``ts`` in epoch
microseconds. A segment's rows become the Parquet parts named by :func:`part_name` (the same
name in every table and date), so compacting a segment again rewrites the same files.

A torn last line (the process died while writing it, so it was never acknowledged) is
ignored; an unreadable line followed by readable ones is corruption: :func:`read_segment`
raises :class:`~banditroute.errors.LogError` naming the file, :func:`read_segment_lines` returns
the readable lines and the numbers of the others (see :mod:`banditroute.logs.quarantine`). A
line is readable when it is JSON and holds, per table, equally long column lists.

>>> import tempfile
>>> directory = Path(tempfile.mkdtemp())
>>> path = directory / "w1-00000000.jsonl"
>>> _ = path.write_bytes(encode_commit({"outcomes": [[1]]}) + b'{"outcomes": [[2]]}\\n{"outc')
>>> [line["outcomes"] for line in read_segment(path)]
[[[1]], [[2]]]
>>> segment_columns(read_segment(path), "outcomes", 1)
[[1, 2]]
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from ..errors import LogError
from .rows import ADDED_SINCE_V2, TABLES

__all__ = ["JOURNAL_DIR", "journal_dir", "segment_path", "part_name", "lock_path", "encode_commit", "read_segment",
           "read_segment_lines", "SegmentLines", "segment_columns", "live_segments"]

JOURNAL_DIR = "_journal"
_SEGMENT = re.compile(r"^(?P<writer>[A-Za-z0-9_.]+)-(?P<segment>\d{8})\.jsonl$")


def journal_dir(log_dir: str | os.PathLike) -> Path:
    """The directory of every writer's journal under ``log_dir``."""
    return Path(log_dir) / JOURNAL_DIR


def segment_path(root: Path, writer: str, segment: int, *, temporary: bool = False) -> Path:
    """A segment's file in the journal directory ``root``; ``temporary``: the hidden name it
    is created under (recovery never looks at hidden names, so never takes a segment being born).

    >>> segment_path(Path("_journal"), "w1", 3).name, segment_path(Path("_journal"), "w1", 3, temporary=True).name
    ('w1-00000003.jsonl', '.w1-00000003.tmp')
    """
    return root / (f".{writer}-{segment:08d}.tmp" if temporary else f"{writer}-{segment:08d}.jsonl")


def part_name(writer: str, segment: int) -> str:
    """The Parquet part name of a segment's rows (the same in every table and date).

    >>> part_name("w1", 3)
    'part-w1-j00000003.parquet'
    """
    return f"part-{writer}-j{segment:08d}.parquet"


def lock_path(log_dir: str | os.PathLike, writer: str) -> Path:
    """The file a live writer keeps locked (see :func:`banditroute.logs.journal.writer_lock`)."""
    return journal_dir(log_dir) / f"{writer}.lock"


def _plain(value):
    """JSON fallback for numpy scalars (np.float64 already is a float)."""
    item = getattr(value, "item", None)
    if item is None:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return item()


def encode_commit(commit: dict[str, list]) -> bytes:
    """One commit (table -> column lists) as a segment line, newline included."""
    return json.dumps(commit, separators=(",", ":"), default=_plain).encode("utf-8", "surrogatepass") + b"\n"


class SegmentLines(NamedTuple):
    """What could be read of a segment: ``commits`` (the readable lines, in order), ``numbers``
    (their 1-based line numbers), ``bad`` (the numbers of unreadable lines followed by a readable
    one: corruption) and ``n_lines`` (complete lines, a torn or unreadable tail included)."""

    commits: list[dict]
    numbers: list[int]
    bad: list[int]
    n_lines: int


def _well_formed(commit) -> bool:
    """A commit maps table names to at most the table's number of column lists, all as long."""
    if not isinstance(commit, dict):
        return False
    for table, columns in commit.items():
        t = TABLES.get(table)
        if t is None or not isinstance(columns, list) or len(columns) > t.width:
            return False
        if not all(isinstance(c, list) and len(c) == len(columns[0]) for c in columns):
            return False
    return True


def read_segment_lines(path: Path) -> SegmentLines:
    """The readable commits of a segment and the numbers of its unreadable lines (see above).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "w1-00000000.jsonl"
    >>> _ = path.write_bytes(b'{"outcomes": [["a"]]}\\n\\x00garbage\\n{"outcomes": [["c"]]}\\n')
    >>> read_segment_lines(path)
    SegmentLines(commits=[{'outcomes': [['a']]}, {'outcomes': [['c']]}], numbers=[1, 3], bad=[2], n_lines=3)
    """
    # the last piece is b"" when the file ends with a newline; otherwise a torn, unacknowledged write
    lines = path.read_bytes().split(b"\n")[:-1]
    out, numbers, bad, unread = [], [], [], []
    for i, line in enumerate(lines, 1):
        try:
            commit = json.loads(line)
        except ValueError:
            commit = None
        if not _well_formed(commit):
            unread.append(i)
            continue
        bad.extend(unread)  # unreadable lines before a readable one: not a torn tail
        unread = []
        out.append(commit)
        numbers.append(i)
    return SegmentLines(out, numbers, bad, len(lines))


def read_segment(path: Path) -> list[dict]:
    """The commits (one dict of table -> column lists each) of a segment, in order; raises
    :class:`~banditroute.errors.LogError` naming the file if a line before the last readable one is not."""
    lines = read_segment_lines(path)
    if lines.bad:
        raise LogError("journal", str(path), f"line {lines.bad[0]} is unreadable and later lines are not")
    return lines.commits


def segment_columns(commits: list[dict], table: str, n_columns: int) -> list[list]:
    """Concatenate one table's column lists across a segment's commits. A commit of an older
    schema lacks the columns added since (nullable, always added last): they are nulls."""
    columns = [[] for _ in range(n_columns)]
    for commit in commits:
        cols = commit.get(table)
        if cols:
            for acc, col in zip(columns, cols):
                acc.extend(col)
            if len(cols) == n_columns - ADDED_SINCE_V2.get(table, 0):
                for acc in columns[len(cols):]:
                    acc.extend([None] * len(cols[0]))
    return columns


def live_segments(log_dir: str | os.PathLike) -> list[tuple[str, int, Path]]:
    """(writer, segment, path) of every journal segment present, oldest first per writer."""
    root = journal_dir(log_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _SEGMENT.match(path.name)
        if m:
            found.append((m["writer"], int(m["segment"]), path))
    return sorted(found)
