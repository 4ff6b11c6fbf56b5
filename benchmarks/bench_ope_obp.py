"""ope vs Open Bandit Pipeline 0.5.7: same inputs, same values, time and memory side by side.

Run in the OBP venv (see benchmarks/setup_obp_venv.sh); the default does everything:

    /work/venv-obp/bin/python benchmarks/bench_ope_obp.py --rounds 1000000 10000000 --runs 5 --json out.json

1. Agreement (``--agreement-rounds``, 100,000 x 8 actions): IPS (plain and clipped), SNIPS, DM,
   DR, SNDR, Switch-DR and DRos on the same actions, rewards, propensities, target and reward
   predictions, for a stochastic and a deterministic target; prints every |ours - OBP|.
2. For each ``--rounds`` size (``--actions`` actions, a Dirichlet logging policy with a 10%
   uniform floor, a Dirichlet target, uniform reward predictions, Bernoulli(0.5) rewards):
   a. point estimates of IPS, SNIPS and DR (reward predictions given), ours vs OBP on the same
      arrays: one untimed warm-up call each, then ``--runs`` alternating runs (ours first in
      even runs, OBP first in odd ones); median [min, max] per side and OBP/ours, and
      |ours - OBP| of the three estimates at this size;
   b. bootstrap intervals (``--n-bootstrap`` resamples): ours ``estimate(interval="bootstrap")``
      vs OBP's ``estimate_interval``, alternating, ``--boot-runs`` runs. Above
      ``--obp-boot-max-rounds`` OBP's Python loop over resamples would take minutes per call: it
      runs ``--obp-boot-resamples`` resamples and the time is extrapolated linearly,
      ``t(B) = t_point + (t(b) - t_point) * B / b`` (t_point: OBP's median point-estimate time).
      Our default bootstrap resamples 20,000 random groups of rounds above 20,000 rounds; the
      rows "ours, per-round" (``--exact-boot``) time ``bootstrap_units=None``, which resamples
      single rounds as OBP does;
   c. peak memory (after the parent dropped its arrays): every (library, call) in a fresh
      interpreter that builds the same inputs, resets the peak-RSS counter
      (``/proc/self/clear_refs``), runs the call once and reports the peak RSS (``VmHWM``) minus
      the RSS before the call; then, in the same process, ``tracemalloc``'s peak over a second
      call (numpy reports its buffers to tracemalloc). The workers run with glibc's
      ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB, so that large blocks freed while building the
      inputs are returned to the system instead of being silently reused by the call. RSS is
      what the machine pays (page-granular; untouched ``np.zeros`` pages are free);
      tracemalloc counts the bytes numpy asked for. ``ru_maxrss`` alone cannot do this: it is
      a high-water mark that building the inputs has already raised (and, after a vfork, may
      carry the parent's). Without ``/proc`` the worker falls back to the ``ru_maxrss``
      difference, a lower bound, and says so.

The default run takes about 7 minutes on 2 cores, most of it OBP's bootstrap at 1,000,000 rounds.

"Ours" is always the public call a user makes, ``ope.IPS().estimate(fb, target)`` (likewise
SNIPS and ``ope.DR(reward_predictions=q)``), which validates the target (shape, finite,
non-negative, rows summing to 1) and the reward predictions, and returns the value with its
standard error, a normal (delta-method for SNIPS) interval, the per-round values and every
weight diagnostic (ESS, max and mean weight with its z-test, support deficiency).
``LoggedFeedback`` validates actions, rewards and propensities once per log; its construction
is timed separately. OBP's ``estimate_policy_value`` checks its inputs on every call and
returns the value only.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

import ope
from ope.synthetic import SyntheticProblem

ESTIMATORS = ("IPS", "SNIPS", "DR")
_CHUNK_ROWS = 500_000  # input generation works in chunks: same arrays for any size, bounded temporaries
_MB = 1024 * 1024


# ---------------------------------------------------------------- inputs and the two libraries


def make_inputs(n_rounds: int, n_actions: int, *, seed: int = 0, predictions: bool = True) -> dict[str, Any]:
    """Logged data, target and reward predictions; identical in every process for a given seed."""
    seeds = np.random.SeedSequence(seed).spawn(3)
    rng_log, rng_target, rng_q = (np.random.default_rng(s) for s in seeds)
    actions = np.empty(n_rounds, dtype=np.int64)
    pscore = np.empty(n_rounds)
    rewards = np.empty(n_rounds)
    target = np.empty((n_rounds, n_actions))
    q = np.empty((n_rounds, n_actions)) if predictions else None
    alpha = np.ones(n_actions)
    for start in range(0, n_rounds, _CHUNK_ROWS):
        stop = min(n_rounds, start + _CHUNK_ROWS)
        size = stop - start
        logging = rng_log.dirichlet(alpha, size=size) * 0.9 + 0.1 / n_actions
        a = (logging.cumsum(axis=1) < rng_log.random((size, 1))).sum(axis=1).clip(max=n_actions - 1)
        actions[start:stop] = a
        pscore[start:stop] = logging[np.arange(size), a]
        rewards[start:stop] = rng_log.binomial(1, 0.5, size)
        target[start:stop] = rng_target.dirichlet(alpha, size=size)
        if q is not None:
            q[start:stop] = rng_q.random((size, n_actions))
    return {"actions": actions, "rewards": rewards, "pscore": pscore, "target": target, "q": q}


def build_feedback(d: dict[str, Any]) -> ope.LoggedFeedback:
    return ope.LoggedFeedback(
        actions=d["actions"], rewards=d["rewards"], propensities=d["pscore"], n_actions=d["target"].shape[1]
    )


def point_calls(
    d: dict[str, Any], fb: ope.LoggedFeedback | None, libs: tuple[str, ...] = ("ours", "OBP")
) -> dict[str, dict[str, Callable[[], float]]]:
    """{estimator: {"ours": f, "OBP": g}}; each call returns the point estimate."""
    target, q = d["target"], d["q"]
    calls: dict[str, dict[str, Callable[[], float]]] = {"IPS": {}, "SNIPS": {}}
    if q is not None:
        calls["DR"] = {}
    if "ours" in libs:
        calls["IPS"]["ours"] = lambda: ope.IPS().estimate(fb, target).value
        calls["SNIPS"]["ours"] = lambda: ope.SNIPS().estimate(fb, target).value
        if q is not None:
            calls["DR"]["ours"] = lambda: ope.DR(reward_predictions=q).estimate(fb, target).value
    if "OBP" in libs:
        from obp.ope import estimators as obp

        kw = dict(reward=d["rewards"], action=d["actions"], pscore=d["pscore"], action_dist=target[:, :, None])
        calls["IPS"]["OBP"] = lambda: float(obp.InverseProbabilityWeighting().estimate_policy_value(**kw))
        calls["SNIPS"]["OBP"] = lambda: float(obp.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw))
        if q is not None:
            calls["DR"]["OBP"] = lambda: float(
                obp.DoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q[:, :, None])
            )
    return calls


def boot_calls(d: dict[str, Any], fb: ope.LoggedFeedback, n_bootstrap: int, obp_resamples: int, units: Any):
    """{estimator: {"ours": f(seed), "OBP": g(seed)}}; each returns (ci_low, ci_high)."""
    from obp.ope import estimators as obp

    target, q = d["target"], d["q"]
    kw = dict(reward=d["rewards"], action=d["actions"], pscore=d["pscore"], action_dist=target[:, :, None])
    ours = {"IPS": ope.IPS(), "SNIPS": ope.SNIPS(), "DR": ope.DR(reward_predictions=q)}
    theirs = {
        "IPS": (obp.InverseProbabilityWeighting, {}),
        "SNIPS": (obp.SelfNormalizedInverseProbabilityWeighting, {}),
        "DR": (obp.DoublyRobust, {"estimated_rewards_by_reg_model": q[:, :, None]}),
    }

    def ours_call(name: str) -> Callable[[int], tuple[float, float]]:
        def run(seed: int) -> tuple[float, float]:
            e = ours[name].estimate(
                fb, target, interval="bootstrap", n_bootstrap=n_bootstrap, seed=seed, bootstrap_units=units
            )
            return e.ci_low, e.ci_high

        return run

    def obp_call(name: str) -> Callable[[int], tuple[float, float]]:
        cls, extra = theirs[name]

        def run(seed: int) -> tuple[float, float]:
            ci = cls().estimate_interval(**kw, **extra, n_bootstrap_samples=obp_resamples, random_state=seed)
            low, high = list(ci.values())[1:]
            return float(low), float(high)

        return run

    return {name: {"ours": ours_call(name), "OBP": obp_call(name)} for name in ESTIMATORS}


# ---------------------------------------------------------------- measurement helpers


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stats(ts: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}


def fmt_time(s: dict[str, float]) -> str:
    if s["median"] >= 1.0:
        return f"{s['median']:.2f} s [{s['min']:.2f}, {s['max']:.2f}]"
    return f"{s['median'] * 1e3:.1f} ms [{s['min'] * 1e3:.1f}, {s['max'] * 1e3:.1f}]"


def fmt_ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.2f}x [{r['min']:.2f}, {r['max']:.2f}]"


def alternate(fns: dict[str, Callable[[], Any]], runs: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time each side ``runs`` times, alternating the order; returns times and the last results."""
    times: dict[str, list[float]] = {side: [] for side in fns}
    results: dict[str, Any] = {}
    sides = list(fns)
    for r in range(runs):
        for side in sides if r % 2 == 0 else sides[::-1]:
            t = time.perf_counter()
            results[side] = fns[side]()
            times[side].append(time.perf_counter() - t)
    return times, results


