"""from_logs + IPS/SNIPS/DR over banditroute-schema Parquet logs (default 10,000,000 rounds).

Usage:
    python benchmarks/bench_ope_logs.py generate --dir /tmp/ope-logs --rounds 10000000
    python benchmarks/bench_ope_logs.py run --dir /tmp/ope-logs --repeats 3

`generate` writes decisions/outcomes partitioned by date, from 2 writers, in files of
500,000 rows, with a profile added half-way (the action space grows), ~1% duplicate
outcomes, ~2% missing outcomes and JSON contexts; it prints the decompressed size of
what it wrote (polars estimated_size). `run` measures, in a fresh subprocess per repeat,
wall time of from_logs and of IPS/SNIPS/DR estimates, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

CHUNK = 500_000
PROFILES = ["small", "medium", "large", "agent"]
NEW_PROFILE = "reasoner"


def _chunk(start: int, n: int, rng: np.random.Generator, profiles: list[str], t0: dt.datetime, writer: str):
    k = len(profiles)
    probs = rng.dirichlet(np.ones(k) * 2.0, size=n)
    probs = 0.9 * probs + 0.1 / k
    probs /= probs.sum(axis=1, keepdims=True)
    executed = (probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(max=k - 1)
    ids = pl.int_range(start, start + n, eager=True).cast(pl.String)
    tasks = np.array(["chat", "code", "math"])[rng.integers(0, 3, n)]
    tokens = rng.integers(10, 4000, n)
    ts = pl.Series([t0]).dt.replace_time_zone("UTC").dt.cast_time_unit("us")[0]
    secs = np.sort(rng.integers(0, 86_400, n))
    decisions = pl.DataFrame({
        "decision_id": ("d" + ids),
        "ts": pl.Series(secs * 1_000_000).cast(pl.Duration("us")) + ts,
        "writer": writer,
        "seq": pl.int_range(start, start + n, eager=True).cast(pl.Int64),
        "policy_version": "v1",
        "task": tasks,
        "tokens": tokens,
        "probabilities": pl.Series(probs).cast(pl.List(pl.Float64)),
        "profile": np.array(profiles)[executed],
        "propensity": probs[np.arange(n), executed],
    }).with_columns(
        pl.concat_str([pl.lit('{"task_type": "'), pl.col("task"), pl.lit('", "prompt_tokens": '),
                      pl.col("tokens").cast(pl.String), pl.lit(', "tenant": "acme"}')]).alias("context"),
        pl.lit(pl.Series([[0.2, 0.5, 0.3]])).first().alias("task_probs"),
        pl.lit("{}").alias("excluded"),
        pl.lit(None, dtype=pl.String).alias("fallback_reason"),
        pl.lit(1, dtype=pl.Int32).alias("schema_version"),
        pl.lit(pl.Series([["chat", "code", "math"]])).first().alias("task_types"),
        pl.lit(pl.Series([profiles])).first().alias("profiles"),
    ).drop("task", "tokens")
    mu = 0.3 + 0.1 * executed
    reward = (rng.random(n) < mu).astype(float)
    keep = rng.random(n) > 0.02
    dup = rng.random(n) < 0.01
    delay = rng.integers(1, 600, n) * 1_000_000
    outcomes = pl.DataFrame({
        "decision_id": decisions["decision_id"],
        "ts": decisions["ts"] + pl.Series(delay).cast(pl.Duration("us")),
        "writer": writer,
        "seq": decisions["seq"],
        "quality": reward,
        "cost_usd": 0.001 * (1 + executed),
        "latency_ms": 300.0 + 100 * executed,
        "reward": reward,
        "status": "applied",
        "schema_version": pl.Series(np.ones(n, np.int32)),
    }).filter(pl.Series(keep))
    dups = outcomes.filter(pl.Series(dup[keep])).with_columns(pl.col("ts") + pl.duration(seconds=30), pl.lit("late").alias("status"))
    return decisions, pl.concat([outcomes, dups])


def generate(root: Path, rounds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = 0
    t0 = dt.datetime(2025, 3, 1)
    for i, start in enumerate(range(0, rounds, CHUNK)):
        n = min(CHUNK, rounds - start)
        profiles = PROFILES + ([NEW_PROFILE] if start >= rounds // 2 else [])
        day = t0 + dt.timedelta(days=i // 4)
        writer = f"w{i % 2}"
        dec, out = _chunk(start, n, rng, profiles, day, writer)
        for kind, frame in (("decisions", dec), ("outcomes", out)):
            path = root / kind / f"date={day:%Y-%m-%d}"
            path.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(path / f"part-{writer}-{i:06d}.parquet")
            size += frame.estimated_size()
    on_disk = sum(p.stat().st_size for p in root.rglob("*.parquet"))
    print(json.dumps({"rounds": rounds, "decompressed_bytes": size, "parquet_bytes": on_disk}))


def measure(root: Path, light: bool) -> dict:
    import ope

    t = time.perf_counter()
    if light:
        fb = ope.LoggedFeedback.from_logs(root, logging_distribution=False, metrics=False)
    else:
        fb = ope.LoggedFeedback.from_logs(root)
    t_load = time.perf_counter() - t
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    k = fb.n_actions
    target = ope.one_hot(np.full(fb.n_rounds, 2), k)  # "always large" (supported throughout)
    means = np.bincount(fb.actions, weights=fb.rewards, minlength=k) / np.bincount(fb.actions, minlength=k)
    q = np.broadcast_to(means, (fb.n_rounds, k))
    times = {}
    for name, est in (("IPS", ope.IPS()), ("SNIPS", ope.SNIPS()), ("DR", ope.DR(reward_predictions=q))):
        t = time.perf_counter()
        res = est.estimate(fb, target)
        times[name] = time.perf_counter() - t
        times[name + "_value"] = res.value
    return {"mode": "light" if light else "full", "n_rounds": fb.n_rounds, "n_actions": k, "from_logs_s": t_load,
            "peak_rss_from_logs_bytes": rss_load, **times,
            "peak_rss_total_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["generate", "run", "_measure"])
    p.add_argument("--dir", default="/tmp/ope-logs")
    p.add_argument("--rounds", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--light", action="store_true")
    args = p.parse_args()
    root = Path(args.dir)
    if args.mode == "generate":
        generate(root, args.rounds, args.seed)
    elif args.mode == "_measure":
        print(json.dumps(measure(root, args.light)))
    else:
        for light in (False, True):
            runs = []
            for _ in range(args.repeats):
                cmd = [sys.executable, __file__, "_measure", "--dir", str(root)] + (["--light"] if light else [])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]))
            print("mode", "light (no logging distribution, no metrics)" if light else "full (defaults)")
            for key in ("from_logs_s", "IPS", "SNIPS", "DR", "peak_rss_from_logs_bytes", "peak_rss_total_bytes"):
                vals = [r[key] for r in runs]
                print(f"  {key}: median {statistics.median(vals):.4g} (min {min(vals):.4g}, max {max(vals):.4g})")


if __name__ == "__main__":
    main()
