"""Rebuild a router's state from its logs: the posterior (:func:`replay`), and for a restart
the decisions still waiting for their outcome (:func:`pending_decisions`, :func:`writer_positions`).

Every outcome logged with status ``"applied"`` is applied again, in log order
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
                .filter(pl.col("status") == "applied").select(_TAIL))
    return (outcomes.join(decisions, on="decision_id", how="inner")
            .sort(["ts", "writer", "seq"]).collect())


def replay(router, log_dir: str | os.PathLike, *, on_corrupt: str = "quarantine") -> int:
    """Apply the logged outcomes under ``log_dir`` to a router that has learned nothing yet.

    Profiles found in the log but missing from the router are added with the router's prior.
    Returns the number of outcomes that taught the beliefs (those with a quality; every applied
    outcome teaches the learned cost, latency and availability).
    """
    if router.n_updates:
        raise ConfigError("router", f"{router.n_updates} updates",
                          "must be fresh (replay would count its updates twice)")
    rows = applied_outcomes(log_dir, on_corrupt=on_corrupt)
    n = learn_outcomes(router, rows)
    router.refresh()
    return n


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


# -- the log after a position (a snapshot's tail, see banditroute.decide.persistence) --------------
# Positions are {writer: seq}. The filters are per-writer comparisons, which Parquet statistics
# prune row groups with: reading the log after a snapshot costs the tail, not the history.

def log_positions(log_dir: str | os.PathLike, *, after: Mapping[str, int] | None = None, hole_s: float = 60.0,
                  now_us: int | None = None) -> dict[str, tuple[int, int]]:
    """Every writer with rows past ``after[writer]`` (all its rows if it is not named), as
    ``writer -> (last, stable)``: its highest ``seq`` in the log, and the highest up to which
    its rows (of every table: they share the writer's sequence) are all in the log for good.

    ``stable`` stops before the first seq missing past ``after[writer]`` (a commit still on its
    way), unless a row after that gap is more than ``hole_s`` seconds old: then the missing
    rows were never written (a failed commit, a crash) and the gap is passed over. A writer
    whose process is gone has written all it will: its ``last`` is stable too.
    """
    after = dict(after or {})
    rows = pl.concat([scan_table(log_dir, t).select("writer", "seq", "ts").filter(_past(after))
                      for t in ("decisions", "outcomes", "events")])
    found = rows.group_by("writer").agg(pl.col("seq").max().alias("last"), pl.len().alias("n")).collect()
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    positions = {}
    for writer, last, n in found.iter_rows():
        start = after.get(writer, -1)
        stable = last
        if n != last - start:  # a gap (or a row seen twice): walk the writer's rows in seq order
            seqs = (rows.filter(pl.col("writer") == writer).unique("seq").sort("seq")
                    .select("seq", pl.col("ts").dt.epoch("us")).collect())
            s, ts = seqs.get_column("seq").to_numpy(), seqs.get_column("ts").to_numpy()
            previous = np.concatenate([[start], s[:-1]])
            for i in np.flatnonzero(s != previous + 1):  # row i follows a gap
                if ts[i] > now_us - hole_s * 1e6:  # a young gap: its rows may still come
                    stable = int(previous[i])
                    break
        positions[writer] = (int(last), int(stable))
    return positions


def rows_at(log_dir: str | os.PathLike, positions: Mapping[str, int]) -> set[str]:
    """The writers of ``positions`` whose row at that ``seq`` is in the log (in any table)."""
    if not positions:
        return set()
    at = pl.any_horizontal([(pl.col("writer") == w) & (pl.col("seq") == int(s)) for w, s in positions.items()])
    found = pl.concat([scan_table(log_dir, t).select("writer", "seq").filter(at)
                       for t in ("decisions", "outcomes", "events")]).collect()
    return {w for w, s in found.iter_rows() if positions.get(w) == s}


def outcomes_between(log_dir: str | os.PathLike, after: Mapping[str, int], upto: Mapping[str, int], *,
                     window_s: float = 86_400.0) -> tuple[pl.DataFrame, int]:
    """The applied outcomes with ``after[writer] < seq <= upto[writer]`` (a writer missing from
    ``after``: from its first row) joined to their decisions, in log order, as
    :func:`applied_outcomes` gives them; and how many of them have no decision in the log (left
    out, as :func:`replay` leaves them out). Decisions are looked for among those logged up to
    ``window_s`` before the first of these outcomes (an outcome applies only within its
    decision's wait window), then, for any still missing, in the whole log."""
    columns = ("decision_id", "profile", "task_types", "task_probs", "context", "propensity")
    decisions = scan_table(log_dir, "decisions").select(*columns, "ts")
    if not upto:
        return pl.DataFrame(schema={**_applied(log_dir).select(_TAIL).collect_schema(),
                                    **decisions.drop("decision_id", "ts").collect_schema()}), 0
    within = pl.any_horizontal([(pl.col("writer") == w) & (pl.col("seq") <= int(s)) for w, s in upto.items()])
    tail = _applied(log_dir).filter(within & _past(after)).select(_TAIL).collect()
    rows = tail.join(decisions.drop("ts").clear().collect(), on="decision_id", how="inner")
    if tail.height:
        near = decisions.filter(pl.col("ts") >= tail.get_column("ts").min() - timedelta(seconds=window_s))
        rows = tail.lazy().join(near.drop("ts"), on="decision_id", how="inner").collect()
        if rows.height < tail.height:
            rows = tail.lazy().join(decisions.drop("ts"), on="decision_id", how="inner").collect()
    return rows.sort(["ts", "writer", "seq"]), tail.height - rows.height


def learn_outcomes(router, rows: pl.DataFrame) -> int:
    """Teach ``router`` the applied outcomes ``rows`` (in log order, as :func:`outcomes_between`
    gives them): the updates :func:`replay` makes, on given rows (a snapshot's tail). Profiles
    of the rows the router lacks are added with its prior. Returns the number that taught the
    beliefs (those with a quality; every row teaches the learned cost, latency and availability)."""
    if rows.height == 0:
        return 0
    for name in rows.get_column("profile").unique(maintain_order=True).to_list():
        if name not in router.profiles:
            router.add_profile(Profile(name), onboard=False)  # a profile of the log: not new
    index = {name: i for i, name in enumerate(router.profiles)}
    ks = rows.get_column("profile").replace_strict(index, return_dtype=pl.Int64).to_numpy()
    w = task_weights(rows, router.task_types)
    quality, cost, latency = (rows.get_column(c).cast(pl.Float64).fill_null(np.nan).to_numpy()
                              for c in ("quality", "cost_usd", "latency_ms"))
    failed = rows.get_column("error").is_not_null().to_numpy()
    feedback = None
    if router.policy.learns:  # the same calls record() made (outcomes with a quality, or failed ones)
        error_quality = router.config.error_quality
        feedback = [Feedback(json.loads(c), w[i], int(ks[i]), error_quality if e is not None else q, r, p)
                    for i, (c, q, r, p, e) in enumerate(rows.select("context", "quality", "reward", "propensity",
                                                                     "error").iter_rows())
                    if (error_quality if e is not None else q) is not None]
    return router.learn_many(ks, w, quality, feedback, cost=cost, latency=latency, failed=failed)


def recent_pending_decisions(log_dir: str | os.PathLike, *, since_us: int, writers: set[str],
                             margin_s: float = 3600.0) -> pl.DataFrame:
    """:func:`pending_decisions`, reading only the recent part of the log: outcomes logged from
    ``margin_s`` before ``since_us`` on (an outcome comes after its decision; the margin covers
    clocks of different processes), so a restart does not read every outcome ever logged."""
    since = datetime.fromtimestamp(since_us / 1e6, tz=timezone.utc)
    answered = (scan_table(log_dir, "outcomes").filter(pl.col("ts") >= since - timedelta(seconds=margin_s))
                .select("decision_id").unique())
    return (scan_table(log_dir, "decisions")
            .filter(pl.col("writer").is_in(list(writers)) & (pl.col("ts") >= since))
            .join(answered, on="decision_id", how="anti")
            .with_columns(pl.col("ts").dt.epoch("us").alias("ts_us"))
            .sort(["ts_us", "writer", "seq"])
            .select("decision_id", "ts_us", "profile", "task_types", "task_probs", "context", "propensity")
            .collect())


_TAIL = ("decision_id", "ts", "writer", "seq", "quality", "reward", "cost_usd", "latency_ms", "error")


def _applied(log_dir) -> pl.LazyFrame:
    return scan_table(log_dir, "outcomes").filter(pl.col("status") == "applied")


def _past(after: Mapping[str, int]) -> pl.Expr:
    """Rows past ``after`` (writer -> seq); every row of a writer not named."""
    if not after:
        return pl.lit(True)
    return pl.any_horizontal([*((pl.col("writer") == w) & (pl.col("seq") > int(s)) for w, s in after.items()),
                              ~pl.col("writer").is_in(list(after))])