def ratio_summary(t_ours: list[float], t_obp: list[float]) -> dict[str, float]:
    paired = [b / a for a, b in zip(t_ours, t_obp)]
    return {"median": statistics.median(t_obp) / statistics.median(t_ours), "min": min(paired), "max": max(paired)}


def machine_info() -> dict[str, Any]:
    import numpy
    import obp
    import scipy

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "obp": getattr(obp, "__version__", "?"),
        "platform": platform.platform(),
        "blas_threads_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ},
    }
    try:
        cpuinfo = open("/proc/cpuinfo").read()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1).strip()
        info["mem_total_gb"] = round(int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) / 1024**2, 1)
    except (OSError, AttributeError):
        pass
    return info


# ---------------------------------------------------------------- 1. agreement on many estimators


def agreement(n_rounds: int) -> dict[str, float]:
    from obp.ope import estimators as obp

    data = SyntheticProblem(seed=1, n_actions=8, logging_beta=1.5).sample(n_rounds, seed=2)
    rng = np.random.default_rng(3)
    q = np.clip(data.expected_rewards + rng.normal(0, 0.1, data.expected_rewards.shape), 0, 1)
    fb = data.feedback
    pairs = [
        ("IPS", ope.IPS(), obp.InverseProbabilityWeighting(), False),
        ("IPS clip=3", ope.IPS(clip=3.0), obp.InverseProbabilityWeighting(lambda_=3.0), False),
        ("SNIPS", ope.SNIPS(), obp.SelfNormalizedInverseProbabilityWeighting(), False),
        ("DM", ope.DM(reward_predictions=q), obp.DirectMethod(), True),
        ("DR", ope.DR(reward_predictions=q), obp.DoublyRobust(), True),
        ("DR clip=3", ope.DR(reward_predictions=q, clip=3.0), obp.DoublyRobust(lambda_=3.0), True),
        ("SNDR", ope.SNDR(reward_predictions=q), obp.SelfNormalizedDoublyRobust(), True),
        ("SwitchDR tau=2", ope.SwitchDR(reward_predictions=q, threshold=2.0), obp.SwitchDoublyRobust(lambda_=2.0), True),
        ("DRos lambda=5", ope.DRos(reward_predictions=q, shrinkage=5.0), obp.DoublyRobustWithShrinkage(lambda_=5.0), True),
    ]
    print(f"\n## Agreement on {n_rounds:,} rounds x 8 actions (|ours - OBP|)\n")
    print("| target | estimator | ours | OBP | \\|ours - OBP\\| |")
    print("|---|---|---|---|---|")
    diffs = {}
    for kind, target in (("stochastic", data.target), ("deterministic", ope.one_hot(data.target.argmax(axis=1), 8))):
        for name, ours, theirs, needs_q in pairs:
            kwargs = dict(reward=np.asarray(fb.rewards), action=np.asarray(fb.actions), action_dist=target[:, :, None])
            if not isinstance(theirs, obp.DirectMethod):
                kwargs["pscore"] = np.asarray(fb.propensities)
            if needs_q:
                kwargs["estimated_rewards_by_reg_model"] = q[:, :, None]
            a = ours.estimate(fb, target).value
            b = theirs.estimate_policy_value(**kwargs)
            diffs[f"{kind} {name}"] = abs(a - b)
            print(f"| {kind} | {name} | {a:.15f} | {b:.15f} | {abs(a - b):.1e} |")
    print(f"\nLargest |ours - OBP|: {max(diffs.values()):.1e} over {len(diffs)} cases.")
    return diffs


