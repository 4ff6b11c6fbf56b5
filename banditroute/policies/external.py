"""A learner written outside banditroute, behind the Policy interface.

``Router(profiles, learner=obj)`` accepts any object with the documented learner protocol
``distribution(context, task_probs, feasible) -> pmf``, ``learn(context, k, reward, propensity)``
and ``add_profile(profile)``; a :class:`~banditroute.policies.base.Policy` is used as it is, any
other object is wrapped here. Its pmf is checked on every decision (a foreign learner promises
nothing), then the router's exploration floor is mixed in as for every policy.

>>> import numpy as np
>>> class Always:
...     def distribution(self, context, task_probs, feasible):
...         return np.where(np.arange(len(feasible)) == 0, 1.0, 0.0)
...     def learn(self, context, k, reward, propensity): pass
...     def add_profile(self, profile): pass
>>> from banditroute.policies.base import PolicyQuery
>>> q = PolicyQuery(0, np.ones(1), np.array([True, True]), {}, np.zeros(2), 1.0, 0.2)
>>> ExternalPolicy(Always()).pmf(q)[0].tolist()
[0.9, 0.1]
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Feedback, Policy, PolicyQuery

__all__ = ["ExternalPolicy", "as_policy"]

_PROTOCOL = ("distribution", "learn", "add_profile")


class ExternalPolicy(Policy):
    """Wraps a learner with ``distribution``, ``learn`` and ``add_profile`` (see the module)."""

    exact = True  # checked here, with the protocol's own message, before the template sees it

    def __init__(self, learner):
        if not all(callable(getattr(learner, m, None)) for m in _PROTOCOL):
            raise ConfigError("learner", learner, "must have distribution(), learn() and add_profile()")
        self.learner = learner

    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        mask = query.feasible
        pmf = np.asarray(self.learner.distribution(query.context, query.task_probs, mask.copy()), dtype=np.float64)
        if (pmf.shape != mask.shape or not np.all(np.isfinite(pmf)) or np.any(pmf < 0)
                or np.any(pmf[~mask] > 0) or abs(pmf.sum() - 1.0) > 1e-6):
            raise ConfigError("learner.distribution", pmf.tolist(),
                              "must return non-negative probabilities over the feasible profiles summing to 1")
        return pmf, np.zeros_like(mask)

    def update(self, feedback: Feedback) -> None:
        self.learner.learn(feedback.context, feedback.k, feedback.reward, feedback.propensity)

    def add_profile(self, profile) -> None:
        self.learner.add_profile(profile)

    def state_arrays(self) -> dict:
        raise ConfigError("learner", type(self.learner).__name__, "is an object of its own: its learned state "
                          "cannot be stored as data; save the router with format='pickle' (and load only files "
                          "you wrote)")


def as_policy(learner) -> Policy:
    """``learner`` itself when it is a Policy, else wrapped in :class:`ExternalPolicy`."""
    return learner if isinstance(learner, Policy) else ExternalPolicy(learner)
