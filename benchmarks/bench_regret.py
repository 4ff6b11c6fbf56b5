"""Routing regret on the embedded simulator: banditroute next to the tools users would pick instead.

For a stationary and a drifting scenario and several seeds, every method routes the SAME request
stream with the SAME outcome draws (the simulator's seed fixes the requests, and its outcome
stream consumes the same random numbers whatever profile is executed: common random numbers),
decided in concurrent batches of 16 with outcomes delayed 0-50 requests, as in the demo
(``banditroute.sim.run_demo``). Every learner is rewarded with the demo objective
(``DEMO_OBJECTIVE``: reward = quality - 10 * cost_usd - 2e-5 * latency_ms).

Methods
-------
- ``banditroute TS``: ``Router`` as the demo configures it (Thompson sampling over a Beta
  belief per (profile, task type), exploration floor 0.02, discount 1, drift-triggered
  recalibration with ``DriftConfig()`` defaults), the SAME configuration on every scenario.
  It learns quality from ``record()`` and uses the profiles' configured cost and latency in the
  objective.
- ``MABWiser TS (quality, known costs)``: one ``MAB(arms, ThompsonSampling())`` per task type
  learning the (binary) quality; a decision takes one posterior draw per profile
  (``predict_expectations``) and picks the best ``draw - 10 * cost_usd - 2e-5 * latency_ms`` with
  the configured costs. This is the fair equivalent of banditroute's belief: same information
  (task type, configured costs), same model (Beta per profile and task type), same reward; it
  differs in having no drift handling, no exploration floor and fresh draws instead of a bank.
- ``MABWiser TS (binarized reward)``: what MABWiser offers out of the box for a non-binary
  reward: one ``MAB(arms, ThompsonSampling(binarizer))`` per task type learning the realised
  objective reward through a Bernoulli-trial binarizer (success with probability
  ``(clip(r, -1, 1) + 1) / 2``, Agrawal & Goyal 2012), which keeps the order of expected
  rewards. It does not know the costs: it learns them from outcomes.
- ``VW squarecb``: ``VWPolicy(VWConfig(exploration="squarecb"))`` behind the Router (exploration
  floor 0, VW explores), as in ``benchmarks/bench_vw.py``: it is handed the same request (task
  type, prompt_tokens, tenant) and the profiles' cost/latency as action features, and learns the
  realised reward.
- ``MABWiser eps-greedy``: one ``MAB(arms, EpsilonGreedy(epsilon=0.05))`` per task type learning
  the realised reward (running means; with probability 0.05 a uniformly random profile).
- ``static table``: the demo's static routing table (best profile per task type on the
  simulator's pre-deployment benchmark, 200 runs per pair, initial profiles only), never updated.
- ``uniform``: uniformly random among the available profiles (for scale).
- ``oracle``: the best expected reward for each request (the zero line of regret).

Measures (per run)
------------------
The simulator knows ``E[reward | profile, request]``. The reward of a decision is that expected
reward for the EXECUTED profile (the same definition for every method; MABWiser's Thompson
sampling has no pmf). Regret of a request = best expected reward among the available profiles
minus that. Reported: mean reward per request, cumulative regret, regret in the last 20% of the
requests, and ``decide`` time per request (wall time of deciding a batch of 16 / 16). Across
seeds: median [min, max]. ``banditroute TS`` vs each other method: paired per-seed difference of
cumulative regret, mean +/- 2 standard errors; "within the noise" means that interval contains 0.

Run: python benchmarks/bench_regret.py [--requests 20000] [--seeds 0 1 2 3 4]
         [--scenarios stationary drifting [demo]] [--methods ...] [--json out.json] [--plot benchmarks/regret.png]
(``--methods ... banditroute-floor0`` adds an ablation, banditroute with exploration floor 0, shown but never
counted as a competitor.) Needs MABWiser and matplotlib: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata

import numpy as np

try:
    from mabwiser.mab import MAB, LearningPolicy
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("bench_regret.py needs MABWiser (and matplotlib for --plot): pip install -e '.[bench]'")

import banditroute as br
from banditroute.sim import DEMO_OBJECTIVE, Outcomes, RequestBatch, Scenario, Simulator
from banditroute.policies.vw import VWConfig, VWPolicy

OBJECTIVE = DEMO_OBJECTIVE
BATCH_SIZE = 16           # concurrent requests per decision batch, as in run_demo
BENCHMARK_RUNS = 200      # pre-deployment benchmark runs per (profile, task type), as in run_demo
EXPLORATION = 0.02        # banditroute's floor, as in run_demo
EPSILON = 0.05            # MABWiser epsilon-greedy
BINARIZE_RANGE = (-1.0, 1.0)  # reward range mapped to a success probability by the binarizer
CURVE_POINTS = 400        # points of the stored cumulative-regret curves
OFF_SCALE = ("static", "uniform")  # the plot's y axis fits the learners; these may go off the top

SCENARIOS = {
    "stationary": ("stationary (3 profiles, no events)",
                   lambda n: Scenario.default(n_requests=n).stationary()),
    "drifting": ("drifting (Scenario.nonstationary: medium/summarize slides 0.86->0.56 over 15-45%, "
                 "large/code 0.88->0.45 at 40%, back to 0.88 at 70%)",
                 lambda n: Scenario.nonstationary(n_requests=n)),
    "demo": ("demo (Scenario.default: large/code 0.88->0.45 at 40%, medium-v2 joins at 70%)",
             lambda n: Scenario.default(n_requests=n)),
}


# -- methods ------------------------------------------------------------------------------------------
class _Base:
    """A method: ``decide(batch, contexts) -> profile indices (n,)``, ``learn(outcomes)``,
    ``add_profile(name)``. Indices refer to the simulator's ``profile_names``."""

    ablation = False

    def __init__(self, scenario: Scenario, sim_seed: int, seed: np.random.SeedSequence):
        self.names = scenario.profile_names
        self.index = {n: k for k, n in enumerate(self.names)}
        self.specs = {p.name: p for p in scenario.profiles}
        self.task_types = scenario.task_types
        self.active = [p.name for p in scenario.profiles if p.joins_at == 0]

    def profile(self, name: str) -> br.Profile:
        s = self.specs[name]
        return br.Profile(name, cost_usd=s.cost_usd, latency_ms=s.latency_ms)

    def add_profile(self, name: str) -> None:
        self.active.append(name)

    def learn(self, out: Outcomes) -> None:
        pass


