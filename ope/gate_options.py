"""The gate's options: :class:`GateOptions` (validated once) and :class:`Guardrail`.

:func:`ope.gate` takes its options either as keywords or as one :class:`GateOptions`;
both are validated here, with errors naming the field and the value. The module also
holds the metric directions banditroute logs (:data:`DIRECTIONS`) and the default reward
model of the model-based gate (:func:`default_reward_model`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ope.base import Estimator
from ope.dr import DR, SNDR
from ope.errors import InvalidConfigError
from ope.learning import LearningEvaluation
from ope.ips import IPS, SNIPS

__all__ = ["GateOptions", "Guardrail", "default_reward_model", "DIRECTIONS"]

#: Which way is better for the metrics banditroute logs.
DIRECTIONS = {"reward": "higher", "quality": "higher", "cost_usd": "lower", "latency_ms": "lower"}

_ESTIMATORS = ("dr", "sndr", "ips", "snips")


def _number(name: str, value: Any, *, lo: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise InvalidConfigError(name, f"{name} must be a finite number, got {value!r}")
    if lo is not None and (value <= lo if strict else value < lo):
        raise InvalidConfigError(name, f"{name} must be {'>' if strict else '>='} {lo:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class Guardrail:
    """A metric the candidate must not make worse by more than ``margin``.

    Parameters
    ----------
    metric : str
        A column of the feedback's ``metrics`` (``quality``, ``cost_usd``, ``latency_ms``...).
    margin : float
        Largest tolerated degradation, in the metric's units per round (>= 0).
    direction : {"higher", "lower"}
        Which way is better (cost and latency: ``"lower"``).

    Examples
    --------
    >>> Guardrail(metric="latency_ms", margin=50.0, direction="lower").threshold
    50.0
    >>> Guardrail(metric="quality", margin=0.02).threshold
    -0.02
    >>> Guardrail(metric="cost_usd", margin=-1.0, direction="lower")
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: guardrails['cost_usd'].margin must be >= 0, got -1.0
    """

    metric: str
    margin: float
    direction: str = "higher"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise InvalidConfigError("guardrails", f"guardrail metric must be a non-empty string, got {self.metric!r}")
        _number(f"guardrails[{self.metric!r}].margin", self.margin, lo=0.0)
        if self.direction not in ("higher", "lower"):
            raise InvalidConfigError(
                f"guardrails[{self.metric!r}].direction",
                f"guardrails[{self.metric!r}].direction must be 'higher' or 'lower', got {self.direction!r}")

    @property
    def threshold(self) -> float:
        """The difference (candidate - baseline) the candidate must stay beyond."""
        return -float(self.margin) if self.direction == "higher" else float(self.margin)


def default_reward_model() -> Any:
    """The reward model of ``estimator="dr"`` when none is given: ridge regression on
    standardised features with every pairwise interaction (so context x action effects
    are modelled), cheap enough to cross-fit once per metric.

    Examples
    --------
    >>> type(default_reward_model()).__name__
    'Pipeline'
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    from sklearn.linear_model import Ridge

    return make_pipeline(StandardScaler(), PolynomialFeatures(degree=2, interaction_only=True, include_bias=False),
                         Ridge(alpha=1.0))


def _guardrails(guardrails: Any) -> tuple[Guardrail, ...]:
    if guardrails is None:
        return ()
    if not isinstance(guardrails, Mapping):
        raise InvalidConfigError("guardrails", f"guardrails must be a mapping metric -> margin, got {guardrails!r}")
    out = []
    for metric, spec in guardrails.items():
        if isinstance(spec, Guardrail):
            out.append(spec)
        elif isinstance(spec, tuple) and len(spec) == 2:
            out.append(Guardrail(metric=metric, margin=spec[0], direction=spec[1]))
        else:
            if metric not in DIRECTIONS:
                raise InvalidConfigError(
                    f"guardrails[{metric!r}]", f"guardrails[{metric!r}] needs a direction: pass (margin, 'higher') or "
                    f"(margin, 'lower'), got {spec!r}")
            out.append(Guardrail(metric=metric, margin=spec, direction=DIRECTIONS[metric]))
    return tuple(out)


def _check_estimator(estimator: Any, n_metrics: int) -> None:
    if isinstance(estimator, Estimator):
        if getattr(estimator, "reward_predictions", None) is not None and n_metrics > 1:
            raise InvalidConfigError(
                "estimator", f"estimator {estimator.name} has fixed reward_predictions, which fit one metric only; "
                "pass a reward_model so each guardrail metric gets its own")
    elif not isinstance(estimator, str) or estimator.lower() not in _ESTIMATORS:
        raise InvalidConfigError("estimator", f"estimator must be one of {_ESTIMATORS} or an ope estimator, got {estimator!r}")


