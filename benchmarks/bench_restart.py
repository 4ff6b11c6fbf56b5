"""Restart time: how long ``Router.resume`` takes on a log of N decisions (issue 13).

Builds a log of N decisions (decide_batch, 3 profiles x 3 task types) with an outcome for 90%
of them, closes the router, then times a fresh router's ``resume()`` (replay of every applied
outcome into the beliefs + the pending decisions of the wait window), several runs.

Run: python benchmarks/bench_restart.py --n 1000000 [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

import banditroute as br

PROFILES = [br.Profile(n) for n in ("small", "medium", "large")]
TASKS = ["chat", "code", "math"]


def build(log_dir: str, n: int, seed: int = 0) -> None:
    router = br.Router(PROFILES, task_types=TASKS, log_dir=log_dir, seed=seed, max_pending=n)
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        ds = router.decide_batch([{"task_type": TASKS[int(t)]} for t in rng.integers(0, 3, m)])
        for d in ds[: int(m * 0.9)]:
            router.record(d.id, quality=float(rng.random() < 0.6))
        router.flush()
    router.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build(tmp, args.n)
        print(f"built a log of {args.n:,} decisions in {time.perf_counter() - t0:.1f} s", flush=True)
        times = []
        for run in range(args.runs):
            router = br.Router(PROFILES, task_types=TASKS, log_dir=tmp, seed=run + 1, max_pending=args.n)
            t0 = time.perf_counter()
            summary = router.resume()
            times.append(time.perf_counter() - t0)
            router.close()
            print(f"run {run}: resume {times[-1]:.2f} s, {summary['outcomes_applied']:,} outcomes, "
                  f"{summary['pending_restored']:,} pending", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"median resume time over {args.runs} runs: {statistics.median(times):.2f} s for {args.n:,} decisions")


if __name__ == "__main__":
    main()
