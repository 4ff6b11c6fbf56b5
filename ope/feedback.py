"""Logged bandit feedback: the validated input of every estimator.

:class:`LoggedFeedback` holds the logged actions, rewards and propensities (plus optional
contexts, cohorts, logging distribution and outcome metrics), validated once at
construction, and builds itself from Open Bandit Pipeline data (:meth:`~LoggedFeedback.from_obp`)
or banditroute's logs (:meth:`~LoggedFeedback.from_logs`, reading through
:mod:`ope.log_columns`, which does not depend on this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ope.errors import InvalidFeedbackError
from ope.log_columns import read_log_columns

__all__ = ["LoggedFeedback"]

_PROB_ATOL = 1e-6


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_vector(name: str, values: Any, dtype: type) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidFeedbackError(name, f"{name} must be numeric, got {exc}") from None
    if array.ndim != 1:
        raise InvalidFeedbackError(name, f"{name} must be 1-dimensional, got shape {array.shape}")
    return array


def _as_actions(values: Any, n_actions: int) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise InvalidFeedbackError("actions", f"actions must be 1-dimensional, got shape {raw.shape}")
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError("actions", f"actions must be integers, got {raw[i]} at round {i}")
    elif raw.dtype.kind not in "iub" and raw.size:
        raise InvalidFeedbackError("actions", f"actions must be integers, got dtype {raw.dtype}")
    actions = raw.astype(np.int64, copy=False)
    bad = (actions < 0) | (actions >= n_actions)
    if bad.any():
        i = _first_bad(bad)
        raise InvalidFeedbackError(
            "actions", f"actions must be in [0, {n_actions}), got {actions[i]} at round {i}"
        )
    return actions


def _check_frame(name: str, frame: pl.DataFrame | None, n_rounds: int) -> None:
    if frame is None:
        return
    if not isinstance(frame, pl.DataFrame):
        raise InvalidFeedbackError(name, f"{name} must be a polars DataFrame, got {type(frame).__name__}")
    if frame.height != n_rounds:
        raise InvalidFeedbackError(
            name, f"{name} has {frame.height} rows but actions has length {n_rounds}"
        )


class LoggedFeedback:
    """Logged bandit feedback, validated once at construction.

    Parameters
    ----------
    actions : array-like of int, shape (n_rounds,)
        Index of the logged (executed) action, in ``[0, n_actions)``.
    rewards : array-like of float, shape (n_rounds,)
        Observed reward of the logged action; finite.
    propensities : array-like of float, shape (n_rounds,)
        Probability with which the logging policy chose the logged action, in (0, 1].
    n_actions : int
        Size of the action space.
    action_names : sequence of str, optional
        Names of the actions, aligned with the action indices. Defaults to
        ``("0", "1", ...)``.
    contexts : polars.DataFrame, optional
        One row per round; numeric and categorical columns (used by reward models
        and by target policies).
    cohorts : polars.DataFrame, optional
        One row per round; columns used to slice evaluations (e.g. ``task_type``).
    logging_distribution : array-like, shape (n_rounds, n_actions), optional
        The logging policy's full action distribution per round (banditroute logs
        it); enables an exact support-deficiency diagnostic.
    metrics : polars.DataFrame, optional
        Extra per-round outcome metrics (e.g. ``quality``, ``cost_usd``,
        ``latency_ms``), selectable as reward with :meth:`with_reward`.

    Raises
    ------
    InvalidFeedbackError
        Naming the offending field: empty log, mismatched lengths, propensities
        outside (0, 1] or NaN, non-finite rewards, actions out of range, ...

    Examples
    --------
    >>> fb = LoggedFeedback(actions=[0, 1, 1], rewards=[1.0, 0.0, 1.0],
    ...                     propensities=[0.5, 0.5, 0.5], n_actions=2)
    >>> fb.n_rounds, fb.action_names
    (3, ('0', '1'))
    >>> LoggedFeedback(actions=[0], rewards=[1.0], propensities=[0.0], n_actions=2)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidFeedbackError: propensities must be in (0, 1], got 0.0 at round 0
    """

    __slots__ = (
        "actions",
        "rewards",
        "propensities",
        "n_actions",
        "action_names",
        "contexts",
        "cohorts",
        "logging_distribution",
        "metrics",
    )

    def __init__(
        self,
        *,
        actions: Any,
        rewards: Any,
        propensities: Any,
        n_actions: int,
        action_names: Sequence[str] | None = None,
        contexts: pl.DataFrame | None = None,
        cohorts: pl.DataFrame | None = None,
        logging_distribution: Any = None,
        metrics: pl.DataFrame | None = None,
    ) -> None:
        if isinstance(n_actions, bool) or not isinstance(n_actions, (int, np.integer)) or n_actions < 1:
            raise InvalidFeedbackError("n_actions", f"n_actions must be an integer >= 1, got {n_actions!r}")
        n_actions = int(n_actions)
        actions = _as_actions(actions, n_actions)
        n = actions.shape[0]
        if n == 0:
            raise InvalidFeedbackError("actions", "actions is empty: logged feedback needs at least one round")
        rewards = _as_vector("rewards", rewards, np.float64)
        propensities = _as_vector("propensities", propensities, np.float64)
        for name, arr in (("rewards", rewards), ("propensities", propensities)):
            if arr.shape[0] != n:
                raise InvalidFeedbackError(name, f"{name} has length {arr.shape[0]} but actions has length {n}")
        bad = ~np.isfinite(rewards)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError("rewards", f"rewards must be finite, got {rewards[i]} at round {i}")
        bad = np.isnan(propensities)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError("propensities", f"propensities must not be NaN, got nan at round {i}")
        bad = (propensities <= 0.0) | (propensities > 1.0 + 1e-12)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError(
                "propensities", f"propensities must be in (0, 1], got {propensities[i]} at round {i}"
            )
        if action_names is None:
            names = tuple(str(k) for k in range(n_actions))
        else:
            names = tuple(str(a) for a in action_names)
            if len(names) != n_actions:
                raise InvalidFeedbackError(
                    "action_names", f"action_names has {len(names)} names but n_actions is {n_actions}"
                )
            if len(set(names)) != n_actions:
                raise InvalidFeedbackError("action_names", f"action_names must be unique, got {names}")
        _check_frame("contexts", contexts, n)
        _check_frame("cohorts", cohorts, n)
        _check_frame("metrics", metrics, n)
        if logging_distribution is not None:
            logging_distribution = self._check_logging(logging_distribution, actions, propensities, n_actions)
        self.actions = _readonly(actions)
        self.rewards = _readonly(rewards)
        self.propensities = _readonly(propensities)
        self.n_actions = n_actions
        self.action_names = names
        self.contexts = contexts
        self.cohorts = cohorts
        self.logging_distribution = logging_distribution
        self.metrics = metrics

    @staticmethod
    def _check_logging(dist: Any, actions: np.ndarray, propensities: np.ndarray, k: int) -> np.ndarray:
        field = "logging_distribution"
        dist = np.asarray(dist, dtype=np.float64)
        if dist.shape != (actions.shape[0], k):
            raise InvalidFeedbackError(
                field, f"{field} must have shape ({actions.shape[0]}, {k}), got {dist.shape}"
            )
        bad = ~np.isfinite(dist).all(axis=1) | (dist < 0).any(axis=1)
        bad |= np.abs(dist.sum(axis=1) - 1.0) > _PROB_ATOL
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError(
                field, f"{field} rows must be probabilities summing to 1, got {dist[i].tolist()} at round {i}"
            )
        logged = dist[np.arange(actions.shape[0]), actions]
        bad = np.abs(logged - propensities) > _PROB_ATOL
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedbackError(
                field,
                f"{field} gives {logged[i]} for the logged action but propensities is "
                f"{propensities[i]} at round {i}",
            )
        return _readonly(dist)

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, name):
            raise AttributeError(f"LoggedFeedback is immutable: cannot set {name}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"LoggedFeedback(n_rounds={self.n_rounds}, n_actions={self.n_actions}, "
            f"contexts={None if self.contexts is None else self.contexts.columns}, "
            f"cohorts={None if self.cohorts is None else self.cohorts.columns})"
        )

    def __len__(self) -> int:
        return self.n_rounds

    @property
    def n_rounds(self) -> int:
        """Number of logged rounds."""
        return int(self.actions.shape[0])

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def with_reward(self, metric: str) -> LoggedFeedback:
        """Return a copy whose rewards are the metric column ``metric``.

        Parameters
        ----------
        metric : str
            A column of :attr:`metrics` (e.g. ``"quality"``, ``"cost_usd"``).

        Examples
        --------
        >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5],
        ...                     n_actions=2, metrics=pl.DataFrame({"cost_usd": [0.1, 0.3]}))
        >>> fb.with_reward("cost_usd").rewards.tolist()
        [0.1, 0.3]
        """
        if self.metrics is None or metric not in self.metrics.columns:
            have = [] if self.metrics is None else self.metrics.columns
            raise InvalidFeedbackError("metric", f"metric must be one of {have}, got {metric!r}")
        values = self.metrics.get_column(metric).cast(pl.Float64)
        if values.null_count():
            i = int(values.is_null().arg_max())
            raise InvalidFeedbackError("rewards", f"metric {metric!r} is null at round {i}; filter or fill it first")
        return LoggedFeedback(**{**self._fields(), "rewards": values.to_numpy()})

    def filter(self, mask: Any) -> LoggedFeedback:
        """Return the rounds where ``mask`` is true (e.g. one cohort).

        Examples
        --------
        >>> fb = LoggedFeedback(actions=[0, 1, 1], rewards=[1.0, 0.0, 1.0],
        ...                     propensities=[0.5, 0.5, 0.5], n_actions=2,
        ...                     cohorts=pl.DataFrame({"task_type": ["a", "b", "a"]}))
        >>> fb.filter(fb.cohorts["task_type"] == "a").rewards.tolist()
        [1.0, 1.0]
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_rounds,):
            raise InvalidFeedbackError("mask", f"mask must have shape ({self.n_rounds},), got {mask.shape}")
        fields = self._fields()
        series = pl.Series(mask)
        for name in ("actions", "rewards", "propensities", "logging_distribution"):
            if fields[name] is not None:
                fields[name] = np.ascontiguousarray(fields[name][mask])
        for name in ("contexts", "cohorts", "metrics"):
            if fields[name] is not None:
                fields[name] = fields[name].filter(series)
        return LoggedFeedback(**fields)

    def take(self, indices: Any) -> LoggedFeedback:
        """Return the rounds at ``indices`` (in that order; a slice is accepted too).

        Examples
        --------
        >>> LoggedFeedback(actions=[0, 1, 1], rewards=[1.0, 0.0, 0.5], propensities=[0.5] * 3,
        ...                n_actions=2).take([2, 0]).rewards.tolist()
        [0.5, 1.0]
        """
        if not isinstance(indices, slice):
            indices = np.asarray(indices, dtype=np.int64)
            if indices.ndim != 1 or (indices.size and (indices.min() < -self.n_rounds or indices.max() >= self.n_rounds)):
                raise InvalidFeedbackError("indices", f"indices must be rounds in [0, {self.n_rounds})")
        fields = self._fields()
        for name in ("actions", "rewards", "propensities", "logging_distribution"):
            if fields[name] is not None:
                fields[name] = np.ascontiguousarray(fields[name][indices])
        for name in ("contexts", "cohorts", "metrics"):
            if fields[name] is not None:
                fields[name] = fields[name][indices]
        return LoggedFeedback(**fields)

    @classmethod
    def from_obp(cls, bandit_feedback: Mapping[str, Any]) -> LoggedFeedback:
        """Build feedback from Open Bandit Pipeline's ``bandit_feedback`` dict.

        Uses the keys ``action``, ``reward``, ``pscore``, ``n_actions`` and, when
        present, ``context`` (becomes columns ``x0, x1, ...``) and ``pi_b`` (the
        logging distribution). Slates (several positions) are not supported.

        Examples
        --------
        >>> bf = {"n_rounds": 2, "n_actions": 2, "action": np.array([0, 1]),
        ...       "reward": np.array([1, 0]), "pscore": np.array([0.5, 0.5]),
        ...       "position": None, "context": np.zeros((2, 3))}
        >>> LoggedFeedback.from_obp(bf).contexts.columns
        ['x0', 'x1', 'x2']
        """
        for key in ("action", "reward", "pscore", "n_actions"):
            if key not in bandit_feedback:
                raise InvalidFeedbackError(key, f"bandit_feedback is missing the key {key!r}")
        position = bandit_feedback.get("position")
        if position is not None and np.unique(np.asarray(position)).size > 1:
            raise InvalidFeedbackError("position", "bandit_feedback with several positions (slates) is not supported")
        context = bandit_feedback.get("context")
        contexts = None
        if context is not None:
            context = np.asarray(context)
            if context.ndim == 1:
                context = context[:, None]
            contexts = pl.DataFrame({f"x{j}": context[:, j] for j in range(context.shape[1])})
        pi_b = bandit_feedback.get("pi_b")
        if pi_b is not None:
            pi_b = np.asarray(pi_b)
            pi_b = pi_b[:, :, 0] if pi_b.ndim == 3 else pi_b
        return cls(
            actions=bandit_feedback["action"],
            rewards=bandit_feedback["reward"],
            propensities=bandit_feedback["pscore"],
            n_actions=int(bandit_feedback["n_actions"]),
            contexts=contexts,
            logging_distribution=pi_b,
        )

    @classmethod
    def from_logs(
        cls,
        log_dir: str | Path,
        *,
        wait_window: Any = None,
        default_reward: float | None = None,
        duplicates: str = "first",
        escalations: str = "first",
        reward: str = "reward",
        contexts: bool | Sequence[str] = False,
        cohorts: Sequence[str] = (),
        metrics: bool = True,
        logging_distribution: bool = True,
    ) -> LoggedFeedback:
        """Read banditroute's Parquet logs: decisions joined with outcomes, streamed.

        See :func:`ope.logs.feedback_from_logs` for every option (late, duplicate
        and missing outcomes, escalated decisions, reward metric, contexts, cohorts).

        Examples
        --------
        >>> LoggedFeedback.from_logs("/nonexistent")
        Traceback (most recent call last):
        ...
        ope.errors.LogsNotFoundError: log_dir has no decisions/**/*.parquet files: /nonexistent
        """
        columns = read_log_columns(
            log_dir, wait_window=wait_window, default_reward=default_reward, duplicates=duplicates,
            escalations=escalations, reward=reward, contexts=contexts, cohorts=cohorts, metrics=metrics,
            logging_distribution=logging_distribution,
        )
        return cls(**columns.as_kwargs())
