"""The pending window: decisions issued and still waiting for their outcome.

An outcome updates the posterior only while its decision is pending: at most ``max_pending``
decisions, none older than ``wait_window_s`` (the same rule the logs' join applies). Each entry
is a :class:`PendingDecision`; the window also remembers which pending decisions already have
their outcome, so a second one is a duplicate. Inside, entries are kept as plain tuples in the
record's field order (a batch of 100,000 decisions would spend ~80 ms building records no
outcome may ever read); :meth:`PendingWindow.get` hands out the record.

>>> w = PendingWindow(wait_window_s=1.0, max_pending=2)
>>> w.add("w-0", PendingDecision(0, 0, 0, None, None))
>>> w.add_many(["w-1", "w-2"], [(1, 0, 10, None, None)] * 2, now_us=10)
>>> len(w), w.get("w-0"), w.get("w-2").k
(2, None, 1)
>>> w.mark_recorded("w-2"), w.mark_recorded("w-2")
(True, False)
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

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def n_recorded(self) -> int:
        """Pending decisions that already have their outcome."""
        return len(self._recorded)

    def get(self, decision_id: str) -> PendingDecision | None:
        entry = self._entries.get(decision_id)
        return None if entry is None else _record(PendingDecision, entry)

    def mark_recorded(self, decision_id: str) -> bool:
        """Mark a pending decision's outcome as received; False if it already was."""
        if decision_id in self._recorded:
            return False
        self._recorded.add(decision_id)
        return True

    def mark_late(self, decision_id: str) -> bool:
        """Remember a late outcome (its decision left the window); False if one was already
        received (a retry). The last ``max_pending`` ids are remembered."""
        if decision_id in self._late:
            return False
        self._late.add(decision_id)
        self._late_order.append(decision_id)
        if len(self._late_order) > self.max_pending:
            self._late.discard(self._late_order.popleft())
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
