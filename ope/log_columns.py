"""Assembling banditroute's joined logs into the arrays of one :class:`~ope.LoggedFeedback`.

:func:`read_log_columns` joins the decisions with their outcomes (:func:`ope.log_join.join_logs`)
in hash partitions, one after the other, and scatters each partition into arrays indexed by
the decision's position, so only one partition is in memory at a time. It returns a
:class:`LogColumns` record (the constructor arguments of ``LoggedFeedback``) and never
imports :mod:`ope.feedback`: :meth:`ope.LoggedFeedback.from_logs` and
:func:`ope.logs.feedback_from_logs` build the feedback from it.
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
from ope.escalations import check_escalations, count_escalated, escalated_rows
from ope.log_join import METRICS, LogSnapshot, action_space, join_logs, scan_decisions

__all__ = ["LogColumns", "read_log_columns"]

_SEP = "\x1f"  # joins a profiles list into one key (the unit separator is in no profile name)
# the fields of LogColumns that report on the reading (not arguments of LoggedFeedback)
_REPORT = ("skipped_files", "n_escalated", "n_escalated_without_outcome", "escalations")


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
                           escalations=escalations, partition=(i, n_partitions) if n_partitions > 1 else None)
        if logging_distribution and positions is not None:
            joined = joined.with_columns(pl.col("profiles").list.join(_SEP).alias("__key")).join(positions, on="__key", how="left")
        assembler.add(joined.select(pl.col("row_index"), *columns, *frames_cols).collect(engine="streaming"))
    columns = _to_columns(log_dir, assembler, names, reward, tuple(log_dir.skipped))
    n_escalated = count_escalated(scan_decisions(log_dir))
    escalated = escalated_rows(scan_decisions(log_dir), escalations) if n_escalated else np.empty(0, np.int64)
    return replace(columns, n_escalated=n_escalated, escalations=escalations,
                   n_escalated_without_outcome=int((~assembler.present[escalated]).sum()))


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

