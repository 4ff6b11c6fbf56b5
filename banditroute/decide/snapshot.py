"""Snapshots: a router's settings and state as data (metadata and arrays, see
:mod:`banditroute.beliefs.state` for the file), and the snapshots of a log.

:func:`state` turns a router into ``(metadata, arrays)`` and :func:`build` back: the settings
as data (:func:`to_data`: profiles, objective, budgets, priors, policy name, ...; only
banditroute's own frozen settings classes are rebuilt, through their validating constructors),
the learned state of each part (``state_arrays()``: the Beta beliefs and their bank, the drift
detector, the policy), and for a complete state (``Router.save``) the generators, the pending
decisions, the ids issued and the rollout candidates that can be stored as data (a Router, a
:class:`~banditroute.policies.vw.VWPolicy`). How they are used: :mod:`banditroute.decide.persistence`.

Snapshots of a log live in ``<log_dir>/_snapshots/`` as ``snapshot-<creation time>-<random>.npz``
(:func:`snapshot_files`, newest first), written one process at a time (:func:`writing`).

>>> to_data(Budget(max_cost_usd=0.01))["__type__"], from_data(to_data(Budget(max_cost_usd=0.01)))
('Budget', Budget(max_cost_usd=0.01, max_latency_ms=None))
>>> from_data({"__type__": "os.system", "fields": {}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
banditroute.errors.ConfigError: settings is not a settings class (Profile, BetaPrior, ..., Category), got 'os.system'
>>> list(_SETTINGS)  # the settings classes rebuilt from data  # doctest: +NORMALIZE_WHITESPACE
['Profile', 'BetaPrior', 'Objective', 'Budget', 'DriftConfig', 'RouterConfig', 'VWConfig', 'CostLearning',
 'Onboarding', 'Cooldown', 'Text', 'Category']
>>> from_data(to_data(Text(analyzer="char", ngrams=4)))
Text(analyzer='char', ngrams=4, bits=8, lowercase=True)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from ..beliefs.state import (
    generator_state,
    pack_strings,
    set_generator_state,
    take,
    unpack_strings,
)
from ..config.features import Category, Text
from ..config.mechanisms import Cooldown, CostLearning, Onboarding
from ..config.profiles import BetaPrior, Budget, DriftConfig, Objective, Profile
from ..config.settings import RouterConfig
from ..errors import ConfigError
from ..logs.durable import fsync_dir, make_dirs
from ..policies.base import Policy, registered
from ..policies.vw import VWConfig, VWPolicy

try:
    import fcntl
except ImportError:  # not POSIX: snapshots are written without the directory lock
    fcntl = None

__all__ = ["SNAPSHOT_DIR", "Parts", "build", "from_data", "learner_settings", "new_snapshot_path", "parts_of", "prune",
           "restore_learned", "snapshot_dir", "snapshot_files", "state", "to_data", "writing"]

SNAPSHOT_DIR = "_snapshots"
_SETTINGS = {cls.__name__: cls for cls in (Profile, BetaPrior, Objective, Budget, DriftConfig, RouterConfig, VWConfig,
                                           CostLearning, Onboarding, Cooldown, Text, Category)}
_LEARNERS = {cls.__name__: cls for cls in (VWPolicy,)}  #: learners handed over as objects, rebuilt from data


class Parts(NamedTuple):
    """The parts of a Router that hold state."""

    rng: np.random.Generator
    belief: object
    drift: object
    policy: Policy
    ledger: object
    pending: object
    issuer: object
    pipeline: object
    rollout: object
    outcomes: object
    usage: object
    onboarding: object


def parts_of(router) -> Parts:
    """The parts of ``router``, read through its pickle state (``Router.__getstate__``, the
    Router's one view of all of them): this module is the Router's serializer, as pickle was."""
    s = router.__getstate__()
    return Parts(s["_rng"], s["_belief"], s["_drift"], s["_policy"], s["_ledger"], s["_pending"], s["_issuer"],
                 s["_pipeline"], s["_rollout"], s["_outcomes"], s["_usage"], s["_onboarding"])


# -- a router as data -------------------------------------------------------------------------------
def state(router, *, complete: bool, log: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``(metadata, arrays)`` of ``router`` (the caller holds its lock): its settings and learned
    state; with ``complete``, also its generators, pending decisions, issued ids and rollout
    candidates (:func:`save`); with ``log``, the log position the state covers (a snapshot)."""
    parts, cfg = parts_of(router), router.config
    arrays: dict[str, np.ndarray] = {}
    _put(arrays, "policy", parts.policy.state_arrays())  # first: a learner that cannot says so
    _put(arrays, "belief", parts.belief.state_arrays())
    _put(arrays, "usage", parts.usage.state_arrays())
    if parts.drift is not None:
        _put(arrays, "drift", parts.drift.state_arrays())
    meta = {"kind": "router", "library_version": _version(), "created_us": time.time_ns() // 1000,
            "complete": complete, "config": to_data(cfg), "policy_class": type(parts.policy).__name__,
            "learner": learner_settings(parts.policy, cfg), "task_model": router.task_model is not None,
            "n_updates": router.n_updates, "drift_events": [dict(e) for e in router.drift_events],
            "rollout": _stage(parts.rollout), "onboarding": sorted(parts.onboarding.active)}
    if complete:
        arrays["router/rng"] = generator_state(parts.rng)
        meta["ledger"] = _issued(parts.ledger)
        meta["pending"] = _put_pending(arrays, router, parts.pending)
        for i, entry in enumerate(meta["rollout"]):
            _put_candidate(arrays, f"rollout/{i}", entry, dict(_candidates(parts.rollout))[entry["name"]], type(router))
    if log is not None:
        meta["log"] = log
    return meta, arrays


def build(cls, meta: dict, arrays: dict, *, task_model=None):
    """A ``cls`` router (without a log) holding the state :func:`state` described."""
    if meta.get("kind") != "router":
        raise ConfigError("kind", meta.get("kind"), "must be 'router'")
    cfg = from_data(meta["config"])
    if not isinstance(cfg, RouterConfig):
        raise ConfigError("config", type(cfg).__name__, "must be a stored RouterConfig")
    learner = None
    if meta.get("learner") is not None:
        learner_class = _LEARNERS.get(meta.get("policy_class"))
        if learner_class is None:
            raise ConfigError("learner", meta.get("policy_class"),
                              f"is not a learner rebuilt from data ({list(_LEARNERS)})")
        learner = learner_class.from_settings(from_data(meta["learner"]))
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "profiles"}
    router = cls(list(cfg.profiles), **{**settings, "log_dir": None}, task_model=task_model, learner=learner)
    parts = parts_of(router)
    restore_learned(parts, meta, arrays)
    if meta.get("complete"):
        _restore_rest(cls, router, parts, meta, arrays)
    return router


