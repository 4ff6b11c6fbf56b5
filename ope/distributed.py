"""Off-policy evaluation of banditroute's logs in partitions, in this process or on a Dask cluster.

:func:`evaluate_logs` gives the table of :func:`ope.evaluate` (:data:`ope.evaluate.RESULT_SCHEMA`) for
logs that need not fit in one machine's memory: (1) the client reads the plan once
(:func:`ope.log_columns.plan_reading`: the files, the action space, so every partition numbers the
profiles alike, the profiles' positions in the logged lists, the escalated decisions); (2) task ``i``
of ``P`` reads the rounds whose stable bucket (:mod:`ope.buckets`) is ``i`` modulo ``P``
(:func:`ope.log_columns.read_partition`), builds their :class:`~ope.LoggedFeedback`, each target and
each estimator's per-round terms, and returns mergeable summaries (:class:`~ope.stats.TermStats`,
:class:`~ope.stats.WeightStats`): a worker's memory is bounded by its partition; (3) the client
merges them in partition order and computes the intervals and diagnostics. ``engine="local"`` runs
the same task function here, one partition after the other. From ``ope.shuffle.MIN_PARTITIONS``
partitions on, the logs are first shuffled by bucket (:mod:`ope.shuffle`: one pass writing each
partition's rows to a scratch directory, deleted at the end), so each task reads only its
partition's files; without the shuffle (fewer partitions, ``shuffle=False``, or a Dask address or
Client without ``shuffle_dir``) every task scans the logs' files and keeps its partition: the
reading costs ``P`` scans of the needed columns.

Per partition (:mod:`ope.partition_specs`): targets ``"uniform"``, ``"logging"``, ``"always:PROFILE"`` and :class:`ope.Policy`
objects (``action_distribution`` on the partition's contexts; pickled to the workers); estimators
:class:`~ope.IPS` (with ``clip``), :class:`~ope.SNIPS` and the model-based ones (DM, DR, SNDR,
SwitchDR, DRos with a ``reward_model``): the client fits each distinct reward model once on a sample
of about ``reward_sample`` rounds, cross-fitted by bucket (:mod:`ope.partition_models`), and every
task predicts its partition with the fitted models (their values differ from the in-memory path's,
whose folds are random). Refused with a clear error: target arrays
(``file:PATH.npy``: aligned with one in-memory reading) and learning candidates (their progressive
replay is sequential: each round is scored by the model trained on all earlier rounds, a dependency
no partition can cut). Use :func:`ope.evaluate` on :func:`ope.feedback_from_logs` for those.

Point estimates and normal intervals equal :func:`ope.evaluate`'s up to rounding; the bootstrap
resamples bucket groups with Poisson weights and the Bernstein bound of a self-normalised
estimator uses a wider range (see :mod:`ope.stats`).
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
import polars as pl

from ope.base import Estimator
from ope.diagnostics import DiagnosticThresholds
from ope.errors import InvalidConfigError, InvalidFeedbackError, OPEError, TaskFailure
from ope.evaluate import RESULT_SCHEMA
from ope.feedback import LoggedFeedback
from ope.intervals import check_interval_options
from ope.log_columns import LogPlan, plan_reading, read_partition
from ope.partition_models import SampleRewardModels, fit_for_estimators, is_model_based, with_predictions
from ope.partition_specs import check_policies, named_estimators, target_of, target_specs
from ope.policies import resolve_with_weights
from ope.shuffle import check_shuffle_options, shuffled_plan
from ope.stats import TermStats, WeightStats

__all__ = ["evaluate_logs", "run_log_evaluation", "LogEvaluation", "parse_engine", "check_engine", "engine_client",
           "partition_count", "run_tasks", "partition_task", "PartitionResult", "TaskFailure", "ROUNDS_PER_TASK",
           "DASK_EXTRA"]

#: default partition size on a cluster (decisions per task; locally: 1,000,000 as feedback_from_logs)
ROUNDS_PER_TASK = 4_000_000
DASK_EXTRA = "pip install 'banditroute[dask]'"
_STATIC = "static (the policy does not learn)"
_ENGINES = "'local', 'dask', 'dask:ADDRESS' or a distributed.Client"


def parse_engine(engine: Any) -> tuple[str, Any]:
    """``("local", None)``, ``("cluster", None)`` (a LocalCluster to start), ``("address", str)`` or
    ``("client", client)``; raises :class:`~ope.errors.InvalidConfigError` naming ``engine``.

    >>> parse_engine("dask:tcp://10.0.0.1:8786")
    ('address', 'tcp://10.0.0.1:8786')
    >>> parse_engine("spark")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: engine must be 'local', 'dask', 'dask:ADDRESS' or a distributed.Client, got 'spark'
    """
    if isinstance(engine, str):
        if engine in ("local", "dask"):
            return ("local" if engine == "local" else "cluster"), None
        if engine.startswith("dask:") and engine[len("dask:"):].strip():
            return "address", engine[len("dask:"):].strip()
    elif hasattr(engine, "submit") and hasattr(engine, "scheduler_info"):
        return "client", engine
    raise InvalidConfigError("engine", f"engine must be {_ENGINES}, got {engine!r}")


@dataclass(frozen=True, eq=False)
class PartitionResult:
    """What a task returns: per policy the weights' summary, per (policy, estimator) the terms'."""

    index: int
    weights: dict[str, WeightStats]
    terms: dict[tuple[str, str], TermStats]
    n_escalated_without_outcome: int = 0

    def merge(self, other: PartitionResult) -> PartitionResult:
        """Both partitions' summaries merged (the index is the first's)."""
        return PartitionResult(self.index, {p: w.merge(other.weights[p]) for p, w in self.weights.items()},
                               {c: t.merge(other.terms[c]) for c, t in self.terms.items()},
                               self.n_escalated_without_outcome + other.n_escalated_without_outcome)


def partition_task(plan: LogPlan, index: int, count: int, specs: Mapping[str, tuple],
                   estimators: Mapping[str, Estimator], buckets: bool,
                   models: Mapping[str, SampleRewardModels] | None = None) -> PartitionResult | TaskFailure:
    """Read partition ``index`` of ``count`` and summarise every (policy, estimator) on its rounds
    (``buckets``: keep the bucket sums of the bootstrap; ``models``: the reward models of the
    model-based estimators by name, each predicting the partition once). Runs in a worker; an
    OPEError comes back as a :class:`TaskFailure`."""
    try:
        columns = read_partition(plan, index, count)
        n = columns.actions.shape[0]
        weights, terms = {}, {}
        fb = LoggedFeedback(**columns.as_kwargs()) if n else None
        if n and models:
            q = {id(m): m for m in models.values()}
            q = {key: m.predict(columns) for key, m in q.items()}
            estimators = {name: with_predictions(est, q[id(models[name])]) if name in models else est
                          for name, est in estimators.items()}
        for policy, spec in specs.items():
            if fb is None:
                weights[policy] = WeightStats.of(np.empty(0))
                for name, est in estimators.items():
                    terms[(policy, name)] = TermStats.empty(ratio=est.self_normalised, buckets=buckets)
                continue
            target, w = resolve_with_weights(target_of(spec, fb), fb)
            weights[policy] = WeightStats.of(w, target, fb.actions, fb.logging_distribution)
            for name, est in estimators.items():
                t = est.validated_terms(fb, target, weights=w, rng=np.random.default_rng(0), cache={})
                terms[(policy, name)] = TermStats.of(t, columns.buckets if buckets else None)
            del target, w
        return PartitionResult(index, weights, terms, columns.n_escalated_without_outcome)
    except OPEError as exc:
        return TaskFailure.of(exc)


class _Fold:
    """Merges task results in partition order as they arrive (the merged floats do not depend on
    which task finished first)."""

    def __init__(self) -> None:
        self.pending: dict[int, PartitionResult] = {}
        self.next = 0
        self.total: PartitionResult | None = None

    def add(self, result: PartitionResult | TaskFailure) -> None:
        if isinstance(result, TaskFailure):
            result.reraise()
        self.pending[result.index] = result
        while self.next in self.pending:
            part = self.pending.pop(self.next)
            self.total = part if self.total is None else self.total.merge(part)
            self.next += 1


@dataclass(frozen=True)
class LogEvaluation:
    """:func:`run_log_evaluation`'s result: the table and what the reading says about escalations."""

    table: pl.DataFrame
    n_escalated: int
    n_escalated_without_outcome: int
    escalations: str
    n_partitions: int
    engine: str


