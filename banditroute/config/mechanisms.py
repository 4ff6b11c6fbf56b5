"""Settings of the routing mechanisms beyond the posterior: learned cost and latency, bounded
onboarding of new profiles, the cooldown of failing ones.

Frozen, keyword-only dataclasses validated in ``__post_init__`` (like every configuration
object); the state they govern lives in :mod:`banditroute.decide.usage` and
:mod:`banditroute.decide.onboarding`.

>>> Onboarding(max_share=0.05, min_outcomes=200).max_share
0.05
>>> Cooldown(errors=0)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: cooldown.errors must be an integer >= 1, got 0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError, InvalidOutcomeError, InvalidRequestError
from .hygiene import invalid
from .profiles import Budget, check_number

__all__ = ["CostLearning", "Onboarding", "Cooldown", "check_error_kind", "request_budget"]

_ERROR_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def _check_count(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise invalid(ConfigError, name, value, f"must be an integer >= {lo}")
    return value


@dataclass(frozen=True, kw_only=True)
class CostLearning:
    """How the router learns each profile's cost and latency per task type from the values
    reported with outcomes (``record(..., cost_usd=, latency_ms=)``).

    The configured ``Profile.cost_usd`` / ``latency_ms`` is the prior mean, worth
    ``prior_weight`` observations; ``prior_cv`` is the prior's coefficient of variation of one
    request's value. Thompson sampling draws cost and latency scenarios from the posterior
    (the logged propensity stays the exact share of scenarios each profile wins); budgets
    compare the posterior *mean* (the expected value of one request) with their limits.
    ``enabled=False`` keeps the configured values for good.

    >>> CostLearning(prior_weight=-1)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: cost_learning.prior_weight must be > 0, got -1.0
    """

    enabled: bool = True
    prior_weight: float = 5.0
    prior_cv: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise invalid(ConfigError, "cost_learning.enabled", self.enabled, "must be true or false")
        check_number("cost_learning.prior_weight", self.prior_weight, lo=0.0, lo_open=True)
        check_number("cost_learning.prior_cv", self.prior_cv, lo=0.0)


@dataclass(frozen=True, kw_only=True)
class Onboarding:
    """Bounded onboarding: a profile added to a running router (``add_profile``, or one in the
    routes file that the replayed log never saw) gets at most ``max_share`` of the probability
    of any request until it has ``min_outcomes`` applied outcomes; the capped mass goes to the
    other profiles in proportion to their probability, so the logged pmf stays exact. Its
    graduation is an event row (``onboarding_graduated``).

    >>> Onboarding(max_share=1.5)
    Traceback (most recent call last):
    ...
    banditroute.errors.ConfigError: onboarding.max_share must be < 1, got 1.5
    """

    max_share: float = 0.05
    min_outcomes: int = 200

    def __post_init__(self) -> None:
        check_number("onboarding.max_share", self.max_share, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _check_count("onboarding.min_outcomes", self.min_outcomes)


@dataclass(frozen=True, kw_only=True)
class Cooldown:
    """Containment of a failing profile: after ``errors`` consecutive failed calls
    (``record(..., error=...)``) it is excluded for ``seconds``, with the reason in
    ``Decision.excluded``; a successful outcome resets the count.

    >>> Cooldown(errors=3, seconds=30).seconds
    30
    """

    errors: int = 3
    seconds: float = 30.0

    def __post_init__(self) -> None:
        _check_count("cooldown.errors", self.errors)
        check_number("cooldown.seconds", self.seconds, lo=0.0, lo_open=True)


def check_error_kind(value) -> str | None:
    """A failed call's kind as ``record(error=...)`` takes it: None, or a short identifier
    (``"rate_limited"``, ``"timeout"``, ``"server_error"``, ``"http_503"``, ...)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _ERROR_KIND.fullmatch(value):
        raise invalid(InvalidOutcomeError, "error", value, "must be a short identifier of letters, digits and "
                      "_.:- such as 'rate_limited', 'timeout' or 'server_error' (at most 64 characters)")
    return value


def request_budget(value):
    """A request's budget (``decide(..., budget=...)``): None, a :class:`Budget`, or a mapping
    with ``max_cost_usd`` / ``max_latency_ms`` (what the service receives as JSON)."""
    if value is None or isinstance(value, Budget):
        return value
    if not isinstance(value, Mapping):
        raise invalid(InvalidRequestError, "budget", value, "must be a Budget, a mapping with max_cost_usd / "
                      "max_latency_ms, or None")
    unknown = sorted(set(value) - {"max_cost_usd", "max_latency_ms"})
    if unknown:
        raise invalid(InvalidRequestError, f"budget.{unknown[0]}", value[unknown[0]],
                      "is not a budget field (known: max_cost_usd, max_latency_ms)")
    try:
        return Budget(**value)
    except ConfigError as exc:
        raise InvalidRequestError(exc.field, exc.value, exc.problem) from None
