"""``banditroute demo``: run the embedded LLM-routing simulator through the router.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--requests", "10", "--no-log"])
>>> args.requests, args.no_log, args.report
(10, True, 'auto')
"""

from __future__ import annotations

import json
import sys

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``demo`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("demo", help="run the embedded LLM-routing simulator through the router")
    p.add_argument("--requests", type=int, default=50_000, help="number of requests (default 50000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--log-dir", default="logs", help="where to write the decision log (default logs)")
    p.add_argument("--no-log", action="store_true", help="do not write a decision log")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-evaluate", action="store_true", help="skip off-policy evaluation of candidates and the gate")
    p.add_argument("--report", default="auto", metavar="PATH",
                   help="HTML report (default: report.html next to the log dir)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Run the demo; print its summary (as JSON with ``--json``)."""
    from ..sim.demo import run_demo

    if args.requests < 1:
        raise ConfigError("--requests", args.requests, "must be >= 1")
    result = run_demo(n_requests=args.requests, seed=args.seed, log_dir=None if args.no_log else args.log_dir,
                      progress=not args.no_progress, out=None if args.json else sys.stdout,
                      evaluate=not args.no_evaluate and not args.no_log,
                      report=None if (args.no_report or args.no_log) else args.report)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0
