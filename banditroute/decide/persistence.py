"""Saving and loading a router's configuration and learned state (a pickle, written atomically),
and resuming from the log after a restart.

The parts pickle themselves without what is transient (the log writer, the lock, cached
entries); :meth:`Router.load <banditroute.decide.router.Router.load>` then opens a log under a
new writer id that still accepts outcomes for the decisions the saved router had pending.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

from ..errors import ConfigError
from ..logs.replay import pending_decisions, replay, writer_positions

__all__ = ["save", "load", "resume"]


def save(router, path: str | os.PathLike) -> None:
    """Write ``router`` to ``path`` atomically (a temporary file, fsynced, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(router, fh, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path: str | os.PathLike, cls: type):
    """The object saved at ``path``, which must be an instance of ``cls``. Load only files you
    wrote yourself: unpickling can run code."""
    with open(path, "rb") as fh:
        obj = pickle.load(fh)
    if not isinstance(obj, cls):
        raise ConfigError("path", str(path), f"does not hold a saved {cls.__name__}")
    return obj


def resume(router, log_dir, *, beliefs: bool, ledger, issuer) -> dict:
    """See :meth:`Router.resume <banditroute.decide.router.Router.resume>` (``ledger`` and
    ``issuer`` are the router's own parts; the caller holds its lock)."""
    log_dir = router.config.log_dir if log_dir is None else os.fspath(log_dir)
    if log_dir is None:
        raise ConfigError("log_dir", None, "must be given (the router has no log of its own)")
    if ledger.seq:
        raise ConfigError("router", f"{ledger.seq} rows logged", "must resume before its first decision")
    applied = replay(router, log_dir) if beliefs else 0
    writers = ledger.adopt(log_dir, writer_positions(log_dir))
    now = time.time_ns() // 1000
    rows = pending_decisions(log_dir, since_us=now - int(router.config.wait_window_s * 1e6), writers=writers)
    restored = issuer.restore(rows, now_us=now)
    return {"outcomes_applied": applied, "pending_restored": restored, "writers": sorted(writers)}
