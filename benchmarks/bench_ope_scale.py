"""Off-policy evaluation at scale: today's in-memory path vs ope.evaluate_logs, here and on Dask.

Usage:
    python benchmarks/bench_ope_scale.py --rounds 10000000 [--dir /tmp/ope-scale] [--workers 2]
    python benchmarks/bench_ope_scale.py --rounds 1000000 --engines memory,local,dask --no-bucket

Generates (once per directory and size; reused when present) banditroute-format logs of
``--rounds`` decisions written directly with polars in the stored schema (version 4: with the
``bucket`` column; ``--no-bucket``: an older log without it, filled on read), from ``--writers``
writers in parts of ``--part-rows`` rows: three profiles, a per-task logging distribution,
Bernoulli rewards, ~8% missing outcomes, ~3% duplicate outcomes, outcomes seconds to minutes
after their decision. Generation is vectorised (the only per-row Python is the CRC of the ids).

Then times, each in a fresh subprocess, IPS + SNIPS on two target policies (uniform, always:large):

- ``memory``: ``ope.evaluate(ope.feedback_from_logs(dir), ...)``, today's path (one process);
- ``local``: ``ope.evaluate_logs(dir, ..., engine="local")``, the partition tasks run in-process;
- ``dask``: ``ope.evaluate_logs(dir, ..., engine=client)`` on a ``LocalCluster(n_workers=--workers,
  threads_per_worker=1, processes=True)`` started, and its workers' ``import ope`` done, before the
  clock (reported apart as the cluster start);
- ``local-scan``, ``local-shuffle``, ``dask-scan``, ``dask-shuffle``: the same with ``shuffle=False``
  (every task scans every file) or ``shuffle=True`` (the bucket shuffle of ``ope.shuffle`` first; for
  dask with ``shuffle_dir`` the system's temporary directory, which the local workers see). Plain
  ``local`` is the library's default (it shuffles from ``ope.shuffle.MIN_PARTITIONS`` partitions on);
  plain ``dask`` passes a Client, which the library does not shuffle without a ``shuffle_dir``.

Reported per engine: wall time, rounds/s, the client process's peak RSS and, for dask, each
worker's peak RSS (``resource.getrusage`` in the worker, through ``client.run``); the values of
every engine are checked against ``memory``'s. A Markdown table is printed, then a projection for
1,000,000,000 rounds: a linear extrapolation of each engine's measured rate (stated as such).
Every task of evaluate_logs scans all the files and keeps its partition, so its cost is
``plan * N`` on the client plus ``P * N * scan + N * work`` on the workers; ``--fit`` measures the
three rates (the plan; one task keeping almost nothing, i.e. a pass over the files; the local engine
with one partition) and projects 1e9 decisions with that model too. With the shuffle the reading is
one map pass (read the needed columns, write each partition's rows) and one read of its own files per
task: ``plan * N + map * N + N * work'``; ``--fit`` also times the map alone (``--partitions`` or
10 partitions) and the shuffled local engine, and projects that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

PROFILES = ["small", "medium", "large"]
TASKS = ["chat", "code", "math"]
LOGGING = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])  # per task
TRUTH = np.array([[0.8, 0.8, 0.8], [0.3, 0.6, 0.9], [0.2, 0.5, 0.9]])  # mean quality per (task, profile)
SPECS = {"uniform": "uniform", "large": "always:large"}
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _schemas():
    from banditroute.logs.rows import DECISION_SCHEMA, OUTCOME_SCHEMA

    return DECISION_SCHEMA, OUTCOME_SCHEMA


def _part(writer: str, start: int, n: int, rng: np.random.Generator, bucket: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    from ope.buckets import BUCKET_DTYPE, stable_bucket

    dschema, oschema = _schemas()
    task = rng.integers(0, 3, n)
    probs = LOGGING[task]
    action = np.minimum((probs.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), 2)
    seq = np.arange(start, start + n, dtype=np.int64)
    ts = (T0.timestamp() * 1e6 + seq * 1_000 + rng.integers(0, 1_000, n)).astype(np.int64)
    ids = pl.Series("decision_id", seq).cast(pl.String).str.pad_start(10, "0")
    ids = (pl.lit(f"{writer}-") + pl.lit(ids)).alias("decision_id")
    names = np.array(PROFILES)
    d = pl.DataFrame({"seq": seq, "ts": ts, "task": np.array(TASKS)[task], "probabilities": probs,
                      "profile": names[action], "propensity": probs[np.arange(n), action]}).with_columns(
        ids,
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        pl.lit(writer).alias("writer"),
        pl.lit("v1").alias("policy_version"),
        (pl.lit('{"task_type":"') + pl.col("task") + pl.lit('"}')).alias("context"),
        pl.lit(pl.Series([TASKS])).first().alias("task_types"),
        pl.lit(pl.Series([[0.8, 0.1, 0.1]])).first().alias("task_probs"),
        pl.lit(pl.Series([PROFILES])).first().alias("profiles"),
        pl.col("probabilities").cast(pl.List(pl.Float64)),
        pl.lit("{}").alias("excluded"),
        pl.lit(4, dtype=pl.Int32).alias("schema_version"),
    )
    if bucket:
        d = d.with_columns(pl.Series("bucket", stable_bucket(d["decision_id"].to_list()), dtype=BUCKET_DTYPE))
    d = d.select([pl.col(c) if c in d.columns else pl.lit(None, dtype=t).alias(c)
                  for c, t in dschema.items() if bucket or c != "bucket"]).cast(
        {c: t for c, t in dschema.items() if c in d.columns})
    quality = (rng.random(n) < TRUTH[task, action]).astype(np.float64)
    keep = rng.random(n) >= 0.08  # missing outcomes
    dup = keep & (rng.random(n) < 0.03)
    rows = np.concatenate([np.flatnonzero(keep), np.flatnonzero(dup)])
    delay = np.concatenate([rng.integers(1, 300, keep.sum()), rng.integers(300, 3600, dup.sum())]) * 1_000_000
    q = np.concatenate([quality[keep], (rng.random(dup.sum()) < 0.5).astype(np.float64)])
    o = pl.DataFrame({"decision_id": d["decision_id"].gather(rows), "ts": ts[rows] + delay,
                      "seq": np.arange(rows.shape[0], dtype=np.int64), "quality": q, "reward": q,
                      "cost_usd": np.array([0.0004, 0.002, 0.012])[action[rows]], "latency_ms": 500.0}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.lit(writer).alias("writer"),
        pl.when(pl.int_range(pl.len()) < keep.sum()).then(pl.lit("applied")).otherwise(pl.lit("duplicate")).alias("status"),
        pl.lit(4, dtype=pl.Int32).alias("schema_version"))
    if bucket:
        o = o.with_columns(d["bucket"].gather(rows).alias("bucket"))
    o = o.select([pl.col(c) if c in o.columns else pl.lit(None, dtype=t).alias(c)
                  for c, t in oschema.items() if bucket or c != "bucket"]).cast(
        {c: t for c, t in oschema.items() if c in o.columns})
    return d, o


def generate(root: Path, rounds: int, writers: int, part_rows: int, bucket: bool, seed: int = 0) -> None:
    marker = root / "GENERATED.json"
    spec = {"rounds": rounds, "writers": writers, "part_rows": part_rows, "bucket": bucket, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        print(f"reusing {root}", file=sys.stderr)
        return
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_writer = -(-rounds // writers)
    for w in range(writers):
        writer = f"w{w:02d}"
        done = 0
        while done < min(per_writer, rounds - w * per_writer):
            n = min(part_rows, per_writer - done, rounds - w * per_writer - done)
            d, o = _part(writer, done, n, rng, bucket)
            for kind, frame in (("decisions", d), ("outcomes", o)):
                path = root / kind / "date=2026-01-01"
                path.mkdir(parents=True, exist_ok=True)
                frame.write_parquet(path / f"part-{writer}-{done // part_rows:06d}.parquet")
            done += n
    marker.write_text(json.dumps(spec))
    size = sum(p.stat().st_size for p in root.glob("*/**/*.parquet"))
    print(f"generated {rounds:,} rounds in {time.perf_counter() - t:.1f}s: {size / 1e6:,.0f} MB of Parquet", file=sys.stderr)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _warm() -> None:
    import ope.distributed  # noqa: F401


def run_engine(engine: str, root: str, workers: int, partitions: int | None) -> dict:
    """One engine, in this (fresh) process: the table and the measures."""
    import tempfile

    import ope

    estimators = [ope.IPS(), ope.SNIPS()]
    out: dict = {"engine": engine}
    engine, _, mode = engine.partition("-")
    options = {"": {}, "scan": {"shuffle": False},
               "shuffle": {"shuffle": True, "shuffle_dir": tempfile.gettempdir()}}[mode]
    if engine == "map":  # the plan, then the shuffle's map phase alone (no partition is evaluated)
        from ope.log_columns import plan_reading
        from ope.shuffle import shuffled_plan

        plan = plan_reading(root)
        t = time.perf_counter()
        with shuffled_plan(plan, partitions or 10, shuffle=True) as shuffled:
            out["seconds"] = time.perf_counter() - t
            out["scratch_mb"] = sum(p.stat().st_size for p in Path(shuffled.shuffled[0]).rglob("*.parquet")) / 1e6
        out["client_peak_mb"], out["decisions"], out["partitions"] = _maxrss_mb(), plan.n_decisions, partitions or 10
        return out
    if engine == "scan":  # the plan, then one task keeping (almost) nothing: a pass over every file
        from ope.log_columns import plan_reading, read_partition

        t = time.perf_counter()
        plan = plan_reading(root)
        out["plan_s"] = time.perf_counter() - t
        t = time.perf_counter()
        out["n"] = read_partition(plan, 0, 1_000_003).actions.shape[0]
        out["seconds"] = time.perf_counter() - t
        out["client_peak_mb"], out["decisions"] = _maxrss_mb(), plan.n_decisions
        return out
    if engine == "memory":
        out["partitions"] = max(1, -(-ope.scan_decisions(root).select(pl.len()).collect().item() // 1_000_000))
        t = time.perf_counter()
        fb = ope.feedback_from_logs(root)
        out["read_s"] = time.perf_counter() - t
        big = fb.action_names.index("large")
        table = ope.evaluate(fb, {"uniform": ope.uniform(fb.n_rounds, fb.n_actions),
                                  "large": ope.one_hot(np.full(fb.n_rounds, big), fb.n_actions)}, estimators)
        out["seconds"] = time.perf_counter() - t
    elif engine == "local":
        t = time.perf_counter()
        result = ope.distributed.run_log_evaluation(root, SPECS, estimators, engine="local", n_partitions=partitions,
                                                    **options)
        out["seconds"], table, out["partitions"] = time.perf_counter() - t, result.table, result.n_partitions
    else:
        import distributed

        t = time.perf_counter()
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            client.run(_warm)  # the workers import ope before the clock (reported with the start-up)
            out["startup_s"] = time.perf_counter() - t
            t = time.perf_counter()
            result = ope.distributed.run_log_evaluation(root, SPECS, estimators, engine=client, n_partitions=partitions,
                                                        **options)
            out["seconds"], table, out["partitions"] = time.perf_counter() - t, result.table, result.n_partitions
            peaks = client.run(_maxrss_mb)
            out["worker_peak_mb"] = sorted(peaks.values())
    out["client_peak_mb"] = _maxrss_mb()
    out["n"] = int(table["n"][0])
    out["table"] = table.select("policy", "estimator", "value", "stderr", "ci_low", "ci_high").to_dicts()
    return out


def _subprocess(engine: str, root: Path, workers: int, partitions: int | None) -> dict:
    cmd = [sys.executable, __file__, "--run-engine", engine, "--dir", str(root), "--workers", str(workers)]
    if partitions:
        cmd += ["--partitions", str(partitions)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _max_rel_diff(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for key in ("value", "stderr", "ci_low", "ci_high"):
            worst = max(worst, abs(x[key] - y[key]) / max(abs(x[key]), 1e-300))
    return worst


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1_000_000)
    p.add_argument("--dir", default=None, help="log directory (default /tmp/ope-scale-<rounds>[-nobucket])")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--part-rows", type=int, default=250_000)
    p.add_argument("--workers", type=int, default=2, help="Dask workers (one thread each)")
    p.add_argument("--partitions", type=int, default=None, help="evaluate_logs' partitions (default: its own)")
    p.add_argument("--engines", default="memory,local,dask")
    p.add_argument("--no-bucket", action="store_true", help="logs without the bucket column (schema < 4)")
    p.add_argument("--fit", action="store_true", help="also measure the plan, one pass, one partition (the model)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each engine, interleaved (the median is shown)")
    p.add_argument("--json", default=None, help="write the measures here")
    p.add_argument("--run-engine", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    root = Path(args.dir or f"/tmp/ope-scale-{args.rounds}{'-nobucket' if args.no_bucket else ''}")
    if args.run_engine:
        print(json.dumps(run_engine(args.run_engine, str(root), args.workers, args.partitions)))
        return
    generate(root, args.rounds, args.writers, args.part_rows, not args.no_bucket)
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeat):  # the engines interleaved, so the shared machine's load falls on each alike
        for engine in args.engines.split(","):
            r = _subprocess(engine, root, args.workers, args.partitions)
            print(f"{engine}: {r['seconds']:.1f}s (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
            runs.setdefault(engine, []).append(r)
    results = []
    for engine, done in runs.items():  # the median run of each engine
        median = sorted(done, key=lambda r: r["seconds"])[len(done) // 2]
        results.append({**median, "runs_s": [round(r["seconds"], 1) for r in done]})
    fits = []
    if args.fit:
        fit_partitions = args.partitions or 10
        fits = [_subprocess("scan", root, args.workers, None), _subprocess("local", root, args.workers, 1),
                _subprocess("map", root, args.workers, fit_partitions),
                _subprocess("local-shuffle", root, args.workers, fit_partitions)]
    ref = next((r for r in results if r["engine"] == "memory"), results[0])
    load = os.getloadavg()
    print(f"\n{args.rounds:,} decisions ({ref['n']:,} rounds after the join), {args.writers} writers, "
          f"{'no bucket column (filled on read)' if args.no_bucket else 'bucket stored'}; "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("memory: today's path (its partitions are the join's passes); local / dask: evaluate_logs\n")
    print("| engine | partitions | wall s | rounds/s | client peak MB | worker peak MB | max rel. diff vs memory |")
    print("|---|---|---|---|---|---|---|")
    for r in [*results, *[f for f in fits[1:] if "table" in f]]:
        extra = f" (+{r['startup_s']:.1f}s cluster start)" if "startup_s" in r else ""
        extra += f" (runs {', '.join(map(str, r['runs_s']))})" if len(r.get("runs_s", [])) > 1 else ""
        workers = ", ".join(f"{m:.0f}" for m in r.get("worker_peak_mb", [])) or "-"
        print(f"| {r['engine']} | {r.get('partitions', 1)} | {r['seconds']:.1f}{extra} | {r['n'] / r['seconds']:,.0f} | "
              f"{r['client_peak_mb']:.0f} | {workers} | {_max_rel_diff(ref['table'], r['table']):.1e} |")
    print("\nProjection to 1,000,000,000 decisions, a LINEAR EXTRAPOLATION of each measured rate "
          "(same machine, same shape of logs):")
    for r in results:
        print(f"- {r['engine']}: {1e9 / (r['n'] / r['seconds']) / 3600:.1f} h")
    if fits:
        scan_run, one, map_run, shuffled = fits
        n = scan_run["decisions"]
        plan, scan = scan_run["plan_s"] / n, scan_run["seconds"] / n
        work = max(one["seconds"] / n - scan, 0.0)
        tasks = -(-10**9 // 4_000_000)
        cpu = tasks * 1e9 * scan + 1e9 * work
        print(f"\nModel, measured here: the plan {plan * 1e9:.0f} ns per decision (client, serial); a pass over the "
              f"files keeping nothing {scan * 1e9:.0f} ns per decision (every task makes one); the work on the kept "
              f"rounds {work * 1e9:.0f} ns per decision (one partition minus one pass). For 1e9 decisions in tasks "
              f"of 4,000,000 ({tasks} tasks, each scanning everything): plan {1e9 * plan / 3600:.2f} h, then "
              f"{tasks} x 1e9 x scan + 1e9 x work = {cpu / 3600:.1f} CPU-hours: {cpu / 3600 / args.workers:.1f} h on "
              f"{args.workers} workers, {cpu / 3600 / 100:.2f} h on 100 (the scans are {tasks * scan / (tasks * scan + work):.0%} of it)")
        mapped = map_run["seconds"] / n
        reduce = max(shuffled["seconds"] / n - plan - mapped, 0.0)
        cpu_shuffled = 1e9 * (mapped + reduce)
        print(f"\nWith the shuffle (ope.shuffle), measured here at {map_run['partitions']} partitions: the map (read the "
              f"needed columns once, write each partition's rows: {map_run['scratch_mb']:,.0f} MB of scratch) "
              f"{mapped * 1e9:.0f} ns per decision; the reduce (each task reads its own files, then the same work) "
              f"{reduce * 1e9:.0f} ns per decision (the shuffled local engine minus plan and map). For 1e9 decisions: "
              f"plan {1e9 * plan / 3600:.2f} h, then 1e9 x (map + reduce) = {cpu_shuffled / 3600:.1f} CPU-hours "
              f"whatever the number of tasks: {cpu_shuffled / 3600 / args.workers:.1f} h on {args.workers} workers, "
              f"{cpu_shuffled / 3600 / 100:.2f} h on 100 ({cpu / cpu_shuffled:.1f}x less than scanning); the shuffle "
              f"pays from about {mapped / scan:.0f} partitions (map / one pass) on.")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "results": results, "fits": fits}, indent=1))


if __name__ == "__main__":
    main()
