"""Errors raised by banditroute.

Every error derives from :class:`BanditrouteError` and from the builtin it refines, carries
the offending ``field`` and names field and value in its message.

>>> err = ConfigError("budget.max_cost_usd", -1.0, "must be >= 0")
>>> str(err)
'budget.max_cost_usd must be >= 0, got -1.0'
>>> isinstance(err, ValueError), err.field
(True, 'budget.max_cost_usd')
"""

from __future__ import annotations

__all__ = [
    "BanditrouteError",
    "EscalationError",
    "ConfigError",
    "InvalidRequestError",
    "InvalidOutcomeError",
    "UnknownDecisionError",
    "NoFeasibleProfileError",
    "LogError",
    "UnknownParameterError",
]

_MISSING = object()


class BanditrouteError(Exception):
    """Base class of every banditroute error.

    Parameters
    ----------
    field : str
        Dotted name of the offending field (``"context.task_type"``, ``"profiles[1].cost_usd"``).
    value : object
        The offending value; omitted from the message when not given.
    problem : str
        What is wrong, phrased to follow the field name (``"must be >= 0"``).
    """

    def __init__(self, field: str, value: object = _MISSING, problem: str = "is invalid"):
        self.field = field
        self.problem = problem
        self._raw_value = value
        self.value = None if value is _MISSING else value
        if value is _MISSING:
            message = f"{field} {problem}"
        else:
            message = f"{field} {problem}, got {value!r}"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message

    def renamed(self, field: str) -> "BanditrouteError":
        """The same error, reported under another field name (e.g. prefixed with a file name)."""
        return type(self)(field, self._raw_value, self.problem)


class ConfigError(BanditrouteError, ValueError):
    """A configuration value (constructor argument or config file key) is invalid."""


class InvalidRequestError(BanditrouteError, ValueError):
    """A request context is malformed (not a mapping, NaN, unknown task type, ...)."""


class InvalidOutcomeError(BanditrouteError, ValueError):
    """An outcome passed to ``record()`` is malformed (quality outside [0, 1], NaN cost, ...)."""


class UnknownDecisionError(BanditrouteError, KeyError):
    """``record()`` was given a decision id this router never issued."""


class NoFeasibleProfileError(BanditrouteError, RuntimeError):
    """No profile is feasible for a request and no fallback profile is configured."""


class LogError(BanditrouteError, OSError):
    """The decision log could not be written or read."""


class OutcomeInFlightError(BanditrouteError, RuntimeError):
    """Another outcome for the same decision is being committed to the log right now: retry
    (it becomes a duplicate if that one is committed, or is applied if it failed)."""


class EscalationError(BanditrouteError, RuntimeError):
    """``escalate()`` cannot escalate this decision: the chain reached ``max_escalations``, or the
    decision was already escalated (the message names its child)."""


class UnknownParameterError(ConfigError, TypeError):
    """A keyword argument a constructor does not take (a TypeError, as Python's own, and a
    ConfigError naming the argument, its value and the closest valid name)."""
