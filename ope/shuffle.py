"""A shuffle of banditroute's logs by stable bucket, so that a partitioned reading costs about one scan.

Without it, task ``i`` of ``P`` (:func:`ope.log_columns.read_partition`) scans every decision and
outcome file and keeps the rows whose bucket (:mod:`ope.buckets`) is ``i`` modulo ``P``: the reading
costs ``P`` scans. The shuffle reads the files once:

1. map: the snapshot's files (:class:`~ope.log_join.LogSnapshot`: plain Parquet parts or a Delta
   table's committed files) are cut into groups, contiguous in the snapshot's sorted order, of about
   ``rows_per_map`` decisions' worth of bytes each (:func:`map_groups`), so a map task's memory is
   bounded. Map task ``j`` (:func:`map_task`) reads its group as the join's scan sees the rows (the
   log's read schema, ``parent_id`` and a filled ``bucket``), keeps the columns the partition's reading
   uses (:func:`kept_columns`), and writes the rows of each partition ``i``, in file and row order, to
   ``SCRATCH/p{i:05d}/{decisions,outcomes}/m{j:05d}.parquet``;
2. reduce: each ``SCRATCH/p{i:05d}`` is a log directory of its own holding exactly partition ``i``'s
   rows in the log's order; :func:`partition_source` gives it to the join in place of the whole log
   (for any partition count that is a multiple of ``P``; any other count scans the original files).

Duplicate outcomes, the wait window, escalations (the plan's, computed on the whole log) and the
rounds' order are those of the unshuffled reading. :func:`shuffled_plan` runs the map here or on
a Dask client and always deletes the scratch directory, also when a task fails.

>>> import tempfile
>>> snapshot = LogSnapshot.take(tempfile.mkdtemp())
>>> partition_source(snapshot, None, 0, 4) is snapshot
True
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from ope.buckets import filled_bucket
from ope.errors import InvalidConfigError, OPEError, TaskFailure
from ope.escalations import PARENT_ID
from ope.log_join import METRICS, LogSnapshot, scan_decisions, scan_outcomes

__all__ = ["MIN_PARTITIONS", "ROWS_PER_MAP", "MapGroup", "map_groups", "kept_columns", "map_task", "partition_source",
           "check_shuffle_options", "shuffled_plan"]

#: ``shuffle=None`` shuffles from this many partitions on: the map costs about ten passes of the
#: scan over the files (measured: BENCHMARKS.md, "Off-policy evaluation past one machine")
MIN_PARTITIONS = 10
#: the default decisions' worth of files a map task reads (its memory: ~0.5 GB of the needed columns)
ROWS_PER_MAP = 1_000_000
_TABLES = ("decisions", "outcomes")
# what ope.log_columns.read_partition reads of each table (the join's keys and stamps, the round's columns)
_DECISION_COLUMNS = ("decision_id", "ts", "bucket", PARENT_ID, "profile", "propensity", "probabilities", "profiles")
_OUTCOME_COLUMNS = ("decision_id", "ts", "bucket", *METRICS)
_READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError)


class MapGroup(NamedTuple):
    """The files one map task reads: ``kind`` ("decisions" or "outcomes"), its number among the
    groups of that kind (it names the files written) and the files, in the snapshot's order."""

    kind: str
    number: int
    files: tuple[str, ...]


def map_groups(snapshot: LogSnapshot, n_decisions: int, rows_per_map: int) -> list[MapGroup]:
    """The map tasks' groups: each table's files cut into contiguous groups of about equal size in
    bytes, each ``rows_per_map`` decisions' worth of the decision files' bytes or less (or one file).

    >>> import tempfile
    >>> map_groups(LogSnapshot.take(tempfile.mkdtemp()), 0, 1000)
    []
    """
    decision_bytes = sum(os.path.getsize(f) for f in snapshot.decisions)
    target = max(1.0, decision_bytes * rows_per_map / max(n_decisions, 1))
    groups = []
    for kind in _TABLES:
        files = getattr(snapshot, kind)
        if not files:
            continue
        first = len(groups)
        sizes = [os.path.getsize(f) for f in files]
        limit = sum(sizes) / max(1.0, np.ceil(sum(sizes) / target))  # at most target: groups of about equal size
        start, size = 0, 0
        for end, file_size in enumerate(sizes):
            if end > start and size + file_size > limit:  # the group ends before this file
                groups.append(MapGroup(kind, len(groups) - first, tuple(files[start:end])))
                start, size = end, 0
            size += file_size
        groups.append(MapGroup(kind, len(groups) - first, tuple(files[start:])))
    return groups