def _connect(address: str):
    try:
        return _dask().Client(address, timeout="10s")
    except OSError as exc:  # refused, unreachable, timed out: the address is the user's input
        raise InvalidConfigError("engine", f"engine dask:{address}: no Dask scheduler answers there ({exc})") from None


def _dask():
    try:
        import distributed
    except ImportError:
        raise InvalidConfigError("engine", f"engine 'dask' needs dask and distributed: {DASK_EXTRA}") from None
    return distributed


def _n_workers(client: Any) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def check_engine(engine: Any, n_partitions: int | None, dask_workers: int | None) -> str:
    """The engine's kind (:func:`parse_engine`), its options checked before any log is read: errors
    name ``engine``, ``n_partitions`` or ``dask_workers`` (a missing Dask extra names ``engine``)."""
    kind, _ = parse_engine(engine)
    for name, value in (("n_partitions", n_partitions), ("dask_workers", dask_workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidConfigError(name, f"{name} must be an integer >= 1 or None, got {value!r}")
    if dask_workers is not None and kind != "cluster":
        raise InvalidConfigError("dask_workers", f"dask_workers applies to engine 'dask' (the local cluster it "
                                 f"starts), got engine {engine!r}")
    if kind != "local":
        _dask()
    return kind


@contextlib.contextmanager
def engine_client(engine: Any, dask_workers: int | None = None):
    """Where the tasks run: None (``"local"``: here), or a Dask client: of a LocalCluster of
    ``dask_workers`` (default 2) single-threaded processes started and closed here (``"dask"``),
    connected to ``dask:ADDRESS`` (closed here), or the given one (left open)."""
    kind, where = parse_engine(engine)
    with contextlib.ExitStack() as stack:
        if kind == "local":
            yield None
        elif kind == "cluster":
            distributed = _dask()
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=dask_workers or 2, threads_per_worker=1, processes=True, dashboard_address=":0"))
            yield stack.enter_context(distributed.Client(cluster))
        else:
            yield stack.enter_context(_connect(where)) if kind == "address" else where


