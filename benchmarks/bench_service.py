"""Service throughput and latency: decide+outcome pairs over loopback, 1 and 2 worker processes.

Starts ``python -m banditroute serve`` (uvicorn) on a free loopback port with a 3-profile x
3-task-type routes file and a fresh log directory, waits for /healthz, then runs the load
generator (benchmarks/loadgen.py, in its own process) for ``--duration`` seconds per run.
Every acknowledged request is durably logged (group commit) before its response.

Run: python benchmarks/bench_service.py [--workers 1 2] [--runs 3] [--duration 10] [--connections 48]
     [--client loadgen|wrk] [--json out.json]

With ``--client wrk`` the load comes from Debian's wrk (C) running benchmarks/wrk_pair.lua, so
the client takes little of the two cores; its latency percentiles mix decide and outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROUTES = """
[router]
task_types = ["chat", "code", "math"]
[[profiles]]
name = "small"
cost_usd = 0.0004
latency_ms = 400
[[profiles]]
name = "medium"
cost_usd = 0.002
latency_ms = 900
[[profiles]]
name = "large"
cost_usd = 0.012
latency_ms = 2500
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"service on port {port} did not become healthy")


def start_service(workdir: Path, port: int, *, workers: int = 1, extra=(), log_dir=None) -> subprocess.Popen:
    routes = workdir / "routes.toml"
    if not routes.exists():
        routes.write_text(ROUTES)
    cmd = [sys.executable, "-m", "banditroute", "serve", "--config", str(routes), "--port", str(port),
           "--log-dir", str(log_dir or workdir / "logs"), "--workers", str(workers), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / f"server-{port}.log", "ab"),
                            start_new_session=True)
    try:
        wait_healthy(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def stop_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def run_loadgen(port: int, *, connections: int, duration_s: float, extra=()) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--connections",
                          str(connections), "--duration", str(duration_s), "--json", *extra],
                         capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_wrk(port: int, *, connections: int, duration_s: float) -> dict:
    """Debian's wrk (C, so the client takes little CPU from the server) with wrk_pair.lua:
    one connection per wrk thread, alternating decide and the outcome of its own decision.
    Latency percentiles cover decide and outcome requests together."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    out = subprocess.run(["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{duration_s:g}s", "--latency",
                          "-s", str(HERE / "wrk_pair.lua"), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=duration_s + 60)
    text = out.stdout

    def ms(label: str) -> float:
        value = text.split(label, 1)[1].split()[0]
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
        unit = next(u for u in ("us", "ms", "s") if value.endswith(u))
        return float(value[: -len(unit)]) * scale[unit]

    rps = float(text.split("Requests/sec:", 1)[1].split()[0])
    non_2xx = int(text.split("Non-2xx or 3xx responses:", 1)[1].split()[0]) if "Non-2xx" in text else 0
    return {"pairs_per_s": rps / 2, "decide_p50_ms": ms(" 50%"), "decide_p99_ms": ms(" 99%"),
            "outcome_p50_ms": ms(" 50%"), "outcome_p99_ms": ms(" 99%"), "errors": non_2xx, "conn_errors": 0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=48)
    p.add_argument("--serve-args", default="", help="extra arguments for the service, space-separated")
    p.add_argument("--client", choices=["loadgen", "wrk"], default="loadgen",
                   help="load generator: our asyncio client, or Debian's wrk with wrk_pair.lua")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}, "runs": {}}
    for workers in args.workers:
        rows = []
        for run in range(args.runs):
            workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
            port = free_port()
            proc = start_service(workdir, port, workers=workers, extra=args.serve_args.split())
            try:
                run_client = run_wrk if args.client == "wrk" else run_loadgen
                rows.append(run_client(port, connections=args.connections, duration_s=args.duration))
            finally:
                stop_service(proc)
                shutil.rmtree(workdir, ignore_errors=True)
            r = rows[-1]
            print(f"workers={workers} run={run}: {r['pairs_per_s']:.0f} pairs/s, decide p50 {r['decide_p50_ms']:.1f} "
                  f"ms p99 {r['decide_p99_ms']:.1f} ms, outcome p50 {r['outcome_p50_ms']:.1f} ms p99 "
                  f"{r['outcome_p99_ms']:.1f} ms, errors {r['errors']} {r['conn_errors']}", flush=True)
        summary = {}
        for key in ("pairs_per_s", "decide_p50_ms", "decide_p99_ms", "outcome_p50_ms", "outcome_p99_ms"):
            vals = [r[key] for r in rows]
            summary[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        results["runs"][str(workers)] = {"summary": summary, "rows": rows}
        s = summary
        print(f"== workers={workers}: median {s['pairs_per_s']['median']:.0f} pairs/s "
              f"[{s['pairs_per_s']['min']:.0f}, {s['pairs_per_s']['max']:.0f}], decide p50 "
              f"{s['decide_p50_ms']['median']:.1f} ms, p99 {s['decide_p99_ms']['median']:.1f} ms "
              f"[{s['decide_p99_ms']['min']:.1f}, {s['decide_p99_ms']['max']:.1f}]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
