"""An outcome's way: join it to its pending decision, compute its reward, teach the beliefs
(with drift recalibration), the learned cost, latency and availability (``Usage``), the
onboarding caps and the policy, let learning candidates learn, log it.

The live path (:meth:`Outcomes.record`) and the replay of the log (:meth:`Outcomes.learn`
with ``log_events=False``) make the same updates in the same order, so they agree.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl

import time
from typing import NamedTuple

from ..config.mechanisms import check_error_kind
from ..config.profiles import check_number

from ..errors import InvalidOutcomeError, LogError, OutcomeInFlightError, UnknownDecisionError
from ..policies.base import Feedback
from .pending import PendingDecision

__all__ = ["Outcomes", "OutcomeClaim", "check_values"]

_log = logging.getLogger("banditroute.decide.outcomes")


class OutcomeClaim(NamedTuple):
    """An outcome joined to its decision and claimed, not yet learned from (see
    :meth:`Outcomes.claim`): learned once its row is committed (:meth:`Outcomes.settle`)."""

    decision_id: str
    status: str  #: "applied", "late" or "duplicate"
    entry: PendingDecision | None  #: the pending decision (None when late)
    quality: float | None
    cost_usd: float | None
    latency_ms: float | None
    reward: float | None
    error: str | None = None  #: a failed call's kind


class Outcomes:
    """The learning side of one router (its parts are shared with the decision side)."""

    def __init__(self, config, tasks, belief, drift, policy, pending, ledger, rollout, usage, onboarding):
        self.config = config  # replaced by the router when a profile is added
        self.usage = usage
        self.onboarding = onboarding
        self.tasks = tasks
        self.belief = belief
        self.drift = drift
        self.policy = policy
        self.pending = pending
        self.ledger = ledger
        self.rollout = rollout
        self.drift_events: list[dict] = []
        self._unsettled: dict[str, int] = {}  # decision id -> seq of outcome rows logged, not yet settled

    def begin(self, decision_id, quality, cost_usd, latency_ms, error=None, *,
              issued_elsewhere: bool = False) -> OutcomeClaim:
        """See :meth:`banditroute.decide.router.Router.begin_record` (the caller holds the
        lock): claim the outcome and append its row (durable on return in sync mode); a failed
        append drops the claim and raises. :meth:`settle` ends it. ``issued_elsewhere``: the
        decision was issued by another router (a replica sharing the service's Redis), so one
        not pending here is late, not unknown."""
        quality, cost_usd, latency_ms, error = check_values(quality, cost_usd, latency_ms, error)
        claim = self.claim(decision_id, quality, cost_usd, latency_ms, error, issued_elsewhere=issued_elsewhere)
        if claim.status != "duplicate":
            self.log(claim)
        return claim

    def claim(self, decision_id, quality, cost_usd, latency_ms, error=None, *,
              issued_elsewhere: bool = False) -> OutcomeClaim:
        """Join an outcome to its decision and claim it (nothing learned yet): status
        ``"applied"``, ``"late"`` or ``"duplicate"`` (nothing claimed). Raises
        :class:`UnknownDecisionError`, or :class:`OutcomeInFlightError` while another outcome
        of the decision is being committed."""
        if not isinstance(decision_id, str):
            raise UnknownDecisionError("decision_id", decision_id, "must be a decision id string")
        objective = self.config.objective
        entry = self.pending.get(decision_id)
        reward = None
        if entry is None:
            if not (issued_elsewhere or self.ledger.issued(decision_id)):
                raise UnknownDecisionError("decision_id", decision_id, "was not issued by this router")
            status = "late"  # one late outcome per decision is logged
            if quality is not None and cost_usd is not None and latency_ms is not None:
                reward = objective.reward(quality=quality, cost_usd=cost_usd, latency_ms=latency_ms)
        else:
            status = "applied"
            # a failed call delivered nothing: its reward counts quality error_quality, else 0
            judged = quality if error is None else self.config.error_quality or 0.0
            if judged is not None:
                profile = self.config.profiles[entry.k]
                reward = objective.reward(quality=judged,
                                          cost_usd=profile.cost_usd if cost_usd is None else cost_usd,
                                          latency_ms=profile.latency_ms if latency_ms is None else latency_ms)
        claimed = self.pending.claim(decision_id, late=status == "late")
        if claimed == "in_flight":
            raise OutcomeInFlightError("decision_id", decision_id,
                                       "has an outcome being committed to the log right now; retry")
        if claimed == "duplicate":
            status = "duplicate"
        return OutcomeClaim(decision_id, status, entry, quality, cost_usd, latency_ms, reward, error)

    def log(self, claim: OutcomeClaim) -> None:
        """Append a claimed outcome's row (durable on return in sync mode); if that fails, the
        claim is dropped (a retry starts afresh) and the error raised."""
        try:
            seq = self.ledger.outcome(claim.decision_id, claim.quality, claim.cost_usd, claim.latency_ms,
                                      claim.reward, claim.status, claim.error)
        except BaseException:
            self.settle(claim, committed=False)
            raise
        if seq is not None:
            self._unsettled[claim.decision_id] = seq

    def settled_position(self, log_position: int) -> int:
        """The log position below which every outcome row is settled: an applied one is in the
        beliefs (outcomes are settled in the order of their rows, see :meth:`settle`)."""
        return min(self._unsettled.values(), default=log_position)

    def settle(self, claim: OutcomeClaim, *, committed: bool) -> None:
        """End a claim. ``committed`` (its row is durable): the decision has its outcome and an
        applied one teaches the beliefs, the policy and the learning candidates. Otherwise
        nothing changes. Claims are settled in the order their rows were appended (the service
        acknowledges commits in order), so the beliefs hold exactly the applied outcomes below
        :meth:`settled_position`."""
        if claim.status == "duplicate":
            return
        self._unsettled.pop(claim.decision_id, None)
        self.pending.settle(claim.decision_id, late=claim.status == "late", committed=committed)
        entry, quality = claim.entry, claim.quality
        if not committed or claim.status != "applied":
            return
        w = self.tasks.probs(entry.task)
        for event in self.usage.observe(entry.k, w, claim.cost_usd, claim.latency_ms, claim.error, time.time()):
            self._event(*event)
        if claim.error is not None:
            quality = self.config.error_quality
        if quality is None:
            return
        feedback = (Feedback(json.loads(entry.context), w, entry.k, quality, claim.reward, entry.propensity)
                    if self.policy.learns else None)
        self.learn(entry.k, w, quality, feedback)
        self._graduate(True)
        if self.rollout.has_learners:
            task_probs = dict(zip(self.config.task_types, w.tolist()))
            name = self.config.profiles[entry.k].name
            for candidate in self.rollout.learners():
                candidate.learn_elsewhere(name, task_probs, quality)

    def learn(self, k: int, task_probs: np.ndarray, quality: float, feedback: Feedback | None, *,
              log_events: bool = True) -> None:
        """The updates of one applied outcome: the Beta beliefs (and drift), then the policy."""
        self.belief.update(k, task_probs, quality)
        if self.drift is not None:
            for (kk, t), kind, stat in self.drift.update(k, task_probs, quality):
                self._recalibrate(kk, t, kind, stat, log_events)
        if feedback is not None:
            self.policy.update(feedback)

    def learn_many(self, ks: np.ndarray, task_probs: np.ndarray, quality: np.ndarray, feedback=None, *,
                   cost=None, latency=None, failed=None) -> int:
        """Many applied outcomes in order (a replay): vectorised when nothing depends on their
        order (no discounting, no drift detection, a policy that reads the beliefs only), else
        one by one; the same beliefs either way. ``feedback`` (a sequence, one per outcome with a
        quality) is required when the policy learns. ``cost`` / ``latency`` (NaN: not reported)
        and ``failed`` (failed calls) teach :class:`~banditroute.decide.usage.Usage`; a quality
        of NaN teaches the beliefs nothing (a failed call's is ``error_quality``)."""
        if failed is None:  # as record() counts them: answered calls, cost and latency not reported
            failed = np.zeros(len(ks), dtype=bool)
        nan = np.full(len(ks), np.nan)
        self.usage.observe_many(ks, task_probs, nan if cost is None else cost, nan if latency is None else latency,
                                failed)
        if self.config.error_quality is not None:
            quality = np.where(failed, self.config.error_quality, quality)
        rows = np.isfinite(quality)
        if not rows.all():
            ks, task_probs, quality = ks[rows], task_probs[rows], quality[rows]
        self._learn_many(ks, task_probs, quality, feedback)
        self._graduate(False)
        return int(rows.sum())

    def _learn_many(self, ks, task_probs, quality, feedback) -> None:
        if self.belief.discount == 1.0 and self.drift is None and not self.policy.learns:
            self.belief.update_many(ks, task_probs, quality)
            return
        for i, (k, w, q) in enumerate(zip(ks.tolist(), task_probs, quality.tolist())):
            self.learn(k, w, q, None if feedback is None else feedback[i], log_events=False)

    def learn_logged(self, feedback) -> int:
        """Learn logged rounds given as an ``ope.LoggedFeedback`` (``Router.learn``): the profile
        of each round's action, the task-type posterior of its context by this router's task
        model, and quality from ``metrics["quality"]`` (else the rewards, which must then be in
        [0, 1]); rounds of profiles this router does not know or without quality are skipped.
        The bank is redrawn every ``refresh_every`` outcomes, as live. Returns the number learned."""
        index = {p.name: i for i, p in enumerate(self.config.profiles)}
        ks = np.array([index.get(a, -1) for a in feedback.action_names], dtype=np.int64)[feedback.actions]
        metrics = feedback.metrics
        if metrics is not None and "quality" in metrics.columns:
            quality = metrics.get_column("quality").cast(pl.Float64).fill_null(np.nan).to_numpy()
        else:
            quality = np.asarray(feedback.rewards, dtype=np.float64)
        bad = np.isfinite(quality) & ((quality < 0.0) | (quality > 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidOutcomeError(f"quality must be in [0, 1] to learn from (metrics['quality'], else the "
                                      f"rewards), got {quality[i]} at round {i}")
        rows = np.flatnonzero((ks >= 0) & np.isfinite(quality))
        if rows.size == 0:
            return 0
        frame = feedback.contexts
        contexts = ([{}] * rows.size if frame is None else
                    [{k: v for k, v in r.items() if v is not None} for r in frame[rows].iter_rows(named=True)])
        w = np.stack([self.tasks.probs(self.tasks.parse(c)[1]) for c in contexts])
        ks, quality = ks[rows], quality[rows]
        rewards, propensities = feedback.rewards[rows], feedback.propensities[rows]
        learned = None
        if self.policy.learns:
            learned = [Feedback(c, w[i], int(ks[i]), float(quality[i]), float(rewards[i]), float(propensities[i]))
                       for i, c in enumerate(contexts)]
        observed = [metrics.get_column(c).cast(pl.Float64).fill_null(np.nan).to_numpy()[rows]
                    if metrics is not None and c in metrics.columns else None for c in ("cost_usd", "latency_ms")]
        self.learn_many(ks, w, quality, learned, cost=observed[0], latency=observed[1],
                        failed=np.zeros(rows.size, dtype=bool))
        if self.belief.refresh_due:  # as often as the live router would redraw it
            self.belief.refresh()
        return int(rows.size)

    def learn_elsewhere(self, profile: str, task_probs, quality: float) -> None:
        """An outcome of a decision made elsewhere: ``task_probs`` maps task types to weights."""
        names = [p.name for p in self.config.profiles]
        if profile not in names:
            return
        w = np.array([task_probs.get(t, 0.0) for t in self.config.task_types])
        if w.sum() > 0:
            self.learn(names.index(profile), w / w.sum(), quality, None)

    def _graduate(self, log_events: bool) -> None:
        """Onboarding profiles with enough evidence leave the cap (an event row when live)."""
        if not self.onboarding.active:
            return
        evidence = (self.belief.alpha_ + self.belief.beta_ - self.belief.alpha0_ - self.belief.beta0_).sum(axis=1)
        for k, n in self.onboarding.graduates(evidence):
            if log_events:
                self._event("onboarding_graduated", self.config.profiles[k].name,
                            f"{n:.0f} outcomes >= onboarding.min_outcomes {self.onboarding.config.min_outcomes}")

    def _event(self, event: str, policy: str, why: str) -> None:
        try:
            self.ledger.event(event, policy, None, "router", why)
        except LogError as exc:  # the outcome is applied; the event is derived from it
            _log.warning("%s event of %s not logged: %s", event, policy, exc)

    def _recalibrate(self, k: int, t: int, kind: str, stat: float, log_event: bool) -> None:
        drift = self.config.drift
        self.belief.shrink(k, t, drift.keep)
        event = {"profile": self.config.profiles[k].name, "task_type": self.config.task_types[t], "change": kind,
                 "statistic": stat, "n_updates": self.belief.n_updates_}
        self.drift_events.append(event)
        if not log_event:
            return
        try:
            self.ledger.event("drift", f"{event['profile']}/{event['task_type']}", None, "drift-detector",
                              f"Page-Hinkley {kind} statistic {stat:.2f} > threshold {drift.threshold:g}; "
                              f"kept {drift.keep:g} of the evidence")
        except LogError as exc:  # the outcome is applied; the event is derived (a replay detects it again)
            _log.warning("drift event of %s not logged: %s", event["profile"] + "/" + event["task_type"], exc)


def check_values(quality, cost_usd, latency_ms, error) -> tuple:
    """An outcome's values checked at the boundary (raises :class:`InvalidOutcomeError` naming the field)."""
    quality = check_outcome("quality", quality, 0.0, 1.0)
    cost_usd = check_outcome("cost_usd", cost_usd, 0.0, None)
    latency_ms = check_outcome("latency_ms", latency_ms, 0.0, None)
    error = check_error_kind(error)
    if error is not None and quality is not None:
        raise InvalidOutcomeError("quality", quality, f"must not be given with error={error!r}: a failed call "
                                  "has no answer to judge (error_quality sets what a failure teaches)")
    return quality, cost_usd, latency_ms, error


def check_outcome(name: str, value, lo: float, hi: float | None):
    """An outcome field validated at the boundary (None stays None)."""
    if value is None:
        return None
    return check_number(name, value, lo=lo, hi=hi, error=InvalidOutcomeError)
