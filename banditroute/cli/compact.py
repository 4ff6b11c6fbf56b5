"""``banditroute compact``: compact journal segments left by stopped writers into Parquet parts.

On a Delta log (``log_table="delta"``) the parts are registered in the tables' Delta logs
(one commit per table and segment, exactly once), and the tables can be maintained:
``--optimize`` rewrites their small files into larger ones (``optimize.compact()``; the rows are
unchanged), ``--vacuum-hours H`` deletes the files they no longer reference that are older than
H hours (those optimize replaced, and parts of compactions that died before their commit). Both
are off by default; ``--vacuum-hours 0`` is refused while a writer runs on the directory (it
could delete the parts a running compaction is about to commit).

>>> run(add_parser(__import__("argparse").ArgumentParser().add_subparsers()).parse_args(["--log-dir", "/nonexistent"]))
Traceback (most recent call last):
...
banditroute.errors.ConfigError: --log-dir is not a directory, got '/nonexistent'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``compact`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("compact", help="compact journal segments left by stopped writers into Parquet parts",
                              description="Compact the journal segments left by stopped writers into Parquet parts "
                                          "(on a Delta log: registered in its tables, exactly once); optionally "
                                          "optimize and vacuum a Delta log's tables.")
    p.add_argument("--log-dir", required=True, help="log directory")
    p.add_argument("--optimize", action="store_true",
                   help="Delta log: rewrite each table's small files into larger ones (rows unchanged)")
    p.add_argument("--vacuum-hours", type=int, default=None, metavar="H",
                   help="Delta log: delete files the tables no longer reference that are older than H hours "
                        "(default: no vacuum; 0 only while no writer runs on the directory)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Open (and close) a log writer on the directory: opening recovers every segment whose writer is gone."""
    from ..logs.delta import is_delta_log
    from ..logs.store import LogWriter

    if not Path(args.log_dir).is_dir():
        raise ConfigError("--log-dir", args.log_dir, "is not a directory")
    optimize, hours = getattr(args, "optimize", False), getattr(args, "vacuum_hours", None)
    delta = is_delta_log(args.log_dir)
    if (optimize or hours is not None) and not delta:
        flag = "--optimize" if optimize else "--vacuum-hours"
        raise ConfigError(flag, args.log_dir, "needs a Delta log (log_table='delta'); this one is plain Parquet")
    if hours is not None and hours < 0:
        raise ConfigError("--vacuum-hours", hours, "must be >= 0")
    alive = _live_writers(Path(args.log_dir)) if hours == 0 else []
    if alive:
        raise ConfigError("--vacuum-hours", 0, f"must be >= 1 while writers run on {args.log_dir} "
                          f"({', '.join(alive)}): their compactions' parts are not committed yet")
    writer = LogWriter(args.log_dir)  # opening a writer recovers every segment whose writer is gone
    writer.close()
    print(f"compacted {writer.n_recovered} journal segment(s) into "
          + ("Delta commits" if delta else "Parquet parts"))
    if delta:
        _maintain(Path(args.log_dir), optimize, hours)
    return 0


def _maintain(root: Path, optimize: bool, hours: int | None) -> None:
    """Optimize and vacuum a Delta log's tables; print what changed."""
    from ..logs import delta

    if optimize:
        for table, metrics in delta.optimize(root).items():
            print(f"optimized {table}: {metrics.get('numFilesRemoved', 0)} file(s) rewritten into "
                  f"{metrics.get('numFilesAdded', 0)}")
    if hours is not None:
        for table, deleted in delta.vacuum(root, hours).items():
            print(f"vacuumed {table}: {len(deleted)} unreferenced file(s) older than {hours} h deleted")
    for t in delta.table_report(root):
        print(f"{t['table']}: Delta version {t['version']}, {t['files']} file(s), {t['rows']} row(s), "
              f"{len(t['unreferenced'])} unreferenced file(s)")


def _live_writers(root: Path) -> list[str]:
    """The writers whose journal lock a running process holds."""
    from ..logs.journal import journal_dir, writer_lock

    alive = []
    for lock in sorted(journal_dir(root).glob("*.lock")):
        with writer_lock(root, lock.stem) as state:
            if state == "alive":
                alive.append(lock.stem)
    return alive