def _reward(out: Outcomes) -> np.ndarray:
    return OBJECTIVE.quality * out.quality - OBJECTIVE.cost * out.cost_usd - OBJECTIVE.latency * out.latency_ms


def _int_seed(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0] & 0x7FFFFFFF)


class _RouterMethod(_Base):
    def __init__(self, scenario, sim_seed, seed, n_requests):
        super().__init__(scenario, sim_seed, seed)
        self.ids = [None] * n_requests
        self.router = self.make([self.profile(n) for n in self.active], _int_seed(seed))

    def make(self, profiles, seed):  # pragma: no cover - overridden
        raise NotImplementedError

    def add_profile(self, name):
        super().add_profile(name)
        self.router.add_profile(self.profile(name))

    def decide(self, batch: RequestBatch, contexts):
        decisions = self.router.decide_batch(contexts)
        for step, d in zip(batch.step.tolist(), decisions):
            self.ids[step] = d.id
        return np.array([self.index[d.profile] for d in decisions])

    def learn(self, out):
        for step, q, c, lat in zip(out.tickets.tolist(), out.quality.tolist(), out.cost_usd.tolist(),
                                   out.latency_ms.tolist()):
            self.router.record(self.ids[step], quality=q, cost_usd=c, latency_ms=lat)


class BanditrouteTS(_RouterMethod):
    label = "banditroute TS"

    def make(self, profiles, seed):
        return br.Router(profiles, task_types=list(self.task_types), objective=OBJECTIVE, budget=br.Budget(),
                         exploration=EXPLORATION, discount=1.0, drift=br.DriftConfig(), log_dir=None, seed=seed)


