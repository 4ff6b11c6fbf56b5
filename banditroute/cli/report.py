"""``banditroute report``: write one self-contained HTML report of the logs, candidates and gate.

Candidates are ``NAME=SPEC`` (see :mod:`banditroute.evaluation.candidates`); the report itself
is built by :func:`banditroute.evaluation.report.build_report`.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
...     ["--logs", "logs", "--candidate", "cheap=always:small", "--candidate", "uniform"])
>>> args.candidate, args.out
(['cheap=always:small', 'uniform'], 'report.html')
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..evaluation.candidates import SPEC_HELP
from .errors import reports_ope_errors
from .gate_args import add_gate_arguments, gate_kwargs

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``report`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("report", help="write a self-contained HTML report of the logs, candidates and gate")
    add_gate_arguments(p)
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=SPEC", help=SPEC_HELP + " (repeatable)")
    p.add_argument("--gate", default=None, metavar="NAME", help="candidate to gate (default: the first)")
    p.add_argument("--router", default=None, help="saved router for the beliefs (instead of replaying --config)")
    p.add_argument("--out", default="report.html")
    p.set_defaults(run=run)
    return p


@reports_ope_errors
def run(args) -> int:
    """Build the report and write it to ``--out``."""
    from ..evaluation.candidates import parse_named
    from ..evaluation.report import build_report

    if not args.candidate:
        raise ConfigError("--candidate", problem="give at least one NAME=SPEC")
    html = build_report(
        args.logs, candidates=dict(parse_named(c) for c in args.candidate), baseline=args.baseline,
        config=args.config, router=args.router, gate_candidate=args.gate, gate_kwargs=gate_kwargs(args),
        wait_window_s=args.wait_window_s, default_reward=args.default_reward)
    Path(args.out).write_text(html, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0
