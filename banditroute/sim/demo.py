"""The main job on the embedded simulator: route live traffic, learn, and report.

:func:`run_demo` plays a :class:`~banditroute.sim.simulator.Scenario` through a
:class:`~banditroute.Router`: requests are decided in small concurrent batches, the chosen
profiles are executed by the simulator, and outcomes come back to ``Router.record`` a random
number of requests later. The router logs every decision and outcome to ``log_dir``.

The run is compared, request by request, in *expected* reward (the simulator knows
``E[reward | profile, request]``, which removes outcome noise) with

* the **oracle**: the best expected reward among the profiles that exist at that request;
* a **static table**: the best profile per task type from a pre-deployment benchmark of the
  initial profiles (``benchmark_runs`` runs per pair), never updated.

The router's expected reward on a request is ``sum_k pmf[k] * E[reward | k, request]`` with
its logged pmf, i.e. exactly what its decision earns on average. Realised reward (the
objective's value of the outcomes that came back) is reported too.

The per-window routing shares count the executed profiles. The two events are measured on
the logged probabilities instead (the traffic share the router intended, without the noise of
the draw):

* **re-routing**: requests of the affected task type, after a degradation, until the degraded
  profile's share (rolling mean over ``event_window`` such requests) falls below 10%;
* **onboarding**: requests of the task types where a late profile is the best, after it
  joins, until its share (same rolling mean) reaches 50%.

After the live run (when logs are written), the demo evaluates two candidates on the logged
traffic with :mod:`ope` and shows each estimate next to the simulator's true value for that
candidate (the mean over the logged requests of ``sum_k pi(k | x) E[reward | k, x]``):

* **cost-aware**: a Router with a more cost-averse objective (``COST_AWARE_OBJECTIVE``) run as
  a *shadow* of production: it learns from every outcome, never decides, and its distribution
  is logged with each decision (``shadow`` column), so it is evaluated exactly as it was;
* **static table**: the pre-deployment benchmark table.

It then runs the promotion gate (:func:`ope.gate.gate`) for the cost-aware candidate against
the logged policy, per task type, and writes the HTML report (:mod:`banditroute.evaluation.report`).

>>> import io
>>> r = run_demo(n_requests=2_000, seed=0, log_dir=None, progress=False, out=io.StringIO())
>>> r.n_requests, sorted(r.to_dict())[:3], r.candidates, r.report_path
(2000, ['batch_size', 'candidates', 'cumulative_regret'], (), None)
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..config.profiles import Budget, Objective, Profile
from ..errors import ConfigError
from ..beliefs.drift import DriftConfig
from ..decide.router import Router
from .simulator import Scenario, Simulator

__all__ = ["DEMO_OBJECTIVE", "COST_AWARE_OBJECTIVE", "SHARE_OFF", "SHARE_ON", "DemoResult", "run_demo",
           "format_summary"]

#: Quality 1 per good outcome, 10 per USD, 2e-5 per ms: the large profile's cost and latency
#: (0.12 + 0.05) are a real trade-off against its reliability, so the best profile differs by
#: task type.
DEMO_OBJECTIVE = Objective(quality=1.0, cost=10.0, latency=2e-5)

#: The shadow candidate's objective: four times as cost-averse as production.
COST_AWARE_OBJECTIVE = Objective(quality=1.0, cost=40.0, latency=2e-5)
#: Guardrails of the demo's gate (non-inferiority margins per request).
DEMO_GUARDRAILS = {"quality": 0.02, "latency_ms": 100.0}
_AUTO = "auto"

SHARE_OFF = 0.10  # a degraded profile is "routed around" below this share
SHARE_ON = 0.50   # a new profile is "onboarded" at this share where it is the best


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """Numbers of one demo run (all rewards are per request, in objective units).

    Attributes
    ----------
    phases : tuple of dict
        One entry per stretch between events (``stationary``, ``after degradation``,
        ``after join``) and ``overall``: ``start``, ``stop``, ``n``, ``router`` (expected),
        ``router_realised``, ``oracle``, ``static``, ``ratio_to_oracle``, ``ratio_to_static``,
        ``regret`` (sum of oracle - router over the phase).
    windows : tuple of dict
        Per window of requests: rewards, cumulative regret at its end, and ``share``
        ``{task_type: {profile: share}}``.
    degradations, onboardings : tuple of dict
        The measured events (see the module docstring); ``reroute_requests`` and
        ``onboarding_requests`` are None when the threshold was never crossed.
    record_status : dict
        How many ``record()`` calls returned each status.
    candidates : tuple of dict
        Off-policy evaluation after the run (empty without logs): per policy and estimator,
        ``policy``, ``estimator``, ``value``, ``ci_low``, ``ci_high``, ``truth``.
    gate : dict or None
        The gate's verdict for the cost-aware candidate: ``candidate``, ``promote``, ``reasons``.
    report_path : str or None
        Where the HTML report was written.
    drift_events : tuple of dict
        The router's drift detections (profile, task type, change, statistic, and
        ``n_updates``, the number of outcomes applied when it fired).
    """

    n_requests: int
    seed: int
    discount: float
    drift: bool
    exploration: float
    batch_size: int
    objective: dict
    profiles: tuple
    task_types: tuple
    static_table: dict
    phases: tuple
    windows: tuple
    degradations: tuple
    onboardings: tuple
    cumulative_regret: float
    record_status: dict
    log_dir: str | None
    wall_time_s: float
    candidates: tuple = ()
    gate: dict | None = None
    report_path: str | None = None
    evaluation_time_s: float = 0.0
    drift_events: tuple = ()

    def phase(self, name: str) -> dict:
        """The phase called ``name`` (``"stationary"``, ``"overall"``, ...)."""
        for p in self.phases:
            if p["name"] == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field.

        >>> import io, json
        >>> r = run_demo(n_requests=500, seed=1, log_dir=None, progress=False, out=None)
        >>> json.loads(json.dumps(r.to_dict()))["n_requests"]
        500
        """
        return _jsonable(asdict(self))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


