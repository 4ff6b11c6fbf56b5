"""The Router's state and log methods (replay, resume, snapshots, save/load, the log writer,
onboarding from the log): a part of :class:`~banditroute.decide.router.Router`'s façade kept in
a module of its own (mixed into ``Router``: the attributes it reads are the router's own)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing.Self is Python 3.11+; annotations are not evaluated (see the __future__ import)
    from typing import Self

import polars as pl

from ..logs.replay import replay as replay_logs
from ..logs.replay import scan_table
from . import persistence
from .onboarding import onboarding_from_log

__all__ = ["StateMethods"]


class StateMethods:
    """Replay, resume, snapshots, save/load and the log writer of a router."""

    def replay(self, log_dir: str | os.PathLike) -> int:
        """Rebuild this (fresh) router's beliefs from the outcomes logged under ``log_dir``;
        see :func:`banditroute.logs.replay.replay`. Returns the number of outcomes that taught the
        beliefs (those with a quality; failed calls and quality-less outcomes teach availability, cost
        and latency and are not counted)."""
        with self._lock:
            n = replay_logs(self, log_dir)
            self._onboard(onboarding_from_log(log_dir, self.profiles, scan_table), log=False)
            return n

    def resume(self, log_dir: str | os.PathLike | None = None, *, beliefs: bool = True, snapshot: bool = True) -> dict:
        """Continue, before the first decision, where the routers that logged under ``log_dir``
        (default: this router's) stopped: the beliefs become the newest valid snapshot of the log
        and the outcomes logged after it (all without one, or ``snapshot=False``; none with
        ``beliefs=False``); the dead writers' decisions in the wait window are pending here again
        (see :mod:`~banditroute.decide.persistence`). Returns what was taken over."""
        with self._lock:
            taken = persistence.resume(self, log_dir, beliefs=beliefs, snapshots=snapshot)
            source = log_dir if log_dir is not None else self.config.log_dir
            if source is not None:
                self._onboard(onboarding_from_log(source, self.profiles, scan_table), log=False)
                since = datetime.now(timezone.utc) - timedelta(seconds=self.config.wait_window_s)
                rows = (scan_table(source, "decisions").filter(pl.col("ts") >= since).sort(["ts", "writer", "seq"])
                        .select("decision_id", "parent_id", "profile").collect().iter_rows())
                taken["chains_restored"] = self._escalations.restore(rows, self._pipeline.index)
            return taken

    def _onboard(self, names: list[str], *, log: bool = True) -> None:
        """Put profiles under the onboarding cap (an ``onboarding_start`` event row when ``log``)."""
        if self.config.onboarding is None:
            return
        for name in names:
            if name not in self._onboarding.names(self.profiles):
                self._onboarding.start(self._pipeline.index[name])
                ob = self.config.onboarding
                if log:
                    self._ledger.event("onboarding_start", name, ob.max_share, "router",
                                       f"at most {ob.max_share:g} of the probability until "
                                       f"{ob.min_outcomes} outcomes")

    def snapshot(self, log_dir: str | os.PathLike | None = None, *, keep: int = 2) -> os.PathLike:
        """Write what a replay of ``log_dir`` (default: this router's log) learns now, and the log
        position it covers, to ``<log_dir>/_snapshots/`` for :meth:`resume`; keep the newest ``keep``."""
        return persistence.snapshot(self, log_dir, keep=keep)

    def use_log_writer(self, writer) -> None:
        """Log through ``writer`` (e.g. one a service commits in groups); before any decision."""
        with self._lock:
            self._ledger.use_writer(writer)

    def flush(self) -> None:
        """Make every decision and outcome so far durable on disk."""
        if self._ledger.writer is not None:
            self._ledger.writer.flush()

    def close(self) -> None:
        """Flush the log and release it (and the writers taken over by :meth:`resume`)."""
        if self._ledger.writer is not None:
            self._ledger.writer.close()
        self._ledger.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self, path: str | os.PathLike, *, format: str = "data") -> None:
        """Write the settings and state to ``path`` atomically, as data (loading it runs no code);
        ``format="pickle"``: a pickle (loading one runs its code: only files you wrote)."""
        persistence.save(self, path, format=format)

    @classmethod
    def load(cls, path: str | os.PathLike, *, log_dir: str | os.PathLike | None | object = ..., task_model=None,
             format: str = "data") -> Self:
        """Load :meth:`save`'s file: logs to the saved ``log_dir`` (or the given one; None: no log) under
        a new writer id, and takes the outcomes of the saved pending decisions."""
        return persistence.load(cls, path, log_dir=log_dir, task_model=task_model, format=format)
