"""The ``banditroute`` command: a thin layer over the library.

Errors go to stderr with a non-zero exit code (2 for bad input or configuration, 1 otherwise);
``--json`` gives machine-readable output on stdout.

>>> main(["replay", "--config", "/nonexistent/routes.toml", "--logs", "logs"])
2
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import BanditrouteError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="banditroute", description=(
        "Route requests across profiles by Thompson sampling, with exact propensities."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded LLM-routing simulator through the router")
    demo.add_argument("--requests", type=int, default=50_000, help="number of requests (default 50000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--log-dir", default="logs", help="where to write the decision log (default logs)")
    demo.add_argument("--no-log", action="store_true", help="do not write a decision log")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--no-evaluate", action="store_true", help="skip off-policy evaluation of candidates and the gate")
    demo.add_argument("--report", default="auto", metavar="PATH",
                      help="HTML report (default: report.html next to the log dir)")
    demo.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    demo.set_defaults(run=_demo)

    rep = sub.add_parser("replay", help="rebuild a router's beliefs from its logs")
    rep.add_argument("--config", required=True, help="routes TOML file")
    rep.add_argument("--logs", required=True, help="log directory")
    rep.add_argument("--out", help="save the rebuilt router to this file")
    rep.add_argument("--json", action="store_true", help="print the beliefs as JSON")
    rep.set_defaults(run=_replay)

    cal = sub.add_parser("calibration", help="calibration of the routed aggregate (ECE, Brier, reliability diagram)")
    cal.add_argument("--logs", required=True, help="log directory")
    cal.add_argument("--cohort", action="append", default=None,
                     help="cohort column (profile, task_type or a context field); repeatable")
    cal.add_argument("--bins", type=int, default=10, help="equal-width bins of the prediction (default 10)")
    cal.add_argument("--json", action="store_true", help="machine-readable output")
    cal.set_defaults(run=_calibration)

    com = sub.add_parser("compact", help="compact journal segments left by stopped writers into Parquet parts")
    com.add_argument("--log-dir", required=True, help="log directory")
    com.set_defaults(run=_compact)

    from ..service.app import add_serve_parser

    add_serve_parser(sub)

    from ..evaluation.candidates import add_promote_parser, add_report_parser

    add_promote_parser(sub)
    add_report_parser(sub)

    from ..logs.dsjson import add_export_parser

    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except BanditrouteError as exc:
        print(f"banditroute {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except KeyboardInterrupt:
        print(f"banditroute {args.command}: interrupted", file=sys.stderr)
        return 130


def _compact(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..logs.store import LogWriter

    if not Path(args.log_dir).is_dir():
        raise ConfigError("--log-dir", args.log_dir, "is not a directory")
    writer = LogWriter(args.log_dir)  # opening a writer recovers every segment whose writer is gone
    writer.close()
    print(f"compacted {writer.n_recovered} journal segment(s) into Parquet parts")
    return 0


def _demo(args) -> int:
    from ..sim.demo import run_demo

    if args.requests < 1:
        from ..errors import ConfigError

        raise ConfigError("--requests", args.requests, "must be >= 1")
    result = run_demo(n_requests=args.requests, seed=args.seed, log_dir=None if args.no_log else args.log_dir,
                      progress=not args.no_progress, out=None if args.json else sys.stdout,
                      evaluate=not args.no_evaluate and not args.no_log,
                      report=None if (args.no_report or args.no_log) else args.report)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0


def _calibration(args) -> int:
    from ..evaluation.calibration import calibration_report
    from ..errors import ConfigError

    if args.bins < 1:
        raise ConfigError("--bins", args.bins, "must be >= 1")
    report = calibration_report(args.logs, cohorts=tuple(args.cohort or ("profile", "task_type")), n_bins=args.bins)
    overall = report["overall"]
    if args.json:
        print(json.dumps({"n": overall["n"], "ece": overall["ece"], "brier": overall["brier"],
                          "mean_predicted": overall["mean_predicted"], "mean_observed": overall["mean_observed"],
                          "reliability_diagram": overall["diagram"].to_dicts(),
                          "cohorts": {k: v.to_dicts() for k, v in report["cohorts"].items()}}, indent=2))
        return 0
    print(f"routed aggregate: n={overall['n']:,}  ECE={overall['ece']:.4f}  Brier={overall['brier']:.4f}  "
          f"mean predicted {overall['mean_predicted']:.3f}, observed {overall['mean_observed']:.3f}")
    print("reliability diagram (mean predicted vs mean observed quality per bin):")
    print(overall["diagram"])
    for name, table in report["cohorts"].items():
        print(f"per {name}:")
        print(table)
    return 0


def _replay(args) -> int:
    from ..decide.router import Router

    router = Router.from_config(args.config, log_dir=None)
    n = router.replay(args.logs)
    beliefs = router.beliefs()
    if args.out:
        router.save(args.out)
    if args.json:
        print(json.dumps({"outcomes_applied": n, "beliefs": beliefs.to_dicts()}, indent=2))
    else:
        print(f"applied {n} outcomes from {args.logs}")
        print(beliefs)
    return 0
