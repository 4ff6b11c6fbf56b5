"""The promotion gate on log partitions: :func:`ope.gate`'s verdict for logs that need not fit in memory.

:func:`gate_logs` reads banditroute's logs in partitions by stable bucket, here or on Dask, as
:func:`ope.evaluate_logs` does (:mod:`ope.distributed`). Per partition and checked metric (the rounds
where it is logged), each cell (all traffic, each cohort value seen) is a :class:`CellStats`: the
rounds, the means and co-moments of both policies' per-round terms, both policies' importance
weights' sum, sum of squares and maximum. Merged in partition order they give each cell's estimates,
paired difference, standard error and effective sample sizes; the whole-log checks come from merged
:class:`~ope.stats.WeightStats`. Rows, p-values and whole-log messages are written by the in-memory
gate's functions (:func:`ope.gate.cell_row`, :func:`ope.gate.weight_problems`), the verdict by
:func:`ope.gate_result.decide`.

- Linear estimators (IPS, with ``clip``; DR, DM, Switch-DR, DRos): the per-round difference
  ``d_i = v_i(candidate) - v_i(baseline)`` is summarised itself (columns ``d, v_c, v_b``): the
  cells equal the in-memory gate's up to rounding.
- Self-normalised estimators (SNIPS, SNDR): the influence values depend on each cell's ratios, so
  the joint co-moments of ``(base, num, den)`` of both policies are merged and the variance of
  ``d`` is the delta method's ``a^T C a / (n - 1)`` with the gradient ``a`` at the merged means:
  equal to the in-memory gate's up to rounding.
- Model-based estimators: one :class:`~ope.partition_models.SampleRewardModels` per metric, fitted
  on the client on about ``reward_sample`` rounds and shared by both policies (as the in-memory gate
  shares one fit per metric); the values differ from the in-memory gate's, whose folds are random.

Refused with a clear error: learning candidates or baselines (progressive replay is sequential),
target arrays and SPECs that are not :mod:`ope.partition_specs` targets, and estimators given with
fixed ``reward_predictions`` (aligned with one in-memory reading): use :func:`ope.gate` on
:func:`ope.feedback_from_logs` for those.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from ope.base import Estimator
from ope.distributed import TaskFailure, check_engine, engine_client, partition_count, run_tasks
from ope.errors import InvalidConfigError, InvalidFeedbackError, OPEError
from ope.feedback import LoggedFeedback
from ope.gate import (STATIC, UNSET, Check, cell_row, check_metric_logged, checks_of, cohort_labels, ess_of,
                      metric_feedback, metric_rounds, resolve_options, unknown_metric, weight_problems)
from ope.gate_options import GateOptions
from ope.gate_result import GateResult, decide
from ope.ips import IPS, SNIPS
from ope.learning import is_learning
from ope.log_columns import LogPlan, plan_reading, read_partition
from ope.log_join import METRICS
from ope.partition_models import SampleRewardModels, is_model_based, sample_stride, with_predictions
from ope.partition_specs import target_of, target_specs
from ope.policies import resolve_with_weights
from ope.shuffle import check_shuffle_options, shuffled_plan
from ope.stats import WeightStats, pairwise

__all__ = ["gate_logs", "gate_partition", "CellStats", "GatePartition", "engine_client", "partition_count"]

_POLICIES = ("candidate", "baseline")


@dataclass(frozen=True, eq=False)
class CellStats:
    """Mergeable summary of one (metric, cohort) cell: ``n``, the means and co-moment matrix
    ``sum_i (x_i - mean)(x_i - mean)^T`` of the columns ``x`` (linear terms: ``d, v_c, v_b``; ratio
    terms: ``base, num, den`` of the candidate, then of the baseline), and per policy (rows) the
    importance weights' ``sum w, sum w^2, max w`` (Chan, Golub & LeVeque's pairwise merge).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c, b, w = rng.random(9), rng.random(9), rng.random((2, 9))
    >>> whole = CellStats.of([c - b, c, b], w[0], w[1])
    >>> parts = CellStats.of([c[:4] - b[:4], c[:4], b[:4]], w[0, :4], w[1, :4]).merge(
    ...     CellStats.of([c[4:] - b[4:], c[4:], b[4:]], w[0, 4:], w[1, 4:]))
    >>> same = np.allclose(parts.comoment, whole.comoment) and np.allclose(parts.measure(0.05), whole.measure(0.05))
    >>> bool(same)
    True
    """

    n: int
    mean: np.ndarray
    comoment: np.ndarray
    weights: np.ndarray

    @classmethod
    def empty(cls, k: int) -> CellStats:
        """The summary of no rounds (``k`` columns)."""
        return cls(0, np.zeros(k), np.zeros((k, k)), np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))

    @classmethod
    def of(cls, columns: Sequence[np.ndarray], w_cand: np.ndarray, w_base: np.ndarray) -> CellStats:
        """The summary of the rounds of ``columns`` (each of shape (n,)) and both policies' weights."""
        n = int(columns[0].shape[0])
        if n == 0:
            return cls.empty(len(columns))
        x = np.column_stack(columns)
        mean = x.mean(axis=0)
        x -= mean
        weights = np.array([[float(w.sum()), float(np.dot(w, w)), float(w.max())] for w in (w_cand, w_base)])
        return cls(n, mean, x.T @ x, weights)

    def merge(self, other: CellStats) -> CellStats:
        """The summary of the rounds of both."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        weights = np.column_stack([self.weights[:, :2] + other.weights[:, :2],
                                   np.maximum(self.weights[:, 2], other.weights[:, 2])])
        return CellStats(*pairwise(self.n, self.mean, self.comoment, other.n, other.mean, other.comoment), weights)

    def measure(self, alpha: float) -> tuple[float, float, float, float, float, float]:
        """``(estimate_candidate, estimate_baseline, diff, stderr, lower, upper)``: the paired difference's
        ``1 - 2 alpha`` normal interval (NaN below 2 rounds or without weight in a ratio's denominator)."""
        if self.n < 2:
            return (math.nan,) * 6
        m = self.mean
        if m.shape[0] == 3:  # linear: d, v_c, v_b
            est_c, est_b, diff = float(m[1]), float(m[2]), float(m[0])
            a = np.array([1.0, 0.0, 0.0])
        else:  # ratio: base, num, den of each policy; influence base + (num - R den) / mean(den) + R
            if m[2] == 0 or m[5] == 0:
                return (math.nan,) * 6
            r_c, r_b = float(m[1]) / float(m[2]), float(m[4]) / float(m[5])
            est_c, est_b = float(m[0]) + r_c, float(m[3]) + r_b
            diff = est_c - est_b
            a = np.array([1.0, 1.0 / m[2], -r_c / m[2], -1.0, -1.0 / m[5], r_b / m[5]])
        se = math.sqrt(max(float(a @ self.comoment @ a), 0.0) / (self.n - 1)) / math.sqrt(self.n)
        z = float(ndtri(1.0 - alpha))
        return est_c, est_b, diff, se, diff - z * se, diff + z * se


@dataclass(frozen=True, eq=False)
class GatePartition:
    """What a task returns: the cells' summaries keyed ``(metric, cohort_column, cohort_value)`` (None,
    None: all traffic), both policies' whole-log :class:`~ope.stats.WeightStats`, the cohort values
    seen and, per metric, the rounds where it is logged."""

    index: int
    cells: dict
    weights: dict
    cohort_values: dict
    n_logged: dict

    def merge(self, other: GatePartition) -> GatePartition:
        """Both partitions' summaries merged (the index is the first's)."""
        cells = dict(self.cells)
        for key, stats in other.cells.items():
            cells[key] = cells[key].merge(stats) if key in cells else stats
        values = {c: self.cohort_values.get(c, frozenset()) | other.cohort_values.get(c, frozenset())
                  for c in {*self.cohort_values, *other.cohort_values}}
        logged = {m: self.n_logged.get(m, 0) + other.n_logged.get(m, 0) for m in {*self.n_logged, *other.n_logged}}
        return GatePartition(self.index, cells, {p: w.merge(other.weights[p]) for p, w in self.weights.items()},
                             values, logged)


def gate_partition(plan: LogPlan, index: int, count: int, specs: Mapping[str, tuple], estimator: Estimator,
                   checks: Sequence[Check], cohorts: Sequence[str],
                   models: Mapping[str, SampleRewardModels] | None) -> GatePartition | TaskFailure:
    """Read partition ``index`` of ``count`` and summarise every (metric, cohort) cell on its rounds
    (``models``: per metric, the reward models of a model-based ``estimator``). Runs in a worker; an
    OPEError comes back as a :class:`~ope.errors.TaskFailure`."""
    try:
        columns = read_partition(plan, index, count)
        if columns.actions.shape[0] == 0:
            return GatePartition(index, {}, {p: WeightStats.of(np.empty(0)) for p in specs}, {}, {})
        fb = LoggedFeedback(**columns.as_kwargs())
        targets, weights, wstats = {}, {}, {}
        for who, spec in specs.items():
            targets[who], weights[who] = resolve_with_weights(target_of(spec, fb), fb)
            wstats[who] = WeightStats.of(weights[who], targets[who], fb.actions, fb.logging_distribution)
        labels = {c: cohort_labels(fb, c) for c in cohorts}
        cells, logged = {}, {}
        for check in checks:
            keep = metric_rounds(fb, check.metric, require=False)
            logged[check.metric] = int(keep.sum())
            if not keep.any() or (models is not None and models[check.metric] is None):
                continue
            fb_m = metric_feedback(fb, check.metric, keep)
            est = estimator
            if models is not None:  # the metric's reward models, on the rounds where it is logged
                est = with_predictions(estimator, models[check.metric].predict(columns)[keep])
            w_c, w_b = weights["candidate"][keep], weights["baseline"][keep]
            cache: dict = {}
            t_c = est.validated_terms(fb_m, targets["candidate"][keep], weights=w_c, rng=np.random.default_rng(0),
                                      cache=cache)
            t_b = est.validated_terms(fb_m, targets["baseline"][keep], weights=w_b, rng=np.random.default_rng(0),
                                      cache=cache)
            if t_c.is_ratio:
                x = [t_c.base, t_c.num, t_c.den, t_b.base, t_b.num, t_b.den]
            else:
                x = [t_c.base - t_b.base, t_c.base, t_b.base]
            x = [np.asarray(c, dtype=np.float64) for c in x]
            masks = [((None, None), None)] + [((c, v), labels[c][keep] == v) for c in cohorts
                                              for v in set(labels[c].tolist())]
            for (column, value), m in masks:
                if m is None:
                    cells[(check.metric, None, None)] = CellStats.of(x, w_c, w_b)
                elif m.any():
                    cells[(check.metric, column, value)] = CellStats.of([c[m] for c in x], w_c[m], w_b[m])
        values = {c: frozenset(labels[c].tolist()) for c in cohorts}
        return GatePartition(index, cells, wstats, values, logged)
    except OPEError as exc:
        return TaskFailure.of(exc)


def _refuse_learning(policies: Mapping[str, Any]) -> None:
    for who, policy in policies.items():
        if is_learning(policy):
            raise InvalidConfigError(who, f"the {who} learns: its progressive replay is sequential (each round is "
                                     "scored by the model trained on every earlier round) and cannot be split into "
                                     "partitions; gate it in memory with ope.gate on ope.feedback_from_logs")


def _partition_estimator(options: GateOptions) -> Estimator:
    est = options.build_estimator()
    if type(est) in (IPS, SNIPS) or (is_model_based(est) and est.reward_model is not None):
        return est
    why = ("its reward_predictions are aligned with one in-memory reading" if is_model_based(est)
           else "only IPS, SNIPS and the model-based estimators with a reward_model are")
    raise InvalidConfigError("estimator", f"estimator {est.name} cannot gate log partitions: {why}; use the "
                             "in-memory gate (ope.gate on ope.feedback_from_logs)")


def gate_logs(
    log_dir: str | Path, *, candidate: Any, baseline: Any, engine: Any = "local", n_partitions: int | None = None,
    dask_workers: int | None = None, reward_sample: int = 200_000, wait_window: dt.timedelta | None = None,
    default_reward: float | None = None, duplicates: str = "first", escalations: str = "first",
    shuffle: bool | None = None, shuffle_dir: str | Path | None = None, options: GateOptions | None = None,
    estimator: Any = UNSET, metric: Any = UNSET, margin: Any = UNSET,
    guardrails: Any = UNSET, cohorts: Any = UNSET, cohort_margin: Any = UNSET, alpha: Any = UNSET,
    min_n: Any = UNSET, min_ess: Any = UNSET, max_weight: Any = UNSET, mean_weight_z: Any = UNSET,
    max_support_deficiency: Any = UNSET, reward_model: Any = UNSET, seed: Any = UNSET, learning: Any = UNSET,
) -> GateResult:
    """Decide whether ``candidate`` may replace ``baseline`` on banditroute's logs, read in partitions.

    Parameters
    ----------
    log_dir : str or Path
        Directory holding ``decisions/`` and ``outcomes/``.
    candidate, baseline : str or ope.Policy
        ``"uniform"``, ``"logging"``, ``"always:PROFILE"`` or an :class:`ope.Policy` (see
        :mod:`ope.partition_specs`); a learning policy is an error.
    engine, n_partitions, dask_workers : keyword
        As in :func:`ope.evaluate_logs`: ``"local"``, ``"dask"`` (a LocalCluster of ``dask_workers``),
        ``"dask:ADDRESS"`` or a ``distributed.Client``; the number of partitions.
    shuffle, shuffle_dir : keyword
        As in :func:`ope.evaluate_logs` (the logs shuffled by bucket first, :mod:`ope.shuffle`).
    reward_sample : int, keyword
        About how many rounds the reward models of a model-based estimator are fitted on.
    wait_window, default_reward, duplicates, escalations : keyword
        As in :func:`ope.feedback_from_logs`.
    options : GateOptions, optional
        Or the same keywords as :func:`ope.gate` (``estimator``, ``metric``, ``margin``,
        ``guardrails``, ``cohorts`` (log columns, as ``feedback_from_logs(cohorts=...)`` reads
        them), ``alpha``, ``min_n``, ...; ``seed`` seeds the reward models).

    Returns
    -------
    GateResult
        As :func:`ope.gate`'s on ``feedback_from_logs(log_dir, cohorts=...)`` (the same rows up to
        rounding for the estimators without a reward model).

    Examples
    --------
    >>> gate_logs("/nonexistent", candidate="always:a", baseline="logging", engine="spark")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: engine must be 'local', 'dask', 'dask:ADDRESS' or a distributed.Client, got 'spark'
    """
    kind = check_engine(engine, n_partitions, dask_workers)
    if isinstance(reward_sample, bool) or not isinstance(reward_sample, int) or reward_sample < 1:
        raise InvalidConfigError("reward_sample", f"reward_sample must be an integer >= 1, got {reward_sample!r}")
    check_shuffle_options(shuffle, shuffle_dir, remote=kind in ("address", "client"))
    options = resolve_options(options, dict(
        estimator=estimator, metric=metric, margin=margin, guardrails=guardrails, cohorts=cohorts,
        cohort_margin=cohort_margin, alpha=alpha, min_n=min_n, min_ess=min_ess, max_weight=max_weight,
        mean_weight_z=mean_weight_z, max_support_deficiency=max_support_deficiency, reward_model=reward_model,
        seed=seed, learning=learning))
    est = _partition_estimator(options)
    policies = {"candidate": candidate, "baseline": baseline}
    _refuse_learning(policies)
    objects = any(not isinstance(p, str) for p in policies.values())
    checks, cohort_columns = checks_of(options), options.cohort_columns
    with engine_client(engine, dask_workers) as client, contextlib.ExitStack() as stack:
        plan = plan_reading(log_dir, wait_window=wait_window, default_reward=default_reward, duplicates=duplicates,
                            escalations=escalations, contexts=objects or is_model_based(est),
                            cohorts=cohort_columns, metrics=True)
        specs = target_specs(policies, plan.action_names)
        for check in checks:  # before any reward model is fitted on the metric
            if check.metric not in METRICS:
                raise unknown_metric(check.metric, METRICS)
        models, unfitted = None, {}
        if is_model_based(est):
            models, unfitted = _fit_models(plan, est, checks, reward_sample, options.seed)
        count = partition_count(plan.n_decisions, client, n_partitions)
        plan = stack.enter_context(shuffled_plan(plan, count, client=client, remote=kind in ("address", "client"),
                                                 shuffle=shuffle, shuffle_dir=shuffle_dir))
        total = run_tasks(gate_partition, plan, count, (specs, est, checks, cohort_columns, models), client)
    for metric, error in unfitted.items():  # logged nowhere (the gate's error), or too rarely to fit a model
        check_metric_logged(metric, total.n_logged.get(metric, 0), total.weights["candidate"].n)
        raise error
    return _decide(total, checks, cohort_columns, options)


def _fit_models(plan: LogPlan, est: Estimator, checks: Sequence[Check], reward_sample: int,
                seed: Any) -> tuple[dict, dict]:
    """One :class:`SampleRewardModels` per metric (None: the sample, the whole log, has too few rounds
    with it: the tasks count them, the caller raises) and the errors of those not fitted."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    models, unfitted = {}, {}
    for check in checks:
        try:
            models[check.metric] = SampleRewardModels.fit(plan, est.reward_model, n_folds=est.n_folds,
                                                          sample_rounds=reward_sample, seed=rng, metric=check.metric)
        except InvalidFeedbackError as exc:
            if sample_stride(plan.n_decisions, reward_sample) > 1:
                raise  # a sample without the metric: its message says so
            models[check.metric], unfitted[check.metric] = None, exc
    return models, unfitted


def _decide(total: GatePartition, checks: Sequence[Check], cohorts: Sequence[str], options: GateOptions) -> GateResult:
    n_rounds = total.weights["candidate"].n
    if n_rounds == 0:
        raise InvalidFeedbackError("log_dir", "no decision in the logs has a counted outcome "
                                   "(empty log after the join)")
    alpha = float(options.alpha)
    cells = [(None, None)] + [(c, v) for c in cohorts for v in sorted(total.cohort_values.get(c, ()))]
    rows = []
    for check in checks:
        check_metric_logged(check.metric, total.n_logged.get(check.metric, 0), n_rounds)
        k = next((s.mean.shape[0] for key, s in total.cells.items() if key[0] == check.metric), 3)
        for column, value in cells:
            stats = total.cells.get((check.metric, column, value), CellStats.empty(k))
            est_c, est_b, diff, se, lower, upper = stats.measure(alpha)
            ess = (ess_of(stats.weights[0, 0], stats.weights[0, 1]), ess_of(stats.weights[1, 0], stats.weights[1, 1]))
            rows.append(cell_row(check, column, value, stats.n, ess=ess, max_weight=float(stats.weights[:, 2].max()),
                                 estimates=(est_c, est_b), diff=diff, stderr=se, bounds=(lower, upper)))
    problems = []
    for who in _POLICIES:
        ws = total.weights[who]
        sd = math.sqrt(ws.m2 / (ws.n - 1)) if ws.n > 1 else 0.0
        problems += weight_problems(who, ws.diagnostics(), sd, z_max=float(options.mean_weight_z),
                                    max_def=float(options.max_support_deficiency))
    return decide(rows, problems, options, {who: STATIC for who in _POLICIES})