class BanditrouteTSNoFloor(BanditrouteTS):
    """Ablation (not run by default, never counted as a competitor): the same router with floor 0."""
    label = "banditroute TS, floor 0 (ablation)"
    ablation = True

    def make(self, profiles, seed):
        return br.Router(profiles, task_types=list(self.task_types), objective=OBJECTIVE, budget=br.Budget(),
                         exploration=0.0, discount=1.0, drift=br.DriftConfig(), log_dir=None, seed=seed)


class VWSquareCB(_RouterMethod):
    label = "VW squarecb"

    def make(self, profiles, seed):
        policy = VWPolicy(profiles, config=VWConfig(exploration="squarecb"), seed=seed)
        return br.Router(profiles, learner=policy, task_types=list(self.task_types), objective=OBJECTIVE,
                         exploration=0.0, log_dir=None, seed=seed)


class _PerTaskMAB(_Base):
    """One MABWiser MAB per task type (the task type is the context)."""

    def __init__(self, scenario, sim_seed, seed, n_requests):
        super().__init__(scenario, sim_seed, seed)
        self.task = np.zeros(n_requests, dtype=np.int64)
        self.chosen = np.zeros(n_requests, dtype=np.int64)
        seeds = seed.spawn(len(self.task_types) + 1)
        self.rng = np.random.default_rng(seeds[-1])  # the method's own draws (the binarizer's)
        self.mabs = []
        for s in seeds[:-1]:
            mab = MAB(list(self.active), self.learning_policy(), seed=_int_seed(s))
            mab.fit([], [])  # MABWiser needs a fit before predicting: start with no data
            self.mabs.append(mab)

    def add_profile(self, name):
        super().add_profile(name)
        for mab in self.mabs:
            mab.add_arm(name)

    def rewards(self, out: Outcomes) -> np.ndarray:
        return _reward(out)

    def pick(self, mab, n: int) -> list:
        arms = mab.predict(np.zeros((n, 1)))
        return arms if isinstance(arms, list) else [arms]

    def decide(self, batch, contexts):
        k = np.empty(len(batch), dtype=np.int64)
        for t in np.unique(batch.task).tolist():
            rows = np.flatnonzero(batch.task == t)
            k[rows] = [self.index[a] for a in self.pick(self.mabs[t], rows.size)]
        self.task[batch.step] = batch.task
        self.chosen[batch.step] = k
        return k

    def learn(self, out):
        steps = out.tickets.astype(np.int64)
        task, rewards = self.task[steps], self.rewards(out)
        arms = np.array(self.names, dtype=object)[self.chosen[steps]]
        for t in np.unique(task).tolist():
            rows = task == t
            self.mabs[t].partial_fit(list(arms[rows]), rewards[rows])


class MabTSKnownCosts(_PerTaskMAB):
    label = "MABWiser TS (quality, known costs)"

    def learning_policy(self):
        return LearningPolicy.ThompsonSampling()

    def rewards(self, out):
        return out.quality  # binary quality: the Beta belief's observation, as in banditroute

    def pick(self, mab, n):
        draws = mab.predict_expectations(np.zeros((n, 1)))
        draws = draws if isinstance(draws, list) else [draws]
        penalty = {a: OBJECTIVE.cost * self.specs[a].cost_usd + OBJECTIVE.latency * self.specs[a].latency_ms
                   for a in draws[0]}
        return [max(d, key=lambda a: OBJECTIVE.quality * d[a] - penalty[a]) for d in draws]


class MabTSBinarized(_PerTaskMAB):
    label = "MABWiser TS (binarized reward)"

    def learning_policy(self):
        lo, hi = BINARIZE_RANGE
        rng = self.rng

        def binarizer(arm, reward):  # Bernoulli trial: E[binary] = (r - lo) / (hi - lo), order kept
            return int(rng.random() < (min(max(reward, lo), hi) - lo) / (hi - lo))
        return LearningPolicy.ThompsonSampling(binarizer=binarizer)


class MabEpsGreedy(_PerTaskMAB):
    label = f"MABWiser eps-greedy ({EPSILON:g})"

    def learning_policy(self):
        return LearningPolicy.EpsilonGreedy(epsilon=EPSILON)


