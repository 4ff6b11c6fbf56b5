"""Watch a running canary from the log with :class:`ope.CanaryMonitor`; roll it back when it says so.

:class:`CanaryWatcher` reads, at each :meth:`~CanaryWatcher.poll`, the canary rounds logged
since the last poll and feeds them to an anytime-valid monitor (:mod:`ope.monitor`), so it can
poll as often as it likes. When the monitor declares ``"rollback"`` (a guardrail failed, or the
candidate is clearly worse) the watcher calls ``router.rollback(who=..., why=...)`` with the
monitor's numbers as JSON, so the rollback is an event row of the log carrying them (or, given
``rollback=``, calls that instead: the service submits a rollback command to its command store, so
every replica rolls back, see :mod:`banditroute.service.canary_monitor`). A ``"promote"`` is
reported, not acted on: promotion stays a person's command.

What it reads, all from the log (``scan_table``: the Parquet parts and the rows still in journal
segments, joined as :func:`ope.join_logs` joins them):

- the canary: the last ``canary_start`` event (name, start time, fraction), the
  ``canary_fraction`` events after it, and the ``promote`` / ``rollback`` that ended it;
- its rounds: decisions logged while it ran (column ``shadow`` holds the candidate's pmf aligned
  with the row's ``profiles``), joined with their outcomes. The logged propensity is the mixture
  ``(1 - f) pi_prod + f pi_cand``, so production's probability of the logged profile is
  ``(propensity - f * p_cand) / (1 - f)``, with ``f`` the fraction in force at the decision.

Rounds are fed in decision-time order, once each, when they are ``wait_window`` old: by then every
outcome that counts has arrived (one later does not count, as in :func:`ope.join_logs`), so no
round is fed before its outcome is settled. Rounds without a counted outcome are left out unless
``default_reward`` is given; rounds whose primary metric or a guardrail metric is null are left
out too (valid if that does not depend on the outcome). The log must hold every row committed up
to ``now - wait_window`` when polling: a writer's rows are read once flushed or committed to its
journal (a service's replicas commit each row before answering).

>>> import tempfile
>>> import banditroute as br
>>> log_dir = tempfile.mkdtemp()
>>> router = br.Router([br.Profile("a", cost_usd=0.001, latency_ms=100)], seed=0, log_dir=log_dir)
>>> CanaryWatcher(router, log_dir).poll() is None  # no canary was ever started
True
>>> CanaryWatcher(router, log_dir, metric="tokens")
Traceback (most recent call last):
...
banditroute.errors.ConfigError: metric must be one of ('reward', 'quality', 'cost_usd', 'latency_ms'), got 'tokens'
>>> router.close()
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import numpy as np
import polars as pl

from ope.monitor import CanaryMonitor, MonitorOptions, MonitorResult

from ..errors import ConfigError
from ..logs.scan import scan_table

__all__ = ["CanaryWatcher", "CanaryRun", "canary_run", "canary_rounds"]

METRICS = ("reward", "quality", "cost_usd", "latency_ms")


class CanaryRun:
    """The last canary in a log: ``name``, ``start_us``, ``end_us`` (the promote or rollback that
    ended it, None while it runs) and its fractions over time (``fraction_ts_us``, ``fractions``).

    >>> run = CanaryRun("t", 0, None, np.array([0, 100]), np.array([0.2, 0.6]))
    >>> run.running, run.fraction_at(np.array([50, 100, 150])).tolist()
    (True, [0.2, 0.6, 0.6])
    """

    __slots__ = ("name", "start_us", "end_us", "fraction_ts_us", "fractions")

    def __init__(self, name: str, start_us: int, end_us: int | None, fraction_ts_us: np.ndarray,
                 fractions: np.ndarray) -> None:
        self.name, self.start_us, self.end_us = name, start_us, end_us
        self.fraction_ts_us, self.fractions = fraction_ts_us, fractions

    @property
    def running(self) -> bool:
        return self.end_us is None

    def fraction_at(self, ts_us: np.ndarray) -> np.ndarray:
        """The fraction in force at each time (the last fraction event at or before it)."""
        i = np.searchsorted(self.fraction_ts_us, ts_us, side="right") - 1
        return self.fractions[np.maximum(i, 0)]


def canary_run(log_dir: str | os.PathLike) -> CanaryRun | None:
    """The last canary started in the log under ``log_dir`` (None if none ever was).

    >>> import tempfile
    >>> canary_run(tempfile.mkdtemp()) is None
    True
    """
    events = (scan_table(log_dir, "events")
              .select(pl.col("ts").dt.epoch("us").alias("ts_us"), "seq", "event", "policy", "fraction")
              .sort("ts_us", "seq").collect())
    starts = events.filter(pl.col("event") == "canary_start")
    if starts.height == 0:
        return None
    name, start_us = starts.item(-1, "policy"), starts.item(-1, "ts_us")
    after = events.filter((pl.col("ts_us") >= start_us) & (pl.col("policy") == name))
    ends = after.filter(pl.col("event").is_in(["promote", "rollback"]))
    end_us = ends.item(0, "ts_us") if ends.height else None
    steps = after.filter(pl.col("event").is_in(["canary_start", "canary_fraction"]))
    if end_us is not None:
        steps = steps.filter(pl.col("ts_us") < end_us)
    return CanaryRun(name, start_us, end_us, steps.get_column("ts_us").to_numpy(),
                     steps.get_column("fraction").to_numpy().astype(np.float64))


def canary_rounds(log_dir: str | os.PathLike, run: CanaryRun, *, since_us: int, until_us: int, metric: str = "reward",
                  metrics: tuple[str, ...] = (), wait_window: dt.timedelta = dt.timedelta(seconds=60),
                  default_reward: float | None = None) -> dict[str, np.ndarray]:
    """The canary's rounds decided in ``[since_us, until_us)`` (and while it ran), in decision
    order, as the monitor's inputs: ``candidate_probs``, ``baseline_probs``, ``propensities``,
    ``rewards`` (column ``metric``) and ``metrics`` (the columns ``metrics``)."""
    end = until_us if run.end_us is None else min(until_us, run.end_us)
    start = max(since_us, run.start_us)
    wanted = list(dict.fromkeys([metric, *metrics]))
    frame = (_joined(log_dir, wait_window=wait_window, default_reward=default_reward, start_us=start, end_us=end)
             .drop_nulls(wanted)
             .select("ts_us", "writer", "seq", "profiles", "profile", "propensity", "shadow", *wanted)
             .sort("ts_us", "writer", "seq").collect())
    # the candidate's probability of the logged profile, from the shadow column (not a hot path)
    cand = [(json.loads(s).get(run.name) or [None] * len(ps))[ps.index(p)] for s, ps, p in
            zip(frame.get_column("shadow").to_list(), frame.get_column("profiles").to_list(),
                frame.get_column("profile").to_list())]
    keep = np.array([c is not None for c in cand], dtype=bool)
    frame = frame.filter(pl.Series(keep))
    p_cand = np.array([c for c in cand if c is not None], dtype=np.float64)
    propensity = frame.get_column("propensity").to_numpy().astype(np.float64)
    f = run.fraction_at(frame.get_column("ts_us").to_numpy())
    p_prod = np.clip((propensity - f * p_cand) / (1.0 - f), 0.0, 1.0)
    return {"candidate_probs": p_cand, "baseline_probs": p_prod, "propensities": propensity,
            "rewards": frame.get_column(metric).to_numpy().astype(np.float64),
            "metrics": {m: frame.get_column(m).to_numpy().astype(np.float64) for m in metrics}}


_OUTCOME_METRICS = ("reward", "quality", "cost_usd", "latency_ms")


def _joined(log_dir, *, wait_window: dt.timedelta, default_reward: float | None, start_us: int,
            end_us: int) -> pl.LazyFrame:
    """The decisions of ``[start_us, end_us)`` with a shadow, joined with their first outcome
    within ``wait_window`` (:func:`ope.join_logs`'s rules, ``duplicates="first"``), read with
    ``scan_table`` so that rows still in journal segments (a running service's) are seen."""
    lo = dt.datetime.fromtimestamp(start_us / 1e6, tz=dt.timezone.utc)
    decisions = (scan_table(log_dir, "decisions")
                 .with_columns(pl.col("ts").dt.epoch("us").alias("ts_us"))
                 .filter((pl.col("ts_us") >= start_us) & (pl.col("ts_us") < end_us) & pl.col("shadow").is_not_null())
                 .select("decision_id", "ts", "ts_us", "writer", "seq", "profiles", "profile", "propensity", "shadow"))
    outcomes = (scan_table(log_dir, "outcomes").filter(pl.col("ts") >= lo)
                .select("decision_id", pl.col("ts").alias("outcome_ts"),
                        *[pl.col(m).cast(pl.Float64) for m in _OUTCOME_METRICS])
                .join(decisions.select("decision_id", pl.col("ts").alias("decision_ts")), on="decision_id",
                      how="inner")
                .filter((pl.col("outcome_ts") - pl.col("decision_ts")) <= pl.lit(wait_window))
                .group_by("decision_id")
                .agg([pl.col(m).get(pl.col("outcome_ts").arg_min()) for m in _OUTCOME_METRICS]))
    joined = decisions.join(outcomes, on="decision_id", how="inner" if default_reward is None else "left")
    if default_reward is not None:
        joined = joined.with_columns(pl.col("reward").fill_null(float(default_reward)))
    return joined


class CanaryWatcher:
    """Feeds the running canary's logged rounds to an :class:`ope.CanaryMonitor` and rolls the
    canary back (``who``, ``why`` = the monitor's numbers as JSON) when it declares ``"rollback"``.

    Parameters
    ----------
    router : Router
        The router running the canary (only its public ``rollback`` is used).
    log_dir : path
        The router's log directory.
    options : ope.MonitorOptions, optional
        The monitor's options (alpha, margin, ranges, ``max_weight``, guardrails). A
        ``max_weight`` must hold for every fraction the canary will use (``1 / min(f, 1 - f)``);
        without one the monitor needs no weight bound.
    metric : {"reward", "quality", "cost_usd", "latency_ms"}
        The outcome column compared (its range is ``options.reward_range``).
    wait_window : datetime.timedelta
        How long after a decision its outcome may arrive; rounds are fed once that old.
    default_reward : float, optional
        Reward of rounds without a counted outcome (None: left out).
    who : str
        Recorded as the rollback's ``who``.
    rollback : callable(who, why), optional
        What rolls the canary back (default: ``router.rollback(who=who, why=why)``, this router
        only). The service passes one that submits a rollback command to its command store.
        Raising leaves the canary to be rolled back at the next poll.

    Attributes
    ----------
    monitor_ : ope.CanaryMonitor or None
        The monitor of the canary being watched (a new one for each canary).
    rolled_back_ : bool
        Whether this watcher rolled the watched canary back.
    """

    def __init__(self, router, log_dir: str | os.PathLike, *, options: MonitorOptions | None = None,
                 metric: str = "reward", wait_window: dt.timedelta = dt.timedelta(seconds=60),
                 default_reward: float | None = None, who: str = "monitor", rollback=None) -> None:
        if metric not in METRICS:
            raise ConfigError("metric", metric, f"must be one of {METRICS}")
        if not isinstance(wait_window, dt.timedelta) or wait_window < dt.timedelta(0):
            raise ConfigError("wait_window", wait_window, "must be a non-negative timedelta")
        self.options = MonitorOptions() if options is None else options
        if not isinstance(self.options, MonitorOptions):
            raise ConfigError("options", options, "must be an ope.MonitorOptions")
        unknown = [g.metric for g in self.options.guardrail_list if g.metric not in METRICS or g.metric == metric]
        if unknown:
            raise ConfigError("options.guardrails", unknown, f"must be logged metrics other than {metric!r}: {METRICS}")
        self.router, self.log_dir, self.metric, self.who = router, log_dir, metric, who
        self.wait_window, self.default_reward = wait_window, default_reward
        if rollback is not None and not callable(rollback):
            raise ConfigError("rollback", type(rollback).__name__, "must be a callable (who, why)")
        self.rollback = rollback if rollback is not None else self._rollback_router
        self.monitor_: CanaryMonitor | None = None
        self.rolled_back_ = False
        self._run_key: tuple[str, int] | None = None
        self._fed_until_us = 0

    def poll(self, *, now_us: int | None = None) -> MonitorResult | None:
        """Feed the canary rounds now ``wait_window`` old and not fed yet, act on a rollback, and
        return the monitor's result (None if no canary was ever started in the log)."""
        run = canary_run(self.log_dir)
        if run is None:
            return None
        if self._run_key != (run.name, run.start_us):  # a new canary: a new monitor
            self._run_key, self._fed_until_us = (run.name, run.start_us), run.start_us
            self.monitor_, self.rolled_back_ = CanaryMonitor(self.options), False
        now_us = time.time_ns() // 1000 if now_us is None else int(now_us)
        until_us = now_us - self.wait_window // dt.timedelta(microseconds=1)
        if until_us > self._fed_until_us:
            rounds = canary_rounds(self.log_dir, run, since_us=self._fed_until_us, until_us=until_us,
                                   metric=self.metric, metrics=tuple(g.metric for g in self.options.guardrail_list),
                                   wait_window=self.wait_window, default_reward=self.default_reward)
            self.monitor_.update(**rounds)
            self._fed_until_us = until_us
        result = self.monitor_.result()
        if result.decision == "rollback" and run.running and not self.rolled_back_:
            self.rollback(self.who, json.dumps(result.to_dict(), separators=(",", ":")))
            self.rolled_back_ = True
        return result

    def _rollback_router(self, who: str, why: str) -> None:
        self.router.rollback(who=who, why=why)
