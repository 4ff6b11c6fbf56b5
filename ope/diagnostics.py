"""Diagnostics attached to every estimate, and the warnings they raise.

With importance weights ``w_i = pi_e(a_i | x_i) / pi_0(a_i | x_i)``:

- ``ess = (sum w)^2 / sum w^2`` (Kish's effective sample size);
- ``max_weight`` and its share of the total weight;
- ``mean_weight``: ``E[w] = 1 - support_deficiency`` when the propensities are the
  ones that generated the log, so a mean weight several standard errors away is a
  strong check on the logs themselves (wrong propensities, a broken join);
- ``support_deficiency``: target mass on actions the logging policy never plays,
  ``mean_i sum_k pi_e(k | x_i) 1[pi_0(k | x_i) = 0]``. Exact when the logging
  distribution is known; otherwise computed over actions never seen in the log
  (a lower bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ope.errors import InvalidConfigError
from ope.feedback import LoggedFeedback
from ope.intervals import sample_std

__all__ = ["DiagnosticThresholds", "Diagnostics", "importance_weights", "diagnose", "at_logged_actions", "weight_diagnostics"]


@dataclass(frozen=True, kw_only=True)
class DiagnosticThresholds:
    """When diagnostics turn into warnings.

    Parameters
    ----------
    min_ess : float
        Warn when the effective sample size is below this.
    min_ess_fraction : float
        Warn when ``ess / n`` is below this.
    max_weight_share : float
        Warn when one round carries more than this share of the total weight.
    mean_weight_z : float
        Warn when the mean weight is more than this many standard errors from its
        expectation.
    max_support_deficiency : float
        Warn when the target puts more than this mass on unsupported actions.

    Examples
    --------
    >>> DiagnosticThresholds(min_ess=50).min_ess
    50
    >>> DiagnosticThresholds(min_ess=-1)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: thresholds.min_ess must be >= 0, got -1
    """

    min_ess: float = 100.0
    min_ess_fraction: float = 0.01
    max_weight_share: float = 0.05
    mean_weight_z: float = 4.0
    max_support_deficiency: float = 0.001

    def __post_init__(self) -> None:
        for name in ("min_ess", "min_ess_fraction", "max_weight_share", "mean_weight_z", "max_support_deficiency"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidConfigError(name, f"thresholds.{name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class Diagnostics:
    """Weight diagnostics of one (feedback, target) pair.

    Examples
    --------
    >>> fb = LoggedFeedback(actions=[0, 1, 0, 1], rewards=[1.0, 0.0, 1.0, 1.0],
    ...                     propensities=[0.5] * 4, n_actions=2)
    >>> d = diagnose(fb, np.array([[1.0, 0.0]] * 4))
    >>> d.n, d.ess, d.max_weight, d.mean_weight, d.support_deficiency
    (4, 2.0, 2.0, 1.0, 0.0)
    """

    n: int
    ess: float
    max_weight: float
    mean_weight: float
    support_deficiency: float
    support_exact: bool
    warnings: tuple[str, ...]


def importance_weights(feedback: LoggedFeedback, target: np.ndarray) -> np.ndarray:
    """``w_i = target[i, a_i] / propensity_i``, shape (n_rounds,).

    Examples
    --------
    >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.25], n_actions=2)
    >>> importance_weights(fb, np.array([[1.0, 0.0], [0.5, 0.5]])).tolist()
    [2.0, 2.0]
    """
    weights = at_logged_actions(target, feedback.actions)
    weights /= feedback.propensities
    return weights


def at_logged_actions(matrix: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``matrix[i, actions[i]]`` as a new array, shape (n_rounds,).

    One gather through the flat index ``i * n_actions + a_i`` (``np.take`` on a
    C-contiguous matrix), faster than ``matrix[np.arange(n), actions]``.

    Examples
    --------
    >>> at_logged_actions(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 0])).tolist()
    [2.0, 3.0]
    """
    n, k = matrix.shape
    if not matrix.flags.c_contiguous:
        return matrix[np.arange(n), actions]
    index = np.arange(0, n * k, k)
    index += actions
    return np.take(matrix.reshape(-1), index)


