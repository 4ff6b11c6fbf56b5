"""Model-based estimators: DM, DR, SNDR, Switch-DR and DRos.

Each takes either ``reward_model`` (a scikit-learn estimator, cross-fitted with
``n_folds`` folds, see :mod:`ope.reward_models`) or ``reward_predictions`` (an
array of shape (n_rounds, n_actions) of ``q(x_i, k)``). Notation:
``q_i(pi_e) = sum_k pi_e(k | x_i) q(x_i, k)``, ``q_i = q(x_i, a_i)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ope.base import Estimator
from ope.diagnostics import at_logged_actions
from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback
from ope.intervals import RoundTerms
from ope.ips import check_clip
from ope.reward_models import cross_fit_predictions

__all__ = ["DM", "DR", "SNDR", "SwitchDR", "DRos"]


@dataclass(frozen=True, kw_only=True, eq=False)
class _ModelBased(Estimator):
    reward_model: Any = None
    reward_predictions: Any = None
    n_folds: int = 5

    def __post_init__(self) -> None:
        if (self.reward_model is None) == (self.reward_predictions is None):
            raise InvalidConfigError(
                "reward_model", f"{self.name} needs exactly one of reward_model or reward_predictions"
            )
        if isinstance(self.n_folds, bool) or not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise InvalidConfigError("n_folds", f"n_folds must be an integer >= 2, got {self.n_folds!r}")

    def predictions(self, feedback: LoggedFeedback, *, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Reward predictions ``q(x_i, k)``, shape (n_rounds, n_actions).

        Examples
        --------
        >>> from ope import LoggedFeedback
        >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
        >>> DM(reward_predictions=np.ones((2, 2))).predictions(fb).shape
        (2, 2)
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self._predictions(feedback, rng, {})

    def _predictions(self, feedback: LoggedFeedback, rng: np.random.Generator, cache: dict) -> np.ndarray:
        if self.reward_predictions is not None:
            q = np.asarray(self.reward_predictions, dtype=np.float64)
            expected = (feedback.n_rounds, feedback.n_actions)
            if q.shape != expected:
                raise InvalidConfigError(
                    "reward_predictions", f"reward_predictions must have shape {expected}, got {q.shape}"
                )
            # a sum is finite when every entry is (one pass, no temporary); else check exactly,
            # since finite entries can overflow the sum
            if not (np.isfinite(np.einsum("ij->", q)) or np.isfinite(q).all()):
                raise InvalidConfigError("reward_predictions", "reward_predictions must be finite")
            return q
        key = (id(self.reward_model), self.n_folds)
        if key not in cache:
            cache[key] = cross_fit_predictions(feedback, self.reward_model, n_folds=self.n_folds, seed=rng)
        return cache[key]

    def _parts(self, feedback: LoggedFeedback, target: np.ndarray, rng, cache) -> tuple[np.ndarray, np.ndarray]:
        """(q_i(pi_e), r_i - q_i)."""
        q = self._predictions(feedback, rng, cache)
        residual = at_logged_actions(q, feedback.actions)  # first: its index is freed before direct exists
        np.subtract(feedback.rewards, residual, out=residual)
        direct = np.einsum("ij,ij->i", target, q)
        return direct, residual


@dataclass(frozen=True, kw_only=True, eq=False)
class DM(_ModelBased):
    """Direct method: the reward model's value of the target policy.

    .. math:: \\hat V_{DM} = \\frac{1}{n} \\sum_i \\sum_k \\pi_e(k \\mid x_i)\\, q(x_i, k)

    Exact with a perfect reward model, biased with a wrong one; ignores propensities.

    References
    ----------
    Beygelzimer & Langford (2009), "The Offset Tree for Learning with Partial Labels".

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    >>> q = np.array([[1.0, 0.0], [0.8, 0.2]])
    >>> DM(reward_predictions=q).estimate(fb, [[1.0, 0.0], [1.0, 0.0]]).value
    0.9
    """

    name = "DM"

    def _terms(self, feedback, target, weights, rng, cache) -> RoundTerms:
        direct, _ = self._parts(feedback, target, rng, cache)
        return RoundTerms(base=direct)


@dataclass(frozen=True, kw_only=True, eq=False)
class DR(_ModelBased):
    """Doubly robust estimator (optional weight clipping).

    .. math::

        \\hat V_{DR} = \\frac{1}{n} \\sum_i \\Big[ q_i(\\pi_e)
            + \\min(w_i, \\lambda) \\big(r_i - q(x_i, a_i)\\big) \\Big]

    Unbiased when propensities are right, whatever the reward model (without
    clipping); low variance when the model is good. Clipping is the pessimistic
    shrinkage of Su et al. (2020).

    References
    ----------
    Dudík, Langford & Li (2011), "Doubly Robust Policy Evaluation and Learning".

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    >>> q = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> DR(reward_predictions=q).estimate(fb, [[1.0, 0.0], [1.0, 0.0]]).value
    1.0
    """

    clip: float | None = None
    name = "DR"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_clip(self.clip)

    def _terms(self, feedback, target, weights, rng, cache) -> RoundTerms:
        direct, residual = self._parts(feedback, target, rng, cache)
        w = weights if self.clip is None else np.minimum(weights, self.clip)
        residual *= w
        residual += direct  # direct + w * residual, in place
        return RoundTerms(base=residual)


@dataclass(frozen=True, kw_only=True, eq=False)
class SNDR(_ModelBased):
    """Self-normalised doubly robust estimator.

    .. math::

        \\hat V_{SNDR} = \\frac{1}{n} \\sum_i q_i(\\pi_e)
            + \\frac{\\sum_i w_i (r_i - q(x_i, a_i))}{\\sum_i w_i}

    References
    ----------
    Kallus & Uehara (2019), "Intrinsically Efficient, Stable, and Bounded
    Off-Policy Evaluation for Reinforcement Learning"; Open Bandit Pipeline's SNDR.

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    >>> q = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> SNDR(reward_predictions=q).estimate(fb, [[1.0, 0.0], [1.0, 0.0]]).value
    1.0
    """

    name = "SNDR"
    self_normalised = True

    def _terms(self, feedback, target, weights, rng, cache) -> RoundTerms:
        direct, residual = self._parts(feedback, target, rng, cache)
        return RoundTerms(base=direct, num=weights * residual, den=weights)


@dataclass(frozen=True, kw_only=True, eq=False)
class SwitchDR(_ModelBased):
    """Switch doubly robust estimator: drop the correction where weights are large.

    .. math::

        \\hat V_{SwitchDR} = \\frac{1}{n} \\sum_i \\Big[ q_i(\\pi_e)
            + 1[w_i \\le \\tau]\\, w_i \\big(r_i - q(x_i, a_i)\\big) \\Big]

    ``threshold = inf`` is DR, ``threshold = 0`` is DM (the form of Open Bandit
    Pipeline's ``SwitchDoublyRobust``).

    References
    ----------
    Wang, Agarwal & Dudík (2017), "Optimal and Adaptive Off-policy Evaluation in
    Contextual Bandits".

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    >>> q = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> SwitchDR(reward_predictions=q, threshold=1.0).estimate(fb, [[1.0, 0.0], [1.0, 0.0]]).value
    0.5
    """

    threshold: float = math.inf
    name = "SwitchDR"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not self.threshold >= 0:
            raise InvalidConfigError("threshold", f"threshold must be >= 0, got {self.threshold!r}")

    def _terms(self, feedback, target, weights, rng, cache) -> RoundTerms:
        direct, residual = self._parts(feedback, target, rng, cache)
        return RoundTerms(base=direct + np.where(weights <= self.threshold, weights, 0.0) * residual)


@dataclass(frozen=True, kw_only=True, eq=False)
class DRos(_ModelBased):
    """Doubly robust with optimistic shrinkage.

    .. math::

        \\hat V_{DRos} = \\frac{1}{n} \\sum_i \\Big[ q_i(\\pi_e)
            + \\frac{\\lambda w_i}{w_i^2 + \\lambda} \\big(r_i - q(x_i, a_i)\\big) \\Big]

    ``shrinkage = inf`` is DR, ``shrinkage = 0`` is DM (a zero weight shrinks to 0).

    References
    ----------
    Su, Dimakopoulou, Krishnamurthy & Dudík (2020), "Doubly Robust Off-policy
    Evaluation with Shrinkage".

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
    >>> q = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> DRos(reward_predictions=q, shrinkage=4.0).estimate(fb, [[1.0, 0.0], [1.0, 0.0]]).value
    0.75
    """

    shrinkage: float
    name = "DRos"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.shrinkage, bool) or not isinstance(self.shrinkage, (int, float)) or not self.shrinkage >= 0:
            raise InvalidConfigError("shrinkage", f"shrinkage must be >= 0, got {self.shrinkage!r}")

    def _terms(self, feedback, target, weights, rng, cache) -> RoundTerms:
        direct, residual = self._parts(feedback, target, rng, cache)
        if math.isinf(self.shrinkage):
            shrunk = weights
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                shrunk = np.where(weights > 0, self.shrinkage * weights / (weights * weights + self.shrinkage), 0.0)
        return RoundTerms(base=direct + shrunk * residual)
