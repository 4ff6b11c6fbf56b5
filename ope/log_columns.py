"""Assembling banditroute's joined logs into the arrays of one :class:`~ope.LoggedFeedback`.

:func:`read_log_columns` joins the decisions with their outcomes (:func:`ope.log_join.join_logs`)
in partitions by stable bucket, one after the other, and scatters each partition into arrays indexed
by the decision's position, so only one partition is in memory at a time. It returns a
:class:`LogColumns` record (the constructor arguments of ``LoggedFeedback``) and never
imports :mod:`ope.feedback`: :meth:`ope.LoggedFeedback.from_logs` and
:func:`ope.logs.feedback_from_logs` build the feedback from it.

:func:`read_partition` reads one partition on its own (:mod:`ope.distributed`'s tasks), after
:func:`plan_reading` has read, once, what every partition must share (:class:`LogPlan`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.escalations import PARENT_ID, check_escalations, count_escalated, escalated_rows
from ope.log_join import METRICS, LogSnapshot, action_space, filled_bucket, join_logs, scan_decisions
from ope.shuffle import partition_source

__all__ = ["LogColumns", "read_log_columns", "LogPlan", "plan_reading", "read_partition"]

_SEP = "\x1f"  # joins a profiles list into one key (the unit separator is in no profile name)
# the fields of LogColumns that report on the reading (not arguments of LoggedFeedback)
_REPORT = ("skipped_files", "n_escalated", "n_escalated_without_outcome", "escalations", "buckets")


@dataclass(frozen=True, kw_only=True, slots=True)
class LogColumns:
    """The columns read from the logs: the keyword arguments of :class:`~ope.LoggedFeedback`.

    Not validated: ``LoggedFeedback(**columns.as_kwargs())`` validates them.

    Examples
    --------
    >>> cols = LogColumns(actions=np.array([0]), rewards=np.array([1.0]), propensities=np.array([0.5]),
    ...                   n_actions=2, action_names=("a", "b"))
    >>> sorted(cols.as_kwargs())[:3]
    ['action_names', 'actions', 'cohorts']
    """

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    n_actions: int
    action_names: tuple[str, ...]
    contexts: pl.DataFrame | None = None
    cohorts: pl.DataFrame | None = None
    logging_distribution: np.ndarray | None = None
    metrics: pl.DataFrame | None = None
    #: damaged files left out of the reading (``on_corrupt="skip"``; not a ``LoggedFeedback`` argument)
    skipped_files: tuple = ()  # of ope.log_join.SkippedFile
    #: escalated decisions (non-null ``parent_id``) in the logs: left out of the rounds, with their
    #: outcomes, under ``escalations="first"``; rounds under ``"all"`` (not a ``LoggedFeedback`` argument)
    n_escalated: int = 0
    #: decisions that were escalated (a failed answer) but are not rounds, for want of a counted
    #: outcome: the failure is missing from the rounds (not a ``LoggedFeedback`` argument)
    n_escalated_without_outcome: int = 0
    #: the ``escalations`` rule the rounds were read with (not a ``LoggedFeedback`` argument)
    escalations: str = "first"
    #: each round's stable bucket (:func:`read_partition` only; not a ``LoggedFeedback`` argument)
    buckets: np.ndarray | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as a dict (the arrays are not copied), the reading's report aside
        (``skipped_files``, ``n_escalated``, ``n_escalated_without_outcome``, ``escalations``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _REPORT}


def read_log_columns(
    log_dir: str | Path,
    *,
    wait_window: dt.timedelta | None = None,
    default_reward: float | None = None,
    duplicates: str = "first",
    escalations: str = "first",
    reward: str = "reward",
    contexts: bool | Sequence[str] = False,
    cohorts: Sequence[str] = (),
    metrics: bool = True,
    logging_distribution: bool = True,
    context_sample: int = 1000,
    n_partitions: int | None = None,
    on_corrupt: str = "raise",
) -> LogColumns:
    """Read banditroute's logs into the columns of a :class:`~ope.LoggedFeedback`.

    The options are those of :func:`ope.logs.feedback_from_logs`, which documents them.
    Rounds keep the order of the decision files (sorted paths) and of the rows in them,
    whatever ``n_partitions``. ``on_corrupt``: a damaged Parquet file raises
    :class:`~ope.errors.CorruptLogError` naming it ("raise"), or is left out and listed in
    :attr:`LogColumns.skipped_files` ("skip"; see :mod:`ope.log_join`). ``escalations="first"``
    leaves escalated decisions out of the rounds (see :mod:`ope.escalations`); how many the logs
    hold is :attr:`LogColumns.n_escalated`, and how many escalated decisions (failed answers) have
    no round for want of an outcome, :attr:`LogColumns.n_escalated_without_outcome`.

    Examples
    --------
    >>> read_log_columns("/nonexistent", reward="tokens")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: reward must be one of ('reward', 'quality', 'cost_usd', 'latency_ms'), got 'tokens'
    """
    if reward not in METRICS:
        raise InvalidConfigError("reward", f"reward must be one of {METRICS}, got {reward!r}")
    if n_partitions is not None and (isinstance(n_partitions, bool) or not isinstance(n_partitions, int)
                                     or n_partitions < 1):
        raise InvalidConfigError("n_partitions", f"n_partitions must be an integer >= 1 or None, got {n_partitions!r}")
    check_escalations(escalations)
    cohorts = tuple(cohorts)
    log_dir = LogSnapshot.take(log_dir, on_corrupt=on_corrupt)  # one listing of the files for every scan below
    names = action_space(log_dir)
    if not names:
        raise InvalidFeedbackError("profiles", f"no profiles found in the decisions under {log_dir}")
    if n_partitions is None:
        n_rows = scan_decisions(log_dir).select(pl.len()).collect().item()
        n_partitions = max(1, -(-n_rows // 1_000_000))
    positions = _position_table(log_dir, names) if logging_distribution else None
    dtype = _context_dtype(scan_decisions(log_dir), None if contexts is True else list(contexts),
                           context_sample) if contexts else None
    columns = _round_columns(names, reward, metrics=metrics, logging=logging_distribution, positions=positions,
                             cohorts=cohorts, context_dtype=dtype)
    join = dict(wait_window=wait_window, default_reward=default_reward, duplicates=duplicates, escalations=escalations)
    assembler = _Assembler(scan_decisions(log_dir).select(pl.len()).collect().item(), len(names))
    for i in range(n_partitions):
        joined = _joined(log_dir, join, (i, n_partitions) if n_partitions > 1 else None, positions)
        assembler.add(joined.select(pl.col("row_index"), *columns).collect(engine="streaming"))
    columns = _to_columns(log_dir, assembler, names, reward, tuple(log_dir.skipped))
    n_escalated = count_escalated(scan_decisions(log_dir))
    escalated = escalated_rows(scan_decisions(log_dir), escalations) if n_escalated else np.empty(0, np.int64)
    return replace(columns, n_escalated=n_escalated, escalations=escalations,
                   n_escalated_without_outcome=int((~assembler.present[escalated]).sum()))


@dataclass(frozen=True, eq=False)
class LogPlan:
    """What the partitions of one reading share, computed once (on the client) by :func:`plan_reading`:
    the files, the action space, the join options and the small tables every partition needs, so that
    partitions read on different machines agree (same files, same action indices)."""

    snapshot: LogSnapshot
    action_names: tuple[str, ...]
    join: dict  # wait_window, default_reward, duplicates, escalations (join_logs' options)
    reward: str
    n_decisions: int
    positions: pl.DataFrame | None = None  # each action's position in each profiles list (None: prefixes)
    context_dtype: pl.Struct | None = None  # contexts are decoded with this dtype (None: not decoded)
    n_escalated: int = 0
    escalated: pl.DataFrame | None = None  # decision_id and bucket of the escalated decisions that are rounds
    cohorts: tuple[str, ...] = ()  # cohort columns each partition reads (LogColumns.cohorts)
    metrics: bool = False  # whether each partition reads the outcome metrics (LogColumns.metrics)
    shuffled: tuple[str, int] | None = None  # (scratch, P): the logs shuffled into P partitions (ope.shuffle)


def plan_reading(log_dir: str | Path, *, wait_window: dt.timedelta | None = None, default_reward: float | None = None,
                 duplicates: str = "first", escalations: str = "first", reward: str = "reward",
                 contexts: bool = False, context_sample: int = 1000, cohorts: Sequence[str] = (),
                 metrics: bool = False) -> LogPlan:
    """The :class:`LogPlan` of reading ``log_dir`` in partitions (:func:`read_partition`); the options are
    those of :func:`read_log_columns` (a damaged file raises). Scans the decisions' ``profiles``,
    ``parent_id`` and ``ts`` columns once (and ``decision_id`` if some decisions were escalated), not the join.

    >>> plan_reading("/nonexistent", duplicates="median")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: duplicates must be one of ('first', 'last', 'mean'), got 'median'
    """
    if reward not in METRICS:
        raise InvalidConfigError("reward", f"reward must be one of {METRICS}, got {reward!r}")
    join = dict(wait_window=wait_window, default_reward=default_reward, duplicates=duplicates, escalations=escalations)
    snapshot = LogSnapshot.take(log_dir)
    join_logs(snapshot, **join)  # checks the options (reads the first files' schemas only)
    decisions = scan_decisions(snapshot)
    # one scan: the distinct profiles lists (action_space's query), the decisions, the escalated ones
    lists = (decisions.group_by("profiles").agg(pl.col("ts").min(), pl.len().alias("__n"),
                                                pl.col(PARENT_ID).is_not_null().sum().alias("__escalated"))
             .with_columns(pl.col("profiles").list.join(_SEP).alias("__key")).sort("ts", "__key")
             .collect(engine="streaming"))
    names = tuple(dict.fromkeys(name for profiles in lists.get_column("profiles").to_list() for name in profiles or ()))
    if not names:
        raise InvalidFeedbackError("profiles", f"no profiles found in the decisions under {log_dir}")
    n_escalated, escalated = int(lists.get_column("__escalated").sum()), None
    if n_escalated:
        rows = pl.LazyFrame({"row_index": escalated_rows(decisions, escalations)}, schema={"row_index": pl.UInt32})
        escalated = (decisions.with_row_index("row_index").join(rows, on="row_index", how="semi")
                     .select("decision_id", filled_bucket()).collect(engine="streaming"))
    dtype = _context_dtype(decisions, None, context_sample) if contexts else None
    return LogPlan(snapshot, names, join, reward, int(lists.get_column("__n").sum()),
                   _positions(lists.get_column("__key").to_list(), names), dtype, n_escalated, escalated,
                   tuple(cohorts), bool(metrics))


def read_partition(plan: LogPlan, index: int, count: int) -> LogColumns:
    """The rounds whose bucket is ``index`` modulo ``count``, in decision order, with the logging
    distribution, :attr:`LogColumns.buckets` and the plan's cohorts and metrics: the partition is filtered as
    the files are read, so memory is bounded by the partition (where the bucket is stored). An empty partition has no rounds (no error). ``n_escalated`` is the whole log's,
    ``n_escalated_without_outcome`` this partition's (they add up over the partitions). A plan shuffled into
    ``P`` partitions (:mod:`ope.shuffle`) reads only partition ``index % P``'s files when ``count`` is a multiple of ``P``."""
    names = plan.action_names
    columns = _round_columns(names, plan.reward, metrics=plan.metrics, logging=True, positions=plan.positions,
                             cohorts=plan.cohorts, context_dtype=plan.context_dtype)
    ids = [] if plan.escalated is None else ["decision_id"]
    source = partition_source(plan.snapshot, plan.shuffled, index, count)  # shuffled: partition index's files only
    frame = (_joined(source, plan.join, (index, count) if count > 1 else None, plan.positions, "partition")
             .select(pl.col("row_index"), pl.col("bucket"), *ids, *columns).collect(engine="streaming").sort("row_index"))
    without = 0
    if ids:
        mine = plan.escalated.filter(pl.col("bucket") % count == index)
        without = mine.join(frame.select(ids), on="decision_id", how="anti").height
        frame = frame.drop(ids)
    report = dict(n_escalated=plan.n_escalated, n_escalated_without_outcome=without,
                  escalations=plan.join["escalations"], buckets=frame.get_column("bucket").to_numpy())
    if frame.height == 0:
        return LogColumns(actions=np.empty(0, np.int64), rewards=np.empty(0), propensities=np.empty(0),
                          n_actions=len(names), action_names=names, logging_distribution=np.empty((0, len(names))),
                          **report)
    assembler = _Assembler(frame.height, len(names))
    assembler.add(frame.drop("bucket").with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row_index")))
    del frame
    return replace(_to_columns(plan.snapshot, assembler, names, plan.reward, ()), **report)


def _round_columns(names: tuple[str, ...], reward: str, *, metrics: bool, logging: bool, positions: pl.DataFrame | None,
                   cohorts: Sequence[str] = (), context_dtype: pl.Struct | None = None) -> list[pl.Expr]:
    """The columns selected from the joined rounds, named as :class:`_Assembler` takes them."""
    columns = [
        pl.col("profile").replace_strict(list(names), list(range(len(names))), default=-1, return_dtype=pl.Int64).alias("__action"),
        pl.col(reward).alias("__reward"),
        pl.col("propensity").cast(pl.Float64).alias("__propensity"),
    ]
    if metrics:
        columns += [pl.col(m).alias(f"__metric_{m}") for m in METRICS]
    if logging:
        columns += [
            pl.col("probabilities").list.get(k if positions is None else pl.col(f"__pos{k}"), null_on_oob=True)
            .fill_null(0.0).alias(f"__prob{k}")
            for k in range(len(names))
        ]
    columns += [_cohort_expr(c).alias(f"__cohort_{c}") for c in cohorts]
    if context_dtype is not None:
        columns += [pl.col("context").str.json_decode(context_dtype).struct.field(f.name).alias(f"__ctx_{f.name}")
                    for f in context_dtype.fields]
    return columns


def _joined(log_dir: LogSnapshot, join: dict, partition: tuple[int, int] | None,
            positions: pl.DataFrame | None, row_index: str = "log") -> pl.LazyFrame:
    """The joined rounds of ``partition``, with the actions' positions in their ``profiles`` list."""
    joined = join_logs(log_dir, **join, partition=partition, row_index=row_index)
    if positions is None:
        return joined
    return joined.with_columns(pl.col("profiles").list.join(_SEP).alias("__key")).join(positions.lazy(), on="__key", how="left")


def _position_table(log_dir: str | Path, names: Sequence[str]) -> pl.DataFrame | None:
    """Position of every action in each distinct ``profiles`` list (None: all are prefixes of ``names``)."""
    keys = (
        scan_decisions(log_dir)
        .select(pl.col("profiles").list.join(_SEP).alias("__key"))
        .unique()
        .collect(engine="streaming")
        .get_column("__key")
        .to_list()
    )
    return _positions(keys, names)


def _positions(keys: list, names: Sequence[str]) -> pl.DataFrame | None:
    lists = [key.split(_SEP) if key else [] for key in keys]
    if all(lst == list(names[: len(lst)]) for lst in lists):
        return None
    rows: dict[str, list] = {"__key": keys}
    for k, name in enumerate(names):
        rows[f"__pos{k}"] = [(lst.index(name) if name in lst else None) for lst in lists]
    return pl.DataFrame(rows, schema={"__key": pl.String, **{f"__pos{k}": pl.Int64 for k in range(len(names))}})


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


def _to_columns(log_dir: str | Path, assembler: "_Assembler", names: tuple[str, ...], reward: str,
                skipped: tuple) -> LogColumns:
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
    return LogColumns(
        actions=actions,
        rewards=rewards,
        propensities=cols["__propensity"],
        n_actions=len(names),
        action_names=names,
        contexts=_strip(frame, "__ctx_"),
        cohorts=_strip(frame, "__cohort_"),
        logging_distribution=dist,
        metrics=pl.DataFrame(metric_cols, nan_to_null=True) if metric_cols else None,
        skipped_files=skipped,
    )


def _strip(frame: pl.DataFrame | None, prefix: str) -> pl.DataFrame | None:
    if frame is None:
        return None
    cols = [c for c in frame.columns if c.startswith(prefix)]
    if not cols:
        return None
    return frame.select(cols).rename({c: c[len(prefix):] for c in cols})

