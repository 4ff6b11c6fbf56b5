"""How the CLI reports an error: one line on stderr and an exit code (2 bad input, including a
path that does not exist; 1 otherwise).

>>> import contextlib, io
>>> from banditroute.errors import ConfigError
>>> with contextlib.redirect_stderr(io.StringIO()) as err:
...     code = report_error(ConfigError("--requests", 0, "must be >= 1"), command="demo")
>>> code, err.getvalue()
(2, 'banditroute demo: error: --requests must be >= 1, got 0\\n')
"""

from __future__ import annotations

import functools
import sys

__all__ = ["report_error", "reports_ope_errors"]


def report_error(exc: Exception, *, command: str) -> int:
    """Print ``banditroute COMMAND: error: ...`` on stderr; the exit code: 2 for a ``ValueError``
    or a missing path (``FileNotFoundError``, e.g. ``--logs`` naming no directory), else 1."""
    print(f"banditroute {command}: error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, (ValueError, FileNotFoundError)) else 1


def reports_ope_errors(run):
    """Wrap a command function so that an ``ope`` error (bad logs, bad options) is reported, not raised."""

    @functools.wraps(run)
    def wrapped(args) -> int:
        from ope.errors import OPEError

        try:
            return run(args)
        except OPEError as exc:
            return report_error(exc, command=args.command)

    return wrapped
