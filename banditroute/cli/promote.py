"""``banditroute promote``: run the promotion gate on the logs; exit 0 (promote) or 3 (refuse).

Policies are SPECs (see :mod:`banditroute.evaluation.candidates`).

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
...     ["--logs", "logs", "--candidate", "cheap=always:small"])
>>> args.candidate, args.baseline
('cheap=always:small', 'logged')
"""

from __future__ import annotations

import json

from ..evaluation.candidates import SPEC_HELP
from .errors import reports_ope_errors
from .gate_args import add_gate_arguments, gate_kwargs

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``promote`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("promote", help="run the promotion gate on the logs: exit 0 promote, 3 refuse",
                              description="Run the promotion gate on the logs: the candidate against the baseline, "
                                          "overall, per cohort and on every guardrail. Exit 0 to promote, 3 to "
                                          "refuse.")
    add_gate_arguments(p)
    p.add_argument("--candidate", required=True, metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--json", action="store_true", help="print the verdict, reasons and table as JSON")
    p.set_defaults(run=run)
    return p


@reports_ope_errors
def run(args) -> int:
    """Print the gate's verdict, reasons and table; 0 promote, 3 refuse."""
    from ope.gate import gate

    from ..evaluation.candidates import load_feedback, parse_named, policy_of

    fb = load_feedback(args.logs, cohorts=args.cohort, wait_window_s=args.wait_window_s,
                       default_reward=args.default_reward)
    where = dict(log_dir=args.logs, config=args.config, wait_window_s=args.wait_window_s,
                 default_reward=args.default_reward)
    # a learning candidate (config, router) stays a Router here: the gate evaluates it
    # progressively (or on a time split), never on the rounds it learned from
    candidate = policy_of(parse_named(args.candidate)[1], fb, **where)
    baseline = policy_of(parse_named(args.baseline)[1], fb, **where)
    result = gate(fb, candidate=candidate, baseline=baseline, **gate_kwargs(args))
    if args.json:
        print(json.dumps({"candidate": args.candidate, "baseline": args.baseline, **result.to_dict()}, indent=2))
    else:
        print(f"candidate {args.candidate} vs baseline {args.baseline} on {fb.n_rounds:,} logged rounds")
        print(result.summary())
    return 0 if result.promote else 3
