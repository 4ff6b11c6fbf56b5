"""One command for the side-by-side suite (issue 8): banditroute vs MABWiser, VW, OBP and a static table.

    pip install -e '.[bench]'                  # mabwiser, matplotlib (VW is a core dependency)
    bash benchmarks/setup_obp_venv.sh          # OBP 0.5.7 needs its own venv (it pins Python < 3.11)
    python benchmarks/run_suite.py             # ~10 min on 2 cores; --quick for a smoke run

Runs, one after the other (never concurrently: they time things):

1. ``bench_peers.py``   decision path: latency, batch throughput, propensity cost, record vs partial_fit,
                        linear TS vs MABWiser LinTS, TS propensities vs OBP's BernoulliTS;
2. ``bench_ope_obp.py`` OPE path at 1M and 10M rounds vs OBP (in the OBP venv): wall time, peak
                        memory, agreement, bootstrap intervals;
3. ``bench_regret.py``  routing quality on the simulator, stationary and drifting, several seeds,
                        and the regret plot ``benchmarks/regret.png``.

Each script prints Markdown; the suite writes them, with the command, the machine and the load
average before and after each part, into ``benchmarks/results/suite.md`` and (``--update``)
between the suite markers of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- suite:start -->", "<!-- suite:end -->"


def parts(quick: bool, obp_python: str) -> list[tuple[str, list[str]]]:
    py = sys.executable
    if quick:
        return [("Decision path", [py, str(HERE / "bench_peers.py"), "--runs", "2", "--calls", "500", "--batch",
                                   "2000", "--batch-slow", "500", "--mc-reps", "2", "--obp-python", obp_python]),
                ("OPE path", [obp_python, str(HERE / "bench_ope_obp.py"), "--rounds", "100000", "--runs", "2",
                              "--boot-runs", "1", "--memory-runs", "1"]),
                ("Routing quality", [py, str(HERE / "bench_regret.py"), "--requests", "3000", "--seeds", "0", "1",
                                     "--plot", str(HERE / "results" / "regret-quick.png")])]
    return [("Decision path", [py, str(HERE / "bench_peers.py"), "--runs", "5", "--obp-python", obp_python]),
            ("OPE path", [obp_python, str(HERE / "bench_ope_obp.py"), "--rounds", "1000000", "10000000",
                          "--runs", "5"]),
            ("Routing quality", [py, str(HERE / "bench_regret.py"), "--requests", "20000", "--seeds", "0", "1", "2",
                                 "3", "4", "--plot", str(HERE / "regret.png")])]


def machine() -> str:
    def version(name: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(name)
        except Exception:  # noqa: BLE001 - not installed
            return "not installed"

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    libs = ", ".join(f"{n} {version(n)}" for n in ("numpy", "polars", "scikit-learn", "mabwiser",
                                                   "vowpal-wabbit-next"))
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}; {libs}; "
            "OBP 0.5.7 in its own venv")


def _demote(markdown: str) -> str:
    """Headings of a part go below the suite's own: its top level becomes ####."""
    lines = markdown.splitlines()
    levels = [len(line) - len(line.lstrip("#")) for line in lines if line.startswith("#")]
    shift = "#" * max(0, 4 - min(levels)) if levels else ""
    return "\n".join(shift + line if line.startswith("#") else line for line in lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: checks the suite runs, numbers mean little")
    p.add_argument("--obp-python", default=os.environ.get("OBP_PYTHON", "/work/venv-obp/bin/python"),
                   help="python of the OBP venv (benchmarks/setup_obp_venv.sh builds it)")
    p.add_argument("--only", nargs="+", choices=["Decision path", "OPE path", "Routing quality"],
                   help="run only these parts")
    p.add_argument("--update", action="store_true", help="write the results into BENCHMARKS.md (between the markers)")
    args = p.parse_args(argv)
    if not Path(args.obp_python).exists():
        print(f"OBP venv not found at {args.obp_python}: run `bash benchmarks/setup_obp_venv.sh` "
              "(or pass --obp-python); the OBP rows are skipped", file=sys.stderr)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    command = "python benchmarks/run_suite.py" + (" --quick" if args.quick else "")
    sections = [f"Command: `{command}` ({dt.date.today().isoformat()}). Machine: {machine()}.", ""]
    failed = []
    for title, cmd in parts(args.quick, args.obp_python):
        if args.only and title not in args.only:
            continue
        if cmd[0] == args.obp_python and not Path(args.obp_python).exists():
            sections += [f"### {title}", "", "Skipped: no OBP venv.", ""]
            continue
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        print(f"== {title}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        minutes = (time.monotonic() - t0) / 60
        sys.stderr.write(proc.stderr[-2000:])
        if proc.returncode != 0:
            failed.append(title)
        rel = shlex.join([Path(c).relative_to(ROOT).as_posix() if c.startswith(str(ROOT)) else c
                          for c in cmd[1:]])
        sections += [f"### {title}", "",
                     f"`python {rel}` ({minutes:.1f} min; load average {load_before:.2f} before, "
                     f"{os.getloadavg()[0]:.2f} after{'; FAILED, exit ' + str(proc.returncode) if proc.returncode else ''})",
                     "", _demote(proc.stdout.strip()), ""]
    text = "\n".join(sections).rstrip() + "\n"
    (out_dir / ("suite-quick.md" if args.quick else "suite.md")).write_text(text)
    print(text)
    if args.update and not args.quick:
        bench = ROOT / "BENCHMARKS.md"
        doc = bench.read_text()
        if START in doc and END in doc:
            doc = doc.split(START)[0] + START + "\n" + text + END + doc.split(END, 1)[1]
        else:
            doc = doc.rstrip() + "\n\n## Side by side with the alternatives (issue 8)\n\n" + START + "\n" + text + END + "\n"
        bench.write_text(doc)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
