"""Error rates of ``banditroute promote`` for a *learning* candidate, end to end through the CLI.

Each replication writes a fresh log: ``--profiles`` profiles with equal configured cost and
latency, decided for ``--n`` requests (empty contexts) by a logging router with a high
exploration floor (near-uniform logging: every profile has probability at least
``exploration / K``), outcomes Bernoulli(quality of the executed profile). The candidate is the
routes file itself (``config:routes.toml``, a Thompson-sampling router that learns from its
prior), the baseline ``uniform``; the command is the README's, all defaults::

    python -m banditroute promote --logs LOGS --config routes.toml \\
        --candidate config:routes.toml --baseline uniform

Scenarios:

- ``null``: every profile has quality 0.5. Every policy has the same true value, so the
  candidate's true gain is 0: a promotion is a false promotion (should be <= alpha = 5%).
- ``gain``: one profile has quality ``0.5 + --gain``: the learning candidate is truly better
  than uniform (it finds that profile), so it should be promoted (power).

Run: ``python benchmarks/bench_promotion_errors.py --reps 200 --workers 2`` (``--scenarios``,
``--n``, ``--profiles``, ``--gain``, ``--learning`` to change them; ``--before DIR`` runs the
CLI of another checkout, e.g. a git worktree of the previous commit).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def routes_toml(k: int, tasks: int) -> str:
    head = "" if tasks <= 1 else "[router]\ntask_types = [" + ", ".join(f'"t{j}"' for j in range(tasks)) + "]\n\n"
    return head + "".join(f'[[profiles]]\nname = "p{i}"\ncost_usd = 0.001\nlatency_ms = 300\n\n' for i in range(k))


def write_logs(log_dir: Path, *, n: int, k: int, qualities: np.ndarray, exploration: float, seed: int,
               src: Path, tasks: int) -> None:
    sys.path.insert(0, str(src))
    import banditroute as br

    rng = np.random.default_rng(seed)
    task_types = [f"t{j}" for j in range(tasks)] if tasks > 1 else ["default"]
    router = br.Router([br.Profile(f"p{i}", cost_usd=0.001, latency_ms=300) for i in range(k)],
                       task_types=task_types, exploration=exploration, log_dir=str(log_dir), seed=seed)
    with router:
        for _ in range(n):
            d = router.decide({"task_type": task_types[rng.integers(tasks)]} if tasks > 1 else {})
            router.record(d.id, quality=float(rng.random() < qualities[int(d.profile[1:])]))


def one(args: tuple) -> dict:
    scenario, rep, n, k, gain, exploration, learning, src, tasks, baseline = args
    seed = 1_000_003 * (1 if scenario == "null" else 2) + rep
    qualities = np.full(k, 0.5)
    if scenario == "gain":
        qualities[np.random.default_rng(seed).integers(k)] += gain
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_logs(root / "logs", n=n, k=k, qualities=qualities, exploration=exploration, seed=seed, src=Path(src),
                   tasks=tasks)
        (root / "routes.toml").write_text(routes_toml(k, tasks))
        cmd = [sys.executable, "-m", "banditroute", "promote", "--logs", "logs", "--config", "routes.toml",
               "--candidate", "config:routes.toml", "--baseline", baseline]
        if learning:
            cmd += ["--learning", learning]
        env = {**os.environ, "PYTHONPATH": str(src)}
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        raise RuntimeError(f"{scenario} rep {rep}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return {"scenario": scenario, "rep": rep, "promote": out.returncode == 0, "seconds": elapsed}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--profiles", type=int, default=8)
    ap.add_argument("--gain", type=float, default=0.2)
    ap.add_argument("--exploration", type=float, default=0.8)
    ap.add_argument("--scenarios", default="null,gain")
    ap.add_argument("--learning", default=None, help="--learning passed to promote (default: the CLI's default)")
    ap.add_argument("--tasks", type=int, default=1, help="task types in the contexts (uniform; 1: empty contexts)")
    ap.add_argument("--baseline", default="uniform", help="--baseline SPEC of promote")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--before", default=None, help="checkout whose banditroute and ope run the CLI")
    a = ap.parse_args(argv)
    src = str(Path(a.before).resolve() if a.before else ROOT)
    jobs = [(s, r, a.n, a.profiles, a.gain, a.exploration, a.learning, src, a.tasks, a.baseline)
            for s in a.scenarios.split(",") for r in range(a.reps)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - t0
    print(f"code: {src}; n = {a.n:,} rounds, {a.profiles} profiles, exploration floor {a.exploration} "
          f"(each profile logged with p >= {a.exploration / a.profiles:.3f}), learning = {a.learning or 'default'}, "
          f"{a.tasks} task type(s), baseline {a.baseline}, "
          f"{a.reps} replications per scenario, {wall:.0f} s wall\n")
    print("| scenario | true gain of the candidate | replications | promoted | MC s.e. | 95% upper bound | median CLI s |")
    print("|---|---|---|---|---|---|---|")
    for s in a.scenarios.split(","):
        rows = [r for r in results if r["scenario"] == s]
        p = sum(r["promote"] for r in rows) / len(rows)
        se = math.sqrt(max(p * (1 - p), 1e-12) / len(rows))
        truth = "0 (all profiles equal)" if s == "null" else f"> 0 (one profile +{a.gain:g})"
        print(f"| {s} | {truth} | {len(rows)} | {p:.1%} | {se:.1%} | {min(1.0, p + 1.645 * se):.1%} | "
              f"{np.median([r['seconds'] for r in rows]):.1f} |")


if __name__ == "__main__":
    main()