@dataclass(frozen=True, kw_only=True)
class GateOptions:
    """Every option of :func:`ope.gate`, validated once at construction.

    Pass it as ``gate(feedback, candidate=..., baseline=..., options=GateOptions(...))``;
    the fields are the gate's keywords, with the same defaults (see :func:`ope.gate`
    for what each one does).

    Parameters
    ----------
    estimator : {"dr", "sndr", "ips", "snips"} or Estimator
    metric : str
    margin : float
    guardrails : mapping metric -> margin, (margin, direction) or Guardrail, optional
    cohorts : sequence of str (a single string is one column)
    cohort_margin : float, optional (>= 0; default ``abs(margin)``)
    alpha : float in (0, 0.5)
    min_n : int >= 2
    min_ess : float >= 0
    max_weight : float > 0 or None
    mean_weight_z : float > 0
    max_support_deficiency : float >= 0
    reward_model : scikit-learn estimator, optional
    seed : int or numpy.random.Generator or None
    learning : str or LearningEvaluation ("progressive", "progressive:B", "split:F")

    Raises
    ------
    InvalidConfigError
        Naming the offending field and its value.

    Examples
    --------
    >>> opts = GateOptions(estimator="ips", margin=0.01, cohorts="tenant", guardrails={"cost_usd": 0.002})
    >>> opts.cohort_columns, opts.cohort_threshold, [g.threshold for g in opts.guardrail_list]
    (('tenant',), -0.01, [0.002])
    >>> GateOptions(min_n=1)
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: min_n must be an integer >= 2, got 1
    """

    estimator: str | Estimator = "dr"
    metric: str = "reward"
    margin: float = 0.0
    guardrails: Mapping[str, Any] | None = None
    cohorts: Sequence[str] = ()
    cohort_margin: float | None = None
    alpha: float = 0.05
    min_n: int = 100
    min_ess: float = 100.0
    max_weight: float | None = 500.0
    mean_weight_z: float = 4.0
    max_support_deficiency: float = 0.001
    reward_model: Any = None
    seed: int | np.random.Generator | None = 0
    learning: str | LearningEvaluation = "progressive"

    def __post_init__(self) -> None:
        LearningEvaluation.parse(self.learning)
        alpha = _number("alpha", self.alpha)
        if not 0.0 < alpha < 0.5:
            raise InvalidConfigError("alpha", f"alpha must be in (0, 0.5), got {alpha!r}")
        _number("margin", self.margin)
        if self.cohort_margin is not None:
            _number("cohort_margin", self.cohort_margin, lo=0.0)
        min_n = self.min_n
        if isinstance(min_n, bool) or not isinstance(min_n, (int, np.integer)) or min_n < 2:
            raise InvalidConfigError("min_n", f"min_n must be an integer >= 2, got {min_n!r}")
        _number("min_ess", self.min_ess, lo=0.0)
        if self.max_weight is not None:
            _number("max_weight", self.max_weight, lo=0.0, strict=True)
        _number("mean_weight_z", self.mean_weight_z, lo=0.0, strict=True)
        _number("max_support_deficiency", self.max_support_deficiency, lo=0.0)
        if not isinstance(self.metric, str):
            raise InvalidConfigError("metric", f"metric must be a metric name, got {self.metric!r}")
        rails = _guardrails(self.guardrails)
        if any(g.metric == self.metric for g in rails):
            raise InvalidConfigError("guardrails", f"guardrails must not repeat the primary metric {self.metric!r}")
        _check_estimator(self.estimator, 1 + len(rails))

    @property
    def guardrail_list(self) -> tuple[Guardrail, ...]:
        """The guardrails as :class:`Guardrail` objects, in the order given."""
        return _guardrails(self.guardrails)

    @property
    def cohort_columns(self) -> tuple[str, ...]:
        """The cohort columns (a single string is one column)."""
        return (self.cohorts,) if isinstance(self.cohorts, str) else tuple(self.cohorts)

    @property
    def cohort_threshold(self) -> float:
        """The difference the primary metric must stay above in every cohort: ``-cohort_margin``
        (``-abs(margin)`` when no cohort margin is given)."""
        return -(abs(float(self.margin)) if self.cohort_margin is None else float(self.cohort_margin))

    def build_estimator(self) -> Estimator:
        """The estimator to run: the one given, or a new one built from its name (``"dr"`` and
        ``"sndr"`` with ``reward_model``, else :func:`default_reward_model`)."""
        if isinstance(self.estimator, Estimator):
            return self.estimator
        name = self.estimator.lower()
        if name in ("ips", "snips"):
            return IPS() if name == "ips" else SNIPS()
        model = default_reward_model() if self.reward_model is None else self.reward_model
        return DR(reward_model=model) if name == "dr" else SNDR(reward_model=model)
