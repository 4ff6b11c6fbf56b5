"""Applying a command store's rollout commands to a router: each once, in the store's order.

:class:`RolloutSync` keeps one router's rollout stage in step with a command store
(:mod:`banditroute.decide.commands`): the service's replicas each hold one, accept commands
through it (:meth:`RolloutSync.submit`) and poll the store (:meth:`RolloutSync.sync`).

Exactly once
    A router's :class:`~banditroute.decide.rollout.Rollout` counts the store's commands it
    applied (``position``) and keeps their ids; a command is applied only at the next position
    and only if its id is new, under a lock that :meth:`submit` and :meth:`sync` share.
Accepting a command (:meth:`submit`)
    Catch up with the store; check the command against the stage now (a conflict raises
    :class:`RolloutConflictError`); build its candidate (a ``Router`` from the routes-file
    content, ``log_dir=None``, whose profiles are among the router's and whose task types
    cover the router's); store it at the next position (if another replica took that position
    first, catch up and check again); apply it here, with its event row in the log.
Restoring (:meth:`restore`, at start-up: ``Router.resume`` for a log directory's store, the
service's replica for Redis)
    The commands are folded into the stage they leave (the shadows, the canary and its
    fraction); only those candidates are built. A Router candidate learns from production's
    outcomes (``learn_elsewhere``): a restored one re-learns the applied outcomes logged since the
    command that started it (every writer's in the log directory, in log order), so it holds
    at least what the replica that ran it had learned (live, each replica's candidate learns
    only the outcomes that replica applies). A replica that applies a start command while
    polling builds the candidate fresh: it learns from the outcomes it applies from then on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from ..errors import ConfigError, LogError
from ..logs.scan import scan_table
from .commands import STARTS, Candidate, RolloutCommand, StoredCommand
from .rollout import Rollout
from .snapshot import parts_of

__all__ = ["RolloutConflictError", "RolloutSync", "build_candidate"]

_log = logging.getLogger("banditroute.decide.rollout_sync")
_TRIES = 8  # positions raced for before a submit gives up


class RolloutConflictError(ConfigError):
    """A command that does not fit the rollout stage now (a canary already running, a shadow
    that is not running, ...): the HTTP service answers 409."""


def build_candidate(router, candidate: Candidate):
    """The Router of ``candidate``'s routes-file content (``log_dir=None``), checked against
    ``router``: its profiles must be among the router's (the mixture is over the router's
    profiles) and its task types must cover the router's (it sees every request the router
    accepts). :class:`ConfigError` naming ``candidate_toml`` (or ``candidate_config``) otherwise."""
    def error(problem: str) -> ConfigError:  # the content is not repeated: a named config is named
        if candidate.config is None:
            return ConfigError("candidate_toml", problem=problem)
        return ConfigError("candidate_config", candidate.config, problem)

    with tempfile.TemporaryDirectory(prefix="banditroute-candidate-") as tmp:
        path = Path(tmp) / "candidate.toml"
        path.write_text(candidate.toml, encoding="utf-8")
        try:
            built = type(router).from_config(path, log_dir=None)
        except ConfigError as exc:
            raise error(f"is not a usable routes file ({exc.message})") from None
    extra = [p for p in built.profiles if p not in router.profiles]
    if extra:
        raise error(f"has profiles {extra} that the service does not route to (its profiles: {router.profiles})")
    missing = [t for t in router.task_types if t not in built.task_types]
    if missing:
        raise error(f"lacks the service's task types {missing} (its task types: {built.task_types})")
    return built


class RolloutSync:
    """One router's end of a command store (see the module docstring).

    Parameters
    ----------
    router : Router
    store : FileCommands or RedisCommands
        ``read(after=position) -> [StoredCommand]`` and ``append(position, command) -> bool``.
    log_dir : str or None
        Where a restored learning candidate re-learns from (None: it starts from its prior).
    """

    def __init__(self, router, store, *, log_dir=None):
        self.router = router
        self.store = store
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.rollout = parts_of(router).rollout
        self.n_skipped = 0  #: stored commands that could not be applied here (damaged, or not fitting)
        self._lock = threading.Lock()

    @property
    def position(self) -> int:
        return self.rollout.position

    def stage(self) -> dict:
        """The router's stage (:meth:`Rollout.stage`), with how many outcomes each Router
        candidate learned (``n_updates``)."""
        with self.router.lock:
            stage = self.rollout.stage()
            policies = dict(self.rollout.shadows)
            if self.rollout.canary is not None:
                policies[self.rollout.canary[0]] = self.rollout.canary[1]
            for entry in stage["shadows"] + ([stage["canary"]] if stage["canary"] else []):
                policy = policies[entry["name"]]
                entry["n_updates"] = policy.n_updates if isinstance(policy, type(self.router)) else None
        return stage

    # -- accepting, following ---------------------------------------------------------------------
    def submit(self, command: RolloutCommand) -> str:
        """Store ``command`` and apply it here with its event row (see the module docstring).
        Returns ``"applied"``, or ``"duplicate"`` when a command with its id is applied already."""
        with self._lock:
            candidate = None
            for _ in range(_TRIES):
                self._catch_up()
                if command.command_id in self.rollout.command_ids:
                    return "duplicate"
                with self.router.lock:
                    try:
                        self.rollout.check(command.action, command.name)
                    except ConfigError as exc:
                        raise RolloutConflictError(exc.field, exc.value, exc.problem) from None
                if command.action in STARTS and candidate is None:
                    candidate = build_candidate(self.router, command.candidate)
                position = self.rollout.position + 1
                if self.store.append(position, command):
                    break
            else:
                raise RolloutConflictError("action", command.action, "could not be stored: other commands kept "
                                           "taking its place; retry")
            self._apply(StoredCommand(position, command), candidate, log=True)
            return "applied"

    def sync(self) -> int:
        """Apply the commands stored since the last; returns how many were applied."""
        with self._lock:
            return self._catch_up()

    def _catch_up(self) -> int:
        n = 0
        for stored in self.store.read(after=self.rollout.position):
            if stored.position != self.rollout.position + 1:
                break  # a position not yet visible: the rest next time, in order
            if self._apply_stored(stored):
                n += 1
        return n

    def _apply_stored(self, stored: StoredCommand) -> bool:
        command = stored.command
        try:
            if command is None:
                raise ConfigError("command", stored.position, f"is damaged ({stored.problem})")
            if command.command_id in self.rollout.command_ids:
                raise ConfigError("command_id", command.command_id, "was applied already")
            candidate = build_candidate(self.router, command.candidate) if command.action in STARTS else None
            self._apply(stored, candidate, log=False)
            return True
        except ConfigError as exc:  # never applied later: the store's order goes on without it
            self.n_skipped += 1
            _log.error("rollout command at position %d not applied: %s", stored.position, exc)
            with self.router.lock:
                self.rollout.mark_applied(stored.position)
            return False

    def _apply(self, stored: StoredCommand, candidate, *, log: bool) -> None:
        command = stored.command
        args = dict(policy=candidate, fraction=command.fraction, who=command.who, why=command.why,
                    learns=isinstance(candidate, type(self.router)), command_id=command.command_id,
                    ts_us=command.ts_us)
        with self.router.lock:
            try:
                self.rollout.command(command.action, command.name, log=log, **args)
            except LogError as exc:  # the log refused the event row (sync mode): the command is stored
                _log.error("rollout command %s applied without its event row: %s", command.command_id, exc)
                self.rollout.command(command.action, command.name, log=False, **args)
            self.rollout.mark_applied(stored.position)

    # -- restoring ----------------------------------------------------------------------------------
    def restore(self) -> dict:
        """Bring a router that applied none of the store's commands to the stage they leave
        (see the module docstring); a router that applied some catches up. Returns a summary."""
        with self._lock:
            if self.rollout.position:
                return {"commands": self._catch_up()}
            stored = self.store.read(after=0)
            whole = next((i for i, s in enumerate(stored) if s.position != i + 1), len(stored))
            if whole < len(stored):  # never left by a store (each position is taken after the one before)
                _log.error("rollout commands from position %d on not restored: position %d is missing",
                           stored[whole].position, whole + 1)
                stored = stored[:whole]
            for s in stored:
                if s.command is None:
                    self.n_skipped += 1
                    _log.error("rollout command at position %d not restored: %s", s.position, s.problem)
            if not stored:
                return {}
            shadows, canary, last = _fold(stored)
            replayed = {}
            for command, fraction in [*((c, None) for c in shadows.values()), *([canary] if canary else [])]:
                try:
                    candidate = build_candidate(self.router, command.candidate)
                    replayed[command.name] = self._relearn(candidate, command.ts_us)
                    self._apply(StoredCommand(0, dataclasses.replace(command, fraction=fraction)), candidate,
                                log=False)
                except ConfigError as exc:
                    self.n_skipped += 1
                    _log.error("rollout candidate %r not restored: %s", command.name, exc)
            applied = [s.command for s in stored if s.command is not None]
            with self.router.lock:
                self.rollout.mark_applied(stored[-1].position, ids=[c.command_id for c in applied],
                                          last=last)
            return {"commands": len(stored), "shadows": sorted(shadows),
                    "canary": None if canary is None else {"name": canary[0].name, "fraction": canary[1]},
                    "outcomes_replayed": replayed}

    def _relearn(self, candidate, since_us: int) -> int:
        """Teach a rebuilt Router candidate the applied outcomes logged since ``since_us``."""
        if self.log_dir is None or not isinstance(candidate, type(self.router)):
            return 0
        since = datetime.fromtimestamp(since_us / 1e6, tz=timezone.utc)
        window = timedelta(seconds=float(self.router.config.wait_window_s) + 3600.0)
        outcomes = (scan_table(self.log_dir, "outcomes", on_corrupt="skip")
                    .filter((pl.col("status") == "applied") & pl.col("quality").is_not_null() & (pl.col("ts") >= since))
                    .select("decision_id", "ts", "writer", "seq", "quality"))
        decisions = (scan_table(self.log_dir, "decisions", on_corrupt="skip").filter(pl.col("ts") >= since - window)
                     .select("decision_id", "profile", "task_types", "task_probs"))
        rows = outcomes.join(decisions, on="decision_id", how="inner").sort(["ts", "writer", "seq"]).collect()
        for profile, task_types, task_probs, quality in rows.select(
                "profile", "task_types", "task_probs", "quality").iter_rows():
            candidate.learn_elsewhere(profile, dict(zip(task_types, task_probs)), quality)
        candidate.refresh()
        return rows.height


class _Placeholder:
    """A candidate's stand-in while the commands are folded."""

    def probabilities(self, context):
        return {}


def _fold(stored: list[StoredCommand]):
    """The stage the commands leave: ``{name: start command}`` of the shadows and ``(start
    command, fraction)`` of the canary (None: none), by the rules of a :class:`Rollout`."""
    scratch, starts = Rollout(), {}
    for s in stored:
        c = s.command
        if c is None:
            continue
        try:
            scratch.check(c.action, c.name)
        except ConfigError as exc:
            _log.error("rollout command at position %d does not fit the stage, left out: %s", s.position, exc)
            continue
        scratch.command(c.action, c.name, policy=_Placeholder(), fraction=c.fraction, who=c.who, why=c.why,
                        command_id=c.command_id, ts_us=c.ts_us)
        if c.action in STARTS:
            starts[c.name] = c
    canary = None if scratch.canary is None else (starts[scratch.canary[0]], scratch.canary[2])
    return {name: starts[name] for name in scratch.shadows}, canary, scratch.last_command
