"""Rollout commands across replicas: the Redis command store, and the poll that applies new commands.

Every replica of the service keeps its router's rollout stage in step with one command store
(:mod:`banditroute.decide.commands`, applied by :class:`~banditroute.decide.rollout_sync.RolloutSync`):

- without Redis, the log directory's (``<log_dir>/_rollout/commands``): the workers of
  ``serve --workers N`` share it, and a restart (``Router.resume``) restores the stage from it;
- with ``--redis-url``, a Redis list (:class:`RedisCommands`, key ``{<namespace>}:rollout``),
  shared by every replica of the namespace on any host; a replica restores the stage from it
  at start-up (Redis must keep its data: ``appendonly yes``, as for the shared posterior).

Propagation bound: each replica polls its store every ``--rollout-poll-ms`` (default 500 ms;
one ``listdir`` of the commands directory, or one ``LRANGE`` of the new entries) and applies
what is new, building a candidate from its routes file in a few milliseconds. A command
acknowledged by one replica is therefore in effect at every running replica within
:data:`PROPAGATION_S` = 1 s with the default poll (the poll period, the build, and margin for a
loaded machine); ``tests/test_rollout_http.py`` checks every decision made from then on.

>>> RedisCommands(url="redis://127.0.0.1:1/0", namespace="ns").key
'{ns}:rollout'
"""

from __future__ import annotations

import logging

from ..decide.commands import RolloutCommand, StoredCommand
from .periodic import Periodic

__all__ = ["PROPAGATION_S", "RedisCommands", "RolloutPoller"]

_log = logging.getLogger("banditroute.service.rollout_store")

#: A command acknowledged by one replica is in effect at every running replica within this many
#: seconds, with the default poll period (0.5 s).
PROPAGATION_S = 1.0

# KEYS: the list. ARGV: the position the command must take (1-based), the command's JSON.
_APPEND = """
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) - 1 then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class RedisCommands:
    """The command store of replicas that share Redis: a list, appended only at the position a
    replica expects (a Lua compare-and-append), read from a position on."""

    kind = "redis"

    def __init__(self, *, url: str, namespace: str, timeout_s: float = 0.5, client=None):
        self.url = url
        self.key = "{" + namespace + "}:rollout"
        self._timeout_s = timeout_s
        self._client = client
        self._script = None

    def _redis(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.url, socket_timeout=self._timeout_s,
                                                socket_connect_timeout=self._timeout_s)
        if self._script is None:
            self._script = self._client.register_script(_APPEND)
        return self._client

    def read(self, *, after: int = 0) -> list[StoredCommand]:
        """The commands past position ``after``, in order (:class:`ConnectionError` if Redis
        does not answer)."""
        out = []
        for i, raw in enumerate(self._call(lambda client: client.lrange(self.key, after, -1))):
            try:
                out.append(StoredCommand(after + 1 + i, RolloutCommand.from_json(raw)))
            except (ValueError, UnicodeDecodeError) as exc:  # ConfigError is a ValueError
                out.append(StoredCommand(after + 1 + i, None, f"{self.key}[{after + i}]: {exc}"))
        return out

    def append(self, position: int, command: RolloutCommand) -> bool:
        """Store ``command`` at ``position``; False if that position is taken already."""
        return bool(self._call(lambda client: self._script(keys=[self.key], args=[position, command.to_json()],
                                                           client=client)))

    def _call(self, fn):
        import redis

        try:
            return fn(self._redis())
        except redis.RedisError as exc:  # an OSError for the callers: the store is unavailable
            raise ConnectionError(f"Redis: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class RolloutPoller(Periodic):
    """Applies the store's new commands to the replica's router every ``interval_s`` seconds,
    in a thread of its own (:meth:`RolloutSync.sync
    <banditroute.decide.rollout_sync.RolloutSync.sync>`). Until a first restore succeeded (with
    Redis unreachable at start-up) each round tries it again."""

    thread_name = "banditroute-rollout"

    def __init__(self, sync, *, interval_s: float, restored: bool = True):
        super().__init__(interval_s)
        self.sync = sync
        self.restored = restored
        self.n_rounds = 0  #: polls made
        self.n_failures = 0  #: polls that failed (the store unreachable)
        self.last_error: str | None = None  #: why the last poll failed (None: it did not)

    def poll(self) -> None:
        """One round: restore or catch up; a failure is counted and logged once, never raised."""
        self.n_rounds += 1
        try:
            if self.restored:
                self.sync.sync()
            else:
                self.sync.restore()
                self.restored = True
        except Exception as exc:  # noqa: BLE001 - the poll must outlive any outage
            self.n_failures += 1
            if self.last_error is None:
                _log.warning("rollout commands not read (%s): %s; retrying every %.3g s", type(exc).__name__,
                             exc, self.interval_s)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        if self.last_error is not None:
            _log.warning("rollout commands read again")
        self.last_error = None

