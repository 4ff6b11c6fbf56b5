"""Damaged log files: finding them, moving them aside, and keeping what can still be read.

A Parquet part can be damaged on disk (truncated, bytes overwritten), a journal segment too (an
unreadable line followed by readable ones). Such a file must not stop a writer from opening
the directory nor a replica from replaying the log at start-up; it is *quarantined*: moved to
``<log_dir>/_quarantine/<its path under log_dir>`` (rename, then fsync of both directories),
with a note beside it (``<name>.quarantine.json``: where it was, what was wrong, when). No
reader looks there: the readers glob ``<table>/date=*/part-*.parquet`` and ``_journal/*.jsonl``.

A damaged segment of a writer that is gone is *salvaged* first (:func:`salvage_segment`, called
by :func:`~banditroute.logs.journal.recover`): its readable lines are compacted into the parts
the segment would have become (rows of a table and date whose part already exists are left to
that part, as readers do), then the original file is quarantined. A damaged part is quarantined
whole: a Parquet file carries no checksum of its values, so only what the reader rejects (a
truncated file, a broken page header or compressed page) is found; a byte changed inside a
plain value reads back as a wrong value.

>>> import tempfile
>>> log_dir = Path(tempfile.mkdtemp())
>>> (log_dir / "outcomes" / "date=2024-01-01").mkdir(parents=True)
>>> part = log_dir / "outcomes" / "date=2024-01-01" / "part-w-00000000.parquet"
>>> _ = part.write_bytes(b"PAR1 cut short")
>>> part_problem(part)
'parquet: File out of specification: The file must end with PAR1 or PARE'
>>> moved = quarantine(log_dir, part, part_problem(part))
>>> [(q.original, q.path.relative_to(log_dir).as_posix()) for q in quarantined_files(log_dir)]
[('outcomes/date=2024-01-01/part-w-00000000.parquet', '_quarantine/outcomes/date=2024-01-01/part-w-00000000.parquet')]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import polars as pl

from .durable import fsync_dir, make_dirs, write_all
from .frames import segment_frame
from .rows import TABLES
from .segments import encode_commit, live_segments, part_name, read_segment_lines

__all__ = [
    "QUARANTINE_DIR",
    "READ_ERRORS",
    "FileCheck",
    "QuarantinedFile",
    "check_log",
    "check_part",
    "check_segment",
    "n_quarantined",
    "part_problem",
    "quarantine",
    "quarantined_files",
    "readable_commits",
    "salvage_segment",
    "segment_damage",
]

QUARANTINE_DIR = "_quarantine"
_NOTE = ".quarantine.json"
_log = logging.getLogger("banditroute.logs.quarantine")

#: What reading a damaged part may raise (polars panics on some malformed input).
READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError)


class QuarantinedFile(NamedTuple):
    """A file moved aside: ``path`` (where it is now), ``original`` (its path relative to the
    log directory, POSIX style), ``reason`` (what was wrong, what was kept) and ``ts_us`` (when,
    epoch microseconds; None if its note is missing)."""

    path: Path
    original: str
    reason: str
    ts_us: int | None


class FileCheck(NamedTuple):
    """One log file checked by reading all of it: ``kind`` ("part" or "segment"), ``problem``
    (None if it reads whole), ``readable`` (what could be read, in words) and ``n_rows`` (rows
    readable, None if unknown)."""

    path: Path
    kind: str
    problem: str | None
    readable: str
    n_rows: int | None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def part_problem(path: Path, *, schema=None, columns: list[str] | None = None) -> str | None:
    """What is wrong with a Parquet part (None if it reads whole): ``columns`` of it, or all, read
    as ``schema`` (a table's schema; None: the file's own)."""
    try:
        lf = pl.scan_parquet(str(path), hive_partitioning=False, missing_columns="insert",
                             extra_columns="ignore", schema=schema)
        (lf if columns is None else lf.select(columns)).collect()
    except FileNotFoundError:
        return "the file is gone (moved or deleted while being read)"
    except READ_ERRORS as exc:
        return _first_line(exc)
    return None


def _claim(dest: Path) -> tuple[Path, int]:
    """A free name for ``dest`` (``dest``, ``dest.1``, ...) and the fd of its note, created
    exclusively: two processes quarantining at once never share a name."""
    i = 0
    while True:
        target = dest if i == 0 else dest.with_name(f"{dest.name}.{i}")
        i += 1
        if target.exists():
            continue
        try:
            return target, os.open(target.with_name(target.name + _NOTE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue


def quarantine(log_dir: str | os.PathLike, path: str | os.PathLike, reason: str) -> QuarantinedFile | None:
    """Move ``path`` (a file under ``log_dir``) to ``log_dir/_quarantine/<same relative path>``,
    durably, with a note of ``reason``. Returns None if the file was gone (moved by another process)."""
    log_dir, path = Path(log_dir), Path(path)
    try:
        original = path.relative_to(log_dir).as_posix()
    except ValueError:
        original = path.name
    dest = log_dir / QUARANTINE_DIR / original
    make_dirs(dest.parent)
    dest, fd = _claim(dest)
    ts_us = time.time_ns() // 1000
    note = dest.with_name(dest.name + _NOTE)
    try:
        write_all(fd, json.dumps({"original": original, "reason": reason, "ts_us": ts_us}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        note.unlink()
        return None
    fsync_dir(dest.parent)
    fsync_dir(path.parent)
    _log.warning("quarantined %s: %s", original, reason)
    return QuarantinedFile(dest, original, reason, ts_us)


def quarantined_files(log_dir: str | os.PathLike, *, since_us: int | None = None) -> list[QuarantinedFile]:
    """Every file under ``log_dir/_quarantine`` (moved there at or after ``since_us``, if given), by path.

    >>> import tempfile
    >>> quarantined_files(tempfile.mkdtemp())
    []
    """
    root = Path(log_dir) / QUARANTINE_DIR
    out = []
    for path in sorted(_moved(root)):
        try:
            note = json.loads(path.with_name(path.name + _NOTE).read_text())
        except (OSError, ValueError):
            note = {"original": path.relative_to(root).as_posix(), "reason": "", "ts_us": None}
        if since_us is None or (note["ts_us"] is not None and note["ts_us"] >= since_us):
            out.append(QuarantinedFile(path, note["original"], note["reason"], note["ts_us"]))
    return out


def n_quarantined(log_dir: str | os.PathLike) -> int:
    """How many files are under ``log_dir/_quarantine`` (their notes not read: a gauge scraped often).

    >>> import tempfile
    >>> n_quarantined(tempfile.mkdtemp())
    0
    """
    return sum(1 for _ in _moved(Path(log_dir) / QUARANTINE_DIR))


def _moved(root: Path):
    """The files moved to the quarantine directory ``root`` (not their notes)."""
    if not root.is_dir():
        return
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith(_NOTE) and not path.name.startswith("."):
            yield path


# -- journal segments ------------------------------------------------------------------------------
def readable_commits(commits: list[dict]) -> tuple[list[dict], list[int]]:
    """The commits whose rows make frames of their tables, and the indices of the others."""
    good, bad = [], []
    for i, commit in enumerate(commits):
        try:
            for table in commit:
                segment_frame(table, [commit])
        except Exception:  # noqa: BLE001 - whatever a malformed value raises, the line is unreadable
            bad.append(i)
            continue
        good.append(commit)
    return good, bad


def _segment_reading(path: Path) -> tuple[list[dict], list[int], int]:
    """(readable commits, 1-based numbers of unreadable lines, number of complete lines)."""
    lines = read_segment_lines(path)
    good, bad = readable_commits(lines.commits)
    # a line that is JSON but does not make rows is as unreadable as one that is not JSON
    return good, sorted(lines.bad + [lines.numbers[i] for i in bad]), lines.n_lines


def _lines_problem(bad: list[int]) -> str:
    return f"line(s) {', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''} unreadable"


def segment_damage(path: Path) -> str | None:
    """What is wrong with a journal segment: None if every line before its (torn) tail reads."""
    _, bad, _ = _segment_reading(path)
    return _lines_problem(bad) if bad else None


def _n_rows(commits: list[dict]) -> int:
    return sum(len(cols[0]) for commit in commits for cols in commit.values() if cols)


def _not_yet_compacted(log_dir: Path, writer: str, number: int, commits: list[dict]) -> list[dict]:
    """The commits without the rows of a (table, date) whose part of this segment exists."""
    name = part_name(writer, number)
    epoch = dt.datetime(1970, 1, 1)
    out = []
    for commit in commits:
        kept = {}
        for table, cols in commit.items():
            at = TABLES[table].columns.index("ts")
            days = [(epoch + dt.timedelta(microseconds=ts)).date() for ts in cols[at]]
            done = {d for d in set(days) if (log_dir / table / f"date={d.isoformat()}" / name).exists()}
            keep = [i for i, d in enumerate(days) if d not in done]
            if keep:
                kept[table] = [[col[i] for i in keep] for col in cols]
        if kept:
            out.append(kept)
    return out


def salvage_segment(log_dir: str | os.PathLike, writer: str, number: int, path: Path, compact) -> QuarantinedFile | None:
    """Compact the readable lines of a damaged segment (``compact(writer, number, path)`` as in
    :func:`~banditroute.logs.journal.recover`), then quarantine it. The caller holds its lock."""
    log_dir = Path(log_dir)
    good, bad, n_lines = _segment_reading(path)
    todo = _not_yet_compacted(log_dir, writer, number, good)
    kept = f"{len(good)} readable line(s), {_n_rows(good)} row(s), kept in {part_name(writer, number)}"
    if todo:
        tmp = path.with_name(f".{path.stem}.salvage-{os.getpid()}.tmp")  # no segment name: recovery never takes it
        try:
            tmp.write_bytes(b"".join(encode_commit(c) for c in todo))
            compact(writer, number, tmp)
        except OSError:
            raise  # cannot write: the segment stays for the next recovery
        except Exception as exc:  # noqa: BLE001 - its lines read, yet do not compact: keep the file whole
            kept = f"its readable lines could not be compacted ({_first_line(exc)})"
        finally:
            tmp.unlink(missing_ok=True)
    return quarantine(log_dir, path, f"{_lines_problem(bad)} (of {n_lines}); {kept}")


# -- checking everything (banditroute doctor) --------------------------------------------------------
def check_part(path: Path) -> FileCheck:
    """Read a whole part; if it fails, say what could still be read (the footer's row count, the
    columns that read)."""
    try:
        n = pl.read_parquet(path).height
        return FileCheck(path, "part", None, f"{n} rows", n)
    except READ_ERRORS as exc:
        problem = _first_line(exc)
    try:
        columns = list(pl.read_parquet_schema(path))
        n = pl.scan_parquet(path).select(pl.len()).collect().item()
    except READ_ERRORS:
        return FileCheck(path, "part", problem, "nothing: its footer (schema, row count) is unreadable", None)
    broken = [c for c in columns if part_problem(path, columns=[c]) is not None]
    readable = f"footer intact ({n} rows); {len(columns) - len(broken)} of {len(columns)} columns read"
    return FileCheck(path, "part", problem, readable + (f" (not: {', '.join(broken)})" if broken else ""),
                     n if not broken else None)


def check_segment(path: Path) -> FileCheck:
    """Read a whole journal segment: which lines are unreadable, how many rows the others hold."""
    good, bad, n_lines = _segment_reading(path)
    readable = f"{len(good)} of {n_lines} lines ({_n_rows(good)} rows)"
    return FileCheck(path, "segment", _lines_problem(bad) if bad else None, readable, _n_rows(good))


def check_log(log_dir: str | os.PathLike) -> list[FileCheck]:
    """Check every Parquet part and journal segment under ``log_dir`` (reading all of each)."""
    root = Path(log_dir)
    out = [check_part(p) for table in TABLES for p in sorted((root / table).glob("date=*/part-*.parquet"))]
    for _, _, path in live_segments(root):
        try:
            out.append(check_segment(path))
        except FileNotFoundError:
            continue  # compacted meanwhile: its parts were checked, or will be next time
    return out
