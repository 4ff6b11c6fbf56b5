"""Reading banditroute's Parquet logs lazily: scan, join outcomes, build feedback.

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from ope.errors import InvalidConfigError, InvalidFeedbackError, LogsNotFoundError
from ope.feedback import LoggedFeedback

__all__ = ["scan_decisions", "scan_outcomes", "join_logs", "action_space", "feedback_from_logs", "METRICS"]

METRICS = ("reward", "quality", "cost_usd", "latency_ms")
_DUPLICATE_RULES = ("first", "last", "mean")
_SEP = "\x1f"
_HASH_SEED = 20250101


def _scan(log_dir: str | Path, kind: str) -> pl.LazyFrame:
    root = Path(log_dir) / kind
    if not root.is_dir() or next(root.glob("**/*.parquet"), None) is None:
        raise LogsNotFoundError("log_dir", f"log_dir has no {kind}/**/*.parquet files: {log_dir}")
    return pl.scan_parquet(
        str(root / "**" / "*.parquet"),
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
    outcome_files = Path(log_dir) / "outcomes"
    if outcome_files.is_dir() and next(outcome_files.glob("**/*.parquet"), None) is not None:
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


def _position_table(log_dir: str | Path, names: Sequence[str]) -> pl.LazyFrame | None:
    """Position of every action in each distinct ``profiles`` list (None: all are prefixes of ``names``)."""
    keys = (
        scan_decisions(log_dir)
        .select(pl.col("profiles").list.join(_SEP).alias("__key"))
        .unique()
        .collect(engine="streaming")
        .get_column("__key")
        .to_list()
    )
    lists = [key.split(_SEP) if key else [] for key in keys]
    if all(lst == list(names[: len(lst)]) for lst in lists):
        return None
    rows: dict[str, list] = {"__key": keys}
    for k, name in enumerate(names):
        rows[f"__pos{k}"] = [(lst.index(name) if name in lst else None) for lst in lists]
    return pl.LazyFrame(rows, schema={"__key": pl.String, **{f"__pos{k}": pl.Int64 for k in range(len(names))}})


def _context_dtype(decisions: pl.LazyFrame, keys: Sequence[str] | None, sample: int) -> pl.Struct:
    texts = decisions.select("context").drop_nulls().head(sample).collect().get_column("context")
    inferred = texts.str.json_decode().dtype if texts.len() else pl.Struct([])
    fields = {f.name: f.dtype for f in inferred.fields}
    if keys is not None:
        fields = {k: fields.get(k, pl.String) for k in keys}
    return pl.Struct(fields)


def _cohort_expr(name: str) -> pl.Expr:
    if name in ("profile", "policy_version"):
        return pl.col(name).cast(pl.String)
    from_context = pl.col("context").str.json_path_match(f"$.{name}")
    if name == "task_type":
        best = pl.col("task_types").list.get(pl.col("task_probs").list.arg_max(), null_on_oob=True)
        return pl.coalesce(from_context, best)
    return from_context


def feedback_from_logs(
    log_dir: str | Path,
    *,
    wait_window: dt.timedelta | None = None,
    default_reward: float | None = None,
    duplicates: str = "first",
    reward: str = "reward",
    contexts: bool | Sequence[str] = False,
    cohorts: Sequence[str] = (),
    metrics: bool = True,
    logging_distribution: bool = True,
    context_sample: int = 1000,
    n_partitions: int | None = None,
) -> LoggedFeedback:
    """Build :class:`LoggedFeedback` from banditroute's logs (see :func:`join_logs`).

    Rounds keep the order of the decision files (sorted paths) and of the rows in
    them, whatever ``n_partitions``.

    Parameters
    ----------
    log_dir, wait_window, default_reward, duplicates
        See :func:`join_logs`.
    reward : {"reward", "quality", "cost_usd", "latency_ms"}
        Outcome column used as the reward (rounds where it is null are an error).
    contexts : bool or sequence of str
        Decode the context JSON into columns (all keys, or only these). Costly on
        large logs, so off by default. Key types are inferred from the first
        ``context_sample`` contexts.
    cohorts : sequence of str
        Cohort columns: ``"task_type"`` (context key, else the most probable task
        type), ``"profile"``, ``"policy_version"`` or any context key (as strings).
    metrics : bool
        Keep ``reward``, ``quality``, ``cost_usd``, ``latency_ms`` as
        :attr:`LoggedFeedback.metrics` (see :meth:`LoggedFeedback.with_reward`).
    logging_distribution : bool
        Keep the logged probability vectors as an (n_rounds, n_actions) array
        (exact support diagnostics; costs 8 bytes per round and action).
    n_partitions : int or None
        Join in this many hash partitions, one after the other, to bound memory
        (None: one per 1,000,000 decisions, at least 1).

    Returns
    -------
    LoggedFeedback

    Examples
    --------
    >>> feedback_from_logs("/nonexistent", reward="tokens")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: reward must be one of ('reward', 'quality', 'cost_usd', 'latency_ms'), got 'tokens'
    """
    if reward not in METRICS:
        raise InvalidConfigError("reward", f"reward must be one of {METRICS}, got {reward!r}")
    cohorts = tuple(cohorts)
    names = action_space(log_dir)
    if not names:
        raise InvalidFeedbackError("profiles", f"no profiles found in the decisions under {log_dir}")
    if n_partitions is None:
        n_rows = scan_decisions(log_dir).select(pl.len()).collect().item()
        n_partitions = max(1, -(-n_rows // 1_000_000))
    columns = [
        pl.col("profile").replace_strict(list(names), list(range(len(names))), default=-1, return_dtype=pl.Int64).alias("__action"),
        pl.col(reward).alias("__reward"),
        pl.col("propensity").cast(pl.Float64).alias("__propensity"),
    ]
    if metrics:
        columns += [pl.col(m).alias(f"__metric_{m}") for m in METRICS]
    if logging_distribution:
        positions = _position_table(log_dir, names)
        columns += [
            pl.col("probabilities").list.get(k if positions is None else pl.col(f"__pos{k}"), null_on_oob=True)
            .fill_null(0.0).alias(f"__prob{k}")
            for k in range(len(names))
        ]
    frames_cols = [_cohort_expr(c).alias(f"__cohort_{c}") for c in cohorts]
    if contexts:
        keys = None if contexts is True else list(contexts)
        dtype = _context_dtype(scan_decisions(log_dir), keys, context_sample)
        frames_cols += [
            pl.col("context").str.json_decode(dtype).struct.field(f.name).alias(f"__ctx_{f.name}") for f in dtype.fields
        ]
    assembler = _Assembler(scan_decisions(log_dir).select(pl.len()).collect().item(), len(names))
    for i in range(n_partitions):
        joined = join_logs(log_dir, wait_window=wait_window, default_reward=default_reward, duplicates=duplicates,
                           partition=(i, n_partitions) if n_partitions > 1 else None)
        if logging_distribution and positions is not None:
            joined = joined.with_columns(pl.col("profiles").list.join(_SEP).alias("__key")).join(positions, on="__key", how="left")
        assembler.add(joined.select(pl.col("row_index"), *columns, *frames_cols).collect(engine="streaming"))
    return _to_feedback(log_dir, assembler, names, reward)


class _Assembler:
    """Scatters each joined partition, as it arrives, into arrays indexed by the decision's
    row index, so only one partition is held in memory at a time; :meth:`finish` compacts
    the arrays in place to the rounds that survived the join (in decision order)."""

    def __init__(self, n_decisions: int, n_actions: int):
        self.present = np.zeros(n_decisions, dtype=bool)
        self.columns: dict[str, np.ndarray] = {}
        self.distribution: np.ndarray | None = None
        self.n_actions = n_actions
        self.rest: list[pl.DataFrame] = []

    def add(self, part: pl.DataFrame) -> None:
        idx = part.get_column("row_index").to_numpy()
        self.present[idx] = True
        others = ["row_index"]
        for c in part.columns:
            if c.startswith("__prob"):
                if self.distribution is None:
                    self.distribution = np.zeros((self.present.shape[0], self.n_actions))
                self.distribution[idx, int(c[len("__prob"):])] = part.get_column(c).cast(pl.Float64).to_numpy()
            elif c.startswith(("__action", "__reward", "__propensity", "__metric_")):
                integer = c == "__action"
                if c not in self.columns:
                    self.columns[c] = np.empty(self.present.shape[0], dtype=np.int64 if integer else np.float64)
                self.columns[c][idx] = part.get_column(c).cast(pl.Int64 if integer else pl.Float64).to_numpy()
            elif c != "row_index":
                others.append(c)
        if len(others) > 1:
            self.rest.append(part.select(others))

    def finish(self) -> tuple[int, dict, "np.ndarray | None", "pl.DataFrame | None"]:
        n = int(self.present.sum())
        columns = {c: _compact(a, self.present) for c, a in self.columns.items()}
        dist = None if self.distribution is None else _compact(self.distribution, self.present)
        frame = pl.concat(self.rest).sort("row_index").drop("row_index") if self.rest else None
        return n, columns, dist, frame


def _compact(array: np.ndarray, keep: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """``array[keep]`` computed in place, chunk by chunk (kept rows only move toward the front)."""
    if keep.all():
        return array
    write = 0
    for start in range(0, keep.shape[0], chunk):
        rows = array[start:start + chunk][keep[start:start + chunk]]
        array[write:write + rows.shape[0]] = rows
        write += rows.shape[0]
    return array[:write]


def _to_feedback(log_dir: str | Path, assembler: "_Assembler", names: tuple[str, ...], reward: str) -> LoggedFeedback:
    n, cols, dist, frame = assembler.finish()
    if n == 0:
        raise InvalidFeedbackError("log_dir", "no decision in the logs has a counted outcome (empty log after the join)")
    actions = cols["__action"]
    if (actions < 0).any():
        bad = scan_decisions(log_dir).filter(~pl.col("profile").is_in(list(names))).select("profile").head(1).collect()
        raise InvalidFeedbackError("profile", f"profile {bad.item()!r} is not among the logged profiles {names}")
    rewards = cols["__reward"]
    if np.isnan(rewards).any():
        i = int(np.flatnonzero(np.isnan(rewards))[0])
        raise InvalidFeedbackError("rewards", f"{reward} is null at round {i}; choose another reward or fill it")
    metric_cols = {c[len("__metric_"):]: cols.pop(c) for c in list(cols) if c.startswith("__metric_")}
    return LoggedFeedback(
        actions=actions,
        rewards=rewards,
        propensities=cols["__propensity"],
        n_actions=len(names),
        action_names=names,
        contexts=_strip(frame, "__ctx_"),
        cohorts=_strip(frame, "__cohort_"),
        logging_distribution=dist,
        metrics=pl.DataFrame(metric_cols, nan_to_null=True) if metric_cols else None,
    )


def _strip(frame: pl.DataFrame | None, prefix: str) -> pl.DataFrame | None:
    if frame is None:
        return None
    cols = [c for c in frame.columns if c.startswith(prefix)]
    if not cols:
        return None
    return frame.select(cols).rename({c: c[len(prefix):] for c in cols})
