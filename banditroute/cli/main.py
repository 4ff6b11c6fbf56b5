"""The ``banditroute`` command: builds the top parser from the subcommands and dispatches.

Each subcommand is one module of this package (its parser and a small function calling the
library): ``demo``, ``replay``, ``calibration``, ``compact``, ``doctor``, ``serve``, ``promote``,
``report``, ``export``.

Errors go to stderr with a non-zero exit code (2 for bad input or configuration, 1 otherwise);
``--json`` gives machine-readable output on stdout.

>>> main(["replay", "--config", "/nonexistent/routes.toml", "--logs", "logs"])
2
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import BanditrouteError
from . import calibration, compact, demo, doctor, export, promote, replay, report, serve
from .errors import report_error

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

#: The subcommand modules, in the order ``--help`` lists them; each has ``add_parser`` and ``run``.
SUBCOMMANDS = (demo, replay, calibration, compact, doctor, serve, promote, report, export)


def build_parser() -> argparse.ArgumentParser:
    """The ``banditroute`` parser: one subparser per module of :data:`SUBCOMMANDS`.

    >>> build_parser().parse_args(["compact", "--log-dir", "logs"]).run.__module__
    'banditroute.cli.compact'
    """
    parser = argparse.ArgumentParser(prog="banditroute", description=(
        "Route requests across profiles by Thompson sampling, with exact propensities."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the subcommand; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # here, not at exit: a closed pipe is then handled below
        return code
    except BanditrouteError as exc:
        return report_error(exc, command=args.command)
    except KeyboardInterrupt:
        print(f"banditroute {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed by its reader (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return 141
