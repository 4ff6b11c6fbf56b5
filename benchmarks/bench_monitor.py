"""Canary monitoring with anytime-valid confidence sequences (``ope.monitor``), by simulation.

World: 8 profiles with Bernoulli quality ``0.2 + 0.6 k / 7`` (k = 0..7) and cost_usd
``0.001 (k + 1)`` times a uniform factor in [0.5, 1.5] per call (declared range [0, 0.02]).
Production plays the 8 profiles uniformly (value 0.5); the candidate plays profile 7 with
probability ``q`` and profile 0 otherwise, value ``0.2 + 0.6 q``. A canary with fraction
``f = 0.1`` logs the mixture ``0.9 production + 0.1 candidate`` (near-uniform: 0.1125 or 0.1625
per profile), so the importance weights are bounded by ``1 / f = 10``.

- ``gain = 0``: ``q = 0.5``, the candidate's value (and mean cost) equal production's: every
  promotion is false. The monitor looks after every batch of 20 rounds, 1,000 looks (20,000
  rounds), ``alpha = 0.05``, margin 0.
- ``naive``: on the same data, a 95% normal interval of the IPS difference, recomputed after
  every batch, promoting the first time its lower bound is above 0 (what a dashboard does).
- ``gain = +0.05``: ``q = 0.5833``, rounds until the monitor promotes (quantiles over runs).

Run: ``python benchmarks/bench_monitor.py --runs 500 --looks 1000`` (``--markdown`` prints the
section appended to BENCHMARKS.md). All runs are simulated at once (numpy over runs).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Iterator

import numpy as np
from scipy.special import ndtri

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ope.confseq import OffPolicyCS  # noqa: E402
from ope.monitor import CanaryMonitor, MonitorOptions  # noqa: E402

N_PROFILES = 8
QUALITY = 0.2 + 0.6 * np.arange(N_PROFILES) / (N_PROFILES - 1)
COST_USD = 0.001 * (1 + np.arange(N_PROFILES))
COST_RANGE = (0.0, 0.02)
FRACTION = 0.1
PRODUCTION = np.full(N_PROFILES, 1.0 / N_PROFILES)
BATCH = 20


class World:
    """Production, a candidate with a given true gain, and the canary's logging mixture."""

    def __init__(self, gain: float, fraction: float = FRACTION, cost_usd: np.ndarray = COST_USD) -> None:
        q = 0.5 + gain / 0.6
        self.candidate = np.zeros(N_PROFILES)
        self.candidate[[0, -1]] = (1.0 - q, q)
        self.fraction = fraction
        self.logging = (1.0 - fraction) * PRODUCTION + fraction * self.candidate
        self.value = {"candidate": float(self.candidate @ QUALITY), "baseline": float(PRODUCTION @ QUALITY)}
        self.value["difference"] = self.value["candidate"] - self.value["baseline"]
        self.cost_usd = np.asarray(cost_usd, dtype=float)
        self.cost_difference = float((self.candidate - PRODUCTION) @ self.cost_usd)
        self.max_weight = 1.0 / min(fraction, 1.0 - fraction)

    def batches(self, *, n_runs: int, n_looks: int, batch: int = BATCH, seed: int = 0) -> Iterator[dict]:
        """Per look, arrays of shape (n_runs, batch): the monitor's inputs plus ``cost_usd``."""
        rng = np.random.default_rng(seed)
        cdf = np.cumsum(self.logging)
        for _ in range(n_looks):
            a = np.minimum(np.searchsorted(cdf, rng.random((n_runs, batch)), side="right"), N_PROFILES - 1)
            yield {"candidate_probs": self.candidate[a], "baseline_probs": PRODUCTION[a],
                   "propensities": self.logging[a], "rewards": (rng.random(a.shape) < QUALITY[a]).astype(float),
                   "cost_usd": self.cost_usd[a] * rng.uniform(0.5, 1.5, a.shape)}


def simulate(world: World, *, n_runs: int, n_looks: int, batch: int = BATCH, alpha: float = 0.05,
             max_weight: float | None = None, seed: int = 0, coverage: bool = True,
             cost_margin: float | None = None) -> dict[str, np.ndarray]:
    """All runs at once with the monitor's sequences (each side at alpha / 6, or alpha / 8 with a
    cost_usd guardrail of margin ``cost_margin``).

    Returns per run the rounds at the first promote / rollback of the primary confidence sequence
    (``promote``, ``rollback``), at the first cost guardrail failure (``cost_fail``), and of the
    naive repeated interval (0: never), whether every CS covered the truth at every look, and
    whether the naive interval promotes at the last look (``naive_final``).
    """
    rails = {} if cost_margin is None else {"cost_usd": (cost_margin, "lower")}
    opts = MonitorOptions(alpha=alpha, max_weight=max_weight, guardrails=rails, metric_ranges={"cost_usd": COST_RANGE})
    cs = OffPolicyCS(value_range=opts.reward_range, alpha_side=opts.alpha_per_side, max_weight=max_weight,
                     values=coverage, shape=(n_runs,))
    cost = OffPolicyCS(value_range=COST_RANGE, alpha_side=opts.alpha_per_side, max_weight=max_weight, values=False,
                       shape=(n_runs,))
    z = float(ndtri(1.0 - alpha / 2.0))
    s1, s2 = np.zeros(n_runs), np.zeros(n_runs)
    out = {k: np.zeros(n_runs, dtype=np.int64)
           for k in ("promote", "rollback", "cost_fail", "naive_promote", "naive_rollback")}
    covered = np.ones(n_runs, dtype=bool)
    for data in world.batches(n_runs=n_runs, n_looks=n_looks, batch=batch, seed=seed):
        wc, wb = data["candidate_probs"] / data["propensities"], data["baseline_probs"] / data["propensities"]
        cs.update(w_candidate=wc, w_baseline=wb, outcomes=data["rewards"])
        n = cs.n
        d = (wc - wb) * data["rewards"]
        s1 += d.sum(axis=1)
        s2 += (d * d).sum(axis=1)
        diff = cs.difference()
        mean = s1 / n
        half = z * np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0) * n / (n - 1) / n)
        if cost_margin is not None:
            cost.update(w_candidate=wc, w_baseline=wb, outcomes=data["cost_usd"])
            failed = cost.difference().low > cost_margin
            out["cost_fail"][(out["cost_fail"] == 0) & failed] = n
        for key, hit in (("promote", diff.low > opts.margin), ("rollback", diff.high < -abs(opts.margin)),
                         ("naive_promote", mean - half > 0), ("naive_rollback", mean + half < 0)):
            out[key][(out[key] == 0) & hit] = n
        if coverage:
            for name in ("difference", "candidate", "baseline"):
                b = diff if name == "difference" else cs.value(name)
                covered &= (b.low <= world.value[name]) & (world.value[name] <= b.high)
    out["covered"] = covered
    out["naive_final"] = mean - half > 0  # the same interval, looked at once, at the end
    return out


