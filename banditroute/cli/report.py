"""``banditroute report``: write one self-contained HTML report of the logs, candidates and gate.

Candidates are ``NAME=SPEC`` (see :mod:`banditroute.evaluation.candidates`); the report itself
is built by :func:`banditroute.evaluation.report.build_report`. It is written to ``--out``, by
default ``report.html`` inside the ``--logs`` directory (next to the logs it reports on, where the
user looks; readers of the log only read its own sub-folders), and its absolute path is printed.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
...     ["--logs", "logs", "--candidate", "cheap=always:small", "--candidate", "uniform"])
>>> args.candidate, args.out
(['cheap=always:small', 'uniform'], None)
>>> out_path(args).as_posix()
'logs/report.html'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..evaluation.candidates import SPEC_HELP
from .errors import reports_ope_errors
from .gate_args import add_gate_arguments, gate_kwargs

__all__ = ["add_parser", "run", "out_path"]


def add_parser(subparsers):
    """Add ``report`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("report", help="write a self-contained HTML report of the logs, candidates and gate",
                              description="Write one self-contained HTML report of the logs, the candidates and the "
                                          "gate, and print its absolute path.")
    add_gate_arguments(p)
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=SPEC", help=SPEC_HELP + " (repeatable)")
    p.add_argument("--gate", default=None, metavar="NAME", help="candidate to gate (default: the first)")
    p.add_argument("--router", default=None, help="saved router for the beliefs (instead of replaying --config)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="where to write the HTML file (default: report.html inside the --logs directory)")
    p.set_defaults(run=run)
    return p


def out_path(args) -> Path:
    """Where the report goes: ``--out``, else ``report.html`` inside the ``--logs`` directory."""
    return Path(args.out) if args.out else Path(args.logs) / "report.html"


@reports_ope_errors
def run(args) -> int:
    """Build the report, write it to :func:`out_path` and print its absolute path."""
    from ..evaluation.candidates import parse_named
    from ..evaluation.report import build_report

    if not args.candidate:
        raise ConfigError("--candidate", problem="give at least one NAME=SPEC")
    html = build_report(
        args.logs, candidates=dict(parse_named(c) for c in args.candidate), baseline=args.baseline,
        config=args.config, router=args.router, gate_candidate=args.gate, gate_kwargs=gate_kwargs(args),
        wait_window_s=args.wait_window_s, default_reward=args.default_reward)
    out = out_path(args).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    print(f"wrote {out}")
    return 0
