"""Saving, loading and resuming a router: its settings and state as data
(:mod:`banditroute.decide.snapshot`; loading never runs code), and a restart that starts from
the newest snapshot of its log and replays only the outcomes logged after it.

``Router.save`` / ``Router.load`` (:func:`save`, :func:`load`)
    Everything: the settings, the learned state, the generators' states, the pending decisions
    (without those that already have their outcome: a second outcome for one of these is
    logged as late rather than refused as a duplicate), the ids issued, the rollout stage and
    its candidates (a Router nested, a VWPolicy as its model; any other object is refused). A
    task model (a scikit-learn object) is code, not data: it is handed to ``load`` again. A
    loaded router continues exactly as the saved one would. ``format="pickle"`` keeps the old
    pickle, explicitly (loading one runs its code: only files you wrote).

Snapshots of a log (:func:`snapshot`, ``<log_dir>/_snapshots/``)
    The learned state and the *log position* it covers: per writer, the highest ``seq`` of the
    rows (every table: they share the writer's sequence) whose applied outcomes it holds. A
    snapshot is the state a replay of the log up to that position computes, not a router's
    live state: :func:`snapshot` starts from the newest valid snapshot, replays the outcomes
    logged after its position into a router with the same settings and no log, and writes the
    result atomically, pruning all but the newest ``keep``, one process at a time. So it is
    right with several writers on one log (``serve --workers N`` without Redis: each replica
    learns only its own outcomes live, a snapshot holds every writer's, as a replay does),
    whatever the live routers learned, and when. A position covers only rows in the log for
    good (:func:`~banditroute.logs.replay.log_positions`): for a running writer it stops before
    a seq still missing (a commit on its way) until the gap is ``HOLE_S`` seconds old.

:func:`resume` (``Router.resume``, a restart)
    Loads the newest valid snapshot (readable, intact, taken with the same learning settings,
    its position's rows in the log; a damaged or foreign one is reported and skipped, for the
    previous one or a full replay), replays the applied outcomes past its position in log
    order, up to each writer's position now (every row of a dead writer, a running one's rows
    in the log for good), and takes over the dead writers' pending decisions. One writer at a
    time, the beliefs equal a full replay's bit for bit (the same updates in the same order).
    With writers side by side, a row committed after a snapshot but stamped before rows it
    covers is applied after them: each outcome once, in an order a full replay would not use
    (equal beliefs without discount or drift detection, up to the order of float sums). A
    resume that replayed ``RESUME_SNAPSHOT_MIN`` outcomes or more leaves a snapshot of its result.
    Last, the rollout stage that the log directory's stored commands leave
    (``<log_dir>/_rollout/commands``, written by the service's ``POST /v1/rollout``) is
    restored: its shadows and its canary with its fraction, each candidate rebuilt from its
    stored routes file and re-taught the applied outcomes logged since it started
    (:mod:`banditroute.decide.rollout_sync`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import time
from pathlib import Path

import polars as pl

from ..beliefs.state import read_file, write_file
from ..errors import ConfigError
from ..logs.replay import (
    learn_outcomes,
    log_positions,
    outcomes_between,
    recent_pending_decisions,
    rows_at,
)
from ..logs.quarantine import quarantined_files
from ..logs.scan import scan_table
from ..logs.segments import lock_path
from . import snapshot as snap
from .commands import FileCommands
from .ledger import open_log
from .rollout_sync import RolloutSync

__all__ = ["HOLE_S", "RESUME_SNAPSHOT_MIN", "load", "resume", "save", "snapshot"]

_log = logging.getLogger("banditroute.decide.persistence")

HOLE_S = 60.0  #: a seq missing this long before a later row of its writer was never written
RESUME_SNAPSHOT_MIN = 10_000  #: a resume that replayed this many outcomes leaves a snapshot


# -- save and load ----------------------------------------------------------------------------------
def save(router, path: str | os.PathLike, *, format: str = "data") -> None:
    """See :meth:`Router.save <banditroute.decide.router.Router.save>`."""
    if format not in ("data", "pickle"):
        raise ConfigError("format", format, "must be 'data' or 'pickle'")
    with router.lock:  # a consistent copy; written outside the lock
        if format == "pickle":
            payload = pickle.dumps(router, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            meta, arrays = snap.state(router, complete=True)
    if format == "data":
        write_file(path, meta, arrays)
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(cls, path: str | os.PathLike, *, log_dir=..., task_model=None, format: str = "data"):
    """See :meth:`Router.load <banditroute.decide.router.Router.load>`."""
    if format == "pickle":
        with open(path, "rb") as fh:
            router = pickle.load(fh)  # runs the file's code: format="pickle" is for your own files only
        if not isinstance(router, cls):
            raise ConfigError("path", str(path), f"does not hold a saved {cls.__name__}")
        saved_log = router.config.log_dir
    elif format == "data":
        meta, arrays = read_file(path)
        if meta.get("task_model") and task_model is None:
            raise ConfigError("task_model", None, f"must be given: {path} was saved from a router with a task "
                              "model, which is code (a classifier), not data, and is not stored")
        try:
            router = snap.build(cls, meta, arrays, task_model=task_model)
            saved_log = snap.from_data(meta["config"]).log_dir
        except (ConfigError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ConfigError("path", str(path), f"holds a state that cannot be loaded ({exc})") from None
    else:
        raise ConfigError("format", format, "must be 'data' or 'pickle'")
    log_dir = saved_log if log_dir is ... else (None if log_dir is None else os.fspath(log_dir))
    router.config = dataclasses.replace(router.config, log_dir=log_dir)
    snap.parts_of(router).ledger.reopen(open_log(router.config))  # continue under a new writer id
    return router


# -- snapshots of a log, and the restart --------------------------------------------------------------
def snapshot(router, log_dir=None, *, keep: int = 2) -> Path:
    """See :meth:`Router.snapshot <banditroute.decide.router.Router.snapshot>`."""
    log_dir = _log_dir(router, log_dir)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError("keep", keep, "must be an integer >= 1")
    target = _blank_like(router)  # the replay's router: same settings, no log
    with snap.writing(log_dir):
        base, _ = _load_newest(target, log_dir)
        after = base["log"]["positions"] if base else {}
        upto = {w: stable for w, (_, stable) in log_positions(log_dir, after=after, hole_s=HOLE_S).items()}
        if base and all(upto.get(w, s) == s for w, s in after.items()) and set(upto) <= set(after):
            return snap.snapshot_dir(log_dir) / base["file"]  # nothing new in the log
        rows, unmatched = outcomes_between(log_dir, after, upto, window_s=_window_s(router))
        learn_outcomes(target, rows)
        target.refresh()
        log = {"positions": {**after, **upto}, "n_outcomes": target.n_updates,
               "n_unmatched": (base["log"]["n_unmatched"] if base else 0) + unmatched}
        return _write(target, log_dir, log, keep)


def resume(router, log_dir=None, *, beliefs: bool = True, snapshots: bool = True) -> dict:
    """See :meth:`Router.resume <banditroute.decide.router.Router.resume>` (the caller holds the lock)."""
    parts = snap.parts_of(router)
    log_dir = _log_dir(router, log_dir)
    if parts.ledger.seq:
        raise ConfigError("router", f"{parts.ledger.seq} rows logged", "must resume before its first decision")
    if beliefs and router.n_updates:
        raise ConfigError("router", f"{router.n_updates} updates", "must be fresh (it would count outcomes twice)")
    base, skipped = _load_newest(router, log_dir) if beliefs and snapshots else (None, [])
    after = base["log"]["positions"] if base else {}
    extent = log_positions(log_dir, after=after, hole_s=HOLE_S)
    writers = parts.ledger.adopt(log_dir, {**{w: s + 1 for w, s in after.items()},
                                           **{w: last + 1 for w, (last, _) in extent.items()}})
    dead = {w for w in writers if lock_path(log_dir, w).exists()}  # a journal writer whose lock we hold now
    # the beliefs take every outcome in the log now; a snapshot of them is written only if that
    # is a position for good (no seq still missing young in a running writer: a commit on its way)
    upto = {w: last for w, (last, _) in extent.items()}
    for_good = all(last == stable or w in dead for w, (last, stable) in extent.items())
    info = {}
    if beliefs:
        rows, unmatched = outcomes_between(log_dir, after, upto, window_s=_window_s(router))
        n_tail = learn_outcomes(router, rows)
        router.refresh()
        if snapshots and (base or skipped):
            info = {"snapshot": base["file"] if base else None, "outcomes_replayed": n_tail,
                    "skipped_snapshots": skipped}
        if snapshots and for_good and n_tail >= RESUME_SNAPSHOT_MIN:
            log = {"positions": {**after, **upto}, "n_outcomes": router.n_updates,
                   "n_unmatched": (base["log"]["n_unmatched"] if base else 0) + unmatched}
            try:
                with snap.writing(log_dir):
                    _write(router, log_dir, log, 2)
            except (OSError, ConfigError) as exc:  # a restart never fails for want of a snapshot
                _log.warning("no snapshot written after the resume: %s", exc)
    _log_quarantined(log_dir, parts.ledger)
    now = time.time_ns() // 1000
    pending = recent_pending_decisions(log_dir, since_us=now - int(router.config.wait_window_s * 1e6), writers=writers)
    restored = parts.issuer.restore(pending, now_us=now)
    rollout = RolloutSync(router, FileCommands(log_dir), log_dir=log_dir).restore()
    if rollout:
        info["rollout"] = rollout
    return {"outcomes_applied": router.n_updates if beliefs else 0, "pending_restored": restored,
            "writers": sorted(writers), **info}


def _load_newest(target, log_dir) -> tuple[dict | None, list[dict]]:
    """Put the newest valid snapshot of ``log_dir`` into the fresh router ``target``; return
    its metadata (with ``file``) and the snapshots skipped, with why."""
    skipped = []
    for path in snap.snapshot_files(log_dir):
        try:
            meta, arrays = read_file(path)
            _check_base(target, log_dir, meta)
            snap.build(type(target), meta, arrays, task_model=target.task_model)  # the state is whole and fits
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # ConfigError is a ValueError
            skipped.append({"snapshot": path.name, "reason": str(exc)})
            _log.warning("snapshot %s skipped: %s", path, exc)
            continue
        for profile in snap.from_data(meta["config"]).profiles[len(target.profiles):]:
            target.add_profile(profile)  # added by a replay, or at run time
        snap.restore_learned(snap.parts_of(target), meta, arrays)
        return {**meta, "file": path.name}, skipped
    return None, skipped


def _check_base(router, log_dir, meta: dict) -> None:
    log = meta.get("log")
    if not isinstance(log, dict) or not isinstance(log.get("positions"), dict):
        raise ConfigError("snapshot", meta.get("kind"), "is not a snapshot of a log (it has no log position)")
    log["positions"] = {str(w): int(s) for w, s in log["positions"].items()}
    log["n_unmatched"] = int(log.get("n_unmatched", 0))
    cfg, theirs = router.config, snap.from_data(meta["config"])
    for name in ("task_types", "prior", "policy", "features", "n_draws", "refresh_every", "discount", "drift",
                 "cost_learning", "error_quality"):
        if getattr(cfg, name) != getattr(theirs, name):
            raise ConfigError("snapshot", name, f"was taken with another {name} ({getattr(theirs, name)!r})")
    mine = [(p.name, p.prior, p.cost_usd, p.latency_ms) for p in cfg.profiles]  # costs: the cost prior
    if [(p.name, p.prior, p.cost_usd, p.latency_ms) for p in theirs.profiles[:len(mine)]] != mine:
        raise ConfigError("snapshot", [p.name for p in theirs.profiles], "was taken with other profiles (or priors)")
    if meta.get("policy_class") != type(router.policy).__name__ or (
            meta.get("learner") is not None and snap.to_data(router.policy.settings()) != meta["learner"]):
        raise ConfigError("snapshot", meta.get("policy_class"), "was taken with another policy")
    missing = set(log["positions"]) - rows_at(log_dir, log["positions"])
    if missing:
        raise ConfigError("snapshot", sorted(missing), "covers rows the log does not hold (another log's "
                          "snapshot, or a log cut short)")


def _write(router, log_dir, log: dict, keep: int) -> Path:
    meta, arrays = snap.state(router, complete=False, log=log)
    path = snap.new_snapshot_path(log_dir)
    write_file(path, meta, arrays)
    snap.prune(log_dir, keep=keep)
    return path


def _blank_like(router):
    """A router with ``router``'s settings (and a fresh learner of its kind), no log, nothing learned."""
    cfg = router.config
    learner_settings = snap.learner_settings(router.policy, cfg)
    learner = None if learner_settings is None else type(router.policy).from_settings(router.policy.settings())
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "profiles"}
    return type(router)(list(cfg.profiles), **{**settings, "log_dir": None}, learner=learner)


def _log_quarantined(log_dir, ledger) -> None:
    """An event row for every file in ``<log_dir>/_quarantine`` that has none yet (moved aside
    by this resume, or by the recovery of a writer opening the directory)."""
    moved = quarantined_files(log_dir)
    if not moved or ledger.writer is None:
        return
    logged = set(scan_table(log_dir, "events").filter(pl.col("event") == "quarantine")
                 .select("policy").collect().get_column("policy").to_list())
    for q in moved:
        if q.original not in logged:
            ledger.event("quarantine", q.original, None, "banditroute", f"moved to {q.path}: {q.reason}")


def _log_dir(router, log_dir) -> str:
    log_dir = router.config.log_dir if log_dir is None else os.fspath(log_dir)
    if log_dir is None:
        raise ConfigError("log_dir", None, "must be given (the router has no log of its own)")
    return log_dir


def _window_s(router) -> float:
    return float(router.config.wait_window_s) + 86_400.0
