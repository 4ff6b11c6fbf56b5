"""The demo's evaluation phase: candidates evaluated off-policy on the logs, the gate, the report.

After the live run (when logs are written), the demo evaluates two candidates on the logged
traffic with :mod:`ope` and shows each estimate next to the simulator's true value for that
candidate (the mean over the logged requests of ``sum_k pi(k | x) E[reward | k, x]``):

* **cost-aware**: a Router with a more cost-averse objective
  (:data:`~banditroute.sim.demo.COST_AWARE_OBJECTIVE`) run as a *shadow* of production: it
  learns from every outcome, never decides, and its distribution is logged with each decision
  (``shadow`` column), so it is evaluated exactly as it was;
* **static table**: the pre-deployment benchmark table.

It then runs the promotion gate (:func:`ope.gate.gate`) for the cost-aware candidate against
the logged policy, per task type, with the guardrails ``DEMO_GUARDRAILS``, and writes the HTML
report (:mod:`banditroute.evaluation.report`). :mod:`ope` and the evaluation modules are
imported only when a run evaluates.

>>> DEMO_GUARDRAILS
{'quality': 0.02, 'latency_ms': 100.0}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DEMO_GUARDRAILS"]

#: Guardrails of the demo's gate (non-inferiority margins per request).
DEMO_GUARDRAILS = {"quality": 0.02, "latency_ms": 100.0}


def _evaluate_candidates(log_dir, *, ids, names, expected, per_request, static_table, router, seed,
                         report) -> dict:
    """Evaluate the shadow and static-table candidates on the logs, gate, and write the report."""
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
