"""Coverage of 95% intervals on synthetic logged data with a known true policy value.

    /work/venv/bin/python benchmarks/ope_coverage.py --replications 1000 --rounds 5000

Each replication draws a fresh log from ope.synthetic.SyntheticProblem (softmax logging
with an exploration floor, a softmax target over the true expected reward), and
computes IPS, SNIPS and DR (Ridge reward model, 2-fold cross-fitted inside the
estimator) with the normal and the bootstrap (1,000 resamples) interval. Coverage is
the share of replications whose interval contains the Monte Carlo true value
(4,000,000 contexts); its binomial standard error is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from sklearn.linear_model import Ridge

import ope
from ope.synthetic import SyntheticProblem


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--replications", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5000)
    p.add_argument("--actions", type=int, default=5)
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    problem = SyntheticProblem(seed=7, n_actions=args.actions, logging_beta=1.0, target_beta=3.0, exploration=0.1)
    truth = problem.true_value(n_rounds=4_000_000, seed=12345)
    estimators = {"IPS": ope.IPS(), "SNIPS": ope.SNIPS(), "DR": ope.DR(reward_model=Ridge(alpha=1.0), n_folds=2)}
    covered = {(e, m): 0 for e in estimators for m in ("normal", "bootstrap")}
    widths = {key: [] for key in covered}
    errors = {e: [] for e in estimators}
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for _ in range(args.replications):
        data = problem.sample(args.rounds, seed=rng)
        for name, est in estimators.items():
            q = None
            if name == "DR":
                q = est.predictions(data.feedback, seed=rng)
                est_used = ope.DR(reward_predictions=q)
            else:
                est_used = est
            for method in ("normal", "bootstrap"):
                res = est_used.estimate(data.feedback, data.target, interval=method, n_bootstrap=args.n_bootstrap, seed=rng)
                covered[(name, method)] += res.ci_low <= truth <= res.ci_high
                widths[(name, method)].append(res.ci_high - res.ci_low)
            errors[name].append(res.value - truth)
    elapsed = time.perf_counter() - start
    n = args.replications
    print(f"truth {truth:.5f}; {n} replications x {args.rounds} rounds x {args.actions} actions; {elapsed:.0f} s")
    print(f"{'estimator':9s} {'interval':9s} {'coverage':>8s} {'+-se':>6s} {'mean width':>10s} {'bias':>9s} {'rmse':>8s}")
    rows = []
    for (name, method), c in covered.items():
        cov = c / n
        se = math.sqrt(cov * (1 - cov) / n)
        err = np.asarray(errors[name])
        row = {"estimator": name, "interval": method, "coverage": cov, "coverage_se": se,
               "mean_width": float(np.mean(widths[(name, method)])), "bias": float(err.mean()),
               "rmse": float(np.sqrt((err ** 2).mean()))}
        rows.append(row)
        print(f"{name:9s} {method:9s} {cov:8.3f} {se:6.3f} {row['mean_width']:10.4f} {row['bias']:9.5f} {row['rmse']:8.5f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"truth": truth, "replications": n, "rounds": args.rounds, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
