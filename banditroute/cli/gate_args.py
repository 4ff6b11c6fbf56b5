"""The options ``promote`` and ``report`` share: the logs, the baseline, the gate's settings.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_gate_arguments(p)
>>> args = p.parse_args(["--logs", "logs", "--guardrail", "quality=0.02", "--cohort", "task_type"])
>>> kwargs = gate_kwargs(args)
>>> kwargs["guardrails"], kwargs["cohorts"], kwargs["estimator"]
({'quality': 0.02}, ['task_type'], 'dr')
>>> parse_guardrails(["quality"])
Traceback (most recent call last):
...
banditroute.errors.ConfigError: --guardrail must be METRIC=MARGIN, got 'quality'
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..errors import ConfigError

__all__ = ["add_gate_arguments", "add_engine_arguments", "gate_kwargs", "parse_guardrails"]


def add_gate_arguments(p: argparse.ArgumentParser) -> None:
    """Add the log, baseline and gate options to a subcommand's parser."""
    p.add_argument("--logs", required=True, help="log directory (decisions/ and outcomes/)")
    p.add_argument("--config", default=None, help="routes TOML (spec 'config', and beliefs for the report)")
    p.add_argument("--baseline", default="logged", metavar="SPEC", help="baseline policy (default: logged)")
    p.add_argument("--cohort", action="append", default=[], metavar="COLUMN",
                   help="cohort column: task_type, tenant, profile or any context key (repeatable)")
    p.add_argument("--estimator", default="dr", choices=["dr", "sndr", "ips", "snips"],
                   help="estimator of both policies' values, for every metric (default dr)")
    p.add_argument("--margin", type=float, default=0.0, help="required improvement of the reward (default 0)")
    p.add_argument("--cohort-margin", type=float, default=None,
                   help="non-inferiority margin of the reward in each cohort (default |margin|)")
    p.add_argument("--guardrail", action="append", default=[], metavar="METRIC=MARGIN",
                   help="non-inferiority margin: quality=0.02, cost_usd=0.001, latency_ms=100 (repeatable)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of every one-sided test (default 0.05)")
    p.add_argument("--min-n", type=int, default=100, help="fewest rounds a cohort needs to be judged (default 100)")
    p.add_argument("--min-ess", type=float, default=100.0,
                   help="smallest effective sample size of either policy in a cohort (default 100)")
    p.add_argument("--max-weight", type=float, default=500.0,
                   help="ceiling on the largest importance weight of either policy (default 500)")
    p.add_argument("--wait-window-s", type=float, default=None,
                   help="count outcomes only within this many seconds of their decision (default: all)")
    p.add_argument("--default-reward", type=float, default=None,
                   help="reward of decisions without an outcome (default: leave them out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the reward models' cross-fitting (default 0)")
    p.add_argument("--learning", default="progressive", metavar="progressive[:B]|split[:F]",
                   help="how a learning candidate (config, router) is evaluated without scoring it on rounds it "
                        "learned from: progressive validation in time order, batches of B rounds (default: "
                        "progressive, B = rounds/2000), or a time split learning on the first fraction F "
                        "(default 0.5) and comparing every policy on the rest")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--dask-workers``, ``--partitions`` and ``--shuffle-dir`` (the gate on log partitions) to a parser."""
    p.add_argument("--engine", default=None, type=_engine, metavar="local|dask|dask:ADDRESS",
                   help="run the gate on partitions of the logs (logs larger than memory): here (local), on a local "
                        "Dask cluster (dask; needs pip install 'banditroute[dask]') or on the Dask scheduler at "
                        "ADDRESS; SPECs logged, uniform and always:PROFILE only (default: read the logs into memory)")
    p.add_argument("--dask-workers", type=_positive, default=None, metavar="N",
                   help="worker processes of the local cluster of --engine dask (default 2)")
    p.add_argument("--partitions", type=_positive, default=None, metavar="N",
                   help="partitions of the logs by stable bucket, with --engine (default: one per 1,000,000 "
                        "decisions; on a cluster at least one per worker)")
    p.add_argument("--shuffle-dir", default=None, metavar="DIR",
                   help="with --engine: shuffle the logs by bucket into a scratch directory made in DIR (deleted at "
                        "the end; every worker must see it); local and dask shuffle in the system's temporary "
                        "directory from 10 partitions, dask:ADDRESS only with this option")


def _engine(text: str) -> str:
    if text in ("local", "dask") or (text.startswith("dask:") and text[len("dask:"):].strip()):
        return text
    raise argparse.ArgumentTypeError(f"must be local, dask or dask:ADDRESS, got {text!r}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def parse_guardrails(items: Sequence[str]) -> dict[str, float]:
    """``["quality=0.02", ...]`` as ``{"quality": 0.02, ...}``."""
    out = {}
    for item in items:
        metric, sep, margin = item.partition("=")
        try:
            out[metric] = float(margin)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError("--guardrail", item, "must be METRIC=MARGIN")
    return out


def gate_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`ope.gate.gate` given on the command line."""
    return dict(estimator=args.estimator, margin=args.margin, cohort_margin=args.cohort_margin,
                guardrails=parse_guardrails(args.guardrail), cohorts=list(args.cohort), alpha=args.alpha,
                min_n=args.min_n, min_ess=args.min_ess, max_weight=args.max_weight, seed=args.seed,
                learning=args.learning)