def restore_learned(parts: Parts, meta: dict, arrays: dict) -> None:
    """Give a router's parts the learned state of ``arrays`` (shapes checked by each part)."""
    parts.belief.load_state_arrays(_sub(arrays, "belief"))
    usage = _sub(arrays, "usage")
    if usage or "log" in meta:  # a file saved before costs were learned keeps the configured ones
        parts.usage.load_state_arrays(usage)
    for k in meta.get("onboarding", []):
        parts.onboarding.start(int(k))
    if parts.drift is not None:
        parts.drift.load_state_arrays(_sub(arrays, "drift"))
    parts.policy.load_state_arrays(_sub(arrays, "policy"))
    parts.outcomes.drift_events[:] = [dict(e) for e in meta.get("drift_events", [])]
    parts.pipeline.clear_cache()


def _restore_rest(cls, router, parts: Parts, meta: dict, arrays: dict) -> None:
    set_generator_state(parts.rng, take(arrays, "router/rng", (6,), np.uint64, owner="router"), owner="router")
    ledger = parts.ledger
    for writer, n in meta["ledger"]["issued"].items():  # through the ledger's own steps: continue
        ledger.writer_id, ledger.seq = str(writer), int(n)  # under each earlier writer in turn
        ledger.reopen(None)
    parts.issuer.restore(_pending_frame(router, meta["pending"], arrays), now_us=time.time_ns() // 1000)
    for i, entry in enumerate(meta["rollout"]):
        prefix = f"rollout/{i}"
        if "router" in entry:
            candidate = build(cls, entry["router"], _sub(arrays, prefix))
        elif "settings" in entry and entry.get("class") in _LEARNERS:
            candidate = _LEARNERS[entry["class"]].from_settings(from_data(entry["settings"]))
            candidate.load_state_arrays(_sub(arrays, prefix))
        else:
            raise ConfigError(f"rollout.{entry.get('name')}", entry.get("class"), "was not stored")
        if entry["stage"] == "shadow":
            parts.rollout.add_shadow(entry["name"], candidate, learns=bool(entry["learns"]))
        else:
            parts.rollout.start_canary(entry["name"], candidate, entry["fraction"], learns=bool(entry["learns"]))


def learner_settings(policy: Policy, cfg) -> dict | None:
    """The stored settings of a learner handed over as an object (None: a policy chosen by name)."""
    if type(policy) is registered().get(cfg.policy):
        return None
    settings = policy.settings()
    if settings is None or type(policy).__name__ not in _LEARNERS:
        raise ConfigError("learner", type(policy).__name__, f"cannot be rebuilt from data (policies chosen by "
                          f"name and {', '.join(_LEARNERS)} learners can): save with format='pickle'")
    return to_data(settings)


# -- settings as data -----------------------------------------------------------------------------
def to_data(value):
    """``value`` as JSON-ready data: numbers, strings, None, lists; tuples, sets, mappings and
    banditroute's frozen settings objects (``Profile``, ``RouterConfig``, ``VWConfig``, ...)
    tagged so that :func:`from_data` rebuilds them exactly.

    >>> to_data((1, "a"))
    {'__tuple__': [1, 'a']}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [to_data(v) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((to_data(v) for v in value), key=lambda v: (type(v).__name__, v))}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError("settings", dict(value), "must have string keys to be stored as data")
        return {"__dict__": {k: to_data(v) for k, v in value.items()}}
    if type(value).__name__ in _SETTINGS and type(value) is _SETTINGS[type(value).__name__]:
        fields = {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, "fields": fields}
    raise ConfigError("settings", type(value).__name__, "cannot be stored as data")


def from_data(data):
    """The value :func:`to_data` stored; settings objects are built (and validated) by their
    own constructors, and only banditroute's settings classes are built."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [from_data(v) for v in data]
    if isinstance(data, dict) and len(data) == 1 and "__tuple__" in data:
        return tuple(from_data(v) for v in _list(data["__tuple__"]))
    if isinstance(data, dict) and len(data) == 1 and "__set__" in data:
        return frozenset(from_data(v) for v in _list(data["__set__"]))
    if isinstance(data, dict) and len(data) == 1 and isinstance(data.get("__dict__"), dict):
        return {k: from_data(v) for k, v in data["__dict__"].items()}
    if isinstance(data, dict) and set(data) == {"__type__", "fields"} and isinstance(data["fields"], dict):
        cls = _SETTINGS.get(data["__type__"])
        if cls is None:
            raise ConfigError("settings", data["__type__"], f"is not a settings class ({', '.join(_SETTINGS)})")
        try:
            return cls(**{k: from_data(v) for k, v in data["fields"].items()})
        except TypeError as exc:
            raise ConfigError(f"settings.{cls.__name__}", sorted(data["fields"]), f"do not fit ({exc})") from None
    raise ConfigError("settings", data, "is not stored settings data")


def _list(value) -> list:
    if not isinstance(value, list):
        raise ConfigError("settings", value, "must be a list")
    return value


# -- the snapshots of a log -----------------------------------------------------------------------
def snapshot_dir(log_dir: str | os.PathLike) -> Path:
    """``<log_dir>/_snapshots``."""
    return Path(log_dir) / SNAPSHOT_DIR


def snapshot_files(log_dir: str | os.PathLike) -> list[Path]:
    """The snapshots of ``log_dir``, newest first (their names start with their creation time)."""
    return sorted(snapshot_dir(log_dir).glob("snapshot-*.npz"), reverse=True)


def new_snapshot_path(log_dir: str | os.PathLike) -> Path:
    """A fresh name for a snapshot of ``log_dir``: ``snapshot-<creation time, µs>-<random>.npz``."""
    return snapshot_dir(log_dir) / f"snapshot-{time.time_ns() // 1000:020d}-{os.urandom(4).hex()}.npz"


def prune(log_dir: str | os.PathLike, *, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest snapshots (and temporary files an interrupted write
    left more than an hour ago); return what was deleted."""
    directory = snapshot_dir(log_dir)
    old = snapshot_files(log_dir)[keep:]
    stale = [p for p in directory.glob(".snapshot-*.tmp") if time.time() - _mtime(p) > 3600]
    for p in old + stale:
        p.unlink(missing_ok=True)
    if old or stale:
        fsync_dir(directory)
    return old + stale


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


@contextmanager
def writing(log_dir: str | os.PathLike):
    """Hold ``<log_dir>/_snapshots/.lock`` (an exclusive ``flock``, waited for): one process at
    a time writes and prunes the snapshots of a log."""
    directory = snapshot_dir(log_dir)
    make_dirs(directory)
    if fcntl is None:
        yield directory
        return
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)


# -- pieces of the state --------------------------------------------------------------------------
def _put(arrays: dict, prefix: str, part: dict) -> None:
    for name, array in part.items():
        arrays[f"{prefix}/{name}"] = array


def _sub(arrays: dict, prefix: str) -> dict:
    n = len(prefix) + 1
    return {name[n:]: array for name, array in arrays.items() if name.startswith(prefix + "/")}


def _version() -> str:
    try:
        return metadata.version("banditroute")
    except metadata.PackageNotFoundError:
        return "unknown"


def _candidates(rollout):
    yield from rollout.shadows.items()
    if rollout.canary is not None:
        yield rollout.canary[:2]


def _stage(rollout) -> list[dict]:
    """The rollout stage: each candidate's name, stage, canary fraction, whether it learns, its class."""
    learners = rollout.learners()
    fraction = None if rollout.canary is None else rollout.canary[2]
    return [{"name": name, "stage": "shadow" if name in rollout.shadows else "canary",
             "fraction": None if name in rollout.shadows else fraction,
             "learns": any(policy is other for other in learners), "class": type(policy).__name__}
            for name, policy in _candidates(rollout)]


def _put_candidate(arrays: dict, prefix: str, entry: dict, policy, router_class) -> None:
    if isinstance(policy, router_class):
        meta, candidate_arrays = state(policy, complete=True)
        entry["router"] = meta
    elif isinstance(policy, Policy) and type(policy).__name__ in _LEARNERS and policy.settings() is not None:
        entry["settings"] = to_data(policy.settings())
        candidate_arrays = policy.state_arrays()
    else:
        raise ConfigError(f"rollout.{entry['name']}", type(policy).__name__, "cannot be stored as data (Router and "
                          "VWPolicy candidates can): remove it first, or save with format='pickle'")
    _put(arrays, prefix, candidate_arrays)


def _issued(ledger) -> dict:
    return {"writer_id": ledger.writer_id, "issued": {w: int(n) for w, n in ledger.issued_counts().items()}}


def _put_pending(arrays: dict, router, pending) -> dict:
    entries = pending.unanswered()
    n_tasks = len(router.task_types)
    task = np.zeros((len(entries), n_tasks))
    for i, (_, e) in enumerate(entries):
        if isinstance(e[1], (int, np.integer)):
            task[i, e[1]] = 1.0
        else:
            task[i] = e[1]
    keep = bool(entries) and entries[0][1][3] is not None
    _put(arrays, "pending/id", pack_strings([did for did, _ in entries]))
    arrays["pending/k"] = np.array([e[0] for _, e in entries], dtype=np.int64)
    arrays["pending/task"] = task
    arrays["pending/ts_us"] = np.array([e[2] for _, e in entries], dtype=np.int64)
    if keep:
        _put(arrays, "pending/context", pack_strings([e[3] for _, e in entries]))
        arrays["pending/propensity"] = np.array([e[4] for _, e in entries], dtype=np.float64)
    return {"n": len(entries), "contexts": keep}


def _pending_frame(router, info: dict, arrays: dict) -> pl.DataFrame:
    """The saved pending decisions as the rows :meth:`Issuer.restore` takes."""
    n, names = int(info["n"]), router.profiles
    ids = unpack_strings(_sub(arrays, "pending/id"), owner="pending.id")
    k = take(arrays, "pending/k", (n,), np.int64, owner="pending")
    task = take(arrays, "pending/task", (n, len(router.task_types)), np.float64, owner="pending")
    ts = take(arrays, "pending/ts_us", (n,), np.int64, owner="pending")
    if len(ids) != n or np.any((k < 0) | (k >= len(names))):
        raise ConfigError("pending", n, "does not fit the router's profiles")
    if info["contexts"]:
        contexts = unpack_strings(_sub(arrays, "pending/context"), owner="pending.context")
        propensity = take(arrays, "pending/propensity", (n,), np.float64, owner="pending").tolist()
    else:
        contexts, propensity = [None] * n, [None] * n
    return pl.DataFrame({"decision_id": ids, "ts_us": ts, "profile": [names[i] for i in k.tolist()],
                         "task_types": [list(router.task_types)] * n, "task_probs": task.tolist(),
                         "context": contexts, "propensity": propensity},
                        schema={"decision_id": pl.String, "ts_us": pl.Int64, "profile": pl.String,
                                "task_types": pl.List(pl.String), "task_probs": pl.List(pl.Float64),
                                "context": pl.String, "propensity": pl.Float64})
