"""An outcome's way: join it to its pending decision, compute its reward, teach the beliefs
(with drift recalibration) and the policy, let learning candidates learn, log it.

The live path (:meth:`Outcomes.record`) and the replay of the log (:meth:`Outcomes.learn`
with ``log_events=False``) make the same updates in the same order, so they agree.
"""

from __future__ import annotations

import json

import numpy as np

from ..config.profiles import check_number
from ..errors import InvalidOutcomeError, UnknownDecisionError
from ..policies.base import Feedback

__all__ = ["Outcomes"]


class Outcomes:
    """The learning side of one router (its parts are shared with the decision side)."""

    def __init__(self, config, tasks, belief, drift, policy, pending, ledger, rollout):
        self.config = config  # replaced by the router when a profile is added
        self.tasks = tasks
        self.belief = belief
        self.drift = drift
        self.policy = policy
        self.pending = pending
        self.ledger = ledger
        self.rollout = rollout
        self.drift_events: list[dict] = []

    def record(self, decision_id, quality, cost_usd, latency_ms) -> str:
        """See :meth:`banditroute.decide.router.Router.record` (the caller holds the lock)."""
        if not isinstance(decision_id, str):
            raise UnknownDecisionError("decision_id", decision_id, "must be a decision id string")
        objective = self.config.objective
        entry = self.pending.get(decision_id)
        reward = None
        if entry is None:
            if not self.ledger.issued(decision_id):
                raise UnknownDecisionError("decision_id", decision_id, "was not issued by this router")
            if not self.pending.mark_late(decision_id):
                return "duplicate"  # one late outcome per decision is logged
            status = "late"
            if quality is not None and cost_usd is not None and latency_ms is not None:
                reward = objective.reward(quality=quality, cost_usd=cost_usd, latency_ms=latency_ms)
        elif not self.pending.mark_recorded(decision_id):
            return "duplicate"
        else:
            status = "applied"
            profile = self.config.profiles[entry.k]
            if quality is not None:
                reward = objective.reward(quality=quality,
                                          cost_usd=profile.cost_usd if cost_usd is None else cost_usd,
                                          latency_ms=profile.latency_ms if latency_ms is None else latency_ms)
                w = self.tasks.probs(entry.task)
                feedback = (Feedback(json.loads(entry.context), w, entry.k, quality, reward, entry.propensity)
                            if self.policy.learns else None)
                self.learn(entry.k, w, quality, feedback)
                if self.rollout.has_learners:
                    task_probs = dict(zip(self.config.task_types, w.tolist()))
                    for candidate in self.rollout.learners():
                        candidate.learn_elsewhere(profile.name, task_probs, quality)
        self.ledger.outcome(decision_id, quality, cost_usd, latency_ms, reward, status)
        return status

    def learn(self, k: int, task_probs: np.ndarray, quality: float, feedback: Feedback | None, *,
              log_events: bool = True) -> None:
        """The updates of one applied outcome: the Beta beliefs (and drift), then the policy."""
        self.belief.update(k, task_probs, quality)
        if self.drift is not None:
            for (kk, t), kind, stat in self.drift.update(k, task_probs, quality):
                self._recalibrate(kk, t, kind, stat, log_events)
        if feedback is not None:
            self.policy.update(feedback)

    def learn_many(self, ks: np.ndarray, task_probs: np.ndarray, quality: np.ndarray, feedback=None) -> None:
        """Many applied outcomes in order (a replay): vectorised when nothing depends on their
        order (no discounting, no drift detection, a policy that reads the beliefs only), else
        one by one; the same beliefs either way. ``feedback`` (a sequence, one per outcome) is
        required when the policy learns."""
        if self.belief.discount == 1.0 and self.drift is None and not self.policy.learns:
            self.belief.update_many(ks, task_probs, quality)
            return
        for i, (k, w, q) in enumerate(zip(ks.tolist(), task_probs, quality.tolist())):
            self.learn(k, w, q, None if feedback is None else feedback[i], log_events=False)

    def learn_elsewhere(self, profile: str, task_probs, quality: float) -> None:
        """An outcome of a decision made elsewhere: ``task_probs`` maps task types to weights."""
        names = [p.name for p in self.config.profiles]
        if profile not in names:
            return
        w = np.array([task_probs.get(t, 0.0) for t in self.config.task_types])
        if w.sum() > 0:
            self.learn(names.index(profile), w / w.sum(), quality, None)

    def _recalibrate(self, k: int, t: int, kind: str, stat: float, log_event: bool) -> None:
        drift = self.config.drift
        self.belief.shrink(k, t, drift.keep)
        event = {"profile": self.config.profiles[k].name, "task_type": self.config.task_types[t], "change": kind,
                 "statistic": stat, "n_updates": self.belief.n_updates_}
        self.drift_events.append(event)
        if log_event:
            self.ledger.event("drift", f"{event['profile']}/{event['task_type']}", None, "drift-detector",
                              f"Page-Hinkley {kind} statistic {stat:.2f} > threshold {drift.threshold:g}; "
                              f"kept {drift.keep:g} of the evidence")


def check_outcome(name: str, value, lo: float, hi: float | None):
    """An outcome field validated at the boundary (None stays None)."""
    if value is None:
        return None
    return check_number(name, value, lo=lo, hi=hi, error=InvalidOutcomeError)
