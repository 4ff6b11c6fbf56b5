"""Replication study of ``ope.gate``: how often does it refuse a worse candidate and promote a
better one, on synthetic logs with a known true difference?

Synthetic world (``make_gate_logs``): requests have a ``tenant`` (4, uniform) and a
``task_type`` (chat/code, uniform); three profiles. The logging policy is the baseline
(production): chat (0.6, 0.2, 0.2), code (0.2, 0.6, 0.2). The candidate swaps the first two
profiles' probabilities, i.e. moves 0.4 of the traffic to the other profile. Rewards are
Bernoulli; for tenant ``c`` the expected reward of the profile the candidate favours is
``0.5 + delta_c / 0.4`` and that of the one the baseline favours is 0.5 (third profile 0.4),
so the candidate's true value minus the baseline's is exactly ``delta_c`` in tenant ``c``
and the mean of the ``delta_c`` overall. Cost (USD) and latency (ms) are log-normal around
per-profile means that are equal for the first two profiles, so the guardrails' true
differences are 0.

Scenarios (gate: DR with the default reward model, ``margin = m``, non-inferiority margin
``m`` per tenant, guardrails cost_usd 0.0002 and latency_ms 20, ``alpha = 0.05``):

- ``worse``: every tenant ``delta = -m``                      -> should refuse
- ``boundary``: every tenant ``delta = +m`` (the null's edge)  -> promotes at most ~alpha
- ``better``: every tenant ``delta = +2m``                     -> should promote
- ``one_cohort_worse``: ``delta = -3m`` on initech, the others so that the mean is ``+2m``
                                                               -> should refuse, naming initech

Run: ``python benchmarks/gate_power.py --reps 400 --workers 2`` (``--out FILE`` writes the Markdown table
merged into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ope import LoggedFeedback  # noqa: E402
from ope.gate import gate  # noqa: E402

TENANTS = ("acme", "globex", "initech", "umbrella")
TASKS = ("chat", "code")
MARGIN = 0.02
SWAP = 0.4
COST = np.array([0.002, 0.002, 0.001])
LATENCY = np.array([800.0, 800.0, 400.0])
GUARDRAILS = {"cost_usd": 0.0002, "latency_ms": 20.0}


def scenario_deltas(name: str, m: float = MARGIN) -> dict[str, float]:
    """True candidate-minus-baseline reward per tenant for a named scenario."""
    if name == "worse":
        return dict.fromkeys(TENANTS, -m)
    if name == "boundary":
        return dict.fromkeys(TENANTS, m)
    if name == "better":
        return dict.fromkeys(TENANTS, 2 * m)
    if name == "one_cohort_worse":
        bad = -3 * m
        other = (4 * 2 * m - bad) / 3
        return {t: (bad if t == "initech" else other) for t in TENANTS}
    raise ValueError(f"unknown scenario {name!r}")


def make_gate_logs(n: int, *, deltas: Mapping[str, float] | float, seed: int):
    """Synthetic logs with a known true difference; returns (feedback, candidate, baseline, truth).

    ``truth`` maps ``"all"`` and each tenant to the true candidate-minus-baseline reward.
    """
    rng = np.random.default_rng(seed)
    deltas = dict.fromkeys(TENANTS, float(deltas)) if not isinstance(deltas, Mapping) else dict(deltas)
    tenant = rng.integers(0, len(TENANTS), n)
    task = rng.integers(0, len(TASKS), n)
    base = np.where(task[:, None] == 0, [0.6, 0.2, 0.2], [0.2, 0.6, 0.2])
    cand = base[:, [1, 0, 2]]
    gain = np.array([deltas[t] for t in TENANTS])[tenant] / SWAP
    mu = np.full((n, 3), 0.5)
    mu[:, 2] = 0.4
    fav_cand = np.where(task == 0, 1, 0)  # the profile the candidate favours
    mu[np.arange(n), fav_cand] += gain
    cum = base.cumsum(axis=1)
    actions = np.minimum((cum < rng.random((n, 1))).sum(axis=1), 2)
    rows = np.arange(n)
    reward = (rng.random(n) < mu[rows, actions]).astype(float)
    cost = COST[actions] * rng.lognormal(-0.02, 0.2, n)
    latency = LATENCY[actions] * rng.lognormal(-0.045, 0.3, n)
    contexts = pl.DataFrame({"tenant": np.array(TENANTS)[tenant], "task_type": np.array(TASKS)[task]})
    fb = LoggedFeedback(actions=actions, rewards=reward, propensities=base[rows, actions], n_actions=3,
                        action_names=("p0", "p1", "p2"), contexts=contexts, logging_distribution=base,
                        metrics=pl.DataFrame({"reward": reward, "quality": reward, "cost_usd": cost,
                                              "latency_ms": latency}))
    truth = {"all": float(np.mean(list(deltas.values()))), **deltas}
    return fb, cand, base, truth


def one_replication(args: tuple) -> dict:
    scenario, n, seed, estimator = args
    fb, cand, base, truth = make_gate_logs(n, deltas=scenario_deltas(scenario), seed=seed)
    result = gate(fb, candidate=cand, baseline=base, estimator=estimator, margin=MARGIN, cohorts=["tenant"],
                  guardrails=GUARDRAILS, seed=seed)
    failed = result.failures
    bad_cohorts = sorted(set(failed.filter(pl.col("cohort_column").is_not_null()).get_column("cohort").to_list()))
    overall = result.table.filter(pl.col("cohort_column").is_null() & (pl.col("metric") == "reward")).row(0, named=True)
    return {"promote": result.promote, "bad_cohorts": bad_cohorts,
            "names_initech": (not result.promote) and any("tenant=initech" in r for r in result.reasons),
            "covered": overall["lower"] <= truth["all"] <= overall["upper"], "diff": overall["diff"]}


def run(scenario: str, n: int, reps: int, *, seed: int = 0, workers: int = 1, estimator: str = "dr") -> dict:
    """Replicate one scenario; returns rates and their Monte Carlo standard errors."""
    jobs = [(scenario, n, seed * 1_000_003 + i, estimator) for i in range(reps)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(one_replication, jobs, chunksize=max(1, reps // (4 * workers))))
    else:
        results = [one_replication(j) for j in jobs]
    promote = float(np.mean([r["promote"] for r in results]))
    only_initech = float(np.mean([r["bad_cohorts"] == ["tenant=initech"] for r in results]))
    return {"scenario": scenario, "n": n, "reps": reps, "estimator": estimator, "promote_rate": promote,
            "refuse_rate": 1.0 - promote, "mc_se": math.sqrt(max(promote * (1 - promote), 1e-12) / reps),
            "names_initech_rate": float(np.mean([r["names_initech"] for r in results])),
            "only_initech_flagged_rate": only_initech,
            "two_sided_90_coverage": float(np.mean([r["covered"] for r in results])),
            "mean_diff": float(np.mean([r["diff"] for r in results])),
            "true_diff": float(np.mean(list(scenario_deltas(scenario).values())))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--power-ns", default="5000,10000,20000", help="n values for the power curve of 'better'")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write a Markdown results file")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = [run(s, args.n, args.reps, seed=args.seed, workers=args.workers)
            for s in ("worse", "boundary", "better", "one_cohort_worse")]
    for n in [int(x) for x in args.power_ns.split(",") if x]:
        if n != args.n:
            rows.append(run("better", n, args.reps, seed=args.seed + 1, workers=args.workers))
    wall = time.perf_counter() - t0
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        print(table)
    print(f"wall time {wall:.0f} s")
    if args.out:
        write_markdown(args.out, rows, wall, args)
    return 0


def write_markdown(path: str, rows: list[dict], wall: float, args) -> None:
    lines = [
        "# Gate replication study (`benchmarks/gate_power.py`)",
        "",
        f"Command: `python benchmarks/gate_power.py --reps {args.reps} --n {args.n} --workers {args.workers} "
        f"--power-ns {args.power_ns} --seed {args.seed}` ({wall:.0f} s on this machine, 2 cores shared).",
        "",
        f"Gate: `ope.gate(fb, estimator=\"dr\", margin={MARGIN}, cohorts=[\"tenant\"], "
        f"guardrails={GUARDRAILS}, alpha=0.05)`; the primary metric must beat the baseline by the margin "
        "overall and be non-inferior within the margin in each of the 4 tenants; cost and latency are "
        "non-inferiority guardrails (true difference 0). Synthetic logs: see the module docstring (logging "
        "policy = baseline, the candidate moves 40% of the traffic, true differences known exactly).",
        "",
        "| scenario | true diff | n | replications | promote rate | refuse rate | MC s.e. | names initech | only initech flagged | 90% two-sided coverage of overall diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['true_diff']:+.4f} | {r['n']:,} | {r['reps']} | {r['promote_rate']:.1%} | "
                     f"{r['refuse_rate']:.1%} | {r['mc_se']:.1%} | {r['names_initech_rate']:.1%} | "
                     f"{r['only_initech_flagged_rate']:.1%} | {r['two_sided_90_coverage']:.1%} |")
    lines += [
        "",
        "Reading: `worse` (truly worse by the margin) must be refused in >= 95% of replications; `better` "
        "(truly better by twice the margin) must be promoted in >= 80%; `boundary` (true gain exactly the "
        "margin, the edge of the null hypothesis) shows the type-I error, which should be at most about "
        "alpha = 5% (the intersection-union test over all cells makes it smaller still); "
        "`one_cohort_worse` is better on average but worse on initech and must be refused, naming initech. "
        "The `names initech` columns matter for `one_cohort_worse` (and the small-n `better` rows, where a "
        "refusal can come from one tenant's wide interval); in `worse` every tenant is worse, so every tenant is named. "
        "The coverage column checks the paired interval: the overall difference's one-sided 95% bounds "
        "form a two-sided 90% interval.",
        "",
    ]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
