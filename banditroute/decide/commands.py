"""Durable rollout commands: the record of one command, and the store that orders them.

A rollout command (shadow, canary, fraction, promote, rollback) given to a service must reach
every replica that serves the same routing policy and survive their restarts. It is stored as a
:class:`RolloutCommand` (who, why, when, which replica accepted it, and for a command that starts
a candidate, the candidate as routes-file content with its SHA-256) at the next position of a
*command store*, which every replica reads in order (:mod:`banditroute.decide.rollout_sync`):

:class:`FileCommands` (a log directory; ``serve`` without Redis)
    ``<log_dir>/_rollout/commands/<position>.json``, one file per command. A command is written
    to a temporary file, fsync'ed, then linked to its position's name, which fails if the name
    exists: two replicas racing for one position cannot both take it (the loser reads the
    winner's command and tries again), and a command is whole once its name exists.
:class:`~banditroute.service.rollout_redis.RedisCommands` (``serve --redis-url``)
    A Redis list, appended by a script that checks its length (the same compare-and-append).

The accepting replica also writes the command's event row (``events`` table: event, candidate
name, fraction, who, why), after the command is stored: the store is what replicas apply and
restore from, the event row is the log's account of it. A crash between the two leaves a
command in effect without its event row (the client got no answer; the stored command keeps
who and why).

>>> cmd = RolloutCommand(command_id="c0ffee00", action="canary_fraction", name=None, fraction=0.2,
...                      who="alice", why="more traffic", ts_us=0, replica="w1")
>>> RolloutCommand.from_json(cmd.to_json()) == cmd
True
>>> RolloutCommand(command_id="c0ffee01", action="rollback", name=None, fraction=0.5, who="a", why="b",
...                ts_us=0, replica="w1")
Traceback (most recent call last):
...
banditroute.errors.ConfigError: fraction must be absent for action 'rollback', got 0.5
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..config.hygiene import check_text, invalid
from ..config.profiles import check_number
from ..errors import ConfigError
from ..logs.durable import fsync_dir, make_dirs

__all__ = ["ACTIONS", "COMMAND_ID", "Candidate", "FileCommands", "MAX_CANDIDATE_BYTES", "MAX_WHO", "MAX_WHY",
           "NAME", "NAMED", "RolloutCommand", "STARTS", "StoredCommand", "new_command_id"]

ACTIONS = ("shadow_start", "shadow_stop", "canary_start", "canary_fraction", "promote", "rollback")
STARTS = ("shadow_start", "canary_start")  #: the commands that start a candidate (and carry it)
NAMED = ("shadow_start", "shadow_stop", "canary_start")  #: the commands that need a candidate name
MAX_CANDIDATE_BYTES = 65_536  #: a candidate's routes file, UTF-8
MAX_WHO, MAX_WHY = 256, 4096  #: characters
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
COMMAND_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
COMMANDS_DIR = Path("_rollout") / "commands"
_FILE = re.compile(r"(\d{10})\.json")


def new_command_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A candidate as data: routes-file content (the format ``Router.from_config`` reads) and its
    SHA-256; ``config`` and ``path``: the named config of ``serve --candidate-config NAME=PATH``
    it was read from (None: the content came with the command)."""

    toml: str
    sha256: str
    config: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, toml: str, *, config: str | None = None, path: str | None = None) -> "Candidate":
        if not isinstance(toml, str):
            raise ConfigError("candidate_toml", type(toml).__name__, "must be a string (routes-file content)")
        return cls(toml=toml, sha256=hashlib.sha256(toml.encode("utf-8", "surrogatepass")).hexdigest(),
                   config=config, path=path)

    def __post_init__(self) -> None:
        field = "candidate_toml" if self.config is None else "candidate_config"
        if not isinstance(self.toml, str) or not self.toml.strip():
            raise invalid(ConfigError, field, self.toml, "must be non-empty routes-file content")
        check_text(field, self.toml, max_chars=MAX_CANDIDATE_BYTES)
        size = len(self.toml.encode("utf-8"))
        if size > MAX_CANDIDATE_BYTES:
            raise ConfigError(field, f"{size} bytes", f"must be at most {MAX_CANDIDATE_BYTES} bytes")
        if self.sha256 != hashlib.sha256(self.toml.encode("utf-8")).hexdigest():
            raise ConfigError("candidate.sha256", self.sha256, "does not match the candidate's content")
        if self.config is not None and (not isinstance(self.config, str) or not NAME.fullmatch(self.config)):
            raise invalid(ConfigError, "candidate_config", self.config, f"must match {NAME.pattern}")
        if self.path is not None and not isinstance(self.path, str):
            raise ConfigError("candidate.path", self.path, "must be a string")


