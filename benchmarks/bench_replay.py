"""How the evaluation of a *learning* candidate scales: its progressive replay is sequential.

Usage:
    python benchmarks/bench_replay.py --rounds 1000000 [--dir /tmp/bench-replay] [--batches auto,5000,50000]

Writes (once per directory; reused when present) a log of ``--rounds`` decisions of a banditroute
Thompson router (three profiles, three task types, Bernoulli quality per profile), reads it with
``ope.feedback_from_logs(contexts=True)``, then times ``ope.learning.progressive`` of a fresh Thompson
router over it, the scheme the gate uses for a learning candidate (each batch of ``B`` rounds scored
before the candidate learns it; ``auto`` is the gate's default ``B = ceil(n / 2000)``), ``--runs``
times per batch size (median reported). Round ``i``'s target depends on the candidate's state after
rounds ``< i``: no partition of the rounds can be scored before the earlier ones were learned, so
the replay runs on one core whatever the cluster, and the in-memory path holds every round. The
script prints the rate, the process's peak RSS (the log read into memory plus the replay) and the
time 1,000,000,000 rounds would take at that rate on one core.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np

import banditroute as br
import ope
from ope.learning import progressive

PROFILES = {"small": 0.5, "medium": 0.6, "large": 0.7}  # probability of a good answer
TASKS = ["code", "chat", "math"]


def write_log(log_dir: Path, rounds: int) -> None:
    rng = np.random.default_rng(0)
    router = br.Router([br.Profile(p) for p in PROFILES], task_types=TASKS, log_dir=log_dir, seed=0)
    for i in range(rounds):
        d = router.decide({"task_type": TASKS[i % len(TASKS)]})
        router.record(d.id, quality=float(rng.random() < PROFILES[d.profile]))
    router.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/bench-replay")
    parser.add_argument("--batches", default="auto,5000,50000", help="comma list of batch sizes (auto: the gate's)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    log_dir = Path(args.dir) / f"logs-{args.rounds}"
    if not log_dir.is_dir():
        t0 = time.perf_counter()
        write_log(log_dir, args.rounds)
        print(f"wrote {args.rounds:,} decisions in {time.perf_counter() - t0:.1f} s")
    fb = ope.feedback_from_logs(log_dir, contexts=True)
    print("| batch B | runs (s) | median (s) | rounds/s | 1e9 rounds, one core |")
    print("|---|---|---|---|---|")
    for spec in args.batches.split(","):
        batch = None if spec == "auto" else int(spec)
        times = []
        for _ in range(args.runs):
            candidate = br.Router([br.Profile(p) for p in PROFILES], task_types=TASKS, log_dir=None, seed=1)
            t0 = time.perf_counter()
            progressive(candidate, fb, batch_rounds=batch)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rate = fb.n_rounds / med
        shown = f"{-(-fb.n_rounds // 2000):,} (auto)" if batch is None else f"{batch:,}"
        print(f"| {shown} | {', '.join(f'{t:.2f}' for t in times)} | {med:.2f} | {rate:,.0f} | {1e9 / rate / 3600:.1f} h |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{fb.n_rounds:,} rounds; peak RSS of this process {peak:,.0f} MB")


if __name__ == "__main__":
    main()
