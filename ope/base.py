"""The estimator template (:class:`Estimator`) and the estimate it returns (:class:`Estimate`).

An estimator supplies one hook, ``_terms``, returning its per-round terms
(:class:`ope.intervals.RoundTerms`); the base class validates the target, computes
the diagnostics and turns the terms into a value and an interval with the one
function :func:`ope.intervals.confidence_interval`. Only the base class calls the
hook; other modules use the public methods (:meth:`Estimator.estimate`,
:meth:`Estimator.terms`, :meth:`Estimator.validated_terms`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ope.diagnostics import DiagnosticThresholds, Diagnostics, diagnose
from ope.feedback import LoggedFeedback
from ope.intervals import DEFAULT_BOOTSTRAP_UNITS, RoundTerms, check_interval_options, interval_from_influence
from ope.policies import resolve_with_weights

__all__ = ["Estimate", "Estimator"]


@dataclass(frozen=True)
class Estimate:
    """The result of one estimator on one target policy.

    Attributes
    ----------
    estimator : str
        Estimator name (e.g. ``"DR"``).
    value, stderr, ci_low, ci_high : float
        Point estimate, standard error and ``1 - alpha`` interval.
    alpha : float
    interval : str
        Interval method (``"normal"``, ``"bootstrap"`` or ``"bernstein"``).
    diagnostics : Diagnostics
        Weight diagnostics (n, ess, max/mean weight, support deficiency).
    warnings : tuple of str
        Everything that makes this estimate untrustworthy (empty when fine).
    per_round : numpy.ndarray, shape (n_rounds,)
        Linearised per-round values: their mean is ``value``; for self-normalised
        estimators they carry the delta-method variance. Differences of two
        policies' ``per_round`` on the same feedback are paired per-round differences.

    Examples
    --------
    >>> from ope import IPS, LoggedFeedback
    >>> fb = LoggedFeedback(actions=[0, 1, 0, 1], rewards=[1.0, 0.0, 1.0, 1.0],
    ...                     propensities=[0.5] * 4, n_actions=2)
    >>> est = IPS().estimate(fb, np.tile([0.5, 0.5], (4, 1)))
    >>> est.value, est.n, est.ess
    (0.75, 4, 4.0)
    """

    estimator: str
    value: float
    stderr: float
    ci_low: float
    ci_high: float
    alpha: float
    interval: str
    diagnostics: Diagnostics
    warnings: tuple[str, ...]
    per_round: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        """Number of rounds."""
        return self.diagnostics.n

    @property
    def ess(self) -> float:
        """Effective sample size of the importance weights."""
        return self.diagnostics.ess

    @property
    def max_weight(self) -> float:
        """Largest importance weight."""
        return self.diagnostics.max_weight

    @property
    def mean_weight(self) -> float:
        """Mean importance weight (near 1 when propensities are right)."""
        return self.diagnostics.mean_weight

    @property
    def support_deficiency(self) -> float:
        """Target mass on actions the logging policy never plays."""
        return self.diagnostics.support_deficiency


class Estimator(abc.ABC):
    """Base class of every off-policy estimator (template method).

    Subclasses are frozen keyword-only dataclasses and implement ``_terms``.
    """

    name: ClassVar[str] = "estimator"
    self_normalised: ClassVar[bool] = False

    @abc.abstractmethod
    def _terms(
        self, feedback: LoggedFeedback, target: np.ndarray, weights: np.ndarray, rng: np.random.Generator, cache: dict
    ) -> RoundTerms:
        """Per-round terms for a validated target (``weights`` are unclipped)."""

    def terms(self, feedback: LoggedFeedback, target: Any, *, seed: int | np.random.Generator | None = None) -> RoundTerms:
        """Per-round terms (``value = mean(base) + mean(num) / mean(den)``).

        Examples
        --------
        >>> from ope import SNIPS, LoggedFeedback
        >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 0.0], propensities=[0.5, 0.5], n_actions=2)
        >>> SNIPS().terms(fb, [[1.0, 0.0], [1.0, 0.0]]).value
        1.0
        """
        target, weights = resolve_with_weights(target, feedback)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self._terms(feedback, target, weights, rng, {})

    def validated_terms(
        self, feedback: LoggedFeedback, target: np.ndarray, *, weights: np.ndarray, rng: np.random.Generator,
        cache: dict,
    ) -> RoundTerms:
        """Per-round terms of a target the caller has already validated: no checks.

        For callers that evaluate several targets or metrics with one generator and one
        cache of reward-model fits (:func:`ope.gate`); others use :meth:`terms`.

        Parameters
        ----------
        feedback : LoggedFeedback
        target : numpy.ndarray, shape (n_rounds, n_actions)
            As returned by :func:`ope.resolve_target`.
        weights : numpy.ndarray, shape (n_rounds,)
            ``importance_weights(feedback, target)`` (unclipped).
        rng : numpy.random.Generator
            Used as is (its stream advances).
        cache : dict
            Reward-model fits of model-based estimators, shared by calls on the same
            ``feedback`` (keyed by model and folds); pass a new dict for new feedback.

        Examples
        --------
        >>> from ope import IPS, LoggedFeedback, importance_weights
        >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 1.0], propensities=[0.5, 0.5], n_actions=2)
        >>> target = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> IPS().validated_terms(fb, target, weights=importance_weights(fb, target),
        ...                       rng=np.random.default_rng(0), cache={}).base.tolist()
        [2.0, 0.0]
        """
        return self._terms(feedback, target, weights, rng, cache)

    def per_round(self, feedback: LoggedFeedback, target: Any, *, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Linearised per-round values, shape (n_rounds,); their mean is the estimate.

        Examples
        --------
        >>> from ope import IPS, LoggedFeedback
        >>> fb = LoggedFeedback(actions=[0, 1], rewards=[1.0, 1.0], propensities=[0.5, 0.5], n_actions=2)
        >>> IPS().per_round(fb, [[1.0, 0.0], [1.0, 0.0]]).tolist()
        [2.0, 0.0]
        """
        return self.terms(feedback, target, seed=seed).influence()

    def estimate(
        self,
        feedback: LoggedFeedback,
        target: Any,
        *,
        alpha: float = 0.05,
        interval: str = "normal",
        n_bootstrap: int = 1000,
        seed: int | np.random.Generator | None = None,
        value_range: tuple[float, float] | None = None,
        bootstrap_units: int | None = DEFAULT_BOOTSTRAP_UNITS,
        thresholds: DiagnosticThresholds | None = None,
        cache: dict | None = None,
    ) -> Estimate:
        """Estimate the target policy's value with an interval and diagnostics.

        Parameters
        ----------
        feedback : LoggedFeedback
        target : array-like, shape (n_rounds, n_actions), or ope.Policy
            Target action distribution (deterministic policies are one-hot rows).
        alpha : float
            The interval has nominal coverage ``1 - alpha``.
        interval : {"normal", "bootstrap", "bernstein"}
            See :func:`ope.confidence_interval`.
        n_bootstrap : int
            Bootstrap resamples.
        seed : int or numpy.random.Generator or None
            Seeds cross-fitting and the bootstrap (one Generator built once).
        value_range : (float, float), optional
            A-priori range of per-round values for the Bernstein bound.
        bootstrap_units : int or None
            Above this many rounds the bootstrap resamples random groups of rounds.
        thresholds : DiagnosticThresholds, optional
            When diagnostics become warnings.
        cache : dict, optional
            Reward-model fits shared between estimates on the same ``feedback`` (keyed by
            model and folds): pass one dict to several calls to cross-fit each reward model
            once, as :func:`ope.evaluate` does. Never share it across different feedback.

        Returns
        -------
        Estimate
        """
        check_interval_options(interval, alpha, n_bootstrap, bootstrap_units)
        target, weights = resolve_with_weights(target, feedback)  # = importance_weights(feedback, target)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        diag = diagnose(feedback, target, weights=weights, thresholds=thresholds)
        terms = self._terms(feedback, target, weights, rng, {} if cache is None else cache)
        del weights  # freed here unless the terms hold it (SNIPS): lowers the interval's peak memory
        per_round = terms.influence()  # computed once: the interval and Estimate.per_round share it
        ci = interval_from_influence(terms, per_round, interval, alpha, n_bootstrap, rng, value_range, bootstrap_units)
        warnings = list(diag.warnings)
        if not np.isfinite(ci.value):
            warnings.append(f"{self.name} value is undefined (sum of importance weights is 0)")
        if interval == "bernstein" and terms.is_ratio:
            warnings.append(
                f"the Bernstein bound of self-normalised {self.name} uses linearised per-round values: "
                "no finite-sample guarantee"
            )
        return Estimate(
            self.name, ci.value, ci.stderr, ci.ci_low, ci.ci_high, alpha, interval, diag,
            tuple(warnings), per_round,
        )
