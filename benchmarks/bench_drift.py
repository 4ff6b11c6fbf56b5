"""Forgetting strategies on the embedded simulator: none, fixed discounting, drift-triggered.

For each scenario (the demo's: `large` degrades on code at 40% of the run and `medium-v2` joins
at 70%; `Scenario.nonstationary`: gradual drift of `medium` on summarize, abrupt degradation of
`large` on code, and its recovery; and the stationary variant) and each seed, routes the same
request stream with three routers that differ only in how they forget:

- ``none``: discount 1, no drift detection;
- ``discount``: discount 0.997 per unit of a task type's traffic (the demo's setting);
- ``drift``: discount 1 with Page-Hinkley drift detection (banditroute.drift, defaults).

Cumulative regret is in expected reward (the simulator knows E[reward | profile, request]):
sum over requests of best available expected reward minus the executed profile's.

Run: python benchmarks/bench_drift.py [--requests 30000] [--seeds 0 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import numpy as np

import banditroute as br
from banditroute.demo import DEMO_OBJECTIVE

STRATEGIES = {"none": dict(discount=1.0), "discount": dict(discount=0.997),
              "drift": dict(discount=1.0, drift=br.DriftConfig())}


def run(scenario, seed: int, strategy: dict, n_requests: int, batch_size: int = 16) -> dict:
    sim_seq, router_seq = np.random.SeedSequence(seed).spawn(2)
    sim = br.Simulator(scenario, seed=int(sim_seq.generate_state(1)[0]))
    specs = {p.name: p for p in scenario.profiles}
    names = scenario.profile_names
    index = {n: k for k, n in enumerate(names)}

    def profile(name):
        return br.Profile(name, cost_usd=specs[name].cost_usd, latency_ms=specs[name].latency_ms)

    router = br.Router([profile(n) for n in names if specs[n].joins_at == 0], task_types=list(scenario.task_types),
                       objective=DEMO_OBJECTIVE, exploration=0.02, seed=int(router_seq.generate_state(1)[0]),
                       **strategy)
    regret = np.empty(n_requests)
    detections = []  # (request index, profile/task, change)

    def record(arrived):
        for ticket, q in zip(arrived.tickets.tolist(), arrived.quality.tolist()):
            router.record(ticket, quality=q)

    cuts = sorted(set(range(0, n_requests, batch_size)) | set(scenario.event_steps(n_requests)))
    for start, stop in zip(cuts, cuts[1:] + [n_requests]):
        for name in sim.joining(start, stop):
            router.add_profile(profile(name))
        record(sim.poll())
        batch = sim.next_requests(stop - start)
        decisions = router.decide_batch(batch.contexts())
        chosen = np.array([index[d.profile] for d in decisions])
        expected = sim.expected_reward(batch, DEMO_OBJECTIVE)  # (n, profiles), nan where unavailable
        regret[start:stop] = np.nanmax(expected, axis=1) - expected[np.arange(len(chosen)), chosen]
        sim.submit(batch, chosen, tickets=[d.id for d in decisions])
        for event in router.drift_events[len(detections):]:
            detections.append((start, f"{event['profile']}/{event['task_type']}", event["change"]))
    return {"regret": float(regret.sum()), "detections": len(detections), "events": detections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--false-alarm-requests", type=int, default=0,
                        help="also count drift detections on a stationary run of this many requests per seed")
    parser.add_argument("--json")
    args = parser.parse_args()
    scenarios = {"default (degrade+join)": br.Scenario.default(n_requests=args.requests),
                 "non-stationary": br.Scenario.nonstationary(n_requests=args.requests),
                 "stationary": br.Scenario.default(n_requests=args.requests).stationary()}
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "requests": args.requests, "seeds": args.seeds, "rows": []}
    for scen_name, scenario in scenarios.items():
        for strat_name, strategy in STRATEGIES.items():
            runs = [run(scenario, seed, strategy, args.requests) for seed in args.seeds]
            row = {"scenario": scen_name, "strategy": strat_name,
                   "regret": [r["regret"] for r in runs], "detections": [r["detections"] for r in runs]}
            results["rows"].append(row)
            row["events"] = [r["events"] for r in runs]
            print(f"{scen_name:>22} {strat_name:>9}: regret median {statistics.median(row['regret']):8.1f} "
                  f"(min {min(row['regret']):.1f}, max {max(row['regret']):.1f}), "
                  f"drift detections {row['detections']}", flush=True)
            if strat_name == "drift":
                for seed, events in zip(args.seeds, row["events"]):
                    print(f"{'':>34}seed {seed}: " + ", ".join(f"{cell} {change} at request {i:,}"
                                                               for i, cell, change in events), flush=True)
    if args.false_alarm_requests:
        stationary = br.Scenario.default(n_requests=args.false_alarm_requests).stationary()
        counts = [run(stationary, seed, STRATEGIES["drift"], args.false_alarm_requests)["detections"]
                  for seed in args.seeds]
        results["false_alarms"] = {"requests": args.false_alarm_requests, "detections": counts}
        print(f"false alarms on {args.false_alarm_requests:,} stationary requests: {counts} "
              f"(cells: 3 profiles x 4 task types)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
