"""The ledger: a router's writer identity, the sequence of its log rows, and the ids it issued.

Every row a router logs (decision, outcome, event) takes the next sequence number of its
writer; a decision's id is ``"<writer>-<seq>"``. The ledger also knows which ids were issued
here (by this writer, or by the writers of the state it was loaded from), so an outcome for an
id it never issued is refused rather than logged.

>>> ledger = Ledger(None)
>>> first, ids = ledger.next_ids(2)
>>> ids == [f"{ledger.writer_id}-0", f"{ledger.writer_id}-1"], ledger.issued(ids[1]), ledger.issued(f"{ledger.writer_id}-2")
(True, True, False)
"""

from __future__ import annotations

import logging
import os
import time

from ..errors import ConfigError, LogError
from ..logs.rows import EventRow, OutcomeRow
from ..logs.journal import claim_writer, forget_writer
from ..logs.store import LogWriter

__all__ = ["Ledger", "open_log"]

_log = logging.getLogger("banditroute.decide.ledger")
_MAX_DIGITS = 19  # a sequence number is an int64


def open_log(config) -> LogWriter | None:
    """The log writer a router's settings ask for (a new writer id), or None without ``log_dir``."""
    if config.log_dir is None:
        return None
    return LogWriter(config.log_dir, durability=config.durability, journal=config.log_journal,
                     table_format=config.log_table)


class Ledger:
    """Sequences a router's log rows through its :class:`~banditroute.logs.store.LogWriter`
    (or only numbers them, without a log)."""

    def __init__(self, writer: LogWriter | None, *, policy_version: str = "", issued: dict[str, int] | None = None):
        self.writer = writer
        self.policy_version = policy_version  # stamped on decision and event rows
        self.writer_id = writer.writer_id if writer is not None else os.urandom(6).hex()
        self.seq = 0
        self._issued = dict(issued or {})  # earlier writers -> how many rows they had sequenced
        self._issued[self.writer_id] = 0
        self._claims: list[tuple] = []  # (log_dir, writer, lock fd) of the writers taken over

    def next_seq(self) -> int:
        seq = self.seq
        self.seq = seq + 1
        return seq

    def next_ids(self, n: int) -> tuple[int, list[str]]:
        """Sequence ``n`` decisions: their first sequence number and their ids."""
        first = self.seq
        self.seq = first + n
        return first, list(map(f"{self.writer_id}-".__add__, map(str, range(first, first + n))))

    def issued(self, decision_id: str) -> bool:
        """Whether ``decision_id`` was issued by this writer or one whose state this one holds."""
        writer, _, seq = decision_id.rpartition("-")
        issued = self._issued.get(writer)
        # canonical ids only: ASCII digits, no leading zero, no more digits than a seq can have
        return (issued is not None and seq.isascii() and seq.isdigit() and len(seq) <= _MAX_DIGITS
                and (seq[0] != "0" or len(seq) == 1)
                and int(seq) < (self.seq if writer == self.writer_id else issued))

    def issued_counts(self) -> dict[str, int]:
        """Every writer whose ids count as issued here -> how many rows it sequenced (this one's included)."""
        counts = {w: n for w, n in self._issued.items() if n}
        counts[self.writer_id] = self.seq
        return counts

    def use_writer(self, writer: LogWriter) -> None:
        """Log through ``writer`` from now on (before anything was sequenced)."""
        if not isinstance(writer, LogWriter):
            raise ConfigError("writer", writer, "must be a LogWriter")
        if self.seq:
            raise ConfigError("writer", writer.writer_id, "must be set before the first decision")
        self._issued.pop(self.writer_id, None)
        self.writer = writer
        self.writer_id = writer.writer_id
        self._issued[self.writer_id] = 0

    def adopt(self, log_dir, positions: dict[str, int]) -> set[str]:
        """Take over the gone writers of ``positions`` (writer -> rows it sequenced): their ids
        count as issued here. A writer whose process still holds its journal lock is skipped; a
        dead one's lock is held until :meth:`release`, so one process only takes it over."""
        taken = set()
        for writer, n in positions.items():
            if writer == self.writer_id:
                continue
            state, fd = claim_writer(log_dir, writer)
            if state == "alive":
                continue
            if fd is not None:
                self._claims.append((log_dir, writer, fd))
            self._issued[writer] = max(self._issued.get(writer, 0), n)
            taken.add(writer)
        return taken

    def release(self) -> None:
        """Let go of the writers taken over: their lock files are deleted (nobody else will
        take them over, and nothing is left behind in the journal directory)."""
        for log_dir, writer, fd in self._claims:
            forget_writer(log_dir, writer)  # while holding its lock: a waiter then sees it absent
            os.close(fd)
        self._claims.clear()

    def reopen(self, writer: LogWriter | None) -> None:
        """Continue under a new writer (e.g. a loaded router): the ids issued so far stay known."""
        self._issued[self.writer_id] = self.seq
        self.writer = writer
        self.writer_id = writer.writer_id if writer is not None else os.urandom(6).hex()
        self.seq = 0
        self._issued[self.writer_id] = 0

    # -- rows ---------------------------------------------------------------------------------
    def outcome(self, decision_id: str, quality, cost_usd, latency_ms, reward, status: str,
                error: str | None = None) -> int | None:
        """Append an outcome row; returns its sequence number (None without a log)."""
        if self.writer is None:
            return None
        seq = self.next_seq()
        self.writer.append(OutcomeRow(decision_id, time.time_ns() // 1000, self.writer_id, seq,
                                      quality, cost_usd, latency_ms, reward, status, error))
        return seq

    def event(self, event: str, policy: str, fraction, who: str, why: str) -> None:
        """An event row (rollout command, drift), flushed at once: rare and important. Raises
        :class:`LogError` if the log refused the row (sync mode); a flush that fails in group
        mode keeps it buffered for the next one (a warning). A writer that does not flush itself
        (``auto_flush=False``: the service's, owned by its group commit) is left to its owner: a
        flush here would commit other requests' rows behind the committer's back, and it would
        acknowledge them before they are durable (the service acks a rollout command after its
        commit)."""
        if self.writer is not None:
            self.writer.append(EventRow(time.time_ns() // 1000, self.writer_id, self.next_seq(), event, policy,
                                        None if fraction is None else float(fraction), who, why,
                                        self.policy_version))
            if not self.writer.auto_flush:
                return
            try:
                self.writer.flush()
            except LogError as exc:
                if self.writer.durability == "sync":
                    raise
                _log.warning("%s event kept buffered, not yet in the log: %s", event, exc)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["writer"] = None
        state["_claims"] = []
        return state
