"""Load generator for the banditroute service: decide + outcome pairs over keep-alive HTTP/1.1.

A small asyncio client of its own (raw HTTP/1.1 on asyncio streams, uvloop when installed):
``--connections`` connections each loop decide -> outcome until ``--pairs`` pairs or
``--duration`` seconds, whichever first. Loopback only. Records per-request latency and,
with ``--acked FILE``, every decision id and outcome acknowledged with 2xx (for fault tests).

Run: python benchmarks/loadgen.py --port 8080 --connections 32 --duration 10 [--token T] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import numpy as np

TASKS = ("chat", "code", "math")


class _Conn:
    def __init__(self, host, port, token):
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host.encode() + b"\r\n" + self.auth
                          + b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                          + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        i = head.lower().find(b"content-length:")
        length = int(head[i + 15:head.index(b"\r\n", i)]) if i >= 0 else 0
        return status, await self.reader.readexactly(length)


async def _worker(host, port, token, deadline, budget, stats, rng, acked):
    conn = _Conn(host, port, token)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            ctx = {"task_type": TASKS[rng.randrange(3)], "tenant": "acme", "prompt_tokens": rng.randrange(10, 4000)}
            t0 = time.perf_counter()
            try:
                status, body = await conn.post("/v1/decide", json.dumps({"context": ctx}).encode())
            except (OSError, asyncio.IncompleteReadError, ValueError):
                stats["conn_errors"] += 1
                conn.close()
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if status != 200:
                stats["errors"][status] = stats["errors"].get(status, 0) + 1
                continue
            stats["decide_s"].append(t1 - t0)
            did = json.loads(body)["id"]
            if acked is not None:
                acked["decisions"].append(did)
            out = {"decision_id": did, "quality": float(rng.random() < 0.7), "latency_ms": 500.0}
            try:
                status, _ = await conn.post("/v1/outcome", json.dumps(out).encode())
            except (OSError, asyncio.IncompleteReadError, ValueError):
                stats["conn_errors"] += 1
                conn.close()
                continue
            if status != 200:
                stats["errors"][status] = stats["errors"].get(status, 0) + 1
                continue
            stats["outcome_s"].append(time.perf_counter() - t1)
            stats["pairs"] += 1
            if acked is not None:
                acked["outcomes"].append(did)
    finally:
        conn.close()


async def run_load(*, host: str = "127.0.0.1", port: int, connections: int = 32, duration_s: float = 10.0,
                   max_pairs: int = 1_000_000, token: str | None = None, seed: int = 0,
                   acked: dict | None = None) -> dict:
    """Drive decide+outcome pairs; return throughput and latency percentiles (ms)."""
    stats = {"pairs": 0, "decide_s": [], "outcome_s": [], "errors": {}, "conn_errors": 0}
    budget = [max_pairs]
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(*(_worker(host, port, token, deadline, budget, stats, random.Random(seed * 1000 + i), acked)
                           for i in range(connections)))
    elapsed = time.perf_counter() - start
    out = {"connections": connections, "elapsed_s": elapsed, "pairs": stats["pairs"],
           "pairs_per_s": stats["pairs"] / elapsed, "decisions_per_s": len(stats["decide_s"]) / elapsed,
           "errors": stats["errors"], "conn_errors": stats["conn_errors"]}
    for name in ("decide", "outcome"):
        arr = np.asarray(stats[f"{name}_s"]) * 1e3
        if arr.size:
            out[f"{name}_p50_ms"] = float(np.percentile(arr, 50))
            out[f"{name}_p99_ms"] = float(np.percentile(arr, 99))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (bounded)")
    p.add_argument("--pairs", type=int, default=1_000_000, help="at most this many pairs")
    p.add_argument("--token", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--acked", help="write acknowledged decision and outcome ids to this JSON file")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("--host must be loopback")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    acked = {"decisions": [], "outcomes": []} if args.acked else None
    result = asyncio.run(run_load(host=args.host, port=args.port, connections=args.connections,
                                  duration_s=min(args.duration, 300.0), max_pairs=args.pairs, token=args.token,
                                  seed=args.seed, acked=acked))
    if args.acked:
        with open(args.acked, "w") as fh:
            json.dump(acked, fh)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
