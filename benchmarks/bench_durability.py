"""Cost of durability per call: ``durability="sync"`` with a Parquet part per call vs the journal.

Run: python benchmarks/bench_durability.py [--runs 3] [--calls 2000]

Each call of ``decide()`` returns only once its row is on disk: without the journal a part is
written (temporary file, fsync, rename, directory fsync); with ``log_journal=True`` one line is
appended to the writer's journal and fdatasync'ed. Log directories are created under the
current directory (the disk the logs would live on), and removed after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import banditroute as br


def one_run(journal: bool, calls: int) -> tuple[float, float]:
    log_dir = tempfile.mkdtemp(prefix="bench-durability-", dir=".")
    try:
        router = br.Router([br.Profile("a"), br.Profile("b"), br.Profile("c")], task_types=["x"], log_dir=log_dir,
                           durability="sync", log_journal=journal, seed=0)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            router.decide({"task_type": "x"})
            times.append(time.perf_counter() - start)
        router.close()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    times.sort()
    return statistics.median(times) * 1e6, times[int(0.99 * len(times))] * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; {args.runs} alternating runs of "
          f"{args.calls} durable decide() calls")
    rows = {False: [], True: []}
    for _ in range(args.runs):
        for journal in (False, True):
            rows[journal].append(one_run(journal, args.calls))
    print("| log | decide median, µs [min, max over runs] | p99, µs [min, max] |")
    print("|---|---|---|")
    for journal, label in ((False, "Parquet part per call"), (True, "journal (log_journal=True)")):
        med, p99 = [r[0] for r in rows[journal]], [r[1] for r in rows[journal]]
        print(f"| {label} | {statistics.median(med):.0f} [{min(med):.0f}, {max(med):.0f}] | "
              f"{statistics.median(p99):.0f} [{min(p99):.0f}, {max(p99):.0f}] |")


if __name__ == "__main__":
    main()
