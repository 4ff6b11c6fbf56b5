"""Errors raised by :mod:`ope`.

Every error derives from :class:`OPEError` and from the builtin it refines, and
carries the offending ``field`` so callers can react programmatically.

Examples
--------
>>> from ope.errors import InvalidFeedbackError, OPEError
>>> err = InvalidFeedbackError("propensities", "propensities must be in (0, 1], got 0.0")
>>> isinstance(err, OPEError), isinstance(err, ValueError), err.field
(True, True, 'propensities')
"""

from __future__ import annotations

import sys
from typing import NamedTuple

__all__ = [
    "OPEError",
    "InvalidFeedbackError",
    "InvalidTargetError",
    "InvalidConfigError",
    "LogsNotFoundError",
    "CorruptLogError",
    "TaskFailure",
]


class OPEError(Exception):
    """Base class of every error raised by :mod:`ope`.

    Parameters
    ----------
    field : str
        Name of the offending field or argument.
    message : str
        Human-readable message naming the field and the offending value.

    Examples
    --------
    >>> str(OPEError("alpha", "alpha must be in (0, 1), got 2"))
    'alpha must be in (0, 1), got 2'
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidFeedbackError(OPEError, ValueError):
    """Logged feedback is malformed (bad propensities, rewards, actions, lengths...).

    Examples
    --------
    >>> InvalidFeedbackError("rewards", "rewards must be finite").field
    'rewards'
    """


class InvalidTargetError(OPEError, ValueError):
    """A target policy's action distribution is malformed.

    Examples
    --------
    >>> InvalidTargetError("target", "target rows must sum to 1").field
    'target'
    """


class InvalidConfigError(OPEError, ValueError):
    """An estimator, interval or join setting is out of range.

    Examples
    --------
    >>> InvalidConfigError("n_folds", "n_folds must be >= 2, got 1").field
    'n_folds'
    """


class LogsNotFoundError(OPEError, FileNotFoundError):
    """No decision (or outcome) Parquet files were found under a log directory.

    Examples
    --------
    >>> isinstance(LogsNotFoundError("dir", "no decisions"), FileNotFoundError)
    True
    """


class CorruptLogError(OPEError, OSError):
    """A log file (a Parquet part) is damaged and cannot be read; ``path`` names it.

    Examples
    --------
    >>> err = CorruptLogError("decisions", "decisions part /logs/p.parquet cannot be read: truncated",
    ...                       path="/logs/p.parquet")
    >>> isinstance(err, OSError), err.field, err.path
    (True, 'decisions', '/logs/p.parquet')
    """

    def __init__(self, field: str, message: str, *, path: str) -> None:
        super().__init__(field, message)
        self.path = path


class TaskFailure(NamedTuple):
    """An :class:`OPEError` raised in a task on a worker, carried back as data (an OPEError does not
    unpickle: its constructor takes the field) and raised again on the client by :meth:`reraise`.

    >>> failure = TaskFailure.of(InvalidConfigError("clip", "clip must be > 0, got -1"))
    >>> failure.reraise()
    Traceback (most recent call last):
    ...
    ope.errors.InvalidConfigError: clip must be > 0, got -1
    """

    kind: str
    field: str
    message: str
    path: str | None

    @classmethod
    def of(cls, exc: OPEError) -> TaskFailure:
        return cls(type(exc).__name__, exc.field, str(exc), getattr(exc, "path", None))

    def reraise(self) -> None:
        error = getattr(sys.modules[__name__], self.kind, OPEError)
        if self.path is not None:
            raise error(self.field, self.message, path=self.path)
        raise error(self.field, self.message)
