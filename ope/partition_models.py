"""Reward models for the model-based estimators (DM, DR, SNDR, Switch-DR, DRos) of log partitions.

:mod:`ope.distributed` evaluates the logs in partitions by stable bucket; a reward model cannot be
cross-fitted inside each partition and then compared across them. :class:`SampleRewardModels` fits
``K`` models once, on the client, on a bounded sample of the log's rounds, and each partition
predicts its own rounds with them (the fitted models are pickled to the tasks):

- the **sample** is the rounds whose bucket is ``0`` modulo ``M``, ``M = max(1, ceil(n_decisions /
  sample_rounds))`` (:func:`ope.log_columns.read_partition` ``(plan, 0, M)``): about
  ``sample_rounds`` rounds, whatever the log's size;
- the **fold** of every round, in the sample or not, is ``(bucket // M) % K`` (:func:`fold_of`): it
  does not depend on which rounds are sampled (``bucket % K`` would put the whole sample in one
  fold when ``M`` and ``K`` share a factor);
- model ``k`` is fitted on the sample's rounds outside fold ``k`` and predicts the rounds of fold
  ``k``: no sample round is predicted by a model that saw it (cross-fitting, Chernozhukov et al.,
  2018), and the other rounds by a model that saw none of them.

Contexts are encoded as :func:`ope.encode_contexts` does (:class:`ope.reward_models.ContextEncoding`
fitted on the sample: the same columns in every partition). A model's ``random_state`` left at None
is set from ``seed`` as :func:`ope.cross_fit_predictions` does. DR stays unbiased whatever the model
(the propensities are right); the values differ from the in-memory path's, whose folds are random.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ope.base import Estimator
from ope.dr import _ModelBased
from ope.errors import InvalidConfigError, InvalidFeedbackError
from ope.log_columns import LogColumns, LogPlan, read_partition
from ope.reward_models import (ContextEncoding, check_reward_model, fold_seeds, predict_actions, seeded_clone,
                               with_action)

__all__ = ["SampleRewardModels", "with_predictions", "fold_of", "sample_stride", "is_model_based", "fit_for_estimators"]


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidConfigError(name, f"{name} must be an integer >= {low}, got {value!r}")


def sample_stride(n_decisions: int, sample_rounds: int) -> int:
    """``M``: the sample is the rounds whose bucket is 0 modulo ``M``.

    >>> sample_stride(1_000_000, 200_000), sample_stride(1_000, 200_000)
    (5, 1)
    """
    return max(1, math.ceil(n_decisions / sample_rounds))


def fold_of(buckets: np.ndarray, stride: int, n_folds: int) -> np.ndarray:
    """The fold of each round from its stable bucket: ``(bucket // stride) % n_folds``.

    >>> fold_of(np.array([0, 6, 12, 18, 24]), 6, 2).tolist()  # the sample of stride 6: both folds
    [0, 1, 0, 1, 0]
    """
    return (np.asarray(buckets, dtype=np.int64) // stride) % n_folds


def is_model_based(estimator: Estimator) -> bool:
    """Whether ``estimator`` uses a reward model (DM, DR, SNDR, SwitchDR, DRos).

    >>> from ope import DR, IPS
    >>> is_model_based(DR(reward_predictions=np.zeros((1, 1)))), is_model_based(IPS())
    (True, False)
    """
    return isinstance(estimator, _ModelBased)


def _targets(columns: LogColumns, metric: str, plan: LogPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """The sample's regression targets and the rounds that have them (None: all)."""
    if metric == plan.reward:
        return np.asarray(columns.rewards, dtype=np.float64), None
    have = ("reward",) if plan.reward == "reward" else (plan.reward,)
    if columns.metrics is None or metric not in columns.metrics.columns:
        if not plan.metrics:
            raise InvalidConfigError("metric", f"metric {metric!r} needs a plan that reads the metrics "
                                     f"(plan_reading(..., metrics=True)); without: have {have}")
        raise InvalidConfigError("metric", f"metric {metric!r} is not logged; have {tuple(columns.metrics.columns)}")
    values = columns.metrics.get_column(metric).cast(pl.Float64).fill_nan(None)
    keep = values.is_not_null().to_numpy()
    return values.fill_null(0.0).to_numpy(), keep


@dataclass(frozen=True, eq=False)
class SampleRewardModels:
    """K reward models fitted on a sample of the log's rounds; fold of a round from its stable bucket.

    Build with :meth:`fit`; :meth:`predict` gives a partition's ``q(x_i, k)``.

    Attributes
    ----------
    models : tuple of fitted scikit-learn estimators
        ``models[k]`` was fitted on the sample outside fold ``k`` and predicts fold ``k``.
    encoding : ContextEncoding
        The contexts' columns (fitted on the sample); empty: the model sees the action alone.
    n_actions : int
    stride : int
        ``M``: the sample is the rounds with ``bucket % M == 0``.
    metric : str
        What the models predict (the plan's reward or a metric column).
    n_sample : int
        Sample rounds the models were fitted on (each model on those outside its fold).

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> SampleRewardModels.fit(None, Ridge(), n_folds=1)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: n_folds must be an integer >= 2, got 1
    """

    models: tuple
    encoding: ContextEncoding
    n_actions: int
    stride: int
    metric: str = "reward"
    n_sample: int = 0

    @property
    def n_folds(self) -> int:
        """``K``, the number of models."""
        return len(self.models)

    @classmethod
    def fit(cls, plan: LogPlan, model: Any, *, n_folds: int = 5, sample_rounds: int = 200_000,
            seed: int | np.random.Generator | None = None, metric: str = "reward",
            contexts: bool = True) -> SampleRewardModels:
        """Fit ``n_folds`` clones of ``model`` on the sample of ``plan``'s rounds.

        Parameters
        ----------
        plan : LogPlan
            From :func:`ope.log_columns.plan_reading` (``contexts=True`` for the model to see them,
            ``metrics=True`` for a ``metric`` other than the plan's reward).
        model : scikit-learn regressor or classifier
            Cloned, never fitted in place; a ``random_state`` left at None is set from ``seed``.
        n_folds : int, keyword
            ``K >= 2``.
        sample_rounds : int, keyword
            About how many rounds the sample holds (``M = ceil(n_decisions / sample_rounds)``).
        seed : int or numpy.random.Generator or None, keyword
            Seeds the models (two draws, as :func:`ope.cross_fit_predictions`).
        metric : str, keyword
            The plan's reward (default ``"reward"``): every sample round; another metric
            (``"quality"``, ``"cost_usd"``, ``"latency_ms"``, ...): the rounds where it is not null.
        contexts : bool, keyword
            Whether the model sees the plan's decoded contexts (False: the action alone).

        Returns
        -------
        SampleRewardModels
        """
        check_reward_model(model)
        _check_int("n_folds", n_folds, 2)
        _check_int("sample_rounds", sample_rounds, 1)
        stride = sample_stride(plan.n_decisions, sample_rounds)
        sample = read_partition(plan, 0, stride)
        y, keep = _targets(sample, metric, plan)
        ctx = sample.contexts if contexts else None
        buckets, actions = sample.buckets, sample.actions
        if keep is not None:
            y, buckets, actions = y[keep], buckets[keep], actions[keep]
            ctx = None if ctx is None else ctx.filter(pl.Series(keep))
        encoding = ContextEncoding.fit(ctx)
        x = encoding.transform(ctx, y.shape[0])
        fold = fold_of(buckets, stride, n_folds)
        _, model_seed = fold_seeds(seed)
        models = []
        for k in range(n_folds):
            train = fold != k
            if not train.any():
                raise InvalidFeedbackError(
                    "sample_rounds", f"the sample of {y.shape[0]} round(s) with a {metric} (bucket % {stride} == 0, "
                    f"sample_rounds={sample_rounds}) leaves no round to fit the model of fold {k} of {n_folds} on; "
                    "raise sample_rounds or lower n_folds")
            models.append(seeded_clone(model, model_seed).fit(
                with_action(x[train], actions[train], sample.n_actions), y[train]))
        return cls(tuple(models), encoding, sample.n_actions, stride, metric, int(y.shape[0]))

    def folds(self, columns: LogColumns) -> np.ndarray:
        """The fold of each round of ``columns`` (:func:`fold_of` of its bucket)."""
        return fold_of(columns.buckets, self.stride, self.n_folds)

    def predict(self, columns: LogColumns) -> np.ndarray:
        """``q(x_i, k)`` for every round of a partition (:func:`ope.log_columns.read_partition`), each
        round by the model of its fold; shape (n_rounds, n_actions)."""
        n = columns.actions.shape[0]
        x = self.encoding.transform(columns.contexts, n)
        fold = self.folds(columns)
        out = np.empty((n, self.n_actions))
        for k, fitted in enumerate(self.models):
            rows = np.flatnonzero(fold == k)
            if rows.size:
                out[rows] = predict_actions(fitted, x[rows], self.n_actions)
        return out


def with_predictions(estimator: Estimator, q: np.ndarray) -> Estimator:
    """The same model-based estimator with ``reward_predictions=q`` (and no reward model).

    >>> from ope import DR
    >>> est = with_predictions(DR(reward_model=object(), clip=5.0), np.zeros((2, 3)))
    >>> est.reward_model is None, est.clip, est.reward_predictions.shape
    (True, 5.0, (2, 3))
    """
    if not is_model_based(estimator):
        raise InvalidConfigError("estimators", f"{estimator!r} has no reward model to replace")
    return dataclasses.replace(estimator, reward_model=None, reward_predictions=q)


def fit_for_estimators(plan: LogPlan, estimators: Mapping[str, Estimator], *, sample_rounds: int = 200_000,
                       seed: int | np.random.Generator | None = None,
                       contexts: bool = True) -> dict[str, SampleRewardModels]:
    """One :class:`SampleRewardModels` per distinct (reward model object, ``n_folds``) of the model-based
    ``estimators`` (in order), keyed by estimator name (estimators sharing a model share the object).

    >>> fit_for_estimators(None, {})
    {}
    """
    fitted: dict[tuple[int, int], SampleRewardModels] = {}
    out = {}
    for name, est in estimators.items():
        if not is_model_based(est):
            continue
        key = (id(est.reward_model), est.n_folds)
        if key not in fitted:
            fitted[key] = SampleRewardModels.fit(plan, est.reward_model, n_folds=est.n_folds,
                                                 sample_rounds=sample_rounds, seed=seed, contexts=contexts)
        out[name] = fitted[key]
    return out
