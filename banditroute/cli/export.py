"""``banditroute export``: export joined logs for other tools (DSJSON for Vowpal Wabbit).

The export itself is :func:`banditroute.logs.dsjson.export_dsjson`.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="banditroute")
>>> _ = add_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["export", "--format", "dsjson", "--logs", "logs", "--out", "x.json"])
>>> args.format, args.run.__module__, args.run.__name__
('dsjson', 'banditroute.cli.export', 'run')
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``export`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("export", help="export joined logs for other tools (DSJSON for Vowpal Wabbit)",
                              description="Export the joined logs for other tools: DSJSON for Vowpal Wabbit.")
    p.add_argument("--format", required=True, choices=["dsjson"], help="output format")
    p.add_argument("--logs", required=True, help="log directory")
    p.add_argument("--out", required=True, help="output file ('-' for stdout)")
    p.add_argument("--config", help="routes TOML file: adds the profiles' cost/latency/tags as action features")
    p.add_argument("--default-reward", type=float, default=None,
                   help="reward of decisions without an outcome (default: skip them)")
    p.add_argument("--wait-window-s", type=float, default=None, help="count outcomes only within this many seconds")
    p.add_argument("--duplicates", choices=["first", "last", "mean"], default="first",
                   help="how several outcomes of one decision combine (default first)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Write the file; the summary goes to stdout (stderr when the lines go to stdout)."""
    from ..logs.dsjson import export_dsjson

    profiles = ()
    if args.config:
        from ..config.settings import load_config

        profiles = load_config(args.config)[0]
    if args.wait_window_s is not None and not args.wait_window_s >= 0:
        raise ConfigError("--wait-window-s", args.wait_window_s, "must be >= 0")
    window = None if args.wait_window_s is None else dt.timedelta(seconds=args.wait_window_s)
    result = export_dsjson(args.logs, args.out, profiles=profiles, wait_window=window,
                           default_reward=args.default_reward, duplicates=args.duplicates)
    summary = {"written": result.n_written, "skipped": result.n_skipped, "out": result.path}
    stream = sys.stderr if args.out == "-" else sys.stdout
    if args.json:
        print(json.dumps(summary), file=stream)
    else:
        print(f"wrote {result.n_written} DSJSON lines to {result.path} ({result.n_skipped} skipped: no reward)",
              file=stream)
    return 0
