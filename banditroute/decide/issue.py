"""Issuing decisions: draw from the entry's pmf, number the decision, keep it pending, log it.

One uniform draw per request, in order, inverted through the entry's cumulative pmf: the
executed profile is drawn from exactly the distribution that is logged. A batch issues the
same decisions as one call per request would, column-wise (this path runs hundreds of
thousands of times a second: C-level ``map``/``zip``, no Python loop per row).
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_right
from itertools import repeat

import numpy as np
import polars as pl

from ..logs.rows import DecisionRow
from .decision import Decision, make_decision
from .frame import plan_frame
from .pipeline import Rows
from .pending import PendingDecision

__all__ = ["Issuer"]

class Issuer:
    """Draws, numbers, remembers and logs decisions for one router."""

    def __init__(self, pipeline, pending, ledger, rng: np.random.Generator):
        self.pipeline = pipeline
        self.pending = pending
        self.ledger = ledger
        self.rng = rng
        # every pending decision keeps its context's JSON and propensity: a policy that learns
        # reads them, and an escalation decides again for the same request

    def one(self, text: str, task, entry, parent_id: str | None = None) -> Decision:
        k = bisect_right(entry.cdf, self.rng.random() * entry.cdf[-1])
        ts = time.time_ns() // 1000
        ledger, names, tasks = self.ledger, self.pipeline.names, self.pipeline.tasks
        seq = ledger.next_seq()
        did = f"{ledger.writer_id}-{seq}"
        name = names[k]
        propensity = entry.pmf_list[k]
        if ledger.writer is not None:  # first: if the log refuses the row, nothing is pending
            ledger.writer.append(DecisionRow(did, ts, ledger.writer_id, seq, ledger.policy_version, text, tasks.names,
                                             tasks.as_list(task), names, entry.pmf_list, name, propensity,
                                             entry.excluded_json, entry.fallback_reason, entry.shadow_json,
                                             entry.expected[k], parent_id))
        self.pending.add(did, (k, task, ts, text, propensity))
        return make_decision((did, name, propensity, entry.probs, tasks.view(task), ledger.policy_version,
                              entry.excluded, entry.fallback_reason, parent_id))

    def many(self, contexts, budget=None) -> list[Decision]:
        # A batch creates a few objects per decision and none of them cyclic garbage: the cyclic
        # collector would rescan every live object (the pending window, the caller's) over and
        # over while they are made (measured: half of the time of a 20,000-row batch). It runs
        # when the batch is done instead.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._batch(contexts, budget)
        finally:
            if collecting:
                gc.enable()

    def _batch(self, contexts, budget) -> list[Decision]:
        if isinstance(contexts, pl.DataFrame):
            frame = plan_frame(self.pipeline, self.rng, contexts) if budget is None else None
            if frame is not None:
                return self._many(*frame)
            # a case only the row path handles (it also raises the exact error)
            contexts = [{k: v for k, v in row.items() if v is not None} for row in contexts.iter_rows(named=True)]
        resolved = [self.pipeline.resolve(c, budget) for c in contexts]
        if not resolved:
            return []
        texts, tasks, entries = (list(col) for col in zip(*resolved))
        u = self.rng.random(len(entries)).tolist()
        ks = [bisect_right(e.cdf, ui * e.cdf[-1]) for e, ui in zip(entries, u)]
        return self._many(texts, tasks, Rows.of(entries), ks)

    def _many(self, texts, tasks, entries: Rows, ks) -> list[Decision]:
        n = len(ks)
        if n == 0:
            return []
        ts = time.time_ns() // 1000
        ledger, names, space = self.ledger, self.pipeline.names, self.pipeline.tasks
        first, ids = ledger.next_ids(n)
        propensities = [p[k] for p, k in zip(entries.pmf_lists, ks)]
        indices = space.all_indices(tasks)
        rows = zip(ks, tasks, repeat(ts), texts, propensities)
        chosen = list(map(names.__getitem__, ks))
        fallback = entries.fallback_reason
        version = ledger.policy_version
        if ledger.writer is not None:
            ledger.writer.append_columns(DecisionRow, [
                ids, [ts] * n, [ledger.writer_id] * n, range(first, first + n), [version] * n,
                texts, [space.names] * n, space.as_lists(tasks, indices), [names] * n,
                entries.pmf_lists, chosen, propensities, entries.excluded_json, fallback,
                entries.shadow_json, [e[k] for e, k in zip(entries.expected, ks)], [None] * n])
        self.pending.add_many(ids, rows, now_us=ts)  # tuples in PendingDecision's field order (after the log)
        return list(map(make_decision, zip(ids, chosen, propensities, entries.probs, space.views(tasks, indices),
                                           repeat(version), entries.excluded, fallback, repeat(None))))

    def restore(self, rows: pl.DataFrame, *, now_us: int) -> int:
        """Make logged decisions pending again (a restart): the rows of
        :func:`~banditroute.logs.replay.pending_decisions`. Decisions of a profile or task type
        this router does not know are left out. Returns how many were restored."""
        index, space = self.pipeline.index, self.pipeline.tasks
        ids, entries = [], []
        for did, ts, profile, task_types, task_probs, context, propensity in rows.iter_rows():
            k = index.get(profile)
            if k is None or not set(task_types) <= set(space.index):
                continue
            w = np.zeros(len(space.names))
            for t, p in zip(task_types, task_probs):
                w[space.index[t]] = p
            hot = np.flatnonzero(w)
            task = int(hot[0]) if hot.size == 1 and w[hot[0]] == 1.0 else w
            ids.append(did)
            entries.append(PendingDecision(k, task, int(ts), context, propensity))
        self.pending.add_many(ids, entries, now_us=now_us)
        return len(ids)
