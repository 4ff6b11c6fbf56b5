"""The router of a service replica: a :class:`~banditroute.decide.router.Router` with the steps
that let any replica record the outcome of a decision another replica issued, when the pending
decisions are shared through Redis (:mod:`banditroute.service.redis_outcomes`).

Four short methods on the router's own parts, as the façade's mixins in ``decide/`` are (the
attributes they read are the router's own): read a pending entry (to store it in Redis with the
decision), tell whether a pending decision has its outcome, hold a decision taken from Redis in
the pending window (its outcome is then claimed, logged and learned exactly as one issued here),
and log a late outcome of a decision issued elsewhere (``"late"``, not unknown).

>>> import banditroute as br
>>> r = ReplicaRouter([br.Profile("a"), br.Profile("b")], task_types=["chat"], seed=0)
>>> d = r.decide({"task_type": "chat"})
>>> entry = r.pending_entry(d.id)
>>> other = ReplicaRouter([br.Profile("a"), br.Profile("b")], task_types=["chat"], seed=1)
>>> other.issued(d.id), other.hold(d.id, entry), other.record(d.id, quality=1.0)
(False, True, 'applied')
>>> other.has_outcome(d.id), other.n_updates
(True, 1)
"""

from __future__ import annotations

from ..decide.outcomes import OutcomeClaim
from ..decide.pending import PendingDecision
from ..decide.router import Router

__all__ = ["ReplicaRouter"]


class ReplicaRouter(Router):
    """A :class:`Router` whose pending window other replicas' decisions can enter (see above)."""

    def pending_entry(self, decision_id: str) -> PendingDecision | None:
        """The pending decision ``decision_id`` (None: not pending here)."""
        with self._lock:
            return self._pending.get(decision_id)

    def has_outcome(self, decision_id: str) -> bool:
        """Whether the pending decision ``decision_id`` has its committed outcome here."""
        with self._lock:
            return self._pending.has_outcome(decision_id)

    def hold(self, decision_id: str, entry: PendingDecision) -> bool:
        """Make a decision issued elsewhere pending here (taken from Redis: no other replica has it
        now); its outcome is then recorded as one of this router's. False if it was pending already."""
        with self._lock:
            if self._pending.get(decision_id) is not None:
                return False
            self._pending.add(decision_id, entry)
            return True

    def begin_record_elsewhere(self, decision_id: str, *, quality=None, cost_usd=None, latency_ms=None,
                               error=None) -> OutcomeClaim:
        """:meth:`begin_record` for a decision issued by another replica and no longer pending
        anywhere: logged here with status ``"late"`` (the caller checked that it was issued)."""
        with self._lock:
            return self._outcomes.begin(decision_id, quality, cost_usd, latency_ms, error, issued_elsewhere=True)