class StaticTable(_Base):
    label = "static table"

    def __init__(self, scenario, sim_seed, seed, n_requests):
        super().__init__(scenario, sim_seed, seed)
        # The demo's table: the benchmark stream of the same simulator seed (independent of requests).
        bench = Simulator(scenario, seed=sim_seed).benchmark(OBJECTIVE, n_runs=BENCHMARK_RUNS)
        self.table = dict(bench.table)
        self.k = np.array([self.index[bench.table[t]] for t in scenario.task_types])

    def decide(self, batch, contexts):
        return self.k[batch.task]


class Uniform(_Base):
    label = "uniform"

    def __init__(self, scenario, sim_seed, seed, n_requests):
        super().__init__(scenario, sim_seed, seed)
        self.rng = np.random.default_rng(seed)

    def decide(self, batch, contexts):
        pool = np.array([self.index[n] for n in self.active])
        return pool[self.rng.integers(0, pool.size, size=len(batch))]


METHODS = {"banditroute": BanditrouteTS, "mabwiser-ts": MabTSKnownCosts, "mabwiser-ts-bin": MabTSBinarized,
           "vw-squarecb": VWSquareCB, "mabwiser-egreedy": MabEpsGreedy, "static": StaticTable, "uniform": Uniform,
           "banditroute-floor0": BanditrouteTSNoFloor}
DEFAULT_METHODS = [m for m, c in METHODS.items() if not c.ablation]


# -- one run ------------------------------------------------------------------------------------------
def run(method_key: str, scenario_key: str, n: int, seed: int) -> dict:
    scenario = SCENARIOS[scenario_key][1](n)
    sim_seq, method_seq = np.random.SeedSequence(seed).spawn(2)  # as run_demo: simulator, router
    sim_seed = int(sim_seq.generate_state(1)[0])
    sim = Simulator(scenario, seed=sim_seed)
    method = METHODS[method_key](scenario, sim_seed, method_seq, n)
    best, got = np.empty(n), np.empty(n)
    decide_us = []
    cuts = sorted(set(range(0, n, BATCH_SIZE)) | set(scenario.event_steps(n)))
    t0 = time.perf_counter()
    for start, stop in zip(cuts, cuts[1:] + [n]):
        for name in sim.joining(start, stop):
            method.add_profile(name)
        arrived = sim.poll()
        if len(arrived):
            method.learn(arrived)
        batch = sim.next_requests(stop - start)
        contexts = batch.contexts()
        t = time.perf_counter()
        k = method.decide(batch, contexts)
        decide_us.append((time.perf_counter() - t) * 1e6 / len(batch))
        sim.submit(batch, k, tickets=batch.step)
        expected = sim.expected_reward(batch, OBJECTIVE)
        best[start:stop] = np.nanmax(expected, axis=1)
        got[start:stop] = expected[np.arange(len(batch)), k]
    regret = best - got
    cum = np.cumsum(regret)
    at = np.unique(np.linspace(0, n - 1, min(CURVE_POINTS, n)).round().astype(int))
    return {"method": method_key, "scenario": scenario_key, "seed": seed,
            "mean_reward": float(got.mean()), "oracle_reward": float(best.mean()),
            "regret": float(cum[-1]), "regret_last_20pct": float(regret[int(0.8 * n):].sum()),
            "decide_us_median": float(np.median(decide_us)), "wall_s": time.perf_counter() - t0,
            "curve_at": (at + 1).tolist(), "curve": cum[at].tolist(),
            "static_table": getattr(method, "table", None),
            "drift_events": [(e["profile"], e["task_type"], e["change"], e["n_updates"])
                             for e in method.router.drift_events] if isinstance(method, BanditrouteTS) else None}


# -- summaries ----------------------------------------------------------------------------------------
def _mmm(values, spec: str) -> str:
    return f"{format(statistics.median(values), spec)} [{format(min(values), spec)}, {format(max(values), spec)}]"


def paired(a: list, b: list) -> tuple[float, float]:
    """Mean and standard error of the per-seed differences a - b."""
    d = np.asarray(a) - np.asarray(b)
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se


