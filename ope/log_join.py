"""Scanning banditroute's Parquet logs lazily and joining decisions with their outcomes.

Layout (see DESIGN section 5)::

    <dir>/decisions/date=YYYY-MM-DD/part-<writer>-<seq>.parquet
    <dir>/outcomes/date=YYYY-MM-DD/part-<writer>-<seq>.parquet

Everything is a polars LazyFrame over ``scan_parquet`` globs and is collected with
the streaming engine, so only the selected columns are read and the data never
has to fit in memory decompressed. Unknown (newer) columns are ignored and missing
ones are read as nulls.

The outcome join is explicit about late, duplicate and missing outcomes:

- ``wait_window``: an outcome counts only if ``outcome.ts - decision.ts <=
  wait_window`` (None: no limit); later outcomes are treated as missing;
- ``duplicates``: several outcome rows for one decision: ``"first"`` (earliest
  ``ts``, default), ``"last"`` (latest) or ``"mean"`` (mean of each metric);
- ``default_reward``: rounds with no (counted) outcome are dropped (None, default)
  or get this reward.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ope.errors import InvalidConfigError, LogsNotFoundError

__all__ = ["LogSnapshot", "scan_decisions", "scan_outcomes", "join_logs", "action_space", "METRICS"]

METRICS = ("reward", "quality", "cost_usd", "latency_ms")
_DUPLICATE_RULES = ("first", "last", "mean")
_SEP = "\x1f"
_HASH_SEED = 20250101


@dataclass(frozen=True)
class LogSnapshot:
    """The Parquet files of a log directory at one moment (sorted paths per table).

    Pass it wherever a ``log_dir`` is taken: every scan of one reading then sees the same
    files, though writers keep adding parts (a reader that lists the directory more than once
    could count rows it then cannot find).

    >>> import tempfile
    >>> snap = LogSnapshot.take(tempfile.mkdtemp())
    >>> snap.decisions, snap.outcomes
    ((), ())
    """

    root: str
    decisions: tuple[str, ...]
    outcomes: tuple[str, ...]

    @classmethod
    def take(cls, log_dir: "str | Path | LogSnapshot") -> "LogSnapshot":
        if isinstance(log_dir, LogSnapshot):
            return log_dir
        root = Path(log_dir)
        return cls(str(log_dir), *(tuple(sorted(str(p) for p in (root / kind).glob("**/*.parquet")))
                                   if (root / kind).is_dir() else () for kind in ("decisions", "outcomes")))

    def __str__(self) -> str:
        return self.root


def _files(log_dir: "str | Path | LogSnapshot", kind: str) -> tuple[str, ...]:
    return getattr(LogSnapshot.take(log_dir), kind)


def _scan(log_dir: "str | Path | LogSnapshot", kind: str) -> pl.LazyFrame:
    files = _files(log_dir, kind)
    if not files:
        raise LogsNotFoundError("log_dir", f"log_dir has no {kind}/**/*.parquet files: {log_dir}")
    return pl.scan_parquet(
        list(files),
        hive_partitioning=False,
        missing_columns="insert",
        extra_columns="ignore",
    )


def scan_decisions(log_dir: str | Path) -> pl.LazyFrame:
    """Lazily scan every decision file under ``log_dir/decisions``.

    Examples
    --------
    >>> scan_decisions("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no decisions/**/*.parquet files: /nonexistent
    """
    return _scan(log_dir, "decisions")


def scan_outcomes(log_dir: str | Path) -> pl.LazyFrame:
    """Lazily scan every outcome file under ``log_dir/outcomes``.

    Examples
    --------
    >>> scan_outcomes("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no outcomes/**/*.parquet files: /nonexistent
    """
    return _scan(log_dir, "outcomes")


def _check_join_options(wait_window: dt.timedelta | None, default_reward: float | None, duplicates: str) -> None:
    if wait_window is not None and (not isinstance(wait_window, dt.timedelta) or wait_window < dt.timedelta(0)):
        raise InvalidConfigError("wait_window", f"wait_window must be a non-negative timedelta or None, got {wait_window!r}")
    if default_reward is not None and (
        isinstance(default_reward, bool) or not isinstance(default_reward, (int, float)) or not np.isfinite(default_reward)
    ):
        raise InvalidConfigError("default_reward", f"default_reward must be a finite number or None, got {default_reward!r}")
    if duplicates not in _DUPLICATE_RULES:
        raise InvalidConfigError("duplicates", f"duplicates must be one of {_DUPLICATE_RULES}, got {duplicates!r}")


def _collapse(outcomes: pl.LazyFrame, duplicates: str) -> pl.LazyFrame:
    metrics = [pl.col(m) for m in METRICS]
    if duplicates == "mean":
        aggs = [m.mean() for m in metrics] + [pl.col("outcome_ts").min(), pl.len().alias("n_outcomes")]
    else:
        pick = pl.col("outcome_ts").arg_min() if duplicates == "first" else pl.col("outcome_ts").arg_max()
        aggs = [m.get(pick) for m in [*metrics, pl.col("outcome_ts")]] + [pl.len().alias("n_outcomes")]
    return outcomes.group_by("decision_id").agg(aggs)


def join_logs(
    log_dir: str | Path,
    *,
    wait_window: dt.timedelta | None = None,
    default_reward: float | None = None,
    duplicates: str = "first",
    partition: tuple[int, int] | None = None,
) -> pl.LazyFrame:
    """Decisions joined with their outcomes, as a LazyFrame.

    Parameters
    ----------
    log_dir : str or Path
        Directory holding ``decisions/`` and ``outcomes/``.
    wait_window : datetime.timedelta or None
        Count an outcome only if it arrived within this time after the decision.
    default_reward : float or None
        Reward of rounds without a counted outcome; None drops them.
    duplicates : {"first", "last", "mean"}
        How several outcomes for one decision are combined.
    partition : (int, int) or None
        ``(i, n)``: keep only decisions (and outcomes) whose ``decision_id`` hashes
        to bucket ``i`` of ``n``. Collecting the ``n`` partitions one after the
        other needs about ``1/n`` of the join's memory.

    Returns
    -------
    polars.LazyFrame
        Every decision column plus ``row_index`` (the decision's position in the
        scan of the sorted decision files; rows come in no particular order),
        ``reward``, ``quality``, ``cost_usd``, ``latency_ms``, ``outcome_ts`` and
        ``n_outcomes`` (0 for a missing outcome).

    Examples
    --------
    >>> join_logs("/nonexistent", duplicates="median")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: duplicates must be one of ('first', 'last', 'mean'), got 'median'
    """
    _check_join_options(wait_window, default_reward, duplicates)
    decisions = scan_decisions(log_dir).with_row_index("row_index")
    if _files(log_dir, "outcomes"):
        outcomes = scan_outcomes(log_dir).select(
            pl.col("decision_id"), pl.col("ts").alias("outcome_ts"), *[pl.col(m).cast(pl.Float64) for m in METRICS]
        )
    else:
        outcomes = pl.LazyFrame(
            schema={"decision_id": pl.String, "outcome_ts": pl.Datetime("us", "UTC"), **{m: pl.Float64 for m in METRICS}}
        )
    if partition is not None:
        index, count = partition
        if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
            raise InvalidConfigError("partition", f"partition must be (i, n) with 0 <= i < n, got {partition!r}")
        decisions = decisions.filter(pl.col("decision_id").hash(_HASH_SEED) % count == index)
        outcomes = outcomes.filter(pl.col("decision_id").hash(_HASH_SEED) % count == index)
    if wait_window is not None:
        stamps = decisions.select(pl.col("decision_id"), pl.col("ts").alias("decision_ts"))
        outcomes = (
            outcomes.join(stamps, on="decision_id", how="inner")
            .filter((pl.col("outcome_ts") - pl.col("decision_ts")) <= pl.lit(wait_window))
            .drop("decision_ts")
        )
    collapsed = _collapse(outcomes, duplicates)
    how = "inner" if default_reward is None else "left"
    joined = decisions.join(collapsed, on="decision_id", how=how)
    joined = joined.with_columns(pl.col("n_outcomes").fill_null(0).cast(pl.UInt32))
    if default_reward is not None:
        joined = joined.with_columns(pl.col("reward").fill_null(float(default_reward)))
    return joined


def action_space(log_dir: str | Path) -> tuple[str, ...]:
    """Union of the logged ``profiles`` lists, in order of first appearance.

    Examples
    --------
    >>> action_space("/nonexistent")
    Traceback (most recent call last):
    ...
    ope.errors.LogsNotFoundError: log_dir has no decisions/**/*.parquet files: /nonexistent
    """
    lists = (
        scan_decisions(log_dir)
        .group_by("profiles")
        .agg(pl.col("ts").min())
        .with_columns(pl.col("profiles").list.join(_SEP).alias("__key"))
        .sort("ts", "__key")
        .collect(engine="streaming")
    )
    names: dict[str, None] = {}
    for profiles in lists.get_column("profiles").to_list():
        for name in profiles or ():
            names.setdefault(name, None)
    return tuple(names)
