"""Bank policies: Thompson sampling and greedy over the Beta beliefs' bank of posterior draws.

A bank policy sees each request through ``M`` posterior scenarios of every profile's
reliability. :class:`BankPolicy` proposes the share of scenarios each profile wins, after its
reliability floor; the template of :class:`~banditroute.policies.base.Policy` adds the
exploration floor. A subclass supplies one hook, :meth:`BankPolicy.quality_draws`.

For a task-type posterior ``p`` and scenario ``m``::

    u[m, k] = w_q * q[m, k] - (w_c * cost[m, k] + w_l * latency[m, k])      (-inf if infeasible)
    pmf[k]  = (1 - eps) * mean_m 1[k = argmax_j u[m, j]]  +  eps * 1[k feasible] / n_feasible

(``cost``, ``latency``: scenarios of the learned cost and latency when the router learns them,
:attr:`PolicyQuery.offset_draws`; otherwise their expected values for every scenario.) The pmf is the probability with which the router executes each profile, exactly.

>>> import numpy as np
>>> from banditroute.beliefs.beta import BetaBelief
>>> belief = BetaBelief(np.array([[30.0], [10.0]]), np.array([[10.0], [30.0]]), n_draws=1000, seed=0)
>>> policy = ThompsonPolicy(belief, exploration=0.1)
>>> pmf, below = policy.distribution(0, np.array([True, True]), np.zeros(2), 1.0)
>>> pmf.round(2).tolist(), below.tolist()
([0.95, 0.05], [False, False])
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from .base import Policy, PolicyQuery, PolicySetup

__all__ = ["BankPolicy", "ThompsonPolicy", "GreedyPolicy"]


class BankPolicy(Policy):
    """Template for policies that decide by the share of posterior scenarios each profile wins.

    Parameters
    ----------
    belief : BetaBelief, optional
        The router's reliability beliefs (read, never updated, by the policy); a subclass with
        draws of its own needs none.
    exploration : float in [0, 1)
        Exploration floor ``eps`` of :meth:`distribution` (the router passes its own).
    reliability_floor : float or None
        A profile is excluded for a request when its reliability, under the request's
        task-type posterior, is below this floor with probability above ``floor_confidence``.
    floor_confidence : float
        See ``reliability_floor``.
    """

    exact = True
    cacheable = True
    learns = False  # reads the router's Beta beliefs, which the router updates
    uses_scenarios = True

    def __init__(self, belief=None, *, exploration: float = 0.0, reliability_floor: float | None = None,
                 floor_confidence: float = 0.95):
        self.belief = belief
        self.exploration = float(exploration)
        self.reliability_floor = reliability_floor
        self.floor_confidence = float(floor_confidence)

    @classmethod
    def build(cls, setup: PolicySetup) -> "BankPolicy":
        cfg = setup.config
        return cls(setup.belief, exploration=cfg.exploration, reliability_floor=cfg.reliability_floor,
                   floor_confidence=cfg.floor_confidence)

    @abstractmethod
    def quality_draws(self, task) -> np.ndarray:
        """Reliability scenarios of shape (n_scenarios, n_profiles) for a task-type index or a
        task-type posterior of shape (n_task_types,)."""

    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        """Scenarios won per profile (their share is the pmf before the exploration floor)."""
        q = self.quality_draws(query.task)
        feasible = query.feasible
        below = np.zeros(feasible.shape, dtype=bool)
        if self.reliability_floor is not None:
            below = feasible & ((q < self.reliability_floor).mean(axis=0) > self.floor_confidence)
            feasible = feasible & ~below
        n_profiles = feasible.shape[0]
        # scenario m pairs reliability draw m with cost/latency draw m (independent posteriors)
        penalty = query.offset if query.offset_draws is None or q.shape[0] == 1 else query.offset_draws
        u = q * query.quality_weight - penalty
        if int(feasible.sum()) < n_profiles:
            u = np.where(feasible, u, -np.inf)
        return np.bincount(u.argmax(axis=1), minlength=n_profiles).astype(np.float64), below

    def distribution(self, task, feasible: np.ndarray, offset: np.ndarray,
                     quality_weight: float) -> tuple[np.ndarray | None, np.ndarray]:
        """Return ``(pmf, below_floor)`` for one request, with this policy's ``exploration``.

        ``feasible`` is the boolean mask of shape (n_profiles,) left by budgets and allow-lists,
        ``offset`` the per-profile cost and latency penalty ``w_c * cost_usd + w_l * latency_ms``.
        ``pmf`` is None when the floor leaves no profile feasible.
        """
        task_probs = None if isinstance(task, (int, np.integer)) else task  # bank policies read only ``task``
        return self.pmf(PolicyQuery(task, task_probs, feasible, {}, offset, quality_weight, self.exploration))


class ThompsonPolicy(BankPolicy, name="thompson"):
    """Thompson sampling over a :class:`~banditroute.beliefs.beta.BetaBelief` draw bank."""

    version_prefix = "ts-beta"

    def quality_draws(self, task) -> np.ndarray:
        return self.belief.quality_draws(task)

    @property
    def version(self) -> int:
        return self.belief.version_


class GreedyPolicy(BankPolicy, name="greedy"):
    """Exploit the posterior means (one scenario), with the exploration floor on top.

    A useful candidate for offline evaluation: what would pure exploitation have earned?

    >>> import numpy as np
    >>> from banditroute.beliefs.beta import BetaBelief
    >>> belief = BetaBelief(np.array([[9.0], [1.0]]), np.array([[1.0], [9.0]]), n_draws=10, seed=0)
    >>> pmf, _ = GreedyPolicy(belief, exploration=0.1).distribution(0, np.array([True, True]), np.zeros(2), 1.0)
    >>> pmf.round(12).tolist()
    [0.95, 0.05]
    """

    version_prefix = "greedy-beta"

    def quality_draws(self, task) -> np.ndarray:
        mean = self.belief.mean()  # (K, T)
        if isinstance(task, (int, np.integer)):
            return mean[:, task][None, :]
        return (mean @ task)[None, :]

    @property
    def version(self) -> int:
        # the means move with every outcome (n_updates_) and with evidence set or shrunk
        # from outside (both redraw the bank: version_); both only grow, so their sum changes
        return self.belief.n_updates_ + self.belief.version_