class _Progress:
    """A one-line progress bar on a stream (stderr), redrawn at most every 0.1 s."""

    def __init__(self, total: int, *, stream: TextIO, enabled: bool, width: int = 30):
        self.total, self.stream, self.enabled, self.width = total, stream, enabled, width
        self.t0 = time.perf_counter()
        self.last = -1.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and done < self.total:
            return
        self.last = now
        frac = done / self.total
        filled = int(round(self.width * frac))
        elapsed = now - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        self.stream.write(f"\rdemo [{'#' * filled}{'-' * (self.width - filled)}] {frac:4.0%} "
                          f"{done:,}/{self.total:,}  {elapsed:5.1f}s  eta {eta:5.1f}s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def run_demo(*, n_requests: int = 50_000, seed: int = 0, log_dir: str | None = "logs",
             progress: bool = True, out: TextIO | None = sys.stdout, scenario: Scenario | None = None,
             objective: Objective = DEMO_OBJECTIVE, discount: float = 1.0,
             drift: DriftConfig | None = DriftConfig(),
             exploration: float = 0.02, batch_size: int = 16, benchmark_runs: int = 200,
             n_windows: int = 10, event_window: int = 20, progress_stream: TextIO | None = None,
             evaluate: bool = True, report: str | os.PathLike | None = _AUTO) -> DemoResult:
    """Route ``n_requests`` simulated requests through a Router and summarise the run.

    Parameters
    ----------
    n_requests : int
        Requests to route (``--requests``).
    seed : int
        Seeds the simulator and the router (``--seed``).
    log_dir : str or None
        Where the router writes its decision and outcome logs (``--log-dir``); None: no logs.
    progress : bool
        Draw a progress bar on stderr (``--no-progress`` turns it off).
    out : text stream or None
        Where the plain-text summary is printed; None prints nothing (``--json``).
    scenario : Scenario, optional
        The workload; ``Scenario.default(n_requests=n_requests)`` when omitted.
    objective : Objective
        Routing objective, also used for the oracle and the static table.
    discount : float in (0, 1]
        Router forgetting factor, per outcome of a task type. 0.997 keeps an effective memory
        of about 1 / (1 - 0.997) = 333 outcomes per task type: long enough to separate
        profiles whose rewards differ by a few points (forgetting costs some over-exploration
        of cells whose evidence decays back to the prior), short enough to route around a
        degradation within a few hundred requests of its task type. On the default scenario
        (5 seeds, 50,000 requests) 0.99 gave 96.5-96.8% of the oracle overall and re-routed in
        97-163 code requests, 0.995 97.4-97.8% / 100-250, 0.997 97.8-98.1% / 203-400,
        0.998 98.1-98.3% / 208-602, and 1.0 (no forgetting) took 2,811 code requests.
    drift : DriftConfig or None
        Drift-triggered recalibration (the default): a Page-Hinkley detector per (profile,
        task type) resets a cell whose quality changed, so stationary cells keep all their
        evidence (``benchmarks/bench_drift.py``: on this scenario it has less than half the
        regret of discount 0.997, and the same as no forgetting when nothing changes).
        None with ``discount < 1`` gives fixed forgetting instead.
    exploration : float
        Router exploration floor.
    batch_size : int
        Requests decided together (concurrent requests: they see the same posterior).
    benchmark_runs : int
        Pre-deployment benchmark runs per (profile, task type) for the static table.
    n_windows : int
        Windows of the per-window tables.
    event_window : int
        Rolling window (requests of the relevant task types) for the event measurements.
    progress_stream : text stream, optional
        Where the progress bar goes; ``sys.stderr`` when omitted.
    evaluate : bool
        After the run, evaluate the candidates and run the gate (needs ``log_dir``;
        ``--no-evaluate``). The cost-aware candidate runs as a shadow only when this is on.
    report : path, None or "auto"
        Where to write the HTML report (``--report PATH``); ``"auto"``: ``report.html`` next
        to ``log_dir``; None: no report (``--no-report``). Needs ``evaluate`` and ``log_dir``.

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> r = run_demo(n_requests=3_000, seed=0, log_dir=None, progress=False, out=None)
    >>> r.phase("stationary")["n"], r.static_table["chat"]
    (1200, 'small')
    """
    for name, value, lo in (("n_requests", n_requests, 1), ("batch_size", batch_size, 1),
                            ("benchmark_runs", benchmark_runs, 1), ("n_windows", n_windows, 1),
                            ("event_window", event_window, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ConfigError(name, value, f"must be an integer >= {lo}")
    t0 = time.perf_counter()
    scenario = Scenario.default(n_requests=n_requests) if scenario is None else scenario
    sim_seq, router_seq = np.random.SeedSequence(seed).spawn(2)
    sim = Simulator(scenario, seed=int(sim_seq.generate_state(1)[0]))
    bench = sim.benchmark(objective, n_runs=benchmark_runs)
    specs = {p.name: p for p in scenario.profiles}
    names = scenario.profile_names
    index = {n: k for k, n in enumerate(names)}
    n_profiles = len(names)

    def profile(name: str) -> Profile:
        return Profile(name, cost_usd=specs[name].cost_usd, latency_ms=specs[name].latency_ms)

    router = Router(profiles=[profile(n) for n in names if specs[n].joins_at == 0],
                    task_types=list(scenario.task_types), objective=objective, budget=Budget(),
                    exploration=exploration, discount=discount, drift=drift, log_dir=log_dir,
                    seed=int(router_seq.generate_state(1)[0]))
    evaluating = evaluate and log_dir is not None
    if evaluating:
        shadow = Router(profiles=[profile(n) for n in names if specs[n].joins_at == 0],
                        task_types=list(scenario.task_types), objective=COST_AWARE_OBJECTIVE, budget=Budget(),
                        exploration=exploration, discount=discount, drift=drift, log_dir=None,
                        seed=int(router_seq.generate_state(2)[1]))
        router.add_shadow("cost-aware", shadow, who="demo", why="a cheaper objective, evaluated off-policy")
    ids: list[str] = [""] * n_requests

    pmf = np.zeros((n_requests, n_profiles))
    expected = np.empty((n_requests, n_profiles))
    chosen = np.empty(n_requests, dtype=np.int64)
    task = np.empty(n_requests, dtype=np.int64)
    realised = np.empty(n_requests)
    status: dict[str, int] = {}

    def record(arrived) -> None:
        for ticket, q, c, lat in zip(arrived.tickets.tolist(), arrived.quality.tolist(),
                                     arrived.cost_usd.tolist(), arrived.latency_ms.tolist()):
            s = router.record(ticket, quality=q, cost_usd=c, latency_ms=lat)
            status[s] = status.get(s, 0) + 1

    cuts = sorted(set(range(0, n_requests, batch_size)) | set(scenario.event_steps(n_requests)))
    bar = _Progress(n_requests, stream=progress_stream or sys.stderr, enabled=progress)
    try:
        for start, stop in zip(cuts, cuts[1:] + [n_requests]):
            for name in sim.joining(start, stop):
                router.add_profile(profile(name))
            record(sim.poll())
            batch = sim.next_requests(stop - start)
            decisions = router.decide_batch(batch.contexts())
            rows = slice(start, stop)
            chosen[rows] = [index[d.profile] for d in decisions]
            ids[start:stop] = [d.id for d in decisions]
            for i, d in enumerate(decisions, start):
                for name, p in d.probabilities.items():
                    pmf[i, index[name]] = p
            outcome = sim.submit(batch, chosen[rows], tickets=[d.id for d in decisions])
            expected[rows] = sim.expected_reward(batch, objective)
            task[rows] = batch.task
            realised[rows] = (objective.quality * outcome.quality - objective.cost * outcome.cost_usd
                              - objective.latency * outcome.latency_ms)
            bar.update(stop)
        record(sim.drain())  # let every outcome come back so the logs are complete
        router.flush()
    finally:
        bar.close()
        router.close()

    static_idx = np.array([index[bench.table[t]] for t in scenario.task_types])
    steps = np.arange(n_requests)
    per_request = {
        "router": (np.nan_to_num(expected) * pmf).sum(axis=1),
        "router_realised": realised,
        "oracle": np.nanmax(expected, axis=1),
        "static": expected[steps, static_idx[task]],
    }
    evaluation = {}
    t_eval = time.perf_counter()
    if evaluating:
        evaluation = _evaluate_candidates(
            log_dir, ids=ids, names=names, expected=expected, per_request=per_request,
            static_table=dict(bench.table), router=router, seed=seed,
            report=(Path(log_dir).parent / "report.html") if report == _AUTO else report)
    result = DemoResult(
        n_requests=n_requests, seed=seed, discount=discount, drift=drift is not None, exploration=exploration,
        batch_size=batch_size,
        objective={"quality": objective.quality, "cost": objective.cost, "latency": objective.latency},
        profiles=names, task_types=scenario.task_types, static_table=dict(bench.table),
        phases=_phases(per_request, scenario, n_requests),
        windows=_windows(per_request, task, chosen, scenario, n_windows),
        degradations=_degradations(sim, scenario, pmf, task, event_window),
        onboardings=_onboardings(sim, scenario, objective, pmf, task, event_window),
        cumulative_regret=float((per_request["oracle"] - per_request["router"]).sum()),
        drift_events=tuple(router.drift_events), record_status=status, log_dir=None if log_dir is None else str(log_dir),
        wall_time_s=time.perf_counter() - t0, evaluation_time_s=time.perf_counter() - t_eval if evaluating else 0.0,
        **evaluation,
    )
    if out is not None:
        out.write(format_summary(result))
        out.flush()
    return result


# -- off-policy evaluation of candidates -------------------------------------------------------------
def _evaluate_candidates(log_dir, *, ids, names, expected, per_request, static_table, router, seed,
                         report) -> dict:
    """Evaluate the shadow and static-table candidates on the logs, gate, and write the report."""
    import ope
    from ope.gate import default_reward_model, gate
    from ope.logs import join_logs

    from ..evaluation.candidates import load_feedback, resolve_policy
    from ..evaluation.report import render_report, routing_share

    fb = load_feedback(log_dir, cohorts=["task_type"])
    logged_ids = join_logs(log_dir).select("row_index", "decision_id").collect().sort("row_index")
    where = {d: i for i, d in enumerate(ids)}
    req = np.array([where[d] for d in logged_ids.get_column("decision_id").to_list()])
    cols = [names.index(a) for a in fb.action_names]
    truth_matrix = np.nan_to_num(expected[req][:, cols])
    table_spec = "table:" + ",".join(f"{t}={p}" for t, p in static_table.items())
    policies = {
        "logged": resolve_policy("logged", fb),
        "cost-aware": resolve_policy("shadow:cost-aware", fb, log_dir=log_dir),
        "static table": resolve_policy(table_spec, fb),
    }
    truths = {"logged": float(per_request["router"][req].mean()),
              "cost-aware": float(np.einsum("ij,ij->i", policies["cost-aware"], truth_matrix).mean()),
              "static table": float(per_request["static"][req].mean())}
    estimators = {"IPS": ope.IPS(), "SNIPS": ope.SNIPS(), "DR": ope.DR(reward_model=default_reward_model())}
    table = ope.evaluate(fb, policies, estimators, seed=seed)
    rows = tuple({"policy": r["policy"], "estimator": r["estimator"], "value": r["value"], "ci_low": r["ci_low"],
                  "ci_high": r["ci_high"], "truth": truths[r["policy"]], "ess": r["ess"]}
                 for r in table.iter_rows(named=True))
    verdict = gate(fb, candidate=policies["cost-aware"], baseline=policies["logged"], cohorts=["task_type"],
                   guardrails=DEMO_GUARDRAILS, seed=seed)
    report_path = None
    if report is not None:
        html = render_report(
            title="banditroute demo: candidates evaluated on the logged traffic",
            evaluation=table, truths=truths, gate_result=verdict, gate_label="(cost-aware vs logged)",
            weights={k: ope.importance_weights(fb, v) for k, v in policies.items() if k != "logged"},
            routing=routing_share(log_dir), beliefs=router.beliefs(),
            notes=[f"{fb.n_rounds:,} logged decisions with outcomes in {log_dir}. Candidates: 'cost-aware' ran as "
                   "a shadow (objective cost weight 40 instead of 10; evaluated with its logged distribution), "
                   f"'static table' is the pre-deployment benchmark table ({table_spec[6:]})."])
        Path(report).write_text(html, encoding="utf-8")
        report_path = str(report)
    return {"candidates": rows, "report_path": report_path,
            "gate": {"candidate": "cost-aware", "baseline": "logged", "promote": verdict.promote,
                     "reasons": list(verdict.reasons)}}


# -- measurements ---------------------------------------------------------------------------------
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


# -- report ---------------------------------------------------------------------------------------
def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_summary(r: DemoResult) -> str:
    """The plain-text summary :func:`run_demo` prints.

    >>> r = run_demo(n_requests=1_000, seed=0, log_dir=None, progress=False, out=None)
    >>> print(format_summary(r).splitlines()[0])
    banditroute demo: 1,000 requests, seed 0
    """
    o = r.objective
    lines = [
        f"banditroute demo: {r.n_requests:,} requests, seed {r.seed}",
        f"objective: reward = {o['quality']:g}*quality - {o['cost']:g}*cost_usd - {o['latency']:g}*latency_ms",
        f"router: Thompson sampling, discount {r.discount:g}, "
        f"{'drift-triggered recalibration, ' if r.drift else ''}exploration {r.exploration:g}, "
        f"batches of {r.batch_size} concurrent requests, outcomes delayed",
        f"logs: {r.log_dir or '(not written)'}    wall time: {r.wall_time_s:.1f} s    "
        f"record(): " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.record_status.items())),
        "",
        "Static routing table (pre-deployment benchmark of the initial profiles, never updated):",
        "  " + ", ".join(f"{t} -> {p}" for t, p in r.static_table.items()),
        "",
        "Mean reward per request (expected reward; 'realised' = observed outcomes)",
    ]
    head = f"  {'phase':<34}{'requests':>15}{'router':>8}{'realised':>9}{'oracle':>8}{'static':>8}" \
           f"{'vs oracle':>10}{'vs static':>10}{'regret':>9}"
    lines.append(head)
    for p in r.phases:
        lines.append(f"  {p['name']:<34}{p['start']:>7,}-{p['stop']:<7,}{p['router']:>8.3f}"
                     f"{p['router_realised']:>9.3f}{p['oracle']:>8.3f}{p['static']:>8.3f}"
                     f"{_fmt(p['ratio_to_oracle'], '.1%'):>10}{_fmt(p['ratio_to_static'], '.1%'):>10}"
                     f"{p['regret']:>9.1f}")
    lines += ["", "Per window", f"  {'requests':<17}{'router':>8}{'oracle':>8}{'static':>8}"
              f"{'vs oracle':>10}{'cum. regret':>12}"]
    for w in r.windows:
        lines.append(f"  {w['start']:>7,}-{w['stop']:<9,}{w['router']:>8.3f}{w['oracle']:>8.3f}"
                     f"{w['static']:>8.3f}{_fmt(w['ratio_to_oracle'], '.1%'):>10}{w['cumulative_regret']:>12.1f}")
    lines += ["", "Routing share per task type (% of that task type's requests in the window "
                  "executed on each profile)"]
    width = max(8, *(len(p) + 2 for p in r.profiles))
    for t in r.task_types:
        lines.append(f"  {t:<17}" + "".join(f"{p:>{width}}" for p in r.profiles))
        for w in r.windows:
            cells = "".join(f"{_fmt(None if s is None else 100 * s, '.0f'):>{width}}"
                            for s in w["share"][t].values())
            lines.append(f"    {w['start']:>6,}-{w['stop']:<7,}" + cells)
    lines += ["", "Events"]
    for d in r.degradations:
        lines.append(f"  {d['profile']} degrades on {d['task_type']} at request {d['at_request']:,} "
                     f"(share there before: {_fmt(d['share_before'], '.0%')})")
        if d["reroute_requests"] is None:
            lines.append(f"    share never fell below {SHARE_OFF:.0%} ({d['n_affected']:,} {d['task_type']} requests)")
        else:
            lines.append(f"    routed around after {d['reroute_requests']:,} {d['task_type']} requests "
                         f"({d['reroute_all_requests']:,} requests overall): share < {SHARE_OFF:.0%}, "
                         f"then {_fmt(d['share_after_reroute'], '.1%')} on average")
    for b in r.onboardings:
        where = ", ".join(b["best_for"]) or "(no task type)"
        lines.append(f"  {b['profile']} joins at request {b['at_request']:,}; best for {where}")
        if b["onboarding_requests"] is None:
            lines.append(f"    never reached a {SHARE_ON:.0%} share there ({b['n_best']:,} requests)")
        else:
            lines.append(f"    onboarded after {b['onboarding_requests']:,} requests of those task types "
                         f"({b['onboarding_all_requests']:,} overall): share >= {SHARE_ON:.0%}; "
                         f"final share {_fmt(b['final_share'], '.0%')}")
    if not r.degradations and not r.onboardings:
        lines.append("  (none: stationary scenario)")
    if r.candidates:
        lines += ["", f"Candidates evaluated off-policy on the logged traffic ({r.evaluation_time_s:.1f} s); "
                      "true value = simulator's expected reward of the candidate on the logged requests",
                  f"  {'policy':<14}{'estimator':<10}{'estimate':>9}  {'95% interval':<19}{'true':>8}  covered"]
        for c in r.candidates:
            covered = "yes" if c["ci_low"] <= c["truth"] <= c["ci_high"] else "no"
            lines.append(f"  {c['policy']:<14}{c['estimator']:<10}{c['value']:>9.4f}  "
                         f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]{c['truth']:>9.4f}  {covered}")
    if r.gate is not None:
        lines += ["", f"Promotion gate: {r.gate['candidate']} vs {r.gate['baseline']} (per task type; guardrails "
                      + ", ".join(f"{k} {v:g}" for k, v in DEMO_GUARDRAILS.items()) + "): "
                      + ("PROMOTE" if r.gate["promote"] else "REFUSE")]
        lines += [f"  - {reason}" for reason in r.gate["reasons"]]
    if r.report_path:
        lines += ["", f"Report: {r.report_path}"]
    return "\n".join(lines) + "\n"
