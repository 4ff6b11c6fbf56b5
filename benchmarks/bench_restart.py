"""Restart time: ``Router.resume`` on a log of N decisions, from a snapshot and without (issue 13).

The log is written directly as Parquet parts (vectorised; the router's own path would take ~15
minutes for 10M decisions): one writer, N decisions spread evenly over ``--span-days`` days
ending a minute ago (3 profiles x 3 task types), an outcome for 90% of them 1-120 s after
their decision, every row numbered in time order as a router numbers them. It is written in two
steps: everything but the last ``--tail`` decisions' rows, then a snapshot (``Router.snapshot``,
itself a full replay the first time), then the rest: the tail a restart replays after the
snapshot. Then, alternating, fresh routers ``resume()`` with the snapshot and without it (a full
replay), each time also restoring the wait window's pending decisions; median of ``--runs``.
Last, the cost of one periodic snapshot (the previous snapshot + the tail).

Run: python benchmarks/bench_restart.py --n 1000000 [--runs 5] [--tail 50000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

import banditroute as br
from banditroute.decide import persistence
from banditroute.logs.parts import write_parts
from banditroute.logs.rows import TABLES

PROFILES = ["small", "medium", "large"]
TASKS = ["chat", "code", "math"]
WRITER = "bench0000000"


def plan(n: int, *, seed: int = 0, span_days: float = 30.0, answered: float = 0.9) -> dict:
    """The log's rows as arrays: decisions' time, profile, task, quality; outcomes' time; every
    row's ``seq`` (one counter for the writer, in time order)."""
    rng = np.random.default_rng(seed)
    end_us = time.time_ns() // 1000 - 60_000_000
    ts_d = np.linspace(end_us - span_days * 86_400e6, end_us, n).astype(np.int64)
    has_outcome = rng.random(n) < answered
    ts_o = ts_d + rng.integers(1_000_000, 120_000_000, n)
    with_outcome = np.flatnonzero(has_outcome)
    everything = np.concatenate([ts_d, ts_o[with_outcome]])
    seq = np.empty(everything.size, np.int64)
    seq[np.argsort(everything, kind="stable")] = np.arange(everything.size)
    k, t = rng.integers(0, 3, n), rng.integers(0, 3, n)
    rates = np.array([[0.5, 0.4, 0.3], [0.6, 0.6, 0.5], [0.7, 0.8, 0.8]])
    return {"ts_d": ts_d, "ts_o": ts_o, "has_outcome": has_outcome, "seq_d": seq[:n],
            "seq_o": _spread(seq[n:], with_outcome, n),
            "k": k, "t": t, "quality": (rng.random(n) < rates[k, t]).astype(np.float64)}


def _spread(values: np.ndarray, at: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -1, np.int64)
    out[at] = values
    return out


