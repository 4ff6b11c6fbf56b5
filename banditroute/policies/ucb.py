"""Bayes-UCB over the router's Beta beliefs: play the profile with the best optimistic utility.

Bayes-UCB (Kaufmann, Cappé & Garivier, "On Bayesian Upper Confidence Bounds for Bandit
Problems", AISTATS 2012) scores each arm by an upper quantile of its posterior, at a level that
rises with the evidence. Here the posterior of profile ``k`` on task type ``t`` is the router's
``Beta(alpha[k, t], beta[k, t])`` (read, never updated, by the policy), and for a request of
task type ``t``::

    n_t      = sum_k (alpha[k, t] + beta[k, t] - alpha0[k, t] - beta0[k, t])   (outcomes of task t)
    level_t  = clip(1 - 1 / ((n_t + 1) * log(n_t + 2) ** c), 0, 1)
    index[k] = betaincinv(alpha[k, t], beta[k, t], level_t)                   (upper quantile)
    u[k]     = w_q * index[k] - (w_c * cost_usd[k] + w_l * latency_ms[k])

``n_t`` is the task type's evidence beyond the prior, summed over the profiles (the paper's
time step, counted per task type; fractional with task-type posteriors or discounting).
``c = 0``, the variant the paper recommends in practice, gives the level ``1 - 1/(n_t + 1)``.
For a task-type posterior ``w`` (shape (n_task_types,)) the index is the ``w``-weighted
average of the per-task-type indices, ``index[k] = sum_t w[t] * index[k, t]``.

The proposal is the argmax of ``u`` over the feasible profiles (tied maxima share it equally),
so it is deterministic given the beliefs; the template of
:class:`~banditroute.policies.base.Policy` mixes in the exploration floor::

    pmf[k] = (1 - eps) * 1[k in argmax u] / n_argmax  +  eps * 1[k feasible] / n_feasible

which is the exact probability the router executes ``k`` with: every feasible profile keeps
at least ``eps / n_feasible``, so the logged propensities suit off-policy evaluation.

With a reliability floor ``r``, a feasible profile is excluded when the posterior probability
that its reliability is below ``r`` exceeds ``floor_confidence``: ``betainc(alpha[k, t],
beta[k, t], r)`` for a task type, the mixture ``sum_t w[t] * betainc(alpha[k, t], beta[k, t], r)``
for a task-type posterior (the request is of one task type, which one is uncertain).

>>> import numpy as np
>>> from banditroute.beliefs.beta import BetaBelief
>>> belief = BetaBelief(np.ones((2, 1)), np.ones((2, 1)), n_draws=10, seed=0)
>>> belief.set_evidence(np.array([[29.0], [9.0]]), np.array([[9.0], [29.0]]))
>>> policy = UCBPolicy(belief)
>>> policy.index(0).round(3).tolist()
[0.882, 0.415]
>>> q = PolicyQuery(0, np.ones(1), np.array([True, True]), {}, np.zeros(2), 1.0, 0.1)
>>> pmf, below = policy.pmf(q)
>>> pmf.round(12).tolist(), below.tolist()
([0.95, 0.05], [False, False])
"""

from __future__ import annotations

import numpy as np
from scipy.special import betainc, betaincinv

from ..beliefs.beta import BetaBelief
from ..config.profiles import check_number
from ..errors import ConfigError
from .base import Policy, PolicyQuery, PolicySetup

__all__ = ["UCBPolicy"]