def kept_columns(kind: str, schema: dict, *, cohorts: tuple = (), contexts: bool = False) -> list[str]:
    """The columns of ``schema`` (a table's read schema) that a partition's reading uses, in schema order:
    the join's and the round's, and those of the ``cohorts`` and decoded ``contexts``.

    >>> kept_columns("outcomes", {"decision_id": pl.String, "seq": pl.Int64, "reward": pl.Float64})
    ['decision_id', 'reward']
    """
    keep = set(_DECISION_COLUMNS if kind == "decisions" else _OUTCOME_COLUMNS)
    if kind == "decisions":
        keep.update(cohort for cohort in cohorts if cohort in ("profile", "policy_version"))
        if contexts or any(cohort not in ("profile", "policy_version") for cohort in cohorts):
            keep.add("context")
        if "task_type" in cohorts:
            keep.update(("task_types", "task_probs"))
    return [name for name in schema if name in keep]


def _read_group(root: str, group: MapGroup, schema: dict, columns: list[str]) -> pl.DataFrame:
    """The group's ``columns`` read with the log's read schema (the scan of :mod:`ope.log_join`: missing
    columns as nulls, unknown ones left out); a damaged file raises :class:`~ope.errors.CorruptLogError`."""
    lf = pl.scan_parquet(list(group.files), schema=schema, missing_columns="insert", extra_columns="ignore",
                         hive_partitioning=False).select(columns)
    try:
        return lf.collect()
    except _READ_ERRORS:
        files = {kind: group.files if kind == group.kind else () for kind in _TABLES}
        scan = scan_decisions if group.kind == "decisions" else scan_outcomes
        scan(LogSnapshot(root, files["decisions"], files["outcomes"])).collect()  # names the damaged file
        raise


def map_task(root: str, group: MapGroup, schema: dict, columns: list[str], count: int,
             scratch: str) -> dict[int, int] | TaskFailure:
    """Read ``group``'s ``columns`` (``schema``: the table's read schema) and write each partition's rows
    (bucket modulo ``count``) under ``scratch``, in the group's order; the rows written per partition.
    Runs in a worker; an OPEError comes back as a :class:`TaskFailure`."""
    try:
        frame = _read_group(root, group, schema, columns).with_columns(filled_bucket())
        parts = frame.with_columns((pl.col("bucket") % count).alias("__partition")).partition_by(
            "__partition", maintain_order=True, include_key=False, as_dict=True)
        del frame
        written = {}
        for (index,), part in sorted(parts.items()):
            folder = Path(scratch) / f"p{index:05d}" / group.kind
            folder.mkdir(parents=True, exist_ok=True)
            part.write_parquet(folder / f"m{group.number:05d}.parquet", compression="lz4")
            written[int(index)] = part.height
        return written
    except OPEError as exc:
        return TaskFailure.of(exc)


def partition_source(snapshot: LogSnapshot, shuffled: tuple[str, int] | None, index: int, count: int) -> LogSnapshot:
    """What partition ``index`` of ``count`` is joined from: the shuffled partition's own log when the
    plan was shuffled into ``P`` partitions and ``count`` is a multiple of ``P`` (its rows are those of
    partition ``index % P``; the join keeps ``index`` of ``count``), else the whole snapshot."""
    if shuffled is None or count % shuffled[1]:
        return snapshot
    return LogSnapshot.take(Path(shuffled[0]) / f"p{index % shuffled[1]:05d}")


