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

__all__ = ["Policy", "resolve_target", "one_hot", "uniform"]

_ROW_ATOL = 1e-6


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
    if isinstance(policy, Policy) and not isinstance(policy, np.ndarray):
        policy = policy.action_distribution(feedback.contexts, list(feedback.action_names))
    try:
        target = np.asarray(policy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTargetError("target", f"target must be a numeric array, got {exc}") from None
    expected = (feedback.n_rounds, feedback.n_actions)
    if target.shape != expected:
        raise InvalidTargetError("target", f"target must have shape {expected}, got {target.shape}")
    sums = np.einsum("ij->i", target)  # one pass; a NaN or inf makes its row sum non-finite
    if not np.isfinite(sums).all():
        i = int(np.flatnonzero(~np.isfinite(target).all(axis=1))[0])
        raise InvalidTargetError("target", f"target must be finite, got {target[i].tolist()} at round {i}")
    if target.min() < 0.0:
        i = int(np.flatnonzero((target < 0).any(axis=1))[0])
        raise InvalidTargetError("target", f"target must be >= 0, got {target[i].tolist()} at round {i}")
    bad = np.abs(sums - 1.0) > _ROW_ATOL
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidTargetError("target", f"target rows must sum to 1, got sum {sums[i]:.6g} at round {i}")
    return target
