"""The pending window: decisions issued and still waiting for their outcome.

An outcome updates the posterior only while its decision is pending: at most ``max_pending``
decisions, none older than ``wait_window_s`` (the same rule the logs' join applies). Each entry
is a :class:`PendingDecision`; the window also remembers which pending decisions already have
their outcome, so a second one is a duplicate. An outcome is *claimed* (:meth:`PendingWindow.claim`)
while its log row is being committed and *settled* (:meth:`PendingWindow.settle`) once the
commit succeeded or failed: only a committed outcome makes a later one a duplicate. Inside, entries are kept as plain tuples in the
record's field order (a batch of 100,000 decisions would spend ~80 ms building records no
outcome may ever read); :meth:`PendingWindow.get` hands out the record.

>>> w = PendingWindow(wait_window_s=1.0, max_pending=2)
>>> w.add("w-0", PendingDecision(0, 0, 0, None, None))
>>> w.add_many(["w-1", "w-2"], [(1, 0, 10, None, None)] * 2, now_us=10)
>>> len(w), w.get("w-0"), w.get("w-2").k
(2, None, 1)
>>> w.claim("w-2", late=False), w.claim("w-2", late=False)
('new', 'in_flight')
>>> w.settle("w-2", late=False, committed=True); w.claim("w-2", late=False)
'duplicate'

"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

__all__ = ["PendingDecision", "PendingWindow"]

_record = tuple.__new__


class PendingDecision(NamedTuple):
    """What an outcome needs of its decision."""

    k: int  #: index of the executed profile
    task: object  #: the task type's index, or the task-type posterior
    ts_us: int  #: decision time, microseconds since the epoch
    context: str | None  #: the context's JSON (kept only for policies that learn from it)
    propensity: float | None  #: the logged propensity (idem)


_TS = PendingDecision._fields.index("ts_us")


class PendingWindow:
    """Decision id -> :class:`PendingDecision`, in issue order, bounded in size and age."""

    def __init__(self, *, wait_window_s: float, max_pending: int):
        self.wait_us = int(wait_window_s * 1e6)
        self.max_pending = max_pending
        self._entries: dict[str, PendingDecision] = {}
        self._recorded: set[str] = set()  # pending decisions that already have their outcome
        self._order: deque[str] = deque()  # a deque keeps the issue order cheaply
        self._late: set[str] = set()  # ids that got their (one) late outcome, the last max_pending
        self._late_order: deque[str] = deque()
        self._inflight: set[str] = set()  # claimed outcomes whose rows are being committed
        self._holes = 0  # discarded ids still in _order

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def n_recorded(self) -> int:
        """Pending decisions that already have their outcome."""
        return len(self._recorded)

    def has_outcome(self, decision_id: str) -> bool:
        """Whether the pending decision ``decision_id`` has its (committed) outcome."""
        return decision_id in self._recorded

    def get(self, decision_id: str) -> PendingDecision | None:
        entry = self._entries.get(decision_id)
        return None if entry is None else _record(PendingDecision, entry)

    def unanswered(self) -> list[tuple[str, tuple]]:
        """``(id, entry)`` of the pending decisions without an outcome, in issue order; each
        entry a tuple in :class:`PendingDecision`'s field order."""
        recorded = self._recorded
        return [(did, e) for did, e in self._entries.items() if did not in recorded]

    def claim(self, decision_id: str, *, late: bool) -> str:
        """Claim the outcome of a decision (``late``: one no longer pending) while its row is
        committed: ``"new"`` (claimed), ``"duplicate"`` (an outcome was committed already) or
        ``"in_flight"`` (another one is being committed). Settle a claim with :meth:`settle`."""
        if decision_id in self._inflight:
            return "in_flight"
        if decision_id in (self._late if late else self._recorded):
            return "duplicate"
        self._inflight.add(decision_id)
        return "new"

    def settle(self, decision_id: str, *, late: bool, committed: bool) -> None:
        """End a claim: with ``committed`` the decision has its outcome (a later one is a
        duplicate); without, the claim is dropped and a retry starts afresh. Late outcomes are
        remembered for the last ``max_pending`` ids."""
        self._inflight.discard(decision_id)
        if not committed:
            return
        if not late:
            if decision_id in self._entries:  # not evicted while its row was committed
                self._recorded.add(decision_id)
            return
        self._late.add(decision_id)
        self._late_order.append(decision_id)
        if len(self._late_order) > self.max_pending:
            self._late.discard(self._late_order.popleft())

    def discard(self, decision_id: str) -> bool:
        """Forget a pending decision (its log row could not be committed); False if unknown."""
        if self._entries.pop(decision_id, None) is None:
            return False
        self._recorded.discard(decision_id)
        if self._order[-1] == decision_id:  # usually the last one issued
            self._order.pop()
        else:  # its id stays in the issue order, skipped by evict()
            self._holes += 1
        return True

    def add(self, decision_id: str, entry: tuple) -> None:
        """Add one decision: a :class:`PendingDecision` or a tuple in its field order."""
        self._entries[decision_id] = entry
        self._order.append(decision_id)
        self.evict(entry[_TS])

    def add_many(self, ids: list[str], entries, *, now_us: int) -> None:
        """Add decisions in issue order: ``entries`` are tuples in :class:`PendingDecision`'s field order."""
        self._entries.update(zip(ids, entries))
        self._order.extend(ids)
        self.evict(now_us)

    def evict(self, now_us: int) -> None:
        """Drop the decisions past the window or beyond the bound, oldest first."""
        entries, order, recorded = self._entries, self._order, self._recorded
        if self._holes:
            self._evict_holes(now_us)
            return
        horizon = now_us - self.wait_us
        limit = self.max_pending
        excess = len(entries) - limit
        if excess > 1:  # a batch past the bound: drop the oldest in C-level loops, not one by one
            victims = [order.popleft() for _ in range(excess)]
            deque(map(entries.__delitem__, victims), maxlen=0)
            recorded.difference_update(victims)
        while order and (len(entries) > limit or entries[order[0]][_TS] < horizon):
            oldest = order.popleft()
            del entries[oldest]
            recorded.discard(oldest)

    def _evict_holes(self, now_us: int) -> None:
        """:meth:`evict` when discarded ids are still in the issue order (rare: failed commits)."""
        entries, order = self._entries, self._order
        horizon = now_us - self.wait_us
        while order:
            head = entries.get(order[0])
            if head is not None and len(entries) <= self.max_pending and head[_TS] >= horizon:
                break
            oldest = order.popleft()
            if head is None:
                self._holes -= 1
            else:
                del entries[oldest]
                self._recorded.discard(oldest)
        if not order:
            self._holes = 0
