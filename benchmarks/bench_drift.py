"""Forgetting strategies on the embedded simulator: none, fixed discounting, drift-triggered.

For each scenario (the demo's: `large` degrades on code at 40% of the run and `medium-v2` joins
at 70%; `Scenario.nonstationary`: gradual drift of `medium` on summarize, abrupt degradation of
`large` on code, and its recovery; and the stationary variant) and each seed, routes the same
request stream through `run_demo` (no logs) with three routers that differ only in how they
forget:

- ``none``: discount 1, no drift detection;
- ``discount``: discount 0.997 per unit of a task type's traffic;
- ``drift``: discount 1 with Page-Hinkley drift detection (banditroute.beliefs.drift, defaults).

Cumulative regret is the demo's: over requests, the best available expected reward minus the
expected reward of the router's distribution (the simulator knows E[reward | profile, request]).

Run: python benchmarks/bench_drift.py [--requests 30000] [--seeds 0 1 2] [--false-alarm-requests 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import banditroute as br
from banditroute.sim import DemoResult, Scenario, run_demo

STRATEGIES = {"none": dict(discount=1.0, drift=None), "discount": dict(discount=0.997, drift=None),
              "drift": dict(discount=1.0, drift=br.DriftConfig())}


def run(scenario, seed: int, strategy: dict, n_requests: int) -> DemoResult:
    return run_demo(n_requests=n_requests, seed=seed, scenario=scenario, log_dir=None, progress=False,
                    out=None, evaluate=False, report=None, **strategy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--false-alarm-requests", type=int, default=0,
                        help="also count drift detections on a stationary run of this many requests per seed")
    parser.add_argument("--json")
    args = parser.parse_args()
    scenarios = {"demo (degrade+join)": Scenario.default(n_requests=args.requests),
                 "non-stationary": Scenario.nonstationary(n_requests=args.requests),
                 "stationary": Scenario.default(n_requests=args.requests).stationary()}
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "requests": args.requests, "seeds": args.seeds, "rows": []}
    for scen_name, scenario in scenarios.items():
        for strat_name, strategy in STRATEGIES.items():
            runs = [run(scenario, seed, strategy, args.requests) for seed in args.seeds]
            regret = [r.cumulative_regret for r in runs]
            events = [[(e["profile"], e["task_type"], e["change"], e["n_updates"]) for e in r.drift_events]
                      for r in runs]
            results["rows"].append({"scenario": scen_name, "strategy": strat_name, "regret": regret, "events": events})
            print(f"{scen_name:>20} {strat_name:>9}: regret median {statistics.median(regret):8.1f} "
                  f"(min {min(regret):.1f}, max {max(regret):.1f}), drift detections {[len(e) for e in events]}",
                  flush=True)
            for seed, seed_events in zip(args.seeds, events):
                if seed_events:
                    print(f"{'':>32}seed {seed}: " + ", ".join(f"{p}/{t} {c} after {n:,} outcomes"
                                                               for p, t, c, n in seed_events), flush=True)
    if args.false_alarm_requests:
        stationary = Scenario.default(n_requests=args.false_alarm_requests).stationary()
        counts = [len(run(stationary, seed, STRATEGIES["drift"], args.false_alarm_requests).drift_events)
                  for seed in args.seeds]
        results["false_alarms"] = {"requests": args.false_alarm_requests, "detections": counts}
        print(f"false alarms on {args.false_alarm_requests:,} stationary requests: {counts} "
              f"(cells: 3 profiles x 4 task types)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