def check_shuffle_options(shuffle: Any, shuffle_dir: Any, remote: bool) -> None:
    """Validate ``shuffle`` and ``shuffle_dir`` (``remote``: the workers may be on other machines).

    >>> check_shuffle_options(True, None, remote=True)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: shuffle=True on a Dask address or Client needs shuffle_dir, a directory every worker sees
    """
    if shuffle is not None and not isinstance(shuffle, bool):
        raise InvalidConfigError("shuffle", f"shuffle must be True, False or None, got {shuffle!r}")
    if shuffle_dir is not None and (not isinstance(shuffle_dir, (str, os.PathLike)) or not Path(shuffle_dir).is_dir()):
        raise InvalidConfigError("shuffle_dir", f"shuffle_dir must be an existing directory, got {shuffle_dir!r}")
    if shuffle and remote and shuffle_dir is None:
        raise InvalidConfigError("shuffle_dir", "shuffle=True on a Dask address or Client needs shuffle_dir, "
                                 "a directory every worker sees")


def _run_map(plan: Any, count: int, scratch: Path, client: Any, rows_per_map: int) -> None:
    snapshot = plan.snapshot
    groups = map_groups(snapshot, plan.n_decisions, rows_per_map)
    schemas = {kind: dict(scan(snapshot).collect_schema()) for kind, scan in
               (("decisions", scan_decisions), ("outcomes", scan_outcomes)) if getattr(snapshot, kind)}
    kept = {kind: kept_columns(kind, schema, cohorts=plan.cohorts, contexts=plan.context_dtype is not None)
            for kind, schema in schemas.items()}
    args = [(snapshot.root, g, schemas[g.kind], kept[g.kind], count, str(scratch)) for g in groups]
    if client is None:
        results = [map_task(*a) for a in args]
    else:
        import distributed

        futures = client.map(map_task, *zip(*args), pure=False)
        distributed.wait(futures)  # every task ends (or fails) before the scratch may be deleted
        results = [f.result() for f in futures]
    filled = set()
    for group, result in zip(groups, results):
        if isinstance(result, TaskFailure):
            result.reraise()
        if group.kind == "decisions":
            filled.update(result)
    for index in set(range(count)) - filled:  # a partition without decisions: an empty log of its own
        folder = scratch / f"p{index:05d}" / "decisions"
        folder.mkdir(parents=True)
        pl.DataFrame(schema={c: schemas["decisions"][c] for c in kept["decisions"]}).write_parquet(folder / "empty.parquet")


@contextlib.contextmanager
def shuffled_plan(plan: Any, count: int, *, client: Any = None, remote: bool = False, shuffle: bool | None = None,
                  shuffle_dir: str | os.PathLike | None = None, rows_per_map: int = ROWS_PER_MAP) -> Iterator[Any]:
    """``plan`` (a :class:`~ope.log_columns.LogPlan`) shuffled into ``count`` partitions, for the
    ``with`` block; the scratch directory is deleted when the block ends, however it ends.

    Shuffles when ``shuffle`` is True, or None and ``count >= MIN_PARTITIONS``, unless the workers may
    be on other machines (``remote``: a Dask address or a given Client) and no ``shuffle_dir`` is given,
    or the snapshot skips damaged files (``on_corrupt="skip"``). The scratch is a fresh directory in
    ``shuffle_dir`` (None: the system's temporary directory). ``client``: the map tasks' Dask client
    (None: they run here, one after the other). Else the plan is yielded as it is (the reading scans).
    """
    check_shuffle_options(shuffle, shuffle_dir, remote)
    wanted = shuffle if shuffle is not None else count >= MIN_PARTITIONS
    if (not wanted or count < 2 or (remote and shuffle_dir is None) or plan.snapshot.on_corrupt != "raise"
            or not plan.snapshot.decisions):
        yield plan
        return
    scratch = Path(tempfile.mkdtemp(prefix="ope-shuffle-", dir=shuffle_dir))
    try:
        _run_map(plan, count, scratch, client, rows_per_map)
        yield replace(plan, shuffled=(str(scratch), count))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