def summarise(scenario_key: str, runs: dict, seeds: list, n: int) -> tuple[str, dict]:
    """Markdown table and verdict for one scenario; ``runs[method]`` is the per-seed list."""
    oracle = [r["oracle_reward"] for r in runs[next(iter(runs))]]
    lines = [f"### {SCENARIOS[scenario_key][0]}", "",
             f"{n:,} requests, seeds {', '.join(map(str, seeds))}; median [min, max] over seeds.", "",
             "| method | mean reward | cumulative regret | regret, last 20% | decide µs/request |",
             "|---|---|---|---|---|"]
    lines.append(f"| oracle | {_mmm(oracle, '.4f')} | 0 | 0 | - |")
    for m, rs in runs.items():
        cells = [_mmm([r[key] for r in rs], spec) for key, spec in
                 (("mean_reward", ".4f"), ("regret", ".1f"), ("regret_last_20pct", ".1f"), ("decide_us_median", ".0f"))]
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + " |")
    regret = {m: [r["regret"] for r in rs] for m, rs in runs.items() if not METHODS[m].ablation}
    ranked = sorted(regret, key=lambda m: statistics.median(regret[m]))
    lowest = ranked[0]
    verdict = {"lowest": lowest, "comparisons": {}}
    lines += ["", f"Lowest median cumulative regret: **{METHODS[lowest].label}**"
              + (" (ablations not counted)." if any(METHODS[m].ablation for m in runs) else ".")]
    if "uniform" in regret:
        floor = EXPLORATION * statistics.median(regret["uniform"])
        lines += ["", f"banditroute's exploration floor ({EXPLORATION:g} of the traffic spread uniformly) "
                      f"costs about {EXPLORATION:g} x uniform's regret = {floor:.1f} by construction."]
    events = {r["seed"]: r["drift_events"] for r in runs.get("banditroute", ()) if r["drift_events"] is not None}
    if events:
        lines += ["", "banditroute drift detections (profile/task type, change, after n applied outcomes): "
                  + "; ".join(f"seed {s}: " + (", ".join(f"{p}/{t} {c} @{k:,.0f}" for p, t, c, k in ev) or "none")
                              for s, ev in events.items())]
    if "banditroute" in regret and len(seeds) > 1:
        lines += ["", "banditroute TS minus each other method, cumulative regret, paired over seeds "
                      "(mean ± 2 s.e.; negative = banditroute lower):", ""]
        for m in ranked:
            if m == "banditroute":
                continue
            mean, se = paired(regret["banditroute"], regret[m])
            lo, hi = mean - 2 * se, mean + 2 * se
            status = "lower" if hi < 0 else ("higher" if lo > 0 else "within noise")
            verdict["comparisons"][m] = {"mean": mean, "se": se, "status": status}
            lines.append(f"- vs {METHODS[m].label}: {mean:+.1f} ± {2 * se:.1f} → {status}")
        ok = lowest == "banditroute" or verdict["comparisons"][lowest]["status"] != "higher"
        verdict["bar_met"] = ok
        if lowest == "banditroute":
            why = " (banditroute TS has the lowest median regret)."
        else:
            c = verdict["comparisons"][lowest]
            why = f" (lowest is {METHODS[lowest].label}; paired difference {c['mean']:+.1f} ± {2 * c['se']:.1f})."
        lines += ["", "Bar (lowest, or within the noise of the lowest): " + ("**met**" if ok else "**not met**") + why]
    return "\n".join(lines) + "\n", verdict


