"""Command line: ``python -m ope LOG_DIR --policy NAME=SPEC ... [--json PATH]``.

Policy specs: ``uniform``, ``logging`` (the logged probabilities), ``always:PROFILE``
(deterministic) or ``file:PATH.npy`` (an (n_rounds, n_actions) array aligned with the
joined rounds). The CLI only parses arguments and calls the library.

``--escalations first`` (default): only root decisions are rounds, so the table is the value of
each policy's first choice; the escalated decisions left out are counted in a note after the
table. ``--escalations all``: every decision is a round (biased for a first choice's value; a
warning says so). A warning also counts the escalated decisions (failed answers) left without a
round for want of an outcome. See :mod:`ope.escalations`.

``--engine local|dask|dask:ADDRESS`` evaluates the logs in partitions (:func:`ope.evaluate_logs`,
:mod:`ope.distributed`): here, on a local Dask cluster of ``--dask-workers`` processes, or on the
scheduler at ADDRESS; ``--partitions`` sets the number of partitions. Only the specs ``uniform``,
``logging`` and ``always:PROFILE`` can be evaluated so; every estimator can: the reward model of
dm, dr, sndr, switch-dr and dros is fitted once on a sample of about ``--reward-sample`` rounds,
cross-fitted by bucket (:mod:`ope.partition_models`), and applied to every partition. Without
``--engine`` the logs are read into memory as before (``--partitions``: the join's passes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from ope.distributed import DASK_EXTRA, LogEvaluation, parse_engine, run_log_evaluation
from ope.dr import DM, DR, SNDR, DRos, SwitchDR
from ope.errors import InvalidConfigError, OPEError
from ope.escalations import ESCALATION_RULES
from ope.evaluate import evaluate
from ope.feedback import LoggedFeedback
from ope.intervals import INTERVAL_METHODS
from ope.ips import IPS, SNIPS
from ope.log_columns import LogColumns, read_log_columns
from ope.policies import one_hot, uniform

__all__ = ["main", "build_parser"]

_MODEL_BASED = {"dm": DM, "dr": DR, "sndr": SNDR, "switch-dr": SwitchDR, "dros": DRos}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m ope``.

    Examples
    --------
    >>> build_parser().parse_args(["logs", "--policy", "u=uniform"]).policy
    ['u=uniform']
    """
    p = argparse.ArgumentParser(prog="python -m ope", description="Off-policy evaluation on banditroute logs.")
    p.add_argument("log_dir", help="directory with decisions/ and outcomes/")
    p.add_argument("--policy", action="append", default=[], metavar="NAME=SPEC",
                   help="target policy: uniform | logging | always:PROFILE | file:PATH.npy (repeatable)")
    p.add_argument("--estimators", default="ips,snips", help="comma list of ips,snips,dm,dr,sndr,switch-dr,dros")
    p.add_argument("--reward-model", default="ridge", choices=["ridge", "logistic", "hgb"],
                   help="scikit-learn model for dm/dr/sndr/switch-dr/dros (cross-fitted)")
    p.add_argument("--n-folds", type=int, default=5, help="cross-fitting folds of the reward model (default 5)")
    p.add_argument("--reward-sample", type=_positive, default=200_000, metavar="N",
                   help="with --engine: the reward model is fitted on a sample of about N rounds (stable buckets), "
                        "then applied to every partition (default 200000)")
    p.add_argument("--clip", type=float, default=None, help="weight clipping for ips and dr")
    p.add_argument("--switch-threshold", type=float, default=float("inf"),
                   help="switch-dr: rounds weighted above this use the reward model alone (default inf: dr)")
    p.add_argument("--shrinkage", type=float, default=10.0, help="DRos shrinkage lambda")
    p.add_argument("--reward", default="reward", help="reward, quality, cost_usd or latency_ms")
    p.add_argument("--contexts", action="store_true", help="decode contexts (for reward models)")
    p.add_argument("--wait-window-s", type=float, default=None, help="count outcomes within this many seconds")
    p.add_argument("--default-reward", type=float, default=None, help="reward of rounds without outcome (default: drop)")
    p.add_argument("--duplicates", default="first", choices=["first", "last", "mean"],
                   help="how several outcomes of one decision combine (default first)")
    p.add_argument("--escalations", default="first", choices=list(ESCALATION_RULES),
                   help="first: root decisions only, the value of a first choice (default); "
                        "all: every decision, escalated ones too (biased for a first choice)")
    p.add_argument("--interval", default="normal", choices=list(INTERVAL_METHODS),
                   help="confidence interval method (default normal)")
    p.add_argument("--alpha", type=float, default=0.05, help="intervals at level 1 - alpha (default 0.05)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="resamples of the bootstrap interval (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="seed of cross-fitting and the bootstrap (default: none)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON ('-' for stdout only)")
    p.add_argument("--engine", default=None, type=_engine, metavar="local|dask[:ADDRESS]",
                   help="evaluate in partitions: here (local), on a local Dask cluster (dask) or on the scheduler at "
                        f"ADDRESS; needs {DASK_EXTRA} for dask (default: read the logs into memory)")
    p.add_argument("--dask-workers", type=_positive, default=None, metavar="N",
                   help="worker processes of the local cluster of --engine dask (default 2)")
    p.add_argument("--partitions", type=_positive, default=None, metavar="N",
                   help="partitions of the logs by stable bucket (default: one per 1,000,000 decisions; "
                        "with --engine dask at least one per worker)")
    p.add_argument("--shuffle-dir", default=None, metavar="DIR",
                   help="with --engine: the logs are first shuffled by bucket into a scratch directory made in DIR "
                        "(deleted at the end), so each partition reads only its own rows (from 10 partitions on); "
                        "--engine local and dask shuffle in the system's temporary directory by default; with --engine dask:ADDRESS give "
                        "a DIR every worker sees, else every partition scans all the files")
    return p


def _engine(text: str) -> str:
    """``--engine``'s value, checked (argparse reports an error naming the option and the value)."""
    try:
        parse_engine(text)
    except InvalidConfigError:
        raise argparse.ArgumentTypeError(f"must be local, dask or dask:ADDRESS, got {text!r}") from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _reward_model(kind: str, seed: int | None):
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "ridge":
        return Ridge(alpha=1.0)
    if kind == "logistic":
        return LogisticRegression(max_iter=1000)
    return HistGradientBoostingRegressor(random_state=seed)


def _estimators(args: argparse.Namespace) -> list:
    out = []
    for name in [s.strip().lower() for s in args.estimators.split(",") if s.strip()]:
        if name == "ips":
            out.append(IPS(clip=args.clip))
        elif name == "snips":
            out.append(SNIPS())
        elif name in _MODEL_BASED:
            model = _reward_model(args.reward_model, args.seed)
            extra = {"dr": {"clip": args.clip}, "switch-dr": {"threshold": args.switch_threshold},
                     "dros": {"shrinkage": args.shrinkage}}.get(name, {})
            out.append(_MODEL_BASED[name](reward_model=model, n_folds=args.n_folds, **extra))
        else:
            raise InvalidConfigError("estimators", f"unknown estimator {name!r}")
    return out


def _policy(spec: str, fb: LoggedFeedback) -> np.ndarray:
    if spec == "uniform":
        return uniform(fb.n_rounds, fb.n_actions)
    if spec == "logging":
        if fb.logging_distribution is None:
            raise InvalidConfigError("policy", "policy 'logging' needs the logged probabilities")
        return np.asarray(fb.logging_distribution)
    if spec.startswith("always:"):
        name = spec.split(":", 1)[1]
        if name not in fb.action_names:
            raise InvalidConfigError("policy", f"policy always:{name}: unknown profile, have {fb.action_names}")
        return one_hot(np.full(fb.n_rounds, fb.action_names.index(name)), fb.n_actions)
    if spec.startswith("file:"):
        return np.load(spec.split(":", 1)[1])
    raise InvalidConfigError("policy", f"policy spec must be uniform, logging, always:NAME or file:PATH, got {spec!r}")


def _escalation_notes(columns: "LogColumns | LogEvaluation") -> list[str]:
    """What the rounds say about escalated decisions (nothing when the logs hold none).

    >>> _escalation_notes(LogColumns(actions=np.array([0]), rewards=np.array([1.0]), propensities=np.array([1.0]),
    ...                              n_actions=1, action_names=("a",), n_escalated=2))
    ['note: 2 escalated decision(s) (parent_id set) left out with their outcomes: the rounds are first choices (--escalations first)']
    """
    notes = []
    if columns.n_escalated and columns.escalations == "first":
        notes.append(f"note: {columns.n_escalated} escalated decision(s) (parent_id set) left out with their outcomes: "
                     "the rounds are first choices (--escalations first)")
    elif columns.n_escalated:
        notes.append(f"warning: {columns.n_escalated} escalated decision(s) (parent_id set) are rounds "
                     "(--escalations all): the estimates are biased for the value of a first choice")
    if columns.n_escalated_without_outcome:
        notes.append(f"warning: {columns.n_escalated_without_outcome} decision(s) were escalated (their answer failed) "
                     "but have no counted outcome, so no round: the estimates lean toward answers that passed "
                     "(record the failed answer's outcome on the decision it escalates)")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 on bad input).

    Examples
    --------
    >>> main(["/nonexistent"])
    2
    """
    args = build_parser().parse_args(argv)
    if not Path(args.log_dir).is_dir():
        print(f"error: log_dir {args.log_dir!r} is not a directory", file=sys.stderr)
        return 2
    if args.dask_workers is not None and args.engine != "dask":
        given = "no --engine" if args.engine is None else f"--engine {args.engine}"
        print(f"error: --dask-workers {args.dask_workers} needs --engine dask (the local cluster it starts), "
              f"got {given}", file=sys.stderr)
        return 2
    if args.shuffle_dir is not None and args.engine is None:
        print(f"error: --shuffle-dir {args.shuffle_dir} needs --engine (the logs are read into memory without it)",
              file=sys.stderr)
        return 2
    specs = [item.partition("=") for item in args.policy or ["logging=logging", "uniform=uniform"]]
    try:
        window = None if args.wait_window_s is None else dt.timedelta(seconds=args.wait_window_s)
        if args.engine is not None:
            columns = run_log_evaluation(
                args.log_dir, {name: spec or name for name, _, spec in specs}, _estimators(args), engine=args.engine,
                n_partitions=args.partitions, dask_workers=args.dask_workers, alpha=args.alpha, interval=args.interval,
                n_bootstrap=args.n_bootstrap, seed=args.seed, wait_window=window, default_reward=args.default_reward,
                duplicates=args.duplicates, escalations=args.escalations, reward=args.reward,
                reward_sample=args.reward_sample, contexts=args.contexts, shuffle_dir=args.shuffle_dir)
            table = columns.table
        else:
            columns = read_log_columns(
                args.log_dir, wait_window=window, default_reward=args.default_reward, duplicates=args.duplicates,
                escalations=args.escalations, reward=args.reward, contexts=args.contexts, n_partitions=args.partitions,
            )
            fb = LoggedFeedback(**columns.as_kwargs())
            policies = {name: _policy(spec or name, fb) for name, _, spec in specs}
            table = evaluate(fb, policies, _estimators(args), alpha=args.alpha, interval=args.interval,
                             n_bootstrap=args.n_bootstrap, seed=args.seed)
    except FileNotFoundError as exc:  # no logs under log_dir, or a missing file:PATH.npy: bad input
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OPEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    notes = _escalation_notes(columns)
    if args.json == "-":
        print(json.dumps(table.to_dicts(), indent=2))
        for note in notes:
            print(note, file=sys.stderr)
        return 0
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=60):
        print(table.drop("warnings"))
    for row in table.iter_rows(named=True):
        for warning in row["warnings"]:
            print(f"warning [{row['policy']} / {row['estimator']}]: {warning}")
    for note in notes:
        print(note)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(table.to_dicts(), fh, indent=2)
    return 0