def _support_deficiency(feedback: LoggedFeedback, target: np.ndarray) -> tuple[float, bool]:
    if feedback.logging_distribution is not None:
        unsupported = feedback.logging_distribution <= 0.0
        return float((target * unsupported).sum() / feedback.n_rounds), True
    unplayed = np.bincount(feedback.actions, minlength=feedback.n_actions) == 0
    if not unplayed.any():
        return 0.0, False
    return float(target[:, unplayed].sum() / feedback.n_rounds), False


def diagnose(
    feedback: LoggedFeedback,
    target: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    thresholds: DiagnosticThresholds | None = None,
) -> Diagnostics:
    """Compute the weight diagnostics and warnings for a validated target.

    Parameters
    ----------
    feedback : LoggedFeedback
    target : numpy.ndarray, shape (n_rounds, n_actions)
        A validated target distribution (see :func:`ope.resolve_target`).
    weights : numpy.ndarray, optional
        Precomputed importance weights (unclipped).
    thresholds : DiagnosticThresholds, optional

    Examples
    --------
    >>> fb = LoggedFeedback(actions=[0] * 50, rewards=[1.0] * 50, propensities=[0.5] * 50, n_actions=2)
    >>> d = diagnose(fb, np.tile([0.0, 1.0], (50, 1)))
    >>> d.support_deficiency, len(d.warnings) > 0
    (1.0, True)
    """
    limits = thresholds or DiagnosticThresholds()
    w = importance_weights(feedback, target) if weights is None else weights
    n = feedback.n_rounds
    total = float(w.sum())
    sq = float(np.einsum("i,i->", w, w))  # not np.dot: a BLAS call wakes threads that spin on busy machines
    max_w = float(w.max())
    mean_w = total / n
    deficiency, exact = _support_deficiency(feedback, target)
    sd = sample_std(w, mean_w) if n > 1 else 0.0
    return weight_diagnostics(n, total, sq, max_w, sd, deficiency, exact, limits)


def weight_diagnostics(n: int, total: float, sum_sq: float, max_w: float, sd: float, deficiency: float, exact: bool,
                       limits: DiagnosticThresholds) -> Diagnostics:
    """:class:`Diagnostics` and their warnings from summaries of the importance weights: their
    number, sum, sum of squares, maximum and sample standard deviation, and the support deficiency
    (``exact``: from the logged probabilities). :func:`diagnose` computes the summaries from the
    arrays, :class:`ope.stats.WeightStats` merges them over partitions.

    >>> weight_diagnostics(4, 4.0, 4.0, 1.0, 0.0, 0.0, True, DiagnosticThresholds()).ess
    4.0
    """
    ess = total * total / sum_sq if sum_sq > 0 else 0.0
    mean_w = total / n
    warnings = []
    missed = []
    if ess < limits.min_ess:
        missed.append(f"the absolute limit min_ess={limits.min_ess:g}")
    if ess < limits.min_ess_fraction * n:
        missed.append(f"the fraction limit min_ess_fraction={limits.min_ess_fraction:g} "
                      f"(= {limits.min_ess_fraction * n:.1f} rounds)")
    if missed:
        warnings.append(
            f"effective sample size {ess:.1f} of {n} rounds is below {' and '.join(missed)}: "
            "the estimate rests on few rounds"
        )
    if total > 0 and max_w / total > limits.max_weight_share:
        warnings.append(
            f"one round carries {max_w / total:.1%} of the total weight (max_weight={max_w:.4g}): "
            "the estimate is dominated by a few rounds"
        )
    expected = 1.0 - deficiency if exact else 1.0
    z = abs(mean_w - expected) / (sd / math.sqrt(n)) if sd > 0 else (0.0 if abs(mean_w - expected) < 1e-9 else math.inf)
    if z > limits.mean_weight_z and not (not exact and deficiency > 0):
        warnings.append(
            f"mean_weight {mean_w:.4f} is {z:.1f} standard errors from its expectation {expected:.4f}: "
            "the logged propensities or the logging join may be wrong, or the target plays "
            "actions the logging policy never plays in some contexts"
        )
    if deficiency > limits.max_support_deficiency:
        kind = "" if exact else " (actions never seen in the log)"
        warnings.append(
            f"support_deficiency {deficiency:.2%}: the target puts mass on actions the logging policy "
            f"never plays{kind}; importance-weighted estimates are biased"
        )
    return Diagnostics(n, ess, max_w, mean_w, deficiency, exact, tuple(warnings))
