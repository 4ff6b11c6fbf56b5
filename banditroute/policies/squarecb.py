"""SquareCB: inverse-gap weighting over the linear policy's regression (``policy="squarecb"``).

The same Bayesian linear model of the reward per profile as
:class:`~banditroute.policies.linear.LinearTS` (the same features, statistics and refresh), but
decided from the posterior means alone, as Foster & Rakhlin's SquareCB ("Beyond UCB: Optimal and
Efficient Contextual Bandits with Regression Oracles", 2020) and Vowpal Wabbit's ``--squarecb``
do. For a request with predicted rewards ``m_k`` over ``n`` feasible profiles, the best ``b``::

    p_k = 1 / (n + gamma * (m_b - m_k))    for k != b,      p_b = 1 - sum of the others

with ``gamma = gamma_scale * t ** gamma_exponent`` after ``t`` outcomes (VW's defaults: 10 and
0.5). The pmf is a closed form of the means: exact, and the same for a batch of requests as one
at a time. The router's exploration floor is mixed in on top, as for every policy.

>>> import numpy as np
>>> sq = LinearSquareCB(2, ["chat"], (("tokens", 1000.0),), seed=0)
>>> for _ in range(100):
...     sq.learn({"tokens": 100}, 0, 1.0, 0.5)
...     sq.learn({"tokens": 100}, 1, 0.0, 0.5)
>>> sq.distribution({"tokens": 100}, np.array([1.0]), np.array([True, True])).round(3).tolist()
[0.993, 0.007]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config.profiles import check_number
from .linear import LinearTS

__all__ = ["LinearSquareCB", "inverse_gap_weights"]


def inverse_gap_weights(means: np.ndarray, feasible: np.ndarray, gamma: float) -> np.ndarray:
    """The SquareCB pmf of rows of predicted rewards ``means`` (n, K) over ``feasible`` (n, K)
    (every row has a feasible profile; ties for the best go to the first)."""
    masked = np.where(feasible, means, -np.inf)
    rows = np.arange(means.shape[0])
    best = masked.argmax(axis=1)
    n_feasible = feasible.sum(axis=1)[:, None]
    gap = masked[rows, best][:, None] - means
    with np.errstate(invalid="ignore"):
        p = np.where(feasible, 1.0 / (n_feasible + gamma * gap), 0.0)
    p[rows, best] = 0.0
    p[rows, best] = 1.0 - p.sum(axis=1)
    return p


class LinearSquareCB(LinearTS, name="squarecb"):
    """Inverse-gap weighting over the posterior means of :class:`LinearTS`'s model.

    Parameters are :class:`LinearTS`'s, plus ``gamma_scale`` and ``gamma_exponent``.
    """

    version_prefix = "squarecb-linear"

    def __init__(self, n_profiles: int, task_types: Sequence[str], features: Sequence[tuple], *,
                 gamma_scale: float = 10.0, gamma_exponent: float = 0.5, **kwargs):
        check_number("squarecb.gamma_scale", gamma_scale, lo=0.0)
        check_number("squarecb.gamma_exponent", gamma_exponent, lo=0.0, hi=1.0)
        self.gamma_scale = float(gamma_scale)
        self.gamma_exponent = float(gamma_exponent)
        super().__init__(n_profiles, task_types, features, **kwargs)

    @property
    def gamma(self) -> float:
        """``gamma_scale * t ** gamma_exponent`` after ``t`` outcomes (at least 1)."""
        return self.gamma_scale * max(self.n_updates_, 1) ** self.gamma_exponent

    def distribution(self, context, task_probs: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        return self.distribution_rows(self.featurize(context, task_probs)[None], feasible[None])[0]

    def distribution_rows(self, X: np.ndarray, feasible: np.ndarray) -> np.ndarray:
        means, _ = self.moments(np.asarray(X, dtype=np.float64), variances=False)
        return inverse_gap_weights(means, np.broadcast_to(feasible, means.shape), self.gamma)
