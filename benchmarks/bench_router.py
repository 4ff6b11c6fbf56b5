"""Router hot paths: decide(), decide_batch(), record(), and memory over 1,000,000 decisions.

Setup (issue 2 bar): 8 profiles x 6 task types, logging on in group-commit mode, a posterior
trained on 5,000 outcomes. The anchor, measured in the same run, is a bare Thompson draw with
numpy (one Beta draw per profile for the request's task type, then argmax): what a router that
does *not* compute a propensity pays per decision.

Run: python benchmarks/bench_router.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import polars as pl

import banditroute as br

N_PROFILES, N_TASKS = 8, 6


def make_router(log_dir, **kwargs):
    profiles = [br.Profile(f"p{i}", cost_usd=0.0005 * (i + 1), latency_ms=200.0 * (i + 1)) for i in range(N_PROFILES)]
    tasks = [f"t{j}" for j in range(N_TASKS)]
    router = br.Router(profiles, task_types=tasks, objective=br.Objective(quality=1.0, cost=20.0),
                       log_dir=log_dir, durability="group", seed=0, **kwargs)
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.3, 0.95, size=(N_PROFILES, N_TASKS))
    for i in range(5000):
        t = i % N_TASKS
        d = router.decide({"task_type": tasks[t]})
        router.record(d.id, quality=float(rng.random() < truth[router.profiles.index(d.profile), t]))
    router.flush()
    return router, tasks, truth


def contexts(tasks, n, rng):
    return [{"task_type": tasks[int(t)], "prompt_tokens": int(p), "tenant": "acme"}
            for t, p in zip(rng.integers(0, N_TASKS, n), rng.integers(10, 4000, n))]


def percentiles(samples):
    arr = np.asarray(samples) * 1e6
    return float(np.median(arr)), float(np.percentile(arr, 99))


def bench_anchor(truth, n, rng):
    alpha, beta = 1 + 300 * truth, 1 + 300 * (1 - truth)
    cost = 20.0 * 0.0005 * np.arange(1, N_PROFILES + 1)
    times = []
    for t in rng.integers(0, N_TASKS, n):
        start = time.perf_counter()
        int(np.argmax(rng.beta(alpha[:, t], beta[:, t]) - cost))
        times.append(time.perf_counter() - start)
    return percentiles(times)


def bench_decide(router, ctxs):
    times = []
    for c in ctxs:
        start = time.perf_counter()
        router.decide(c)
        times.append(time.perf_counter() - start)
    return percentiles(times)


def bench_record(router, ctxs, truth, rng):
    decisions = router.decide_batch(ctxs)
    q = (rng.random(len(decisions)) < 0.7).astype(float).tolist()
    times = []
    for d, quality in zip(decisions, q):
        start = time.perf_counter()
        router.record(d.id, quality=quality, cost_usd=0.001, latency_ms=500.0)
        times.append(time.perf_counter() - start)
    return percentiles(times)


def bench_batch(router, ctxs):
    """decide_batch throughput, logging included (the flushes it triggers count)."""
    start = time.perf_counter()
    router.decide_batch(ctxs)
    return len(ctxs) / (time.perf_counter() - start)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_memory(tasks, log_dir, rng):
    router, _, _ = make_router(log_dir, wait_window_s=60.0, max_pending=200_000)
    ctxs = contexts(tasks, 10_000, rng)
    readings = []
    for i in range(100):  # 1,000,000 decisions, outcomes for 70% of them
        decisions = router.decide_batch(ctxs)
        for d in decisions[: 7000]:
            router.record(d.id, quality=1.0)
        if (i + 1) % 20 == 0:
            router.flush()
            readings.append(((i + 1) * 10_000, rss_mb(), router.n_pending))
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=20_000, help="calls per latency run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            router, tasks, truth = make_router(os.path.join(tmp, f"run{run}"))
            ctxs = contexts(tasks, args.n, rng)
            row = {"anchor_bare_ts": bench_anchor(truth, args.n, rng),
                   "decide": bench_decide(router, ctxs),
                   "record": bench_record(router, ctxs, truth, rng),
                   "batch_rows_per_s": bench_batch(router, contexts(tasks, 100_000, rng)),
                   "batch_frame_per_s": bench_batch(router, pl.DataFrame(contexts(tasks, 100_000, rng)))}
            router.close()
            results["runs"].append(row)
            print(f"run {run}: " + ", ".join(f"{k}={v[0]:.1f}/{v[1]:.1f} us" if isinstance(v, tuple) else
                                            f"{k}={v:,.0f}" for k, v in row.items()), flush=True)
        results["memory"] = bench_memory(tasks, os.path.join(tmp, "mem"), rng)
    summarise(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


def summarise(results) -> None:
    runs = results["runs"]

    def spread(values):
        return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"

    print(f"\nmachine: {results['machine']}; {len(runs)} runs; medians over runs (spread)")
    for key in ("anchor_bare_ts", "decide", "record"):
        med = [r[key][0] for r in runs]
        p99 = [r[key][1] for r in runs]
        ratio = [r[key][0] / r["anchor_bare_ts"][0] for r in runs]
        print(f"{key:>15}: median {spread(med)} us, p99 {spread(p99)} us, ratio to anchor {statistics.median(ratio):.2f}")
    for key, label in (("batch_rows_per_s", "batch of dicts"), ("batch_frame_per_s", "batch DataFrame")):
        batch = [r[key] for r in runs]
        print(f"{label:>15}: {statistics.median(batch):,.0f} decisions/s (min {min(batch):,.0f}, max {max(batch):,.0f})")
    for n, rss, pending in results["memory"]:
        print(f"  after {n:>9,} decisions: RSS {rss:7.1f} MB, pending {pending:,}")


if __name__ == "__main__":
    main()