# ---------------------------------------------------------------- 2b. memory, one fresh process per row


def _proc_status() -> dict[str, int] | None:
    try:
        text = open("/proc/self/status").read()
    except OSError:
        return None
    return {k: int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (and ru_maxrss) to the current RSS; Linux >= 4.0
        return True
    except OSError:
        return False


def memory_worker(spec: dict[str, Any]) -> None:
    """Entry point of the fresh process: print one JSON line with the measurement."""
    lib, name, n, k = spec["lib"], spec["estimator"], spec["n_rounds"], spec["n_actions"]
    import resource

    d = make_inputs(n, k, seed=spec["seed"], predictions=(name == "DR"))
    if name == "LoggedFeedback":
        call = lambda: build_feedback(d)  # noqa: E731
    else:
        fb = build_feedback(d) if lib == "ours" else None
        small = {key: (None if v is None else v[:1000]) for key, v in d.items()}
        small_fb = build_feedback(small) if lib == "ours" else None
        point_calls(small, small_fb, (lib,))[name][lib]()  # imports and first-call caches, on 1,000 rows
        call = point_calls(d, fb, (lib,))[name][lib]
    gc.collect()
    exact = _reset_peak() and _proc_status() is not None
    before = _proc_status() if exact else None
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t
    after = _proc_status() if exact else None
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if exact:
        rss_increase = after["VmHWM"] - before["VmRSS"]
        baseline = before["VmRSS"]
    else:  # no /proc: ru_maxrss difference (KiB on Linux, bytes on macOS); a lower bound
        scale = 1 if sys.platform == "darwin" else 1024
        rss_increase = (maxrss_after - maxrss_before) * scale
        baseline = maxrss_before * scale
    del result
    gc.collect()
    tracemalloc.start()
    result = call()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({
        "rss_increase": rss_increase, "rss_baseline": baseline, "traced_peak": traced_peak,
        "method": "VmHWM-VmRSS" if exact else "ru_maxrss", "seconds": seconds,
    }))


