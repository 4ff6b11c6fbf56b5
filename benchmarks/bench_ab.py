"""Two source trees side by side on the router's hot paths (e.g. before and after a change).

Each round runs, in a fresh process per tree (order alternating), ``bench_router.py``'s setup:
8 profiles x 6 task types, logging on, a posterior trained on 5,000 outcomes; then the anchor
(a bare Thompson draw), ``decide``, ``record`` (20,000 calls each; medians) and batches of
100,000 (dicts, DataFrame). Prints the medians over rounds and the after/before ratios.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_ab.py --before /tmp/before --after . --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SNIPPET = r"""
import json, os, sys, tempfile
import numpy as np, polars as pl
sys.path.insert(0, os.path.join(os.environ["TREE"], "benchmarks"))
import bench_router as b
rng = np.random.default_rng(1)
with tempfile.TemporaryDirectory() as tmp:
    router, tasks, truth = b.make_router(os.path.join(tmp, "r"))
    ctxs = b.contexts(tasks, 20000, rng)
    row = {"anchor": b.bench_anchor(truth, 20000, rng)[0], "decide": b.bench_decide(router, ctxs)[0],
           "record": b.bench_record(router, ctxs, truth, rng)[0],
           "batch_rows": b.bench_batch(router, b.contexts(tasks, 100000, rng)),
           "batch_frame": b.bench_batch(router, pl.DataFrame(b.contexts(tasks, 100000, rng)))}
    router.close()
print(json.dumps(row))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="source tree (holds banditroute/ and benchmarks/)")
    parser.add_argument("--after", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    out = {name: [] for name in trees}
    for r in range(args.rounds):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            env = dict(os.environ, PYTHONPATH=trees[name], TREE=trees[name])
            res = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, cwd="/")
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
                return 1
            out[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(r, name, out[name][-1], flush=True)
    print("\nmedians over rounds (µs per call; decisions/s for batches), after/before:")
    for key in out["before"][0]:
        b = statistics.median(x[key] for x in out["before"])
        a = statistics.median(x[key] for x in out["after"])
        print(f"{key:>12}: before {b:,.2f}  after {a:,.2f}  ratio {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