@dataclass(frozen=True, kw_only=True)
class RolloutCommand:
    """One rollout command, as stored (every field checked here: on input and on reading a store).

    ``action`` is one of :data:`ACTIONS`; ``name`` the candidate's (required to start or stop a
    shadow and to start a canary; for the canary's other commands it may be given, and must
    then be the canary's); ``fraction`` for ``canary_start`` and ``canary_fraction`` only;
    ``candidate`` for :data:`STARTS` only; ``ts_us`` when it was accepted (epoch µs), by the
    replica (writer id) ``replica``."""

    command_id: str
    action: str
    name: str | None
    fraction: float | None
    who: str
    why: str
    ts_us: int
    replica: str
    candidate: Candidate | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.command_id, str) or not COMMAND_ID.fullmatch(self.command_id):
            raise invalid(ConfigError, "command_id", self.command_id, f"must match {COMMAND_ID.pattern}")
        if not isinstance(self.action, str) or self.action not in ACTIONS:
            raise invalid(ConfigError, "action", self.action, f"must be one of {list(ACTIONS)}")
        if self.name is None:
            if self.action in NAMED:
                raise ConfigError("name", problem=f"is required for action {self.action!r}")
        elif not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise invalid(ConfigError, "name", self.name, f"must match {NAME.pattern}")
        if self.action in ("canary_start", "canary_fraction"):
            if self.fraction is None:
                raise ConfigError("fraction", problem=f"is required for action {self.action!r}")
            check_number("fraction", self.fraction, lo=0.0, hi=1.0)
        elif self.fraction is not None:
            raise ConfigError("fraction", self.fraction, f"must be absent for action {self.action!r}")
        for field, limit in (("who", MAX_WHO), ("why", MAX_WHY)):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise invalid(ConfigError, field, value, "must be a non-empty string")
            check_text(field, value, max_chars=limit)
        if isinstance(self.ts_us, bool) or not isinstance(self.ts_us, int) or self.ts_us < 0:
            raise ConfigError("ts_us", self.ts_us, "must be an integer >= 0")
        if not isinstance(self.replica, str) or not self.replica:
            raise ConfigError("replica", self.replica, "must be a non-empty string")
        if self.action in STARTS:
            if not isinstance(self.candidate, Candidate):
                raise ConfigError("candidate", problem=f"is required for action {self.action!r} "
                                  "(candidate_toml or candidate_config)")
        elif self.candidate is not None:
            raise ConfigError("candidate", self.candidate.config or "candidate_toml",
                              f"must be absent for action {self.action!r}")

    def to_data(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_data(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_data(cls, data) -> "RolloutCommand":
        """Rebuild a stored command (checked as on input); :class:`ConfigError` if it is not one."""
        if not isinstance(data, dict):
            raise ConfigError("command", type(data).__name__, "must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            raise ConfigError("command", sorted(set(data) - known), "are not fields of a rollout command")
        candidate = data.get("candidate")
        if candidate is not None:
            if not isinstance(candidate, dict) or set(candidate) - {"toml", "sha256", "config", "path"}:
                raise ConfigError("candidate", candidate, "is not a stored candidate")
            candidate = Candidate(**candidate)
        try:
            return cls(**{**data, "candidate": candidate})
        except TypeError as exc:  # a field missing
            raise ConfigError("command", sorted(data), f"is not a whole rollout command ({exc})") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "RolloutCommand":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError("command", str(text)[:80], f"is not JSON ({exc})") from None
        return cls.from_data(data)


class StoredCommand(NamedTuple):
    """A command at its position in a store (1 is the first); ``command`` is None for a damaged
    record, and ``problem`` says what is wrong with it."""

    position: int
    command: RolloutCommand | None
    problem: str | None = None


class FileCommands:
    """The command store of a log directory: ``<log_dir>/_rollout/commands/<position>.json``.

    >>> import tempfile
    >>> store = FileCommands(tempfile.mkdtemp())
    >>> cmd = RolloutCommand(command_id="c0ffee00", action="rollback", name=None, fraction=None, who="bob",
    ...                      why="latency", ts_us=1, replica="w1")
    >>> store.append(1, cmd), store.append(1, cmd), [s.position for s in store.read(after=0)]
    (True, False, [1])
    """

    kind = "log"

    def __init__(self, log_dir: str | os.PathLike):
        self.directory = Path(log_dir) / COMMANDS_DIR

    def read(self, *, after: int = 0) -> list[StoredCommand]:
        """The commands past position ``after``, in order."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        positions = sorted(int(m.group(1)) for m in map(_FILE.fullmatch, names) if m and int(m.group(1)) > after)
        out = []
        for position in positions:
            path = self.directory / f"{position:010d}.json"
            try:
                out.append(StoredCommand(position, RolloutCommand.from_json(path.read_bytes())))
            except (OSError, ConfigError, UnicodeDecodeError) as exc:
                out.append(StoredCommand(position, None, f"{path}: {exc}"))
        return out

    def append(self, position: int, command: RolloutCommand) -> bool:
        """Store ``command`` at ``position`` durably; False if that position is taken already."""
        make_dirs(self.directory)
        final = self.directory / f"{position:010d}.json"
        if final.exists():
            return False
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}.json"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(command.to_json().encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, final)  # never replaces: the compare-and-append
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)
            fsync_dir(self.directory)
        return True

    def close(self) -> None:
        """Nothing to release (a store's interface)."""