def plot(path: str, results: dict, n: int, seeds: list) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"banditroute": "#d62728", "mabwiser-ts": "#1f77b4", "mabwiser-ts-bin": "#17becf",
              "vw-squarecb": "#2ca02c", "mabwiser-egreedy": "#9467bd", "static": "#7f7f7f", "uniform": "#bcbd22",
              "banditroute-floor0": "#ff7f0e"}
    keys = list(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.0), squeeze=False)
    for ax, sk in zip(axes[0], keys):
        runs = results[sk]
        fit = [m for m in runs if m not in OFF_SCALE] or list(runs)
        top = max(float(np.max([r["curve"] for r in runs[m]])) for m in fit)
        off = []
        for m, rs in runs.items():
            x = np.asarray(rs[0]["curve_at"])
            curves = np.array([r["curve"] for r in rs])
            med = np.median(curves, axis=0)
            if med[-1] > top * 1.03:
                off.append(f"{METHODS[m].label}: {med[-1]:,.0f}")
            if m == "uniform":
                continue
            ax.plot(x, med, color=colors.get(m), lw=2.0 if m == "banditroute" else 1.3, label=METHODS[m].label,
                    ls="--" if METHODS[m].ablation else "-")
            ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=colors.get(m), alpha=0.15, lw=0)
        events = SCENARIOS[sk][1](n).event_steps(n)
        for step in events:
            ax.axvline(step, color="k", lw=0.6, ls=":")
        title = sk + (" (dotted: events)" if events else "")
        if off:
            title += "\noff the scale, final median: " + ", ".join(off)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("request")
        ax.set_xlim(0, n)
        ax.set_ylim(0, top * 1.03)
        ax.grid(alpha=0.3, lw=0.5)
    axes[0][0].set_ylabel("cumulative regret vs oracle (expected reward)")
    axes[0][0].legend(fontsize=7.5, loc="upper left", frameon=False)
    fig.suptitle(f"Cumulative regret vs the per-request oracle: median over seeds {', '.join(map(str, seeds))}, "
                 "band = min-max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.getsize(path)


def machine() -> dict:
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = None
    return {"nproc": affinity, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            **{d: version(d) for d in ("banditroute", "numpy", "mabwiser", "vowpal-wabbit-next", "matplotlib")}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=["stationary", "drifting"])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS,
                        help="default: all but the ablation banditroute-floor0")
    parser.add_argument("--json", help="write every number (per seed, curves) here")
    parser.add_argument("--plot", help="write the cumulative-regret plot here (PNG or SVG, matplotlib Agg)")
    args = parser.parse_args(argv)
    if args.requests < 10 * BATCH_SIZE:
        parser.error(f"--requests must be >= {10 * BATCH_SIZE}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit("--plot needs matplotlib: pip install -e '.[bench]'")
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    t0 = time.perf_counter()
    results: dict = {}
    for sk in args.scenarios:
        results[sk] = {}
        for m in args.methods:
            results[sk][m] = []
            for seed in args.seeds:
                r = run(m, sk, args.requests, seed)
                results[sk][m].append(r)
                print(f"  {sk:>10} {m:>17} seed {seed}: regret {r['regret']:8.1f}  mean reward "
                      f"{r['mean_reward']:.4f}  ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
    tables, verdicts = [], {}
    for sk in args.scenarios:
        text, verdicts[sk] = summarise(sk, results[sk], args.seeds, args.requests)
        tables.append(text)
    static = {sk: results[sk]["static"][0]["static_table"] for sk in args.scenarios if "static" in results[sk]}
    header = [f"## Routing regret vs the per-request oracle ({args.requests:,} requests, "
              f"{len(args.seeds)} seeds)", "",
              "Objective: reward = quality - 10*cost_usd - 2e-5*latency_ms (the demo's). Requests decided in "
              f"batches of {BATCH_SIZE}, outcomes delayed 0-50 requests; reward of a decision = expected reward "
              "of the executed profile; regret = oracle - that, summed.",
              *(f"Static table ({sk}, seed {args.seeds[0]}): "
                + ", ".join(f"{t} -> {p}" for t, p in tab.items()) for sk, tab in static.items()), ""]
    report = "\n".join(header) + "\n" + "\n".join(tables)
    wall = time.perf_counter() - t0
    print(report + f"\nwall time {wall:.0f} s", flush=True)
    out = {"machine": info, "requests": args.requests, "seeds": args.seeds, "batch_size": BATCH_SIZE,
           "objective": {"quality": OBJECTIVE.quality, "cost": OBJECTIVE.cost, "latency": OBJECTIVE.latency},
           "labels": {m: METHODS[m].label for m in args.methods}, "verdicts": verdicts, "wall_s": wall,
           "markdown": report, "runs": results}
    if args.plot:
        size = plot(args.plot, results, args.requests, args.seeds)
        print(f"plot: {args.plot} ({size / 1024:.0f} KiB)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