def run_monitors(world: World, *, n_runs: int, n_looks: int, batch: int = BATCH, seed: int = 0,
                 options: MonitorOptions | None = None) -> list:
    """The same simulation through :class:`ope.monitor.CanaryMonitor` objects (one per run);
    returns each run's final :class:`MonitorResult`."""
    monitors = [CanaryMonitor(options) for _ in range(n_runs)]
    guardrails = {g.metric for g in (options.guardrail_list if options else ())}
    results = [m.result() for m in monitors]
    for data in world.batches(n_runs=n_runs, n_looks=n_looks, batch=batch, seed=seed):
        for i, m in enumerate(monitors):
            results[i] = m.update(candidate_probs=data["candidate_probs"][i], baseline_probs=data["baseline_probs"][i],
                                  propensities=data["propensities"][i], rewards=data["rewards"][i],
                                  metrics={k: data[k][i] for k in guardrails})
    return results


def _rate(hits: np.ndarray) -> str:
    n, k = hits.size, int(hits.sum())
    if k == 0:
        return f"0 / {n} (95% upper bound {3.0 / n:.4f})"
    p = k / n
    return f"{p:.4f} ± {math.sqrt(p * (1 - p) / n):.4f} ({k} / {n})"


def _quantiles(rounds: np.ndarray) -> str:
    found = rounds[rounds > 0]
    if found.size < rounds.size / 2:
        return f"detected in {found.size} / {rounds.size} runs"
    q = np.quantile(np.where(rounds > 0, rounds, np.inf), [0.1, 0.25, 0.5, 0.75, 0.9], method="inverted_cdf")
    return " / ".join("never" if math.isinf(v) else f"{v:,.0f}" for v in q)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--looks", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    null, better = World(0.0), World(0.05)
    horizon = args.looks * args.batch
    rows = []
    for label, mw in (("max_weight = 1/f = 10", null.max_weight), ("no weight bound", None)):
        zero = simulate(null, n_runs=args.runs, n_looks=args.looks, batch=args.batch, alpha=args.alpha,
                        max_weight=mw, seed=args.seed)
        gain = simulate(better, n_runs=args.runs, n_looks=args.looks, batch=args.batch, alpha=args.alpha,
                        max_weight=mw, seed=args.seed + 1)
        rows.append((label, zero, gain))
    wall = time.perf_counter() - t0
    label, zero, gain = rows[0]
    print(f"{args.runs} runs x {args.looks} looks x {args.batch} rounds per look ({horizon:,} rounds), "
          f"alpha {args.alpha}, canary f = {FRACTION}, seed {args.seed}\n")
    print("| | gain 0: false promote | gain 0: false rollback | gain 0: a CS missed its truth at some look "
          "| gain +0.05: promoted within horizon | gain +0.05: rounds to promote (q10 / q25 / median / q75 / q90) |")
    print("|---|---|---|---|---|---|")
    print(f"| naive 95% interval, one look at the end | {_rate(zero['naive_final'])} | - | - | "
          f"{_rate(gain['naive_final'])} | - |")
    print(f"| naive 95% interval after every look | {_rate(zero['naive_promote'] > 0)} | "
          f"{_rate(zero['naive_rollback'] > 0)} | - | {_rate(gain['naive_promote'] > 0)} | "
          f"{_quantiles(gain['naive_promote'])} |")
    for label, zero, gain in rows:
        print(f"| confidence sequence, {label} | {_rate(zero['promote'] > 0)} | {_rate(zero['rollback'] > 0)} | "
              f"{_rate(~zero['covered'])} | {_rate(gain['promote'] > 0)} | {_quantiles(gain['promote'])} |")
    print(f"\ntrue values: gain 0: candidate {null.value['candidate']:.4f}, baseline {null.value['baseline']:.4f}; "
          f"gain +0.05: candidate {better.value['candidate']:.4f} (difference {better.value['difference']:+.4f})")
    print(f"wall time {wall:.0f} s (Python {platform.python_version()}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
