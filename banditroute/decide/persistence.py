"""Saving and loading a router's configuration and learned state (a pickle, written atomically).

The parts pickle themselves without what is transient (the log writer, the lock, cached
entries); :meth:`Router.load <banditroute.decide.router.Router.load>` then opens a log under a
new writer id that still accepts outcomes for the decisions the saved router had pending.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from ..errors import ConfigError

__all__ = ["save", "load"]


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
