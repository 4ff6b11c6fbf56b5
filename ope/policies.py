"""Target policies: the protocol `ope` needs and helpers to build action distributions.

A target policy is anything that gives, for the logged contexts, an action
distribution of shape ``(n_rounds, n_actions)``: either such an array directly or
an object with ``action_distribution(contexts, action_names)`` (banditroute's
``Router`` implements it).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ope.errors import InvalidTargetError
from ope.feedback import LoggedFeedback

__all__ = ["Policy", "resolve_target", "resolve_with_weights", "one_hot", "uniform"]

_ROW_ATOL = 1e-6
_BLOCK_CELLS = 1 << 17  # target cells per block of the validation pass: 1 MiB of float64


@runtime_checkable
class Policy(Protocol):
    """Anything that maps logged contexts to an action distribution.

    Examples
    --------
    >>> class Always0:
    ...     def action_distribution(self, contexts, action_names):
    ...         return one_hot(np.zeros(contexts.height, dtype=int), len(action_names))
    >>> isinstance(Always0(), Policy)
    True
    """

    def action_distribution(self, contexts: Any, action_names: Any) -> np.ndarray:
        """Return an array of shape ``(n_rounds, len(action_names))``."""


def one_hot(actions: Any, n_actions: int) -> np.ndarray:
    """Deterministic policy as one-hot rows.

    Parameters
    ----------
    actions : array-like of int, shape (n_rounds,)
        The action the policy plays in each round.
    n_actions : int
        Size of the action space.

    Returns
    -------
    numpy.ndarray, shape (n_rounds, n_actions)

    Examples
    --------
    >>> one_hot([1, 0], 3)
    array([[0., 1., 0.],
           [1., 0., 0.]])
    """
    actions = np.asarray(actions, dtype=np.int64)
    out = np.zeros((actions.shape[0], n_actions))
    out[np.arange(actions.shape[0]), actions] = 1.0
    return out


def uniform(n_rounds: int, n_actions: int) -> np.ndarray:
    """Uniform random policy.

    Examples
    --------
    >>> uniform(1, 4)
    array([[0.25, 0.25, 0.25, 0.25]])
    """
    return np.full((n_rounds, n_actions), 1.0 / n_actions)


def resolve_target(policy: Any, feedback: LoggedFeedback) -> np.ndarray:
    """Validate a target policy against the feedback and return its distribution.

    Parameters
    ----------
    policy : array-like of shape (n_rounds, n_actions) or Policy
        The target action distribution, or an object implementing :class:`Policy`.
    feedback : LoggedFeedback
        The logged feedback the policy is evaluated on.

    Returns
    -------
    numpy.ndarray, shape (n_rounds, n_actions), float64

    Raises
    ------
    InvalidTargetError
        If the shape is wrong, a value is negative or not finite, or a row does
        not sum to 1 (within 1e-6).

    Examples
    --------
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0],
    ...                     propensities=[0.5, 0.5], n_actions=2)
    >>> resolve_target([[0.5, 0.5], [1.0, 0.0]], fb).shape
    (2, 2)
    >>> resolve_target([[0.5, 0.6], [1.0, 0.0]], fb)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidTargetError: target rows must sum to 1, got sum 1.1 at round 0
    """
    return _resolve(policy, feedback, weights=False)[0]


def resolve_with_weights(policy: Any, feedback: LoggedFeedback) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resolve_target` and, from the same pass, the importance weights
    ``w_i = target[i, a_i] / propensity_i`` (equal to :func:`ope.importance_weights`).

    Examples
    --------
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0],
    ...                     propensities=[0.5, 0.25], n_actions=2)
    >>> target, weights = resolve_with_weights([[1.0, 0.0], [0.5, 0.5]], fb)
    >>> weights.tolist()
    [2.0, 2.0]
    """
    return _resolve(policy, feedback, weights=True)


def _resolve(policy: Any, feedback: LoggedFeedback, *, weights: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`resolve_target`, and with ``weights`` the importance weights from the same pass
    (equal to :func:`ope.importance_weights` of the validated target)."""
    if isinstance(policy, Policy) and not isinstance(policy, np.ndarray):
        policy = policy.action_distribution(feedback.contexts, list(feedback.action_names))
    try:
        target = np.asarray(policy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTargetError("target", f"target must be a numeric array, got {exc}") from None
    expected = (feedback.n_rounds, feedback.n_actions)
    if target.shape != expected:
        raise InvalidTargetError("target", f"target must have shape {expected}, got {target.shape}")
    low_sum, high_sum, low_cell, logged = _scan(target, feedback.actions if weights else None)
    # |s - 1| <= atol for every row iff it holds for the smallest and the largest row sum
    # (s - 1 rounds monotonically); a NaN or inf makes its row sum, hence an extreme, non-finite.
    if not (abs(low_sum - 1.0) <= _ROW_ATOL and abs(high_sum - 1.0) <= _ROW_ATOL) or low_cell < 0.0:
        _raise_bad_rows(target)
    if logged is not None:
        logged /= feedback.propensities
    return target, logged


def _scan(target: np.ndarray, actions: np.ndarray | None) -> tuple[float, float, float, np.ndarray | None]:
    """Smallest and largest row sum, smallest cell and (given ``actions``) ``target[i, a_i]``.

    One pass over the target in blocks of about 1 MiB: each block is summed, scanned for its
    minimum and gathered from while it is in cache, and no (n_rounds,) row-sum array is made.
    """
    n, k = target.shape
    rows = max(1, _BLOCK_CELLS // k)
    starts = range(0, n, rows)
    sums = np.empty(min(rows, n))
    extremes = np.empty((len(starts), 3))  # NaNs propagate through the final min / max
    logged = offsets = index = None
    if actions is not None:
        logged = np.empty(n)
        if target.flags.c_contiguous:
            offsets = np.arange(0, sums.shape[0] * k, k)
            index = np.empty_like(offsets)
    for b, start in enumerate(starts):
        block = target[start : start + rows]
        m = block.shape[0]
        s = np.einsum("ij->i", block, out=sums[:m])
        extremes[b] = s.min(), s.max(), block.min()
        if logged is None:
            continue
        a = actions[start : start + m]
        if index is None:
            logged[start : start + m] = block[np.arange(m), a]
        else:
            np.add(offsets[:m], a, out=index[:m])
            np.take(block.reshape(-1), index[:m], out=logged[start : start + m])
    return float(extremes[:, 0].min()), float(extremes[:, 1].max()), float(extremes[:, 2].min()), logged


def _raise_bad_rows(target: np.ndarray) -> None:
    """Raise for the first problem, checked in order: non-finite, negative, row sum."""
    sums = np.einsum("ij->i", target)
    if not np.isfinite(sums).all():
        i = int(np.flatnonzero(~np.isfinite(target).all(axis=1))[0])
        raise InvalidTargetError("target", f"target must be finite, got {target[i].tolist()} at round {i}")
    if target.min() < 0.0:
        i = int(np.flatnonzero((target < 0).any(axis=1))[0])
        raise InvalidTargetError("target", f"target must be >= 0, got {target[i].tolist()} at round {i}")
    i = int(np.flatnonzero(np.abs(sums - 1.0) > _ROW_ATOL)[0])
    raise InvalidTargetError("target", f"target rows must sum to 1, got sum {sums[i]:.6g} at round {i}")
