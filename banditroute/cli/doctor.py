"""``banditroute doctor``: check every file of a log directory; list the damaged and the quarantined.

Every Parquet part and journal segment is read whole (see
:mod:`banditroute.logs.quarantine`). Exit code 0 when nothing is damaged, 1 otherwise. Nothing
is changed unless ``--quarantine`` is given: then damaged parts are moved to
``<log_dir>/_quarantine``, and segments of stopped writers are recovered the way a writer
opening the directory recovers them (a damaged one has its readable lines compacted, then is
moved aside).

On a Delta log (``log_table="delta"``) it also reports each table's Delta version, files, rows
and the files in its directory the table does not reference (replaced by optimize, or written by
a compaction that died before its commit; ``banditroute compact --vacuum-hours H`` deletes
them), and the files it references that are missing (damage: exit 1); with ``--quarantine`` a
damaged part moved aside, and any missing file, is removed from its table in a Delta commit.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--log-dir", "logs"])
>>> args.log_dir, args.quarantine, args.json
('logs', False, False)
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``doctor`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("doctor", help="check every log file; list damaged and quarantined files",
                              description="Check every file of a log directory, reading each whole; list the damaged "
                                          "and the quarantined ones. Exit 1 if anything is damaged. Changes nothing "
                                          "unless --quarantine.")
    p.add_argument("--log-dir", required=True, help="log directory")
    p.add_argument("--quarantine", action="store_true",
                   help="move damaged files to LOG_DIR/_quarantine (a stopped writer's damaged journal "
                        "segment: its readable lines are compacted first)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Check the directory, print the findings; 1 if anything is damaged, else 0."""
    from ..logs import delta
    from ..logs.journal import recover
    from ..logs.parts import compact_segment
    from ..logs.quarantine import check_log, quarantine, quarantined_files

    root = Path(args.log_dir)
    if not root.is_dir():
        raise ConfigError("--log-dir", args.log_dir, "is not a directory")
    checks = check_log(root)
    damaged = [c for c in checks if c.problem is not None]
    moved, kept = [], []
    if args.quarantine and damaged:
        for c in damaged:
            if c.kind == "part" and quarantine(root, c.path, c.problem) is not None:
                moved.append(c.path)
        recover(root, lambda writer, number, path: compact_segment(root, writer, number, path))
        segments = [c.path for c in damaged if c.kind == "segment"]
        moved += [p for p in segments if not p.exists()]
        kept = [p for p in segments if p.exists()]  # a live writer's: it holds the segment
    tables = delta.table_report(root) if delta.is_delta_log(root) else None
    lost = [(t["table"], p) for t in tables or () for p in t["missing"]]  # referenced, not on disk (moved aside)
    if args.quarantine and lost:  # Delta readers must not look for them any more
        for table in sorted({t for t, _ in lost}):
            delta.forget_files(root, table, [root / table / p for t, p in lost if t == table])
        tables = delta.table_report(root)
    if args.json:
        out = _as_json(root, checks, damaged, moved, kept, quarantined_files(root))
        if tables is not None:
            out.update(ok=out["ok"] and not lost, delta=tables, missing=[f"{t}/{p}" for t, p in lost])
        print(json.dumps(out, indent=2))
    else:
        _print_report(root, checks, damaged, moved, kept, quarantined_files(root), args)
        if tables is not None:
            _print_delta(tables, lost, args)
    return 1 if damaged or lost else 0


def _print_delta(tables: list[dict], lost: list, args) -> None:
    print("\nDelta tables:")
    for t in tables:
        print(f"  {t['table']}: version {t['version']}, {t['files']} file(s), {t['rows']} row(s), {t['bytes']} bytes; "
              f"{len(t['unreferenced'])} unreferenced file(s) ({t['unreferenced_bytes']} bytes)")
    for table, path in lost:
        print(f"  MISSING {table}/{path}: referenced by the table, not on disk"
              + (" (removed from the table now)" if args.quarantine else ""))
    if lost and not args.quarantine:
        print(f"To remove the missing files from their tables: banditroute doctor --log-dir {args.log_dir} --quarantine")
    if any(t["unreferenced"] for t in tables):
        print(f"To delete unreferenced files older than H hours: banditroute compact --log-dir {args.log_dir} "
              "--vacuum-hours H")


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _as_json(root, checks, damaged, moved, kept, quarantined) -> dict:
    return {"log_dir": str(root), "ok": not damaged,
            "checked": {"parts": sum(c.kind == "part" for c in checks),
                        "segments": sum(c.kind == "segment" for c in checks)},
            "damaged": [{"path": _rel(root, c.path), "kind": c.kind, "problem": c.problem, "readable": c.readable,
                         "n_rows_readable": c.n_rows} for c in damaged],
            "moved": [_rel(root, p) for p in moved], "left_in_place": [_rel(root, p) for p in kept],
            "quarantined": [{"path": _rel(root, q.path), "original": q.original, "reason": q.reason,
                             "ts_us": q.ts_us} for q in quarantined]}


def _print_report(root, checks, damaged, moved, kept, quarantined, args) -> None:
    n_parts = sum(c.kind == "part" for c in checks)
    print(f"log directory: {root}")
    print(f"checked {n_parts} Parquet part(s) and {len(checks) - n_parts} journal segment(s), reading each whole: "
          + ("all read whole." if not damaged else f"{len(damaged)} damaged."))
    for c in damaged:
        print(f"\n  DAMAGED {c.kind}: {_rel(root, c.path)}")
        print(f"    what is wrong:    {c.problem}")
        print(f"    what can be read: {c.readable}")
    if moved:
        print(f"\nmoved aside to {root / '_quarantine'}: " + ", ".join(_rel(root, p) for p in moved))
    if kept:
        print("left in place (a running writer holds it): " + ", ".join(_rel(root, p) for p in kept))
    if damaged and not args.quarantine:
        print(f"\nTo move the damaged files aside: banditroute doctor --log-dir {args.log_dir} --quarantine")
    if quarantined:
        print(f"\nquarantined files (moved aside, under {root / '_quarantine'}; no reader looks there): "
              f"{len(quarantined)}")
        for q in quarantined:
            when = "" if q.ts_us is None else dt.datetime.fromtimestamp(q.ts_us / 1e6, dt.timezone.utc).strftime(
                " on %Y-%m-%d %H:%M:%S UTC")
            print(f"  {q.original}{when}: {q.reason or 'no note'}")
