"""Rebuild a router's state from its logs: the posterior (:func:`replay`), and for a restart
the decisions still waiting for their outcome (:func:`pending_decisions`, :func:`writer_positions`).

Every outcome logged with status ``"applied"`` (and a quality) is applied again, in log order
(outcome time, then writer, then sequence number), with the task-type posterior logged with its
decision: the same updates the live router made, so the beliefs come out the same.

A damaged file never stops a replay (a replica replays at start-up): by default
(``on_corrupt="quarantine"``) a damaged part is moved to ``<log_dir>/_quarantine`` and the
rest is replayed; see :mod:`banditroute.logs.scan` and
:func:`~banditroute.logs.quarantine.quarantined_files`.

>>> import tempfile, banditroute as br
>>> log_dir = tempfile.mkdtemp()
>>> live = br.Router([br.Profile("a"), br.Profile("b")], log_dir=log_dir, seed=0)
>>> for _ in range(20):
...     _ = live.record(live.decide({}).id, quality=1.0)
>>> live.flush()
>>> fresh = br.Router([br.Profile("a"), br.Profile("b")], seed=1)
>>> replay(fresh, log_dir)
20
>>> fresh.beliefs().equals(live.beliefs())
True
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from ..errors import ConfigError
from ..config.profiles import Profile
from ..policies.base import Feedback
from .store import scan_table as _scan_table

__all__ = ["applied_outcomes", "learn_outcomes", "log_positions", "outcomes_between", "pending_decisions",
           "recent_pending_decisions", "replay", "rows_at", "writer_positions"]


def scan_table(log_dir: str | os.PathLike, table: str, *, on_corrupt: str = "quarantine") -> pl.LazyFrame:
    """:func:`~banditroute.logs.scan.scan_table` as every reader of this module calls it: a damaged
    part is quarantined by default (a replica replays at start-up, and must start)."""
    return _scan_table(log_dir, table, on_corrupt=on_corrupt)


def applied_outcomes(log_dir: str | os.PathLike, *, on_corrupt: str = "quarantine") -> pl.DataFrame:
    """Applied outcomes joined to their decisions, in the order they were applied."""
    decisions = scan_table(log_dir, "decisions", on_corrupt=on_corrupt).select(
        "decision_id", "profile", "task_types", "task_probs", "context", "propensity")
    outcomes = (scan_table(log_dir, "outcomes", on_corrupt=on_corrupt)
                .filter((pl.col("status") == "applied") & pl.col("quality").is_not_null())
                .select("decision_id", "ts", "writer", "seq", "quality", "reward"))
    return (outcomes.join(decisions, on="decision_id", how="inner")
            .sort(["ts", "writer", "seq"]).collect())


def replay(router, log_dir: str | os.PathLike, *, on_corrupt: str = "quarantine") -> int:
    """Apply the logged outcomes under ``log_dir`` to a router that has learned nothing yet.

    Profiles found in the log but missing from the router are added with the router's prior.
    Returns the number of outcomes applied.
    """
    if router.n_updates:
        raise ConfigError("router", f"{router.n_updates} updates",
                          "must be fresh (replay would count its updates twice)")
    rows = applied_outcomes(log_dir, on_corrupt=on_corrupt)
    for name in rows.get_column("profile").unique(maintain_order=True).to_list():
        if name not in router.profiles:
            router.add_profile(Profile(name))
    index = {name: i for i, name in enumerate(router.profiles)}
    ks = rows.get_column("profile").replace_strict(index, return_dtype=pl.Int64).to_numpy()
    w = task_weights(rows, router.task_types)
    quality = rows.get_column("quality").to_numpy().astype(np.float64)
    feedback = None
    if router.policy.learns:  # the same calls record() made
        feedback = [Feedback(json.loads(c), w[i], int(ks[i]), q, r, p) for i, (c, q, r, p) in enumerate(
            rows.select("context", "quality", "reward", "propensity").iter_rows())]
    router.learn_many(ks, w, quality, feedback)
    router.refresh()
    return rows.height


def task_weights(rows: pl.DataFrame, task_types: list[str]) -> np.ndarray:
    """The logged task-type posteriors (columns ``task_types``, ``task_probs``) as an array of
    shape (n, len(task_types)) in the router's task-type order."""
    index = {t: i for i, t in enumerate(task_types)}
    w = np.zeros((rows.height, len(task_types)))
    keyed = rows.select(pl.col("task_types").list.join("\x1f").alias("key"), "task_probs").with_row_index("row")
    for (key,), group in keyed.group_by("key"):
        logged = key.split("\x1f") if key else []
        for t in logged:
            if t not in index:
                raise ConfigError("task_types", t, f"is in the log but not among the router's {task_types}")
        rows_at = group.get_column("row").to_numpy()
        probs = np.array(group.get_column("task_probs").to_list(), dtype=np.float64).reshape(len(rows_at), -1)
        w[np.ix_(rows_at, [index[t] for t in logged])] = probs
    return w


def writer_positions(log_dir: str | os.PathLike, *, on_corrupt: str = "quarantine") -> dict[str, int]:
    """Every writer of the log, with the number of rows it sequenced (its highest ``seq`` + 1)."""
    frames = [scan_table(log_dir, table, on_corrupt=on_corrupt).group_by("writer").agg(pl.col("seq").max())
              for table in ("decisions", "outcomes", "events")]
    merged = pl.concat([f.collect() for f in frames]).group_by("writer").agg(pl.col("seq").max())
    return {w: int(s) + 1 for w, s in merged.iter_rows()}


def pending_decisions(log_dir: str | os.PathLike, *, since_us: int, writers: set[str],
                      on_corrupt: str = "quarantine") -> pl.DataFrame:
    """Decisions of ``writers`` logged at or after ``since_us`` (epoch microseconds) that have no
    outcome row yet, in issue order: ``decision_id``, ``ts_us``, ``profile``, ``task_types``,
    ``task_probs``, ``context``, ``propensity``."""
    answered = scan_table(log_dir, "outcomes", on_corrupt=on_corrupt).select("decision_id").unique()
    return (scan_table(log_dir, "decisions", on_corrupt=on_corrupt)
            .filter(pl.col("writer").is_in(list(writers)))
            .with_columns(pl.col("ts").dt.epoch("us").alias("ts_us"))
            .filter(pl.col("ts_us") >= since_us)
            .join(answered, on="decision_id", how="anti")
            .sort(["ts_us", "writer", "seq"])
            .select("decision_id", "ts_us", "profile", "task_types", "task_probs", "context", "propensity")
            .collect())