def measure_memory(lib: str, name: str, n: int, k: int, seed: int) -> dict[str, Any]:
    spec = {"lib": lib, "estimator": name, "n_rounds": n, "n_actions": k, "seed": seed}
    # A fixed mmap threshold turns off glibc's dynamic one: every block of 128 KiB or more is
    # mmap'ed and unmapped when freed, so freed input-building temporaries are not silently
    # reused and the RSS peak is the peak of live buffers (same rule for both libraries).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(128 * 1024))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-worker", json.dumps(spec)],
        capture_output=True, text=True, check=False, env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {spec} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- 2. one size


def run_size(n: int, k: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"n_rounds": n, "n_actions": k, "load_start": load()}
    t = time.perf_counter()
    d = make_inputs(n, k, seed=args.seed)
    gen_s = time.perf_counter() - t
    fb_times = []
    for _ in range(3):
        t = time.perf_counter()
        fb = build_feedback(d)
        fb_times.append(time.perf_counter() - t)
    out["feedback_construction_s"] = stats(fb_times)
    print(f"\n# {n:,} rounds x {k} actions\n")
    print(f"Inputs built in {gen_s:.1f} s; load average {out['load_start']}. `LoggedFeedback(...)` construction "
          f"(validates actions, rewards, propensities; once per log, not in the timings below): "
          f"{fmt_time(out['feedback_construction_s'])} over 3 runs.")

    # a. point estimates
    calls = point_calls(d, fb)
    for fns in calls.values():
        for f in fns.values():
            f()  # warm-up
    point: dict[str, Any] = {}
    for name in ESTIMATORS:
        times, results = alternate(calls[name], args.runs)
        point[name] = {
            "ours_s": times["ours"], "obp_s": times["OBP"],
            "ours": stats(times["ours"]), "obp": stats(times["OBP"]),
            "obp_over_ours": ratio_summary(times["ours"], times["OBP"]),
            "ours_value": results["ours"], "obp_value": results["OBP"],
            "abs_diff": abs(results["ours"] - results["OBP"]),
        }
    out["point"] = point
    out["load_after_point"] = load()
    print(f"\n## Point estimates, {n:,} rounds x {k} actions: {args.runs} alternating runs, "
          f"median [min, max] (load average {out['load_after_point']})\n")
    print("(ours: `ope.X().estimate(fb, target)` = target validation, importance weights, diagnostics, normal "
          "interval, per-round values; OBP: `estimate_policy_value` = input checks, value only)\n")
    print("| estimator | ours | OBP | OBP / ours [min, max of paired runs] | \\|ours - OBP\\| |")
    print("|---|---|---|---|---|")
    for name, p in point.items():
        print(f"| {name} | {fmt_time(p['ours'])} | {fmt_time(p['obp'])} | {fmt_ratio(p['obp_over_ours'])} | {p['abs_diff']:.1e} |")

    # c. bootstrap intervals
    if args.boot_runs > 0 and n <= args.boot_max_rounds:
        full = n <= args.obp_boot_max_rounds
        obp_b = args.n_bootstrap if full else args.obp_boot_resamples
        calls_b = boot_calls(d, fb, args.n_bootstrap, obp_b, ope.intervals.DEFAULT_BOOTSTRAP_UNITS)
        boot: dict[str, Any] = {"n_bootstrap": args.n_bootstrap, "obp_resamples": obp_b, "extrapolated": not full}
        for name in ESTIMATORS:
            seeds = {side: itertools.count() for side in calls_b[name]}  # run r uses seed r on both sides
            times, cis = alternate(
                {side: (lambda f=f, c=seeds[side]: f(next(c))) for side, f in calls_b[name].items()}, args.boot_runs
            )
            row = {"ours_s": times["ours"], "obp_measured_s": times["OBP"], "ours_ci": cis["ours"], "obp_ci": cis["OBP"]}
            if full:
                obp_s = times["OBP"]
            else:
                t_point = point[name]["obp"]["median"]
                obp_s = [t_point + (x - t_point) * args.n_bootstrap / obp_b for x in times["OBP"]]
            row.update(ours=stats(times["ours"]), obp=stats(obp_s), obp_s=obp_s,
                       obp_over_ours=ratio_summary(times["ours"], obp_s))
            boot[name] = row
        exact = {}
        for name in args.exact_boot if args.exact_boot_runs > 0 else ():
            f = boot_calls(d, fb, args.n_bootstrap, obp_b, None)[name]["ours"]
            ts, ci = [], None
            for s in range(args.exact_boot_runs):
                t = time.perf_counter()
                ci = f(s)
                ts.append(time.perf_counter() - t)
            exact[name] = {"ours_s": ts, "ours": stats(ts), "ours_ci": ci,
                           "obp_over_ours": boot[name]["obp"]["median"] / statistics.median(ts)}
        boot["exact"] = exact
        out["bootstrap"] = boot
        out["load_after_bootstrap"] = load()
        how = (f"OBP {obp_b} resamples" if full else
               f"OBP measured with {obp_b} resamples and extrapolated to {args.n_bootstrap}")
        print(f"\n## Bootstrap intervals, {args.n_bootstrap} resamples, {n:,} rounds: {args.boot_runs} alternating runs, "
              f"{how} (load average {out['load_after_bootstrap']})\n")
        print("| estimator | ours (default: 20,000 random groups) | OBP estimate_interval | OBP / ours | ours CI | OBP CI |")
        print("|---|---|---|---|---|---|")
        for name in ESTIMATORS:
            b = boot[name]
            print(f"| {name} | {fmt_time(b['ours'])} | {fmt_time(b['obp'])}{' (extrapolated)' if not full else ''} | "
                  f"{fmt_ratio(b['obp_over_ours'])} | [{b['ours_ci'][0]:.5f}, {b['ours_ci'][1]:.5f}] | "
                  f"[{b['obp_ci'][0]:.5f}, {b['obp_ci'][1]:.5f}]{' (%d resamples)' % obp_b if not full else ''} |")
        for name, e in exact.items():
            print(f"| {name}, ours per-round (bootstrap_units=None), {args.exact_boot_runs} run(s) | {fmt_time(e['ours'])} | "
                  f"| {e['obp_over_ours']:.2f}x | [{e['ours_ci'][0]:.5f}, {e['ours_ci'][1]:.5f}] | |")

    del calls, fb, d
    gc.collect()

    # b. memory, fresh processes (after the parent dropped its arrays)
    if args.memory_runs > 0:
        input_bytes = n * (8 * 3) + n * k * 8 * 2
        mem: dict[str, Any] = {"input_bytes_with_q": input_bytes}
        rows = [("LoggedFeedback", ("ours",))] + [(name, ("ours", "OBP")) for name in ESTIMATORS]
        for name, libs in rows:
            for lib in libs:
                ms = [measure_memory(lib, name, n, k, args.seed) for _ in range(args.memory_runs)]
                mem[f"{name}/{lib}"] = {
                    "runs": ms,
                    "rss_increase": stats([m["rss_increase"] for m in ms]),
                    "traced_peak": stats([m["traced_peak"] for m in ms]),
                    "method": ms[0]["method"],
                }
        out["memory"] = mem
        out["load_after_memory"] = load()
        method = mem["IPS/ours"]["method"]
        print(f"\n## Peak memory above the inputs, {n:,} rounds x {k} actions: a fresh process per cell, "
              f"{args.memory_runs} run(s), median [min, max] (load average {out['load_after_memory']})")
        print(f"(peak RSS increase: {method} of the call, after the inputs were built, with MALLOC_MMAP_THRESHOLD_=128 KiB; "
              f"tracemalloc: peak bytes numpy allocated during a second call. Inputs: target {n * k * 8 / _MB:,.0f} MB, "
              f"reward predictions (DR only) {n * k * 8 / _MB:,.0f} MB, three vectors {n * 24 / _MB:,.0f} MB; "
              f"one (n_rounds,) float64 vector is {n * 8 / _MB:,.1f} MB)\n")
        print("| call | ours peak RSS increase | OBP peak RSS increase | ours tracemalloc peak | OBP tracemalloc peak |")
        print("|---|---|---|---|---|")

        def fm(s: dict[str, float] | None) -> str:
            if s is None:
                return "-"
            digits = 1 if s["max"] < 100 * _MB else 0
            med, lo, hi = (f"{s[key] / _MB:,.{digits}f}" for key in ("median", "min", "max"))
            return f"{med} MB" if lo == hi else f"{med} MB [{lo}, {hi}]"

        for name, libs in rows:
            o, b = mem.get(f"{name}/ours"), mem.get(f"{name}/OBP")
            label = "LoggedFeedback(...) (once per log)" if name == "LoggedFeedback" else name
            print(f"| {label} | {fm(o and o['rss_increase'])} | {fm(b and b['rss_increase'])} | "
                  f"{fm(o and o['traced_peak'])} | {fm(b and b['traced_peak'])} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--actions", type=int, default=10)
    p.add_argument("--runs", "--repeats", type=int, default=5, help="alternating runs of the point estimates")
    p.add_argument("--boot-runs", "--boot-repeats", type=int, default=3,
                   help="alternating bootstrap runs (0 skips them)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--boot-max-rounds", type=int, default=10_000_000, help="no bootstrap above this size")
    p.add_argument("--obp-boot-max-rounds", type=int, default=1_000_000,
                   help="above this size OBP's bootstrap runs --obp-boot-resamples resamples and is extrapolated")
    p.add_argument("--obp-boot-resamples", type=int, default=20)
    p.add_argument("--exact-boot", nargs="*", default=["IPS"], choices=ESTIMATORS,
                   help="also time our per-round bootstrap (bootstrap_units=None) for these estimators")
    p.add_argument("--exact-boot-runs", type=int, default=1)
    p.add_argument("--exact-boot-max-rounds", type=int, default=1_000_000)
    p.add_argument("--memory-runs", type=int, default=1,
                   help="fresh processes per memory cell (0 skips memory); the peaks are deterministic to ~1 MB")
    p.add_argument("--agreement-rounds", type=int, default=100_000, help="0 skips the 9-estimator agreement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_worker:
        memory_worker(json.loads(args.memory_worker))
        return

    started = time.perf_counter()
    info = machine_info()
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]),
                              "machine": info, "load_start": load(), "args": vars(args), "sizes": []}
    print("# ope vs Open Bandit Pipeline\n")
    print(f"Command: `{report['command']}`\n")
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()) + "\n")
    print(f"Load average at start: {report['load_start']}")
    if args.agreement_rounds:
        report["agreement"] = agreement(args.agreement_rounds)
    for n in args.rounds:
        size_args = argparse.Namespace(**vars(args))
        if n > args.exact_boot_max_rounds:
            size_args.exact_boot_runs = 0
        report["sizes"].append(run_size(n, args.actions, size_args))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    report["load_end"] = load()
    report["wall_s"] = time.perf_counter() - started
    print(f"\nLoad average at end: {report['load_end']}; total wall time {report['wall_s']:.0f} s.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
