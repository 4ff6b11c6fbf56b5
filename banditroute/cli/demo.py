"""``banditroute demo``: run the embedded LLM-routing simulator through the router.

Each run writes into a new directory ``--out-dir/run-N`` (default ``runs/run-1``, ``runs/run-2``,
...): ``logs/``, ``routes.toml`` (the router it ran) and ``report.html``. ``--log-dir DIR`` writes
the log to ``DIR`` instead (with ``routes.toml`` and ``report.html`` next to it); a ``DIR`` that
already holds a log, or a ``routes.toml`` next to it, is refused before the run (exit 2).

While it runs, each phase (setup, simulation, evaluation, gate, report, summary) is reported on
stderr when it starts and ends, with progress in between: a live bar on a terminal, plain lines
(no carriage returns) in a file or a pipe. ``--no-progress`` writes nothing on stderr;
``--json`` keeps stdout pure JSON either way.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--requests", "10", "--no-log"])
>>> args.requests, args.no_log, args.report, args.out_dir, args.log_dir
(10, True, 'auto', 'runs', None)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``demo`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("demo", help="run the embedded LLM-routing simulator through the router",
                              description="Run the embedded LLM-routing simulator through the router, evaluate "
                                          "candidates off-policy and run the gate. Each run writes logs/, routes.toml "
                                          "and report.html into a new directory OUT_DIR/run-N.")
    p.add_argument("--requests", type=int, default=50_000, help="number of requests (default 50000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out-dir", default="runs",
                   help="each run writes logs/, routes.toml and report.html into a new OUT_DIR/run-N (default runs)")
    p.add_argument("--log-dir", default=None,
                   help="write the decision log to this directory instead (it must hold no log yet; "
                        "routes.toml and report.html go next to it)")
    p.add_argument("--no-log", action="store_true", help="do not write a decision log (nor anything else)")
    p.add_argument("--no-progress", action="store_true",
                   help="nothing on stderr: neither the phase lines nor the progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-evaluate", action="store_true", help="skip off-policy evaluation of candidates and the gate")
    p.add_argument("--report", default="auto", metavar="PATH",
                   help="HTML report (default: report.html next to the log dir)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.set_defaults(run=run)
    return p


def _log_dir(args) -> str | None:
    """The run's log directory: None with ``--no-log``; ``--log-dir`` checked up front; else a new run dir."""
    from ..sim.demo_runs import ROUTES_FILE, holds_log, new_run_dir

    if args.no_log:
        return None
    if args.log_dir is None:
        return str(new_run_dir(args.out_dir) / "logs")
    fresh = f"pass a directory that holds no log, or omit --log-dir for a new run directory under {args.out_dir}/"
    if holds_log(args.log_dir):
        raise ConfigError("--log-dir", args.log_dir, f"already holds a decision log: {fresh}")
    routes = Path(args.log_dir).parent / ROUTES_FILE
    if routes.exists():
        raise ConfigError("--log-dir", args.log_dir, f"has a {routes} next to it that the run would replace: {fresh}")
    return args.log_dir


def run(args) -> int:
    """Run the demo; print its summary (as JSON with ``--json``)."""
    from ..sim.demo import run_demo

    if args.requests < 1:
        raise ConfigError("--requests", args.requests, "must be >= 1")
    log_dir = _log_dir(args)
    result = run_demo(n_requests=args.requests, seed=args.seed, log_dir=log_dir,
                      progress=not args.no_progress, out=None if args.json else sys.stdout,
                      evaluate=not args.no_evaluate and not args.no_log,
                      report=None if (args.no_report or args.no_log) else args.report)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0