class UCBPolicy(Policy, name="ucb"):
    """Bayes-UCB over a :class:`~banditroute.beliefs.beta.BetaBelief` (see the module docstring).

    Parameters
    ----------
    belief : BetaBelief
        The router's reliability beliefs (read, never updated, by the policy).
    reliability_floor : float in (0, 1) or None
        Exclude a profile for a request when its reliability is below this floor with posterior
        probability above ``floor_confidence``; None: no floor.
    floor_confidence : float in (0.5, 1)
        See ``reliability_floor``.
    log_exponent : float >= 0
        The paper's ``c`` in the quantile level ``1 - 1 / ((n_t + 1) * log(n_t + 2) ** c)``;
        0 (the default) is the variant Kaufmann et al. recommend in practice.

    Examples
    --------
    >>> import numpy as np
    >>> from banditroute.beliefs.beta import BetaBelief
    >>> belief = BetaBelief(np.ones((3, 1)), np.ones((3, 1)), n_draws=10, seed=0)
    >>> policy = UCBPolicy(belief)
    >>> q = PolicyQuery(0, np.ones(1), np.array([True, True, False]), {}, np.zeros(3), 1.0, 0.1)
    >>> policy.pmf(q)[0].tolist()  # no evidence yet: the two feasible profiles tie
    [0.5, 0.5, 0.0]
    >>> UCBPolicy(belief, log_exponent=-1.0)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: log_exponent must be >= 0, got -1.0
    """

    version_prefix = "ucb-beta"
    exact = True  # one-hot (or equal shares over ties) on feasible, unexcluded profiles
    cacheable = True
    supports_drift = True  # drift recalibration shrinks the Beta cells this policy reads
    learns = False  # reads the router's Beta beliefs, which the router updates

    def __init__(self, belief, *, reliability_floor: float | None = None, floor_confidence: float = 0.95,
                 log_exponent: float = 0.0):
        if not isinstance(belief, BetaBelief):
            raise ConfigError("belief", type(belief).__name__, "must be a BetaBelief")
        if reliability_floor is not None:
            reliability_floor = check_number("reliability_floor", reliability_floor, lo=0.0, hi=1.0,
                                             lo_open=True, hi_open=True)
        self.belief = belief
        self.reliability_floor = reliability_floor
        self.floor_confidence = check_number("floor_confidence", floor_confidence, lo=0.5, hi=1.0,
                                             lo_open=True, hi_open=True)
        self.log_exponent = check_number("log_exponent", log_exponent, lo=0.0)

    @classmethod
    def build(cls, setup: PolicySetup) -> UCBPolicy:
        cfg = setup.config
        return cls(setup.belief, reliability_floor=cfg.reliability_floor, floor_confidence=cfg.floor_confidence)

    def levels(self) -> np.ndarray:
        """The quantile level of every task type, shape (n_task_types,)."""
        b = self.belief
        n_t = np.maximum((b.alpha_ + b.beta_ - b.alpha0_ - b.beta0_).sum(axis=0), 0.0)
        scale = n_t + 1.0
        if self.log_exponent != 0.0:
            scale = scale * np.log(n_t + 2.0) ** self.log_exponent
        return np.clip(1.0 - 1.0 / scale, 0.0, 1.0)

    def index(self, task) -> np.ndarray:
        """The Bayes-UCB index of every profile, shape (n_profiles,), for a task-type index or a
        task-type posterior of shape (n_task_types,) (the weighted average of the indices)."""
        b, level = self.belief, self.levels()
        if isinstance(task, (int, np.integer)):
            return betaincinv(b.alpha_[:, task], b.beta_[:, task], level[task])
        w = np.asarray(task, dtype=np.float64)
        cols = np.flatnonzero(w > 0)  # only the task types the request may be
        return betaincinv(b.alpha_[:, cols], b.beta_[:, cols], level[cols]) @ w[cols]

    def below_floor(self, task, feasible: np.ndarray) -> np.ndarray:
        """Feasible profiles whose reliability is below the floor with probability above
        ``floor_confidence`` (all False without a floor)."""
        if self.reliability_floor is None:
            return np.zeros(feasible.shape, dtype=bool)
        b, r = self.belief, self.reliability_floor
        if isinstance(task, (int, np.integer)):
            p_below = betainc(b.alpha_[:, task], b.beta_[:, task], r)
        else:
            w = np.asarray(task, dtype=np.float64)
            cols = np.flatnonzero(w > 0)
            p_below = betainc(b.alpha_[:, cols], b.beta_[:, cols], r) @ w[cols]
        return feasible & (p_below > self.floor_confidence)

    def propose(self, query: PolicyQuery) -> tuple[np.ndarray, np.ndarray]:
        """Weight 1 on each maximiser of the optimistic utility among the feasible profiles."""
        below = self.below_floor(query.task, query.feasible)
        feasible = query.feasible & ~below
        if not feasible.any():
            return np.zeros(feasible.shape), below
        u = np.where(feasible, query.quality_weight * self.index(query.task) - query.offset, -np.inf)
        return (u == u.max()).astype(np.float64), below

    @property
    def version(self) -> int:
        # the indices move with every outcome (n_updates_) and with evidence set or shrunk from
        # outside (both redraw the bank: version_); both only grow, so their sum changes
        return self.belief.n_updates_ + self.belief.version_
