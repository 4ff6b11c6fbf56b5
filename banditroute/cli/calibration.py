"""``banditroute calibration``: calibration of the routed aggregate (ECE, Brier, reliability diagram).

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--logs", "logs", "--cohort", "tenant"])
>>> args.cohort, args.bins
(['tenant'], 10)
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from .errors import reports_ope_errors

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``calibration`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("calibration",
                              help="calibration of the routed aggregate (ECE, Brier, reliability diagram)",
                              description="Calibration of the routed aggregate: expected calibration error, Brier "
                                          "score and reliability diagram, overall and per cohort.")
    p.add_argument("--logs", required=True, help="log directory")
    p.add_argument("--cohort", action="append", default=None,
                   help="cohort column (profile, task_type or a context field); repeatable")
    p.add_argument("--bins", type=int, default=10, help="equal-width bins of the prediction (default 10)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)
    return p


@reports_ope_errors
def run(args) -> int:
    """Print the calibration report (as JSON with ``--json``)."""
    from ..evaluation.calibration import calibration_report

    if args.bins < 1:
        raise ConfigError("--bins", args.bins, "must be >= 1")
    try:
        report = calibration_report(args.logs, cohorts=tuple(args.cohort or ("profile", "task_type")), n_bins=args.bins)
    except ConfigError as exc:
        if exc.field != "cohorts":
            raise
        raise exc.renamed("--cohort") from None
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
