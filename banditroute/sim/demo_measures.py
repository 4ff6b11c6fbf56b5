"""What the demo measures on a finished run: reward per phase and window, and the two events.

The run is compared, request by request, in *expected* reward (the simulator knows
``E[reward | profile, request]``, which removes outcome noise) with

* the **oracle**: the best expected reward among the profiles that exist at that request;
* a **static table**: the best profile per task type from a pre-deployment benchmark of the
  initial profiles (``benchmark_runs`` runs per pair), never updated.

The router's expected reward on a request is ``sum_k pmf[k] * E[reward | k, request]`` with
its logged pmf, i.e. exactly what its decision earns on average. Realised reward (the
objective's value of the outcomes that came back) is reported too. ``per_request`` below is
the dict of those four arrays of shape ``(n_requests,)``: ``router``, ``router_realised``,
``oracle`` and ``static``.

The per-window routing shares count the first choices (the profiles executed first; an
escalation's later calls are the cascade's, reported on their own). The two events are measured on
the logged probabilities instead (the traffic share the router intended, without the noise of
the draw):

* **re-routing**: requests of the affected task type, after a degradation, until the degraded
  profile's share (rolling mean over ``event_window`` such requests) falls below
  ``SHARE_OFF`` (10%);
* **onboarding**: requests of the task types where a late profile is the best, after it
  joins, until its share (same rolling mean) reaches ``SHARE_ON`` (50%).

The **learned cost** of a profile is what the router believes one call costs at the end of the
run: the posterior mean of its cost per task type (``Router.beliefs()``, learned from the
``cost_usd`` recorded with every outcome; the configured value is its prior), averaged over task
types with the observations as weights. The simulator's true mean is shown next to it.

The functions are the demo's own steps (:func:`~banditroute.sim.demo.run_demo` calls them);
their results are the ``phases``, ``windows``, ``degradations``, ``onboardings`` and
``learned_costs`` of a :class:`~banditroute.sim.demo_result.DemoResult`.

>>> import numpy as np
>>> _rolling(np.array([1.0, 0.0, 0.0, 1.0]), 2)
array([1. , 0.5, 0. , 0.5])
"""

from __future__ import annotations

import numpy as np

from .scenario import Scenario
from .simulator import Simulator

__all__ = ["SHARE_OFF", "SHARE_ON"]

SHARE_OFF = 0.10  # a degraded profile is "routed around" below this share
SHARE_ON = 0.50   # a new profile is "onboarded" at this share where it is the best


def _stats(per_request: dict, rows: slice, name: str) -> dict:
    means = {k: float(v[rows].mean()) for k, v in per_request.items()}
    return {"name": name, "start": rows.start, "stop": rows.stop, "n": rows.stop - rows.start, **means,
            "ratio_to_oracle": _ratio(means["router"], means["oracle"]),
            "ratio_to_static": _ratio(means["router"], means["static"]),
            "regret": float((per_request["oracle"][rows] - per_request["router"][rows]).sum())}


def _ratio(a: float, b: float) -> float | None:
    """``a / b``, or None when the ratio means nothing (a baseline reward <= 0)."""
    return a / b if b > 0 else None


def _phases(per_request: dict, scenario: Scenario, n: int) -> tuple:
    events = scenario.event_steps(n)
    labels = {d.at_request: f"after {d.profile} degrades on {d.task_type}" for d in scenario.degradations}
    labels.update({p.joins_at: f"after {p.name} joins" for p in scenario.profiles if p.joins_at})
    bounds = [0, *events, n]
    phases = [_stats(per_request, slice(a, b), "stationary" if a == 0 else labels[a])
              for a, b in zip(bounds, bounds[1:])]
    if len(phases) > 1:
        phases.append(_stats(per_request, slice(0, n), "overall"))
    else:
        phases.append({**phases[0], "name": "overall"})
    return tuple(phases)


