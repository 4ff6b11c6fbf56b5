"""Mutation testing of the core with mutmut (run by hand, never by .ci/run): TESTING.md.

    .venv/bin/pip install -e '.[dev,mutation]'
    .venv/bin/python .ci/mutation.py run --per-module 40 --seed 0   # a stratified sample (~40 min)
    .venv/bin/python .ci/mutation.py run --all                      # every mutant (hours on 2 cores)
    .venv/bin/python .ci/mutation.py run --survivors                # again, every sample's survivors
    .venv/bin/python .ci/mutation.py run --per-module 40 --seed 1 --fresh   # a new sample, disjoint
    .venv/bin/python .ci/mutation.py report [--survivors]           # kill rate per module

The modules and the test selection are ``[tool.mutmut]`` in pyproject.toml. A mutant counts as
killed when a test failed or timed out on it; "no tests" (no selected test runs the mutated
function) counts as surviving. With a sample, each module's kill rate comes with a 95% Wilson
interval.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {1, 3, 36, -24, 24, 152, 255}  # failed, pytest internal error, timeouts (mutmut's codes)
SURVIVED = {0, 5, 33}  # survived, no tests
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
SAMPLE = Path("mutants") / "sample.json"  # the last sample
SAMPLED = Path("mutants") / "sampled.json"  # every mutant sampled so far


def metas(folder: Path) -> dict[str, dict]:
    return {str(m.relative_to(folder))[: -len(".meta")]: json.loads(m.read_text())["exit_code_by_key"]
            for m in sorted(folder.rglob("*.py.meta"))}


def run(args) -> int:
    folder = Path("mutants")
    if not folder.exists() or not metas(folder):  # generate the mutants and the test map, run none
        subprocess.run([MUTMUT, "run", "--max-children", str(args.max_children), "__generate_only__"], check=False)
    by_module = metas(folder)
    if args.survivors:  # after new tests: forget the survivors' verdicts and run them again
        chosen = set(json.loads(SAMPLED.read_text())) if SAMPLED.exists() else None
        names = []
        for meta in sorted(folder.rglob("*.py.meta")):
            data = json.loads(meta.read_text())
            codes = data["exit_code_by_key"]
            # survivors, and sampled mutants whose verdict a change of their source reset
            again = [n for n, c in codes.items() if c not in KILLED and (chosen is None and c is not None
                                                                          or chosen is not None and n in chosen)]
            for n in again:
                codes[n] = None
            meta.write_text(json.dumps(data, indent=4))
            names += again
        print(f"running {len(names)} surviving mutants again", file=sys.stderr)
        return subprocess.run([MUTMUT, "run", "--max-children", str(args.max_children), *names]).returncode
    if args.all:
        names = [n for codes in by_module.values() for n in codes]
    else:
        rng = random.Random(args.seed)
        names = []
        earlier = set(json.loads(SAMPLED.read_text())) if args.fresh and SAMPLED.exists() else set()
        for module, codes in by_module.items():
            keys = sorted(set(codes) - earlier)
            names += keys if len(keys) <= args.per_module else sorted(rng.sample(keys, args.per_module))
    SAMPLE.write_text(json.dumps(names))
    if not args.all:
        (folder / f"sample-seed{args.seed}.json").write_text(json.dumps(names))
    sampled = set(json.loads(SAMPLED.read_text())) if SAMPLED.exists() else set()
    SAMPLED.write_text(json.dumps(sorted(sampled | set(names))))
    print(f"running {len(names)} mutants", file=sys.stderr)
    return subprocess.run([MUTMUT, "run", "--max-children", str(args.max_children), *names]).returncode


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def report(args) -> int:
    by_module = metas(Path("mutants"))
    if not by_module:
        print("no mutmut results under mutants/ (run first)", file=sys.stderr)
        return 2
    sample = Path(args.sample) if args.sample else SAMPLE
    chosen = set(json.loads(sample.read_text())) if sample.exists() else None
    print("| module | mutants | tested | killed | surviving | kill rate | 95% interval |")
    print("|---|---:|---:|---:|---:|---:|---|")
    total, survivors = Counter(), defaultdict(list)
    for module, codes in by_module.items():
        c = Counter()
        for name, code in codes.items():
            if chosen is not None and name not in chosen or code is None:
                continue
            status = "killed" if code in KILLED else "survived" if code in SURVIVED else "other"
            c[status] += 1
            if status != "killed":
                survivors[module].append((name, code))
        n = c["killed"] + c["survived"] + c["other"]
        total.update(c)
        total["all"] += len(codes)
        lo, hi = wilson(c["killed"], n)
        rate = f"{100 * c['killed'] / n:.1f}%" if n else "-"
        print(f"| `{module}` | {len(codes)} | {n} | {c['killed']} | {n - c['killed']} | {rate} | "
              f"{100 * lo:.0f}-{100 * hi:.0f}% |")
    n = total["killed"] + total["survived"] + total["other"]
    print(f"| all | {total['all']} | {n} | {total['killed']} | {n - total['killed']} | "
          f"{100 * total['killed'] / max(n, 1):.1f}% | |")
    if args.survivors:
        for module, names in survivors.items():
            print(f"\n{module}:")
            for name, code in names:
                print(f"  {name}  (exit code {code})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a stratified sample of the mutants (or all)")
    p.add_argument("--per-module", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all", action="store_true")
    p.add_argument("--survivors", action="store_true", help="run every sample's survivors again")
    p.add_argument("--fresh", action="store_true", help="sample only mutants no earlier sample took")
    p.add_argument("--max-children", type=int, default=2)
    p.set_defaults(func=run)
    p = sub.add_parser("report", help="kill rate per module")
    p.add_argument("--survivors", action="store_true", help="list the surviving mutants by module")
    p.add_argument("--sample", help="report on this sample (default: the last one; mutants/sample-seedN.json)")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
