"""The Router's persistence and log plumbing: save/load, pickling, replay, the log writer.

A mixin of :class:`banditroute.decide.router.Router` (as :class:`~banditroute.decide.rollout.RolloutControls`
is): the methods live on ``Router``; this module keeps them out of the decision path's file.
"""

from __future__ import annotations

import os
import pickle
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..logs.store import LogWriter

if TYPE_CHECKING:
    from .router import Router

__all__ = ["RouterPersistence", "open_log"]


def open_log(config) -> LogWriter | None:
    """The log writer a router's settings ask for (a new writer id), or None without ``log_dir``."""
    if config.log_dir is None:
        return None
    return LogWriter(config.log_dir, durability=config.durability, journal=config.log_journal)


class RouterPersistence:
    """Saving, loading, pickling, replaying and logging of a Router (see the module docstring)."""

    def replay(self, log_dir: str | os.PathLike) -> int:
        """Rebuild this (fresh) router's beliefs from the outcomes logged under ``log_dir``;
        see :func:`banditroute.logs.replay.replay`. Returns the number of outcomes applied."""
        from ..logs.replay import replay

        with self._lock:
            return replay(self, log_dir)

    def use_log_writer(self, writer: LogWriter) -> None:
        """Log through ``writer`` (e.g. one a service commits in groups); before any decision."""
        with self._lock:
            if not isinstance(writer, LogWriter):
                raise ConfigError("writer", writer, "must be a LogWriter")
            if self._seq:
                raise ConfigError("writer", writer.writer_id, "must be set before the first decision")
            self._log = writer
            self._issued.pop(self._writer_id, None)
            self._writer_id = writer.writer_id
            self._issued[self._writer_id] = 0

    def flush(self) -> None:
        """Make every decision and outcome so far durable on disk."""
        if self._log is not None:
            self._log.flush()

    def close(self) -> None:
        """Flush the log and release it."""
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        with self._lock:
            state = self.__dict__.copy()
        for transient in ("_log", "_lock", "_cache", "_one_hot_views"):
            state.pop(transient)
        state["_issued"] = {**self._issued, self._writer_id: self._seq}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._log = None
        self._derive()

    def save(self, path: str | os.PathLike) -> None:
        """Write the router's configuration and learned state to ``path`` (atomically).

        The file is a pickle: load only files you wrote yourself.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, log_dir: str | os.PathLike | None | object = ...) -> "Router":
        """Load a router written by :meth:`save`. It logs to the saved ``log_dir`` (or the
        given one; None disables logging) under a new writer id, and still accepts outcomes
        for the decisions the saved router had pending."""
        with open(path, "rb") as fh:
            router = pickle.load(fh)
        if not isinstance(router, cls):
            raise ConfigError("path", str(path), "does not hold a saved Router")
        if log_dir is not ...:
            router.config = replace(router.config, log_dir=None if log_dir is None else str(log_dir))
        router._log = open_log(router.config)
        router._writer_id = router._log.writer_id if router._log else os.urandom(6).hex()
        router._issued[router._writer_id] = 0
        router._seq = 0
        return router
