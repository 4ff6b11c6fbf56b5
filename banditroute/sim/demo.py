"""The main job on the embedded simulator: route live traffic, learn, and report.

:func:`run_demo` plays a :class:`~banditroute.sim.scenario.Scenario` through a
:class:`~banditroute.Router`: requests are decided in small concurrent batches, the chosen
profiles are executed by the simulator, each answer is checked by the simulator's verifier
(a failed one is escalated to an untried profile, ``Router.escalate``: a cascade), and outcomes
come back to ``Router.record`` a random number of requests later, with the cost and latency the
call really had (the router learns them; ``medium-v2`` costs more than it is configured at).
``medium-v2`` joins mid-run under bounded onboarding (``Router(onboarding=...)``), and ``small``
has a provider outage: its failed calls are recorded with ``record(id, error="server_error")``
(and escalated with that reason), and a cooldown (``Router(cooldown=...)``) keeps it out for a
while after three failures in a row. The router logs every decision and outcome to ``log_dir``.

This module holds the live phase; the rest of the demo is in its siblings:

* :mod:`~banditroute.sim.demo_measures`: reward against the oracle and a static table, per
  phase and window (of the first choices), how fast the router re-routes and onboards, and
  the cost it learned;
* :mod:`~banditroute.sim.cascade`: the verifier and the cascade's statistics;
* :mod:`~banditroute.sim.demo_mechanisms`: the onboarding and the cooldowns, request by request
  (and the cooldown's clock: the demo runs far faster than real time);
* :mod:`~banditroute.sim.demo_evaluation`: after the run, the candidates evaluated
  off-policy on the logs, the promotion gate and the HTML report;
* :mod:`~banditroute.sim.demo_result`: the :class:`~banditroute.sim.demo_result.DemoResult`
  it returns; :mod:`~banditroute.sim.demo_summary`: the text it prints, and the lines on stderr
  that report each phase of the run while it goes (:class:`~banditroute.sim.demo_summary.PhaseLog`);
* :mod:`~banditroute.sim.demo_runs`: the run directories of ``banditroute demo``, the routes
  file a run writes next to its logs and the follow-up commands it prints.

A run needs a ``log_dir`` that holds no log yet (the evaluation matches the logged decisions to
this run's): one that does is refused before anything runs.

>>> import io
>>> r = run_demo(n_requests=2_000, seed=0, log_dir=None, progress=False, out=io.StringIO())
>>> r.n_requests, sorted(r.to_dict())[:3], r.candidates, r.report_path, r.routes_path
(2000, ['batch_size', 'beliefs', 'candidates'], (), None, None)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from ..config.mechanisms import Cooldown, Onboarding
from ..config.profiles import Budget, DriftConfig, Objective, Profile
from ..decide.router import Router
from ..errors import ConfigError
from .demo_evaluation import _evaluate_candidates
from ._checks import _check_float
from .cascade import Verifier
from .demo_measures import _degradations, _learned_costs, _onboardings, _phases, _windows
from .demo_mechanisms import DEMO_COOLDOWN, DEMO_ONBOARDING, MechanismWatch, logged_events
from .demo_result import DemoResult
from .demo_runs import ROUTES_FILE, holds_log, routes_toml
from .demo_summary import PhaseLog, format_summary
from .scenario import Scenario
from .simulator import Simulator

__all__ = ["DEMO_OBJECTIVE", "COST_AWARE_OBJECTIVE", "run_demo"]

#: Quality 1 per good outcome, 10 per USD, 2e-5 per ms: the large profile's cost and latency
#: (0.12 + 0.05) are a real trade-off against its reliability, so the best profile differs by
#: task type.
DEMO_OBJECTIVE = Objective(quality=1.0, cost=10.0, latency=2e-5)

#: The shadow candidate's objective: four times as cost-averse as production.
COST_AWARE_OBJECTIVE = Objective(quality=1.0, cost=40.0, latency=2e-5)
_AUTO = "auto"


def run_demo(*, n_requests: int = 50_000, seed: int = 0, log_dir: str | None = "logs",
             progress: bool = True, out: TextIO | None = sys.stdout, scenario: Scenario | None = None,
             objective: Objective = DEMO_OBJECTIVE, discount: float = 1.0,
             drift: DriftConfig | None = DriftConfig(),
             exploration: float = 0.02, batch_size: int = 16, benchmark_runs: int = 200,
             n_windows: int = 10, event_window: int = 20, progress_stream: TextIO | None = None,
             evaluate: bool = True, report: str | os.PathLike | None = _AUTO,
             routes: str | os.PathLike | None = _AUTO, verifier: Verifier | None = Verifier(),
             max_escalations: int = 2, onboarding: Onboarding | None = DEMO_ONBOARDING,
             cooldown: Cooldown | None = DEMO_COOLDOWN, requests_per_second: float = 500.0) -> DemoResult:
    """Route ``n_requests`` simulated requests through a Router and summarise the run.

    Parameters
    ----------
    n_requests : int
        Requests to route (``--requests``).
    seed : int
        Seeds the simulator and the router (``--seed``).
    log_dir : str or None
        Where the router writes its decision and outcome logs (``--log-dir``); None: no logs.
        It must not hold a log already (:class:`~banditroute.errors.ConfigError` before the run).
    progress : bool
        Report the phases on stderr (``--no-progress`` turns it off: nothing on stderr): setup,
        simulation, finish (the outcomes still out, the log flushed, the routes file), then, when
        evaluating, the logs read, the UCB candidate, the off-policy estimates, the promotion gate
        and the report, and the summary; each with a line when it starts and ends, and progress in
        between (a tqdm bar on a terminal, plain lines otherwise: see
        :class:`~banditroute.sim.demo_summary.PhaseLog`).
    out : text stream or None
        Where the plain-text summary is printed; None prints nothing (``--json``).
    scenario : Scenario, optional
        The workload; ``Scenario.default(n_requests=n_requests, cost_gap=True, outage=True)`` when
        omitted.
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
        Where the phases are reported; ``sys.stderr`` when omitted.
    evaluate : bool
        After the run, evaluate the candidates (the cost-aware shadow, UCB, the static table) and
        run the gate (needs ``log_dir``; ``--no-evaluate``). The cost-aware candidate runs as a
        shadow only when this is on; UCB (the demo's router with ``policy="ucb"``) learns the
        logged rounds by progressive validation after the run (about 3 s of 50,000 requests).
    report : path, None or "auto"
        Where to write the HTML report (``--report PATH``); ``"auto"``: ``report.html`` next
        to ``log_dir``; None: no report (``--no-report``). Needs ``evaluate`` and ``log_dir``.
    routes : path, None or "auto"
        Where to write the routes file of the router that ran (its settings, every profile
        including those that joined later; ``Router.from_config`` on it and ``replay`` of the logs
        give the live router's final beliefs); ``"auto"``: ``routes.toml`` next to ``log_dir``;
        None: none. Needs ``log_dir``.
    verifier : Verifier or None
        Checks every answer (default: an answer passes when its quality is at least 0.5, so
        with binary quality the good ones pass); a failed answer is escalated
        (``Router.escalate``) to an untried profile, up to ``max_escalations`` times per
        request, and every call's outcome is recorded. None: no verifier, no escalation (the
        demo before cascades). The reward tables measure the first choices either way;
        ``DemoResult.cascade`` holds the cascade's pass rates, calls and cost per request.
    max_escalations : int
        The router's ``max_escalations``.
    onboarding : Onboarding or None
        The router's bounded onboarding of the profiles that join mid-run (``DEMO_ONBOARDING``:
        at most 10% of each request until 100 outcomes); None: a new profile is not capped.
    cooldown : Cooldown or None
        The router's cooldown of a failing profile (``DEMO_COOLDOWN``: 3 failed calls in a row,
        0.2 s); None: none.
    requests_per_second : float
        The demo traffic's nominal rate: a cooldown of ``seconds`` lasts ``seconds *
        requests_per_second`` requests, whatever the machine's speed (see
        :mod:`~banditroute.sim.demo_mechanisms`).

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> r = run_demo(n_requests=3_000, seed=0, log_dir=None, progress=False, out=None)
    >>> r.phase("stationary")["n"], r.static_table["chat"]
    (1200, 'small')
    """
    _check_float("requests_per_second", requests_per_second, lo=0.0, lo_open=True)
    for name, value, lo in (("n_requests", n_requests, 1), ("batch_size", batch_size, 1),
                            ("benchmark_runs", benchmark_runs, 1), ("n_windows", n_windows, 1),
                            ("event_window", event_window, 1), ("seed", seed, 0),
                            ("max_escalations", max_escalations, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ConfigError(name, value, f"must be an integer >= {lo}")
    if log_dir is not None and holds_log(log_dir):
        raise ConfigError("log_dir", str(log_dir), "already holds a decision log (a demo run needs a fresh directory)")
    t0 = time.perf_counter()
    phases = PhaseLog((progress_stream or sys.stderr) if progress else None)
    evaluating = evaluate and log_dir is not None
    with phases.phase("setup", "scenario, simulator, benchmark table, router"):
        scenario = Scenario.default(n_requests=n_requests, cost_gap=True, outage=True) if scenario is None else scenario
        sim_seq, router_seq = np.random.SeedSequence(seed).spawn(2)
        sim = Simulator(scenario, seed=int(sim_seq.generate_state(1)[0]), verifier=verifier)
        bench = sim.benchmark(objective, n_runs=benchmark_runs)
        specs = {p.name: p for p in scenario.profiles}
        names = scenario.profile_names
        index = {n: k for k, n in enumerate(names)}
        n_profiles = len(names)

        def profile(name: str) -> Profile:
            return Profile(name, cost_usd=specs[name].cost_usd, latency_ms=specs[name].latency_ms)

        initial = [profile(n) for n in names if specs[n].joins_at == 0]
        settings = dict(task_types=list(scenario.task_types), objective=objective, budget=Budget(),
                        exploration=exploration, discount=discount, drift=drift, max_escalations=max_escalations,
                        onboarding=onboarding, cooldown=cooldown)
        router = Router(profiles=initial, **settings, log_dir=log_dir, seed=int(router_seq.generate_state(1)[0]))
        watch = MechanismWatch(router, names, requests_per_second=requests_per_second)
        if evaluating:
            shadow = Router(profiles=[profile(n) for n in names if specs[n].joins_at == 0],
                            task_types=list(scenario.task_types), objective=COST_AWARE_OBJECTIVE, budget=Budget(),
                            exploration=exploration, discount=discount, drift=drift, log_dir=None,
                            seed=int(router_seq.generate_state(2)[1]))
            router.add_shadow("cost-aware", shadow, who="demo", why="a cheaper objective, evaluated off-policy")
    ids: list[str] = [""] * n_requests

    def ucb_candidate() -> tuple:
        """The UCB candidate of the evaluation: a Router with the demo's settings and policy="ucb"
        (n_draws=1: UCB reads the Beta evidence and the mean costs, never the draws), and the
        profiles that join later with the request they join at."""
        ucb = Router(profiles=initial, **settings, policy="ucb", n_draws=1, log_dir=None,
                     seed=int(router_seq.generate_state(3)[2]))
        return ucb, [(specs[n].joins_at, profile(n)) for n in names if 0 < specs[n].joins_at < n_requests]

    pmf = np.zeros((n_requests, n_profiles))
    expected = np.empty((n_requests, n_profiles))
    chosen = np.empty(n_requests, dtype=np.int64)
    task = np.empty(n_requests, dtype=np.int64)
    realised = np.empty(n_requests)
    status: dict[str, int] = {}

    def record(arrived, step: int) -> None:
        for ticket, k, q, c, lat, error in zip(arrived.tickets.tolist(), arrived.profile.tolist(),
                                               arrived.quality.tolist(), arrived.cost_usd.tolist(),
                                               arrived.latency_ms.tolist(), arrived.error.tolist()):
            if error is None:
                s = router.record(ticket, quality=q, cost_usd=c, latency_ms=lat)
            else:  # a failed call answered nothing: no quality (the log's reward counts it as 0)
                s = router.record(ticket, error=error, cost_usd=c, latency_ms=lat)
                watch.failed(names[k], step)
            status[s] = status.get(s, 0) + 1

    cuts = sorted(set(range(0, n_requests, batch_size)) | set(scenario.event_steps(n_requests)))
    with phases.phase("simulation", f"{n_requests:,} requests in batches of {batch_size}", total=n_requests,
                      unit="requests") as advance:
        try:
            for start, stop in zip(cuts, cuts[1:] + [n_requests]):
                for name in sim.joining(start, stop):
                    router.add_profile(profile(name))  # capped until it has earned its share (onboarding)
                    watch.join(name, start)
                record(sim.poll(), start)
                watch.before_batch(start)  # notes graduations; ends the cooldowns whose requests are over
                batch = sim.next_requests(stop - start)
                decisions = router.decide_batch(batch.contexts())
                watch.decided(decisions)
                rows = slice(start, stop)
                chosen[rows] = [index[d.profile] for d in decisions]
                ids[start:stop] = [d.id for d in decisions]
                for i, d in enumerate(decisions, start):
                    for name, p in d.probabilities.items():
                        pmf[i, index[name]] = p
                outcome = sim.submit(batch, chosen[rows], tickets=[d.id for d in decisions])
                if verifier is not None:
                    sim.cascade(batch, outcome, router)  # escalates the answers that fail the verifier
                expected[rows] = sim.expected_reward(batch, objective)
                task[rows] = batch.task
                realised[rows] = (objective.quality * outcome.quality - objective.cost * outcome.cost_usd
                                  - objective.latency * outcome.latency_ms)
                advance(stop)
        except BaseException:
            router.close()
            raise
    routes_path = None
    writes_routes = log_dir is not None and routes is not None
    with phases.phase("finish", "outcomes still out, log flush" + (", routes file" if writes_routes else "")):
        try:
            record(sim.drain(), n_requests)  # let every outcome come back so the logs are complete
            watch.before_batch(n_requests)
            watch.finish()  # no cooldown left running: the final beliefs are what a replay gives
            router.flush()
        finally:
            router.close()
        if writes_routes:
            routes_path = Path(log_dir).parent / ROUTES_FILE if routes == _AUTO else Path(routes)
            routes_path.write_text(routes_toml(router.config, header=(
                f"The router of `banditroute demo --requests {n_requests} --seed {seed}` (profiles that joined\n"
                "during the run included; the router's seed is derived from the demo's). The demo runs far\n"
                "faster than real time: its cooldown.seconds is short (about 30 s suits production).")),
                encoding="utf-8")

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
            static_table=dict(bench.table), router=router, seed=seed, ucb=ucb_candidate(),
            report=(Path(log_dir).parent / "report.html") if report == _AUTO else report, phases=phases)
    with phases.phase("summary", "measures of the run"):
        beliefs = tuple(router.beliefs().to_dicts())
        logged = logged_events(log_dir) if log_dir is not None else None
        caps = watch.onboardings(beliefs, logged)
        result = DemoResult(
            n_requests=n_requests, seed=seed, discount=discount, drift=drift is not None, exploration=exploration,
            batch_size=batch_size,
            objective={"quality": objective.quality, "cost": objective.cost, "latency": objective.latency},
            profiles=names, task_types=scenario.task_types, static_table=dict(bench.table),
            phases=_phases(per_request, scenario, n_requests),
            windows=_windows(per_request, task, chosen, scenario, n_windows),
            degradations=_degradations(sim, scenario, pmf, task, event_window),
            onboardings=tuple({**o, **caps.get(o["profile"], {})}
                              for o in _onboardings(sim, scenario, objective, pmf, task, event_window)),
            failures=watch.failures(scenario, beliefs, logged),
            cumulative_regret=float((per_request["oracle"] - per_request["router"]).sum()),
            drift_events=tuple(router.drift_events), record_status=status,
            log_dir=None if log_dir is None else str(log_dir),
            wall_time_s=time.perf_counter() - t0, evaluation_time_s=time.perf_counter() - t_eval if evaluating else 0.0,
            routes_path=None if routes_path is None else str(routes_path), beliefs=beliefs,
            shadows=("cost-aware",) if evaluating else (),
            cascade=None if verifier is None else {**sim.cascade_stats_.to_dict(), "max_escalations": max_escalations,
                                                   "threshold": verifier.threshold},
            learned_costs=_learned_costs(beliefs, scenario),
            **evaluation,
        )
    if out is not None:
        out.write(format_summary(result))
        out.flush()
    return result