def partition_count(n_decisions: int, client: Any, n_partitions: int | None) -> int:
    """``n_partitions``, or one partition per 1,000,000 decisions here, per ROUNDS_PER_TASK on a
    cluster (a multiple of its workers).

    >>> partition_count(2_500_000, None, None), partition_count(10, None, 3)
    (3, 3)
    """
    workers = 1 if client is None else _n_workers(client)
    per_task = 1_000_000 if client is None else ROUNDS_PER_TASK
    return n_partitions or workers * max(1, -(-math.ceil(n_decisions / per_task) // workers))


def run_tasks(task: Any, plan: LogPlan, count: int, args: tuple, client: Any) -> Any:
    """``task(plan, i, count, *args)`` for every partition ``i``, here (``client`` None) or on Dask,
    merged in partition order (a :class:`TaskFailure` is raised here as its error)."""
    fold = _Fold()
    if client is None:
        for i in range(count):
            fold.add(task(plan, i, count, *args))
        return fold.total
    plan_future = client.scatter(plan, broadcast=True)
    futures = client.map(task, [plan_future] * count, range(count), [count] * count,
                         *[[a] * count for a in args], pure=False)
    try:
        for future in _dask().as_completed(futures):
            fold.add(future.result())
    finally:
        client.cancel(futures)
    return fold.total


def run_log_evaluation(
    log_dir: str | Path,
    policies: Mapping[str, Any],
    estimators: Sequence[Estimator] | Mapping[str, Estimator] | None = None,
    *,
    engine: Any = "local",
    n_partitions: int | None = None,
    dask_workers: int | None = None,
    alpha: float = 0.05,
    interval: str = "normal",
    n_bootstrap: int = 1000,
    seed: int | np.random.Generator | None = None,
    value_range: tuple[float, float] | None = None,
    thresholds: DiagnosticThresholds | None = None,
    wait_window: dt.timedelta | None = None,
    default_reward: float | None = None,
    duplicates: str = "first",
    escalations: str = "first",
    reward: str = "reward",
    reward_sample: int = 200_000,
    contexts: bool = True,
    shuffle: bool | None = None,
    shuffle_dir: str | Path | None = None,
) -> LogEvaluation:
    """:func:`evaluate_logs`, with the counts of escalated decisions (for the CLI's notes)."""
    kind = check_engine(engine, n_partitions, dask_workers)
    check_interval_options(interval, alpha, n_bootstrap, None)
    if isinstance(reward_sample, bool) or not isinstance(reward_sample, int) or reward_sample < 1:
        raise InvalidConfigError("reward_sample", f"reward_sample must be an integer >= 1, got {reward_sample!r}")
    check_shuffle_options(shuffle, shuffle_dir, remote=kind in ("address", "client"))
    named = named_estimators(estimators)
    modelled = contexts and any(is_model_based(est) for est in named.values())
    contexts = check_policies(policies) or modelled
    plan = plan_reading(log_dir, wait_window=wait_window, default_reward=default_reward, duplicates=duplicates,
                        escalations=escalations, reward=reward, contexts=contexts)
    specs = target_specs(policies, plan.action_names)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    models = fit_for_estimators(plan, named, sample_rounds=reward_sample, seed=rng, contexts=modelled)
    task_args = (specs, named, interval == "bootstrap", models)
    with engine_client(engine, dask_workers) as client, contextlib.ExitStack() as stack:
        count = partition_count(plan.n_decisions, client, n_partitions)
        plan = stack.enter_context(shuffled_plan(plan, count, client=client, remote=kind in ("address", "client"),
                                                 shuffle=shuffle, shuffle_dir=shuffle_dir))
        total = run_tasks(partition_task, plan, count, task_args, client)
    table = _table(total, named, list(specs), alpha, interval, n_bootstrap, rng, value_range, thresholds)
    return LogEvaluation(table, plan.n_escalated, total.n_escalated_without_outcome, escalations, count,
                         "local" if kind == "local" else "dask")


def _table(total: PartitionResult, named: dict, policies: list, alpha, interval, n_bootstrap, seed, value_range,
           thresholds) -> pl.DataFrame:
    if not policies or total.weights[policies[0]].n == 0:
        raise InvalidFeedbackError("log_dir", "no decision in the logs has a counted outcome (empty log after the join)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows = []
    for policy in policies:
        diag = total.weights[policy].diagnostics(thresholds)
        for name, est in named.items():
            stats = total.terms[(policy, name)]
            ci = stats.interval(interval, alpha, n_bootstrap, rng, value_range)
            warnings = list(diag.warnings)
            if not np.isfinite(ci.value):
                warnings.append(f"{est.name} value is undefined (sum of importance weights is 0)")
            if interval == "bernstein" and stats.is_ratio:
                warnings.append(f"the Bernstein bound of self-normalised {est.name} uses linearised per-round values: "
                                "no finite-sample guarantee")
            rows.append({"policy": policy, "estimator": name, "value": ci.value, "stderr": ci.stderr,
                         "ci_low": ci.ci_low, "ci_high": ci.ci_high, "interval": interval, "alpha": alpha,
                         "n": diag.n, "ess": diag.ess, "max_weight": diag.max_weight, "mean_weight": diag.mean_weight,
                         "support_deficiency": diag.support_deficiency, "warnings": warnings, "evaluation": _STATIC})
    return pl.DataFrame(rows, schema=RESULT_SCHEMA)


def evaluate_logs(log_dir: str | Path, policies: Mapping[str, Any],
                  estimators: Sequence[Estimator] | Mapping[str, Estimator] | None = None, **options: Any) -> pl.DataFrame:
    """Evaluate policies on banditroute's logs in partitions, here or on a Dask cluster.

    Parameters
    ----------
    log_dir : str or Path
        Directory holding ``decisions/`` and ``outcomes/``.
    policies : mapping of str to str or ope.Policy
        ``"uniform"``, ``"logging"``, ``"always:PROFILE"`` or an object with a per-row
        ``action_distribution(contexts, action_names)`` (see the module docstring).
    estimators : sequence or mapping of IPS, SNIPS, DM, DR, SNDR, SwitchDR, DRos, optional
        Defaults to ``[IPS(), SNIPS()]``; a model-based one needs a ``reward_model``.
    engine : "local", "dask", "dask:ADDRESS" or distributed.Client, keyword
        Where the tasks run: here; a LocalCluster of ``dask_workers`` (default 2) single-threaded
        worker processes started and closed by the call; the scheduler at ADDRESS; a given Client
        (not closed).
    n_partitions : int, optional, keyword
        Tasks (None: one per 1,000,000 decisions locally; on a cluster one per ROUNDS_PER_TASK
        decisions, at least one per worker, a multiple of the workers).
    alpha, interval, n_bootstrap, seed, value_range, thresholds : keyword
        As in :func:`ope.evaluate` (``seed``: one Generator for every cell in order).
    wait_window, default_reward, duplicates, escalations, reward : keyword
        As in :func:`ope.feedback_from_logs`.
    reward_sample : int, keyword
        About how many rounds the reward models are fitted on (default 200,000; see
        :class:`ope.partition_models.SampleRewardModels`).
    contexts : bool, keyword
        Whether the reward models see the decoded contexts (default True; False: the action alone).
    shuffle : bool or None, keyword
        Shuffle the logs by bucket first (:mod:`ope.shuffle`: the reading costs about one scan instead
        of one per partition); None (default): when there are at least ``ope.shuffle.MIN_PARTITIONS``.
    shuffle_dir : str or Path, optional, keyword
        Where the shuffle's scratch directory is made (and deleted at the end, also on errors); None: the
        system's temporary directory for ``"local"`` and ``"dask"``. A Dask address or a given Client may
        have workers on other machines: they shuffle only with a ``shuffle_dir`` every worker sees, else
        every task scans the logs.

    Returns
    -------
    polars.DataFrame
        One row per (policy, estimator), the columns of :data:`ope.evaluate.RESULT_SCHEMA`.

    Examples
    --------
    >>> evaluate_logs("/nonexistent", {"u": "uniform"}, engine="spark")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: engine must be 'local', 'dask', 'dask:ADDRESS' or a distributed.Client, got 'spark'
    """
    return run_log_evaluation(log_dir, policies, estimators, **options).table
