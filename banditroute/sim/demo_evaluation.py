"""The demo's evaluation phase: candidates evaluated off-policy on the logs, the gate, the report.

After the live run (when logs are written), the demo evaluates three candidates on the logged
traffic with :mod:`ope` and shows each estimate next to the simulator's true value for that
candidate (the mean over the logged requests of ``sum_k pi(k | x) E[reward | k, x]``):

* **cost-aware**: a Router with a more cost-averse objective
  (:data:`~banditroute.sim.demo.COST_AWARE_OBJECTIVE`) run as a *shadow* of production: it
  learns from every outcome, never decides, and its distribution is logged with each decision
  (``shadow`` column), so it is evaluated exactly as it was;
* **ucb**: a Router with the demo's settings and ``policy="ucb"``, a *learning* candidate
  evaluated by progressive validation (:func:`_progressive`: each batch of logged rounds, in
  time order, scored with what it plays having learned the earlier rounds only, as
  ``ope.progressive`` does); a profile that joined mid-run is added to it at the first round of
  its join, as production added it (under the same onboarding cap);
* **static table**: the pre-deployment benchmark table.

It then runs the promotion gate (:func:`ope.gate.gate`) for the cost-aware candidate against
the logged policy, per task type, with the guardrails ``DEMO_GUARDRAILS``, and writes the HTML
report (:mod:`banditroute.evaluation.report`). :mod:`ope` and the evaluation modules are
imported only when a run evaluates. Each step is a phase reported on stderr (reading the logs,
the UCB candidate, the estimates, the gate, the report: see
:class:`~banditroute.sim.demo_summary.PhaseLog`).

>>> DEMO_GUARDRAILS
{'quality': 0.02, 'latency_ms': 100.0}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

__all__ = ["DEMO_GUARDRAILS", "PROGRESSIVE_BATCHES"]

#: Guardrails of the demo's gate (non-inferiority margins per request).
DEMO_GUARDRAILS = {"quality": 0.02, "latency_ms": 100.0}

#: Batches of the UCB candidate's progressive validation (see :func:`_progressive`).
PROGRESSIVE_BATCHES = 500


def _progressive(router, fb, request, joins, *, advance: Callable[[int], None] | None = None) -> np.ndarray:
    """``ope.progressive``'s target of the learning ``router`` on ``fb`` (rounds in time order,
    ``request``: each round's request index: each batch scored before the router learns it),
    adding each late profile of ``joins`` (``[(request index, Profile), ...]``) before the first
    round of a request at or after its join.

    ``PROGRESSIVE_BATCHES`` batches of ``ceil(n / 500)`` rounds (100 of 50,000; ``ope``'s default
    is 4 times smaller): the candidate sees outcomes about as late as the live router does (up to
    50 requests, in batches of 16), and learning costs per batch as well as per round. The demo's
    router reads nothing of a request but its task type (no ``allow`` rules, no request budgets),
    so a batch's distribution is computed once per task type. ``advance(n)`` is told the rounds
    done after each batch (the demo's progress).
    """
    n, names = fb.n_rounds, list(fb.action_names)
    b = max(1, math.ceil(n / PROGRESSIVE_BATCHES))
    at = {}
    for step, p in joins:
        later = np.asarray(request) >= step
        at.setdefault(int(np.argmax(later)) if later.any() else n, []).append(p)
    cuts = sorted(set(range(0, n, b)) | {i for i in at if i < n})
    tasks = fb.contexts.get_column("task_type").cast(pl.String)
    target = np.empty((n, fb.n_actions))
    for start, stop in zip(cuts, cuts[1:] + [n]):
        for p in at.get(start, ()):
            router.add_profile(p)
        rows = tasks[start:stop]
        unique = rows.unique(maintain_order=True)
        pmf = router.action_distribution(pl.DataFrame({"task_type": unique}), names)
        where = {t: i for i, t in enumerate(unique.to_list())}
        target[start:stop] = pmf[[where[t] for t in rows.to_list()]]  # before it learns these rounds
        router.learn(fb.take(slice(start, stop)))
        if advance is not None:
            advance(stop)
    return target


def _evaluate_candidates(log_dir, *, ids, names, expected, per_request, static_table, router, seed,
                         report, phases, ucb=None) -> dict:
    """Evaluate the shadow, UCB (``ucb``: the Router and its joins, see :func:`_progressive`) and
    static-table candidates on the logs, gate, and write the report; each step a phase of
    ``phases`` (a :class:`~banditroute.sim.demo_summary.PhaseLog`)."""
    with phases.phase("evaluation data", "reading the logs, the shadow's logged distributions"):
        import ope
        from ope.gate import default_reward_model, gate

        from ..evaluation.candidates import joined_rounds, load_feedback, resolve_policy
        from ..evaluation.report import render_report, routing_share

        fb = load_feedback(log_dir, cohorts=["task_type"])
        logged_ids = joined_rounds(log_dir, columns=("decision_id",))
        where = {d: i for i, d in enumerate(ids)}
        req = np.array([where[d] for d in logged_ids.get_column("decision_id").to_list()])
        cols = [names.index(a) for a in fb.action_names]
        truth_matrix = np.nan_to_num(expected[req][:, cols])
        table_spec = "table:" + ",".join(f"{t}={p}" for t, p in static_table.items())
        policies = {"logged": resolve_policy("logged", fb),
                    "cost-aware": resolve_policy("shadow:cost-aware", fb, log_dir=log_dir)}
    if ucb is not None:
        with phases.phase("ucb candidate", "progressive validation on the logged rounds", total=fb.n_rounds,
                          unit="rounds") as advance:
            policies["ucb"] = _progressive(ucb[0], fb, req, ucb[1], advance=advance)
    estimators = {"IPS": ope.IPS(), "SNIPS": ope.SNIPS(), "DR": ope.DR(reward_model=default_reward_model())}
    with phases.phase("off-policy estimates", f"{len(policies) + 1} candidates x {', '.join(estimators)}"):
        policies["static table"] = resolve_policy(table_spec, fb)
        truths = {name: float(np.einsum("ij,ij->i", pi, truth_matrix).mean()) for name, pi in policies.items()}
        truths.update({"logged": float(per_request["router"][req].mean()),
                       "static table": float(per_request["static"][req].mean())})
        table = ope.evaluate(fb, policies, estimators, seed=seed)
    rows = tuple({"policy": r["policy"], "estimator": r["estimator"], "value": r["value"], "ci_low": r["ci_low"],
                  "ci_high": r["ci_high"], "truth": truths[r["policy"]], "ess": r["ess"]}
                 for r in table.iter_rows(named=True))
    with phases.phase("promotion gate", "cost-aware vs logged, per task type; guardrails "
                      + ", ".join(DEMO_GUARDRAILS)):
        verdict = gate(fb, candidate=policies["cost-aware"], baseline=policies["logged"], cohorts=["task_type"],
                       guardrails=DEMO_GUARDRAILS, seed=seed)
    report_path = None
    if report is not None:
        with phases.phase("report", str(report)):
            html = render_report(
                title="banditroute demo: candidates evaluated on the logged traffic",
                evaluation=table, truths=truths, gate_result=verdict, gate_label="(cost-aware vs logged)",
                weights={k: ope.importance_weights(fb, v) for k, v in policies.items() if k != "logged"},
                routing=routing_share(log_dir), beliefs=router.beliefs(),
                notes=[f"{fb.n_rounds:,} logged decisions with outcomes in {log_dir}. Candidates: 'cost-aware' ran as "
                       "a shadow (objective cost weight 40 instead of 10; evaluated with its logged distribution), "
                       + ("'ucb' is the demo's router with policy=\"ucb\" (evaluated by progressive validation), "
                          if ucb is not None else "")
                       + f"'static table' is the pre-deployment benchmark table ({table_spec[6:]})."])
            Path(report).write_text(html, encoding="utf-8")
            report_path = str(report)
    return {"candidates": rows, "report_path": report_path,
            "gate": {"candidate": "cost-aware", "baseline": "logged", "promote": verdict.promote,
                     "reasons": list(verdict.reasons)}}