def _windows(per_request: dict, task: np.ndarray, chosen: np.ndarray, scenario: Scenario,
             n_windows: int) -> tuple:
    n = task.shape[0]
    edges = np.unique(np.linspace(0, n, min(n_windows, n) + 1).round().astype(int))
    regret = np.cumsum(per_request["oracle"] - per_request["router"])
    n_profiles = len(scenario.profiles)
    windows = []
    for a, b in zip(edges, edges[1:]):
        row = _stats(per_request, slice(int(a), int(b)), f"{a}-{b}")
        row["cumulative_regret"] = float(regret[b - 1])
        share = {}
        for t, tname in enumerate(scenario.task_types):
            picks = chosen[a:b][task[a:b] == t]
            counts = np.bincount(picks, minlength=n_profiles)
            share[tname] = {p: (float(c / picks.size) if picks.size else None)
                            for p, c in zip(scenario.profile_names, counts)}
        row["share"] = share
        windows.append(row)
    return tuple(windows)


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    """Causal rolling mean (shorter at the start)."""
    c = np.cumsum(np.concatenate([[0.0], x]))
    i = np.arange(1, x.size + 1)
    lo = np.maximum(0, i - w)
    return (c[i] - c[lo]) / (i - lo)


def _degradations(sim: Simulator, scenario: Scenario, pmf, task, w: int) -> tuple:
    n = task.shape[0]
    found = []
    for d in scenario.degradations:
        if not 0 < d.at_request < n:
            continue
        k, t = sim.profile_names.index(d.profile), sim.task_types.index(d.task_type)
        before = np.flatnonzero((task == t) & (np.arange(n) < d.at_request))[-500:]
        after = np.flatnonzero((task == t) & (np.arange(n) >= d.at_request))
        share = _rolling(pmf[after, k], w)
        below = np.flatnonzero(share < SHARE_OFF)
        hit = int(below[0]) if below.size else None
        found.append({
            "profile": d.profile, "task_type": d.task_type, "at_request": d.at_request,
            "share_before": float(pmf[before, k].mean()) if before.size else None,
            "reroute_requests": None if hit is None else hit + 1,
            "reroute_all_requests": None if hit is None else int(after[hit] - d.at_request + 1),
            "share_after_reroute": None if hit is None else float(pmf[after[hit + 1:], k].mean())
            if hit + 1 < after.size else None,
            "n_affected": int(after.size),
        })
    return tuple(found)


def _onboardings(sim: Simulator, scenario: Scenario, objective, pmf, task, w: int) -> tuple:
    n = task.shape[0]
    found = []
    for p in scenario.profiles:
        if not 0 < p.joins_at < n:
            continue
        k = sim.profile_names.index(p.name)
        best = np.nanargmax(sim.expected_reward_table(p.joins_at, objective), axis=0) == k
        best_tasks = [t for t, b in zip(scenario.task_types, best) if b]
        rows = np.flatnonzero(best[task] & (np.arange(n) >= p.joins_at))
        share = _rolling(pmf[rows, k], w)
        above = np.flatnonzero(share >= SHARE_ON)
        hit = int(above[0]) if above.size else None
        tail = rows[-max(1, rows.size // 5):] if rows.size else rows
        found.append({
            "profile": p.name, "at_request": p.joins_at, "best_for": best_tasks,
            "onboarding_requests": None if hit is None else hit + 1,
            "onboarding_all_requests": None if hit is None else int(rows[hit] - p.joins_at + 1),
            "final_share": float(pmf[tail, k].mean()) if tail.size else None,
            "n_best": int(rows.size),
        })
    return tuple(found)


def _learned_costs(beliefs: tuple, scenario: Scenario) -> tuple:
    """Per profile: the configured, learned and true mean cost and latency of one call, and the
    observations ``n`` (``beliefs``: ``Router.beliefs().to_dicts()``), sorted by how far the
    learned cost is from the configured one (the largest ratio either way first)."""
    specs = {p.name: p for p in scenario.profiles}
    found = []
    for name in dict.fromkeys(b["profile"] for b in beliefs):
        rows = [b for b in beliefs if b["profile"] == name]
        learned = {}
        for metric in ("cost", "latency"):
            n = sum(b[f"{metric}_n"] for b in rows)
            learned[metric] = sum(b[f"{metric}_mean"] * b[f"{metric}_n"] for b in rows) / n if n > 0 else None
        p = specs[name]
        found.append({"profile": name, "n": float(sum(b["cost_n"] for b in rows)),
                      "configured_cost_usd": p.cost_usd, "learned_cost_usd": learned["cost"],
                      "true_cost_usd": p.true_cost_usd, "configured_latency_ms": p.latency_ms,
                      "learned_latency_ms": learned["latency"], "true_latency_ms": p.true_latency_ms})

    def gap(row) -> float:
        learned, configured = row["learned_cost_usd"], row["configured_cost_usd"]
        return abs(np.log(learned / configured)) if learned and configured > 0 else -1.0

    return tuple(sorted(found, key=gap, reverse=True))
