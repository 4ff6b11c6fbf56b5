"""Configuration as code: profiles, objective, budgets and priors.

All configuration objects are frozen, keyword-only dataclasses validated in ``__post_init__``;
learned state lives elsewhere (:mod:`banditroute.beliefs.beta`).

>>> p = Profile("small", cost_usd=0.0004, latency_ms=400)
>>> p.name, p.cost_usd
('small', 0.0004)
>>> Objective(quality=1.0, cost=10.0).reward(quality=1.0, cost_usd=0.01, latency_ms=300.0)
0.9
>>> Budget(max_cost_usd=-1.0)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: budget.max_cost_usd must be >= 0, got -1.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .hygiene import check_text, invalid, text_problem

__all__ = ["DriftConfig", "Profile", "Objective", "Budget", "BetaPrior", "prior_arrays"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$")


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, error=ConfigError) -> float:
    """Return ``value`` as a float after checking it is a finite number within bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(error, name, value, "must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise invalid(error, name, value, "must be finite") from None
    if not math.isfinite(number):
        raise error(name, number, "must be finite")
    value = number
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise error(name, value, f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise error(name, value, f"must be {'<' if hi_open else '<='} {hi:g}")
    return value


def check_name(name: str, value: Any) -> str:
    """Return ``value`` after checking it is a usable profile or task-type name."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise invalid(ConfigError, name, value, "must be a non-empty name of letters, digits and _.:/@+- "
                      "(at most 128 characters)")
    return value


def _allow(where: str, allow) -> dict[str, frozenset]:
    """An allow-list normalised: field -> frozenset of allowed values (strings checked as text)."""
    if not isinstance(allow, Mapping):
        raise invalid(ConfigError, f"{where}.allow", allow, "must be a mapping of field -> values")
    norm = {}
    for key, values in allow.items():
        problem = text_problem(key) if isinstance(key, str) else None
        if problem:  # a context field: logged in the reasons of exclusions
            raise invalid(ConfigError, f"{where}.allow", key, f"keys {problem}")
        if not isinstance(key, str) or isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise invalid(ConfigError, f"{where}.allow.{key}", values, "must be a list of allowed values")
        try:
            norm[key] = frozenset(values)
        except TypeError:
            raise invalid(ConfigError, f"{where}.allow.{key}", values, "must be a list of allowed values "
                          "(strings, numbers, booleans)") from None
        for value in norm[key]:
            if isinstance(value, str):
                check_text(f"{where}.allow.{key}", value)
    return norm


@dataclass(frozen=True, kw_only=True)
class BetaPrior:
    """Beta(alpha, beta) prior on a profile's reliability (probability of a good outcome).

    The default Beta(1, 1) is the diffuse (uniform) prior a new profile starts with; an
    informative prior such as ``BetaPrior(alpha=8, beta=2)`` encodes a pre-deployment benchmark.

    >>> BetaPrior(alpha=8, beta=2).mean
    0.8
    """

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        check_number("prior.alpha", self.alpha, lo=0.0, lo_open=True)
        check_number("prior.beta", self.beta, lo=0.0, lo_open=True)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True, init=False)
class Profile:
    """A routing target: an LLM model or configuration, an agent, a human queue.

    Parameters
    ----------
    name : str
        Unique name, logged with every decision.
    cost_usd, latency_ms : float
        Expected cost and latency of one request; used by the objective and the budgets.
    tags : tuple of str
        Free-form labels (``("cheap", "eu")``), kept for reporting.
    allow : mapping of str to collection of str, optional
        Allow-list over request fields: the profile is feasible for a request only if, for
        every key, the request's value is in the allowed set (``{"tenant": ["acme"]}``).
        A request that lacks the key is not allowed.
    prior : BetaPrior or mapping of task type to BetaPrior, optional
        Informative prior for this profile (all task types, or per task type); the router's
        default prior otherwise.

    >>> Profile("eu-large", cost_usd=0.01, latency_ms=2000, allow={"region": ["eu"]}).allow
    {'region': frozenset({'eu'})}
    """

    name: str
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    tags: tuple[str, ...] = ()
    allow: Mapping[str, frozenset] | None = None
    prior: BetaPrior | Mapping[str, BetaPrior] | None = None

    def __init__(self, name: str, *, cost_usd: float = 0.0, latency_ms: float = 0.0,
                 tags: tuple[str, ...] | list[str] = (), allow: Mapping[str, Any] | None = None,
                 prior: BetaPrior | Mapping[str, BetaPrior] | None = None):
        # A hand-written __init__ keeps `name` positional and the rest keyword-only while the
        # instance stays frozen; values are normalised before they are set, never reassigned.
        name = check_name("profile.name", name)
        where = f"profiles[{name}]"
        cost_usd = check_number(f"{where}.cost_usd", cost_usd, lo=0.0)
        latency_ms = check_number(f"{where}.latency_ms", latency_ms, lo=0.0)
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise invalid(ConfigError, f"{where}.tags", tags, "must be a list of strings")
        for i, tag in enumerate(tags):
            check_text(f"{where}.tags[{i}]", tag)
        if allow is not None:
            allow = _allow(where, allow)
        if prior is not None and not isinstance(prior, BetaPrior):
            if not isinstance(prior, Mapping) or not all(isinstance(v, BetaPrior) for v in prior.values()):
                raise ConfigError(f"{where}.prior", prior, "must be a BetaPrior or a mapping task_type -> BetaPrior")
            prior = dict(prior)
        for attr, value in (("name", name), ("cost_usd", cost_usd), ("latency_ms", latency_ms),
                            ("tags", tuple(tags)), ("allow", allow), ("prior", prior)):
            object.__setattr__(self, attr, value)

    def prior_for(self, task_type: str, default: BetaPrior) -> BetaPrior:
        """The prior of this profile for ``task_type``."""
        if self.prior is None:
            return default
        if isinstance(self.prior, BetaPrior):
            return self.prior
        return self.prior.get(task_type, default)


@dataclass(frozen=True, kw_only=True)
class Objective:
    """Weights of the routing objective: ``reward = quality*w_q - cost_usd*w_c - latency_ms*w_l``.

    >>> Objective(quality=1.0, cost=0.0, latency=0.001).reward(quality=1.0, cost_usd=0.0, latency_ms=500.0)
    0.5
    """

    quality: float = 1.0
    cost: float = 0.0
    latency: float = 0.0

    def __post_init__(self) -> None:
        check_number("objective.quality", self.quality, lo=0.0, lo_open=True)
        check_number("objective.cost", self.cost, lo=0.0)
        check_number("objective.latency", self.latency, lo=0.0)

    def reward(self, *, quality: float, cost_usd: float, latency_ms: float) -> float:
        """The objective's value for one outcome."""
        return self.quality * quality - self.cost * cost_usd - self.latency * latency_ms


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Per-request ceilings; a profile whose expected cost or latency exceeds one is infeasible.

    >>> Budget(max_latency_ms=1000).max_latency_ms
    1000
    """

    max_cost_usd: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None:
            check_number("budget.max_cost_usd", self.max_cost_usd, lo=0.0)
        if self.max_latency_ms is not None:
            check_number("budget.max_latency_ms", self.max_latency_ms, lo=0.0)


@dataclass(frozen=True, kw_only=True)
class DriftConfig:
    """Settings of drift-triggered recalibration.

    Parameters
    ----------
    delta : float
        Magnitude of change (in quality units) tolerated without an alarm.
    threshold : float
        Alarm threshold ``lambda`` of the Page-Hinkley statistic; larger means fewer false
        alarms and slower detection (about ``threshold / (change - delta)`` outcomes).
    min_samples : int
        No alarm before a cell has seen this much (weighted) evidence.
    keep : float in [0, 1)
        Fraction of the cell's evidence beyond the prior kept at recalibration.

    >>> DriftConfig(threshold=-1.0)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: drift.threshold must be > 0, got -1.0
    """

    delta: float = 0.05
    threshold: float = 15.0
    min_samples: float = 30.0
    keep: float = 0.0

    def __post_init__(self) -> None:
        check_number("drift.delta", self.delta, lo=0.0)
        check_number("drift.threshold", self.threshold, lo=0.0, lo_open=True)
        check_number("drift.min_samples", self.min_samples, lo=0.0)
        check_number("drift.keep", self.keep, lo=0.0, hi=1.0, hi_open=True)


def prior_arrays(profiles, task_types, default: BetaPrior):
    """The Beta prior parameters ``(alpha0, beta0)`` of ``profiles`` x ``task_types``, each a
    float array of shape (n_profiles, n_task_types)."""
    priors = [[p.prior_for(t, default) for t in task_types] for p in profiles]
    return (np.array([[b.alpha for b in row] for row in priors], dtype=np.float64),
            np.array([[b.beta for b in row] for row in priors], dtype=np.float64))