def write(log_dir: str, p: dict, *, below: int | None = None, from_seq: int = 0, chunk: int = 1_000_000) -> int:
    """Write the planned rows with ``from_seq <= seq < below`` as Parquet parts; return how many."""
    names = iter(range(10**9))
    name = lambda: f"part-{WRITER}-{time.time_ns()}-{next(names):06d}.parquet"
    below = np.iinfo(np.int64).max if below is None else below
    n, written = p["ts_d"].size, 0
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        keep_d = (p["seq_d"][sl] >= from_seq) & (p["seq_d"][sl] < below)
        keep_o = p["has_outcome"][sl] & (p["seq_o"][sl] >= from_seq) & (p["seq_o"][sl] < below)
        base = pl.DataFrame({"seq": p["seq_d"][sl], "ts": p["ts_d"][sl], "k": p["k"][sl], "t": p["t"][sl]})
        base = base.with_columns(decision_id=pl.lit(WRITER + "-") + pl.col("seq").cast(pl.String))
        d = base.filter(pl.Series(keep_d)).with_columns(
            writer=pl.lit(WRITER), policy_version=pl.lit("bench"),
            context=pl.format('{{"task_type":"{}"}}', pl.col("t").replace_strict(dict(enumerate(TASKS)),
                                                                              return_dtype=pl.String)),
            task_types=pl.lit(pl.Series([TASKS])).first(),
            task_probs=pl.concat_list([(pl.col("t") == j).cast(pl.Float64) for j in range(3)]),
            profiles=pl.lit(pl.Series([PROFILES])).first(), probabilities=pl.lit(pl.Series([[1 / 3] * 3])).first(),
            profile=pl.col("k").replace_strict(dict(enumerate(PROFILES)), return_dtype=pl.String),
            propensity=pl.lit(1 / 3), excluded=pl.lit("{}"), fallback_reason=pl.lit(None, pl.String),
            shadow=pl.lit(None, pl.String), expected_quality=pl.lit(None, pl.Float64))
        o = pl.DataFrame({"decision_id": base.get_column("decision_id"), "ts": p["ts_o"][sl], "seq": p["seq_o"][sl],
                          "quality": p["quality"][sl]}).filter(pl.Series(keep_o)).with_columns(
            writer=pl.lit(WRITER), cost_usd=pl.lit(None, pl.Float64), latency_ms=pl.lit(None, pl.Float64),
            reward=pl.col("quality"), status=pl.lit("applied"))
        for table, frame in (("decisions", d), ("outcomes", o)):
            if frame.height:
                t = TABLES[table]
                frame = frame.select([pl.col(c).cast(t.row_schema[c]) for c in t.columns]).with_columns(*t.stored())
                write_parts(Path(log_dir), table, frame, name)
                written += frame.height
    return written


def router(log_dir: str, seed: int) -> br.Router:
    return br.Router([br.Profile(n) for n in PROFILES], task_types=TASKS, log_dir=log_dir, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tail", type=int, default=50_000, help="decisions logged after the snapshot")
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    persistence.RESUME_SNAPSHOT_MIN = 2**62  # the runs must not leave snapshots of their own
    out = {"n": args.n, "tail": args.tail, "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
           f"Python {platform.python_version()}, polars {pl.__version__}"}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = plan(args.n, span_days=args.span_days)
        cut = int(p["seq_d"][args.n - args.tail]) if args.tail else None
        write(tmp, p, below=cut)
        out["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        router(tmp, 0).snapshot()
        out["first_snapshot_s"] = time.perf_counter() - t0  # a full replay of the log so far
        if cut is not None:
            write(tmp, p, from_seq=cut)
        print(f"log of {args.n:,} decisions built in {out['build_s']:.1f} s; first snapshot "
              f"{out['first_snapshot_s']:.1f} s", flush=True)
        times, beliefs = {"snapshot": [], "full": []}, {}
        for run in range(args.runs):
            for how in ("snapshot", "full") if run % 2 == 0 else ("full", "snapshot"):
                r = router(tmp, run + 1)
                t0 = time.perf_counter()
                summary = r.resume(snapshot=how == "snapshot")
                times[how].append(time.perf_counter() - t0)
                beliefs[how] = r.beliefs()
                r.close()
                print(f"run {run} {how:8s}: {times[how][-1]:6.2f} s  {summary['outcomes_applied']:,} outcomes, "
                      f"{summary.get('outcomes_replayed', summary['outcomes_applied']):,} replayed, "
                      f"{summary['pending_restored']:,} pending", flush=True)
        t0 = time.perf_counter()
        router(tmp, 0).snapshot()
        out["periodic_snapshot_s"] = time.perf_counter() - t0
        out["outcomes"] = summary["outcomes_applied"]
        out["same_beliefs"] = beliefs["snapshot"].equals(beliefs["full"])  # the point of it all
    for how, ts in times.items():
        out[f"resume_{how}_s"] = {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "runs": ts}
    out["ratio"] = out["resume_full_s"]["median"] / out["resume_snapshot_s"]["median"]
    print(f"machine: {out['machine']}; {args.n:,} decisions, tail {args.tail:,}: resume from a snapshot "
          f"{out['resume_snapshot_s']['median']:.2f} s, full replay {out['resume_full_s']['median']:.2f} s "
          f"(medians of {args.runs}), ratio {out['ratio']:.1f}; periodic snapshot {out['periodic_snapshot_s']:.2f} s; "
          f"same beliefs: {out['same_beliefs']}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
