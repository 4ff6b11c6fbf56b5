"""``banditroute promote``: run the promotion gate on the logs; exit 0 (promote) or 3 (refuse).

Policies are SPECs (see :mod:`banditroute.evaluation.candidates`). ``--engine local|dask|dask:ADDRESS``
runs the gate on partitions of the logs (:func:`ope.partition_gate.gate_logs`), for logs larger than
memory; only the SPECs ``logged``, ``uniform`` and ``always:PROFILE`` can be evaluated so.

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
...     ["--logs", "logs", "--candidate", "cheap=always:small"])
>>> args.candidate, args.baseline
('cheap=always:small', 'logged')
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from ..evaluation.candidates import SPEC_HELP
from .errors import reports_ope_errors
from .gate_args import add_engine_arguments, add_gate_arguments, gate_kwargs

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
    add_engine_arguments(p)
    p.set_defaults(run=run)
    return p


@reports_ope_errors
def run(args) -> int:
    """Print the gate's verdict, reasons and table; 0 promote, 3 refuse."""
    from ope.gate import gate

    from ..evaluation.candidates import load_feedback, parse_named, policy_of

    if any(v is not None for v in (args.engine, args.dask_workers, args.partitions, args.shuffle_dir)):
        return _run_partitioned(args)
    fb = load_feedback(args.logs, cohorts=args.cohort, wait_window_s=args.wait_window_s,
                       default_reward=args.default_reward)
    where = dict(log_dir=args.logs, config=args.config, wait_window_s=args.wait_window_s,
                 default_reward=args.default_reward)
    # a learning candidate (config, router) stays a Router here: the gate evaluates it
    # progressively (or on a time split), never on the rounds it learned from
    candidate = policy_of(parse_named(args.candidate)[1], fb, **where)
    baseline = policy_of(parse_named(args.baseline)[1], fb, **where)
    result = gate(fb, candidate=candidate, baseline=baseline, **gate_kwargs(args))
    return _report(args, result, fb.n_rounds, "")


def _report(args, result, n_rounds: int, where: str) -> int:
    """Print the verdict (or ``--json``); 0 promote, 3 refuse."""
    if args.json:
        print(json.dumps({"candidate": args.candidate, "baseline": args.baseline, **result.to_dict()}, indent=2))
    else:
        print(f"candidate {args.candidate} vs baseline {args.baseline} on {n_rounds:,} logged rounds{where}")
        print(result.summary())
    return 0 if result.promote else 3


def _partition_spec(option: str, spec: str) -> str:
    """A SPEC as :func:`ope.partition_gate.gate_logs` takes it, or a ConfigError naming it."""
    if spec in ("logged", "logging"):
        return "logging"
    if spec == "uniform" or spec.startswith("always:"):
        return spec
    if spec == "config" or spec.startswith(("config:", "router:")):
        why = ("learns: it is evaluated progressively, in time order (each round scored before it learns from it), "
               "which cannot be split into partitions")
    else:
        why = "is resolved on the rounds of one in-memory reading"
    raise ConfigError(option, spec, f"{why}; with --engine only logged, uniform and always:PROFILE can be gated "
                      "(run promote without --engine for this SPEC)")


def _run_partitioned(args) -> int:
    """``promote --engine``: the gate on partitions of the logs (:func:`ope.partition_gate.gate_logs`)."""
    import datetime as dt

    from ope.partition_gate import gate_logs

    from ..evaluation.candidates import parse_named

    if args.engine is None:
        given = next(f"--{name.replace('_', '-')}" for name in ("dask_workers", "partitions", "shuffle_dir")
                     if getattr(args, name) is not None)
        raise ConfigError(given, getattr(args, given[2:].replace("-", "_")),
                          "needs --engine (the gate on partitions of the logs)")
    if args.dask_workers is not None and args.engine != "dask":
        raise ConfigError("--dask-workers", args.dask_workers, f"needs --engine dask (the local cluster it starts), "
                          f"not --engine {args.engine}")
    candidate = _partition_spec("--candidate", parse_named(args.candidate)[1])
    baseline = _partition_spec("--baseline", parse_named(args.baseline)[1])
    window = None if args.wait_window_s is None else dt.timedelta(seconds=args.wait_window_s)
    result = gate_logs(args.logs, candidate=candidate, baseline=baseline, engine=args.engine,
                       n_partitions=args.partitions, dask_workers=args.dask_workers, wait_window=window,
                       default_reward=args.default_reward, shuffle_dir=args.shuffle_dir, **gate_kwargs(args))
    n = max(result.table.filter(result.table["cohort_column"].is_null())["n"].to_list(), default=0)
    return _report(args, result, n, f" (engine {args.engine})")
