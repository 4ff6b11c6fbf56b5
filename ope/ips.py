"""Importance-weighting estimators: IPS (optionally clipped) and SNIPS."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ope.base import Estimator
from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback
from ope.intervals import RoundTerms

__all__ = ["IPS", "SNIPS", "check_clip"]


def check_clip(clip: float | None, field: str = "clip") -> None:
    """Validate a weight-clipping threshold (None or a positive number).

    Examples
    --------
    >>> check_clip(10.0)
    >>> check_clip(0.0)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: clip must be > 0 or None, got 0.0
    """
    if clip is None:
        return
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or math.isnan(clip) or clip <= 0:
        raise InvalidConfigError(field, f"{field} must be > 0 or None, got {clip!r}")


@dataclass(frozen=True, kw_only=True)
class IPS(Estimator):
    """Inverse propensity scoring, with optional weight clipping.

    .. math::

        \\hat V_{IPS} = \\frac{1}{n} \\sum_i \\min(w_i, \\lambda)\\, r_i,
        \\qquad w_i = \\frac{\\pi_e(a_i \\mid x_i)}{\\pi_0(a_i \\mid x_i)}

    Unbiased without clipping when propensities are right and the logging policy
    covers the target's support; clipping (``clip = lambda``) trades bias for variance
    and bounds the per-round values, which the Bernstein interval needs.

    Parameters
    ----------
    clip : float or None
        Clip importance weights at this value (None: no clipping).

    References
    ----------
    Horvitz & Thompson (1952); Precup, Sutton & Singh (2000); Ionides (2008),
    "Truncated importance sampling".

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1, 0], rewards=[1.0, 0.0, 0.0],
    ...                     propensities=[0.5, 0.5, 0.25], n_actions=2)
    >>> IPS().estimate(fb, [[1.0, 0.0]] * 3).value
    0.6666666666666666
    >>> IPS(clip=1.0).estimate(fb, [[1.0, 0.0]] * 3).value
    0.3333333333333333
    """

    clip: float | None = None
    name = "IPS"

    def __post_init__(self) -> None:
        check_clip(self.clip)

    def _terms(self, feedback: LoggedFeedback, target: np.ndarray, weights: np.ndarray, rng, cache) -> RoundTerms:
        w = weights if self.clip is None else np.minimum(weights, self.clip)
        return RoundTerms(base=w * feedback.rewards)


@dataclass(frozen=True, kw_only=True)
class SNIPS(Estimator):
    """Self-normalised inverse propensity scoring.

    .. math::

        \\hat V_{SNIPS} = \\frac{\\sum_i w_i r_i}{\\sum_i w_i}

    Slightly biased, consistent, invariant to adding a constant to rewards, and
    usually much lower variance than IPS. Its normal interval uses the delta method,
    its bootstrap re-normalises every resample.

    References
    ----------
    Swaminathan & Joachims (2015), "The Self-Normalized Estimator for
    Counterfactual Learning"; Kong (1992).

    Examples
    --------
    >>> from ope import LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1, 0], rewards=[1.0, 0.0, 0.0],
    ...                     propensities=[0.5, 0.5, 0.25], n_actions=2)
    >>> SNIPS().estimate(fb, [[1.0, 0.0]] * 3).value
    0.3333333333333333
    """

    name = "SNIPS"
    self_normalised = True

    def _terms(self, feedback: LoggedFeedback, target: np.ndarray, weights: np.ndarray, rng, cache) -> RoundTerms:
        # no linear part: a read-only zero-stride view of 0.0 (no allocation, no page to fault in)
        zero = np.broadcast_to(0.0, feedback.n_rounds)
        return RoundTerms(base=zero, num=weights * feedback.rewards, den=weights)
