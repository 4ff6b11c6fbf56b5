"""Outcomes on any replica on any host: the pending decisions shared through Redis.

Without Redis an outcome must reach the replica that issued its decision (forwarded over Unix
sockets on one host, :mod:`banditroute.service.forwarding`). With ``--redis-url`` every replica
also writes each decision's pending entry (what its outcome needs to be joined and learned:
the profile, the task type or posterior, the decision's time, and for a policy that learns from
the context the context's JSON and the propensity) to Redis, and any replica sharing the
namespace, on any host, records its outcome.

Keys (``{ns}`` is the namespace in braces, a cluster hash tag):

- ``{ns}:p:<decision id>``: the pending entry, compact JSON ``[1, profile, task, ts_us]``
  (``[..., propensity, context]`` when the policy learns from the context; ``task`` is the task
  type's name or ``{name: probability}``), set with the wait window (``wait_window_s``) as TTL;
- ``{ns}:d:<decision id>``: the tombstone of a decision whose outcome was taken (its value the
  entry, read by :class:`~banditroute.service.shared_state.SharedState` to adopt a dead
  replica's outcomes), with the same TTL: a repeat is a duplicate, whichever replica it reaches;
- ``{ns}:issued``: writer id -> the writer's next sequence number: an id not pending and
  without a tombstone was issued (a ``late`` outcome, logged) or not (404).

Decisions: the entries are written by one Lua script per group commit, in parallel with the
log's commit (:class:`~banditroute.service.group_commit.GroupCommit`); the decision is
acknowledged once both are done. If Redis does not answer, the decision is acknowledged all the
same (its row is durable) and only its issuing replica can record its outcome, as without
Redis (counted in ``banditroute_redis_pending_write_failures_total``); for a second after a
failure no write is tried, so an outage costs requests no timeouts.

Outcomes: a replica takes the entry with one Lua script (``GET``, ``DEL``, ``SET`` the
tombstone: atomic, so of two replicas racing for one outcome exactly one gets the entry and the
other answers ``duplicate``), holds it in its own pending window and records the outcome as one
of its own decisions': joined, logged in its own log (the row names the decision id), learned
from once durable (the increments reach the other replicas through the shared state). A
decision still pending where it was issued is taken the same way, so it is never applied twice.
If the outcome's row cannot be committed, the entry is put back (the client's retry applies
it). The way of one request is :mod:`banditroute.service.outcome_api`. Redis unreachable when an
outcome comes: a decision pending on this replica is applied here (as without Redis) and its
entry taken from Redis once Redis answers (:meth:`RedisOutcomes.defer`); any other outcome is a
503 ``redis_unavailable``, nothing recorded.

Known limits: a repeat that races an outcome whose commit then fails answers ``duplicate``; a
replica killed between taking an entry and committing the row loses that outcome (never
acknowledged; a retry answers ``duplicate``); decisions made while Redis was down are recorded
by their issuing replica only; an outcome applied during an outage and repeated on another
replica before its entry is taken is applied twice (counted: ``_conflicts_total``); a dead
replica's outcomes of decisions logged elsewhere are adopted only while their tombstones live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict

import numpy as np

from ..decide.pending import PendingDecision
from .redis_batch import ScriptBatcher

__all__ = ["RedisOutcomes", "TAKEN", "DUPLICATE", "CLAIMED", "ABSENT", "UNKNOWN"]

_log = logging.getLogger("banditroute.service.redis_outcomes")

# KEYS: issued hash, then the pending keys. ARGV: ttl ms, writer, its next seq, then the entries.
_WRITE = """
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[1]) end
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if tonumber(ARGV[3]) > n then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return #KEYS - 1
"""
# KEYS: pending, tombstone. ARGV: ttl ms, claim ('' : do not claim an absent entry; else '=' + tombstone value).
_TAKE = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], v, 'PX', ARGV[1])
  return {1, v}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], string.sub(ARGV[2], 2), 'PX', ARGV[1])
  return {3}
end
return {0}
"""
# KEYS: issued hash, tombstone. ARGV: writer, seq, ttl ms.
_LATE = """
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) >= n then return 0 end
if redis.call('SET', KEYS[2], '', 'NX', 'PX', ARGV[3]) then return 1 end
return 2
"""
# KEYS: pending, tombstone. ARGV: the entry to put back ('' : none), its ttl ms.
_RELEASE = """
redis.call('DEL', KEYS[2])
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') end
return 1
"""
#: :meth:`RedisOutcomes.take`'s answers (besides the entry, bytes, when taken); :meth:`claim_late`'s.
TAKEN, DUPLICATE, CLAIMED, ABSENT, UNKNOWN = 1, 2, 3, 0, -1
_PAUSE_S = 1.0  # no decision write is tried this long after one failed
_MAX_DIGITS = 19


class RedisOutcomes:
    """One replica's end of the pending decisions in Redis (see the module).

    Parameters
    ----------
    router : ReplicaRouter
    url, namespace : str
        As the shared state's (:class:`~banditroute.service.shared_state.SharedStateConfig`).
    timeout_s : float
        Socket timeout of each Redis call.
    client : redis.Redis, optional
    """

    def __init__(self, router, *, url: str, namespace: str, timeout_s: float, client=None):
        self.router = router
        self.url, self.timeout_s = url, timeout_s
        ns = "{" + namespace + "}"
        self.pending_prefix, self.done_prefix, self.issued_key = f"{ns}:p:", f"{ns}:d:", f"{ns}:issued"
        self.ttl_ms = max(1, round(router.config.wait_window_s * 1000))
        self._learns = bool(router.policy.learns)
        self._profiles = router.profiles
        self._tasks = router.task_types
        self._task_index = {t: i for i, t in enumerate(self._tasks)}
        self._client = client
        self._scripts = None
        self._batcher = ScriptBatcher(url, timeout_s=timeout_s, scripts={"take": _TAKE, "late": _LATE,
                                                                          "release": _RELEASE})
        self._staged: list[tuple[str, str]] = []
        self._local: OrderedDict[str, None] = OrderedDict()  # acknowledged, not in Redis: recorded here only
        self._max_local = router.config.max_pending
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self.up = True  #: whether the last Redis call answered
        self.n_written = 0  #: pending entries written to Redis
        self.n_write_failures = 0  #: decisions acknowledged without their entry in Redis
        self.n_taken = 0  #: outcomes of decisions pending elsewhere, taken from Redis and applied here
        self.n_unavailable = 0  #: outcomes refused (503) because Redis did not answer
        self.n_conflicts = 0  #: outcomes applied here during an outage that another replica applied too
        self._deferred: dict[str, str] = {}  # applied here while Redis was down: id -> tombstone, to take
        self._flusher = None

    def _redis(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                socket_connect_timeout=self.timeout_s)
        if self._scripts is None:
            self._scripts = {name: self._client.register_script(src) for name, src in
                             (("write", _WRITE), ("take", _TAKE), ("late", _LATE), ("release", _RELEASE))}
        return self._client

    def _run(self, name: str, keys: list, args: list):
        import redis

        try:
            self._redis()
            out = self._scripts[name](keys=keys, args=args, client=self._client)
        except redis.RedisError:
            self.up = False
            raise
        self.up = True
        return out

    # -- entries --------------------------------------------------------------------------------
    def encode(self, entry: PendingDecision) -> str:
        """The compact JSON of a pending entry (see the module)."""
        task = entry.task
        if isinstance(task, (int, np.integer)):
            task = self._tasks[int(task)]
        else:
            task = {t: p for t, p in zip(self._tasks, np.asarray(task, dtype=float).tolist()) if p}
        out = [1, self._profiles[entry.k], task, entry.ts_us]
        if self._learns:
            out += [entry.propensity, entry.context]
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    def decode(self, raw: bytes) -> PendingDecision:
        """A pending entry written by any replica of the namespace, in this router's indices
        (raises ValueError if its profile or task type is not this router's)."""
        value = json.loads(raw)
        profile, task = value[1], value[2]
        if profile not in self._profiles:
            raise ValueError(f"its profile {profile!r} is not a profile of this replica")
        if isinstance(task, str):
            if task not in self._task_index:
                raise ValueError(f"its task type {task!r} is not a task type of this replica")
            task = self._task_index[task]
        else:
            unknown = set(task) - set(self._task_index)
            if unknown:
                raise ValueError(f"its task types {sorted(unknown)} are not task types of this replica")
            task = np.array([float(task.get(t, 0.0)) for t in self._tasks])
        propensity, context = (value[4], value[5]) if len(value) > 5 else (None, None)
        return PendingDecision(self._profiles.index(profile), task, int(value[3]), context, propensity)

    # -- decisions: staged with their rows, written in the group commit --------------------------
    def stage(self, decision_id: str) -> None:
        """Stage a decision just issued (its row is buffered): written by the next commit."""
        entry = self.router.pending_entry(decision_id)
        if entry is not None:
            self._staged.append((decision_id, self.encode(entry)))

    def detach(self) -> list:
        """The staged entries, for one commit (the group commit calls it with the log's detach)."""
        staged, self._staged = self._staged, []
        return staged

    def commit(self, staged: list) -> bool:
        """Write one commit's entries (in a commit thread; never raises). False: Redis did not
        answer, and the decisions are recorded by this replica only."""
        import redis

        if not staged:
            return True
        if time.monotonic() < self._retry_at:
            self._keep_local(staged)
            return False
        writer = self.router.writer_id
        next_seq = max(int(did.rpartition("-")[2]) for did, _ in staged) + 1
        try:
            self._run("write", [self.issued_key, *(self.pending_prefix + did for did, _ in staged)],
                      [self.ttl_ms, writer, next_seq, *(value for _, value in staged)])
        except redis.RedisError as exc:
            if self._retry_at == 0.0 or time.monotonic() - self._retry_at > 60:
                _log.warning("pending decisions not written to Redis (%s): their outcomes go to this replica",
                             type(exc).__name__)
            self._retry_at = time.monotonic() + _PAUSE_S
            self._keep_local(staged)
            return False
        self.n_written += len(staged)
        return True

    def discard(self, staged: list) -> None:
        """Remove the entries of a commit whose log rows failed (best effort: never raises)."""
        try:
            if staged and time.monotonic() >= self._retry_at:
                self._redis().delete(*(self.pending_prefix + did for did, _ in staged))
        except Exception as exc:  # noqa: BLE001 - an entry left behind expires with the wait window
            _log.warning("entries of unacknowledged decisions left in Redis until they expire: %s", exc)

    def _keep_local(self, staged: list) -> None:
        with self._lock:
            self.n_write_failures += len(staged)
            for did, _ in staged:
                self._local[did] = None
            while len(self._local) > self._max_local:
                self._local.popitem(last=False)

    def local_only(self, decision_id: str) -> bool:
        """Whether the decision was acknowledged without its entry in Redis (recorded here only)."""
        with self._lock:
            return decision_id in self._local

    # -- outcomes (on the event loop; concurrent calls share a pipeline: redis_batch) ----------------
    async def _arun(self, name: str, keys: list, args: list):
        import redis

        try:
            out = await self._batcher.run(name, keys, args)
        except redis.RedisError:
            self.up = False
            raise
        self.up = True
        return out

    async def take(self, decision_id: str, claim: PendingDecision | bool | None = None):
        """Take the entry of ``decision_id`` atomically: the entry (bytes) when taken (a tombstone
        now marks the outcome as taken), :data:`DUPLICATE` when a tombstone exists, else
        :data:`CLAIMED` when ``claim`` (the decision is known here: its entry, or True) set the
        tombstone, else :data:`ABSENT`. Raises ``redis.RedisError``."""
        value = "" if not claim else "=" + (self.encode(claim) if isinstance(claim, PendingDecision) else "")
        out = await self._arun("take", [self.pending_prefix + decision_id, self.done_prefix + decision_id],
                               [self.ttl_ms, value])
        return out[1] if out[0] == TAKEN else out[0]

    async def claim_late(self, decision_id: str) -> int:
        """For a decision neither pending nor taken: :data:`UNKNOWN` if no replica of the
        namespace issued it, :data:`DUPLICATE` if its late outcome was claimed already, else
        :data:`CLAIMED` (its tombstone set: log the late outcome). Raises ``redis.RedisError``."""
        writer, _, seq = decision_id.rpartition("-")
        if not (writer and seq.isascii() and seq.isdigit() and len(seq) <= _MAX_DIGITS
                and (seq[0] != "0" or len(seq) == 1)):
            return UNKNOWN
        out = await self._arun("late", [self.issued_key, self.done_prefix + decision_id], [writer, seq, self.ttl_ms])
        return {0: UNKNOWN, 1: CLAIMED, 2: DUPLICATE}[int(out)]

    async def release(self, decision_id: str, taken: bytes | None) -> None:
        """Undo a take or a claim whose outcome was not committed: the tombstone goes, a taken entry
        comes back (for the rest of its wait window), so a retry is applied. Never raises."""
        ttl = 0
        if taken:
            ts_us = int(json.loads(taken)[3])
            ttl = self.ttl_ms - (time.time_ns() // 1000 - ts_us) // 1000
        try:
            await self._arun("release", [self.pending_prefix + decision_id, self.done_prefix + decision_id],
                             [taken if taken and ttl > 0 else "", max(ttl, 1)])
        except Exception as exc:  # noqa: BLE001 - logged: the outcome cannot be retried until the tombstone expires
            _log.error("outcome of %s not committed and its Redis tombstone not removed (%s): a retry answers "
                       "'duplicate' until it expires", decision_id, exc)

    def defer(self, decision_id: str, entry: PendingDecision) -> None:
        """An outcome applied here while Redis did not answer (its decision pending here): its entry
        is taken from Redis as soon as Redis answers again (a thread tries every 50 ms)."""
        with self._lock:
            self._deferred[decision_id] = self.encode(entry)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="banditroute-redis-outcomes",
                                                 daemon=True)
                self._flusher.start()

    @property
    def n_deferred(self) -> int:
        """Outcomes applied here during an outage whose entries are still to be taken from Redis."""
        return len(self._deferred)

    def _flush_loop(self) -> None:
        while True:
            time.sleep(0.05)
            with self._lock:
                if not self._deferred:
                    self._flusher = None
                    return
            self.flush_deferred()

    def flush_deferred(self) -> bool:
        """Take the entries of the outcomes applied during an outage (one pipeline); a decision
        another replica took meanwhile was applied twice: counted and logged. Never raises."""
        with self._lock:
            batch = dict(self._deferred)
        if not batch:
            return True
        try:
            pipe = self._redis().pipeline(transaction=False)
            for did, value in batch.items():
                self._scripts["take"](keys=[self.pending_prefix + did, self.done_prefix + did],
                                      args=[self.ttl_ms, "=" + value], client=pipe)
            answers = pipe.execute()
        except Exception:  # noqa: BLE001 - Redis still down: tried again
            self.up = False
            return False
        self.up = True
        twice = [did for did, out in zip(batch, answers) if out[0] == DUPLICATE]
        if twice:
            self.n_conflicts += len(twice)
            _log.error("%d outcome(s) applied here while Redis was down were also applied by another replica: %s",
                       len(twice), ", ".join(twice[:10]))
        with self._lock:
            for did in batch:
                self._deferred.pop(did, None)
        return True

    def decisions_of(self, decision_ids: list[str]) -> dict:
        """``id -> (profile, task types, task probabilities)`` of taken decisions (their
        tombstones), for the shared state's adoption of a dead replica's outcomes."""
        if not decision_ids:
            return {}
        out = {}
        for did, raw in zip(decision_ids, self._redis().mget([self.done_prefix + d for d in decision_ids])):
            if raw:
                value = json.loads(raw)
                task = value[2] if isinstance(value[2], dict) else {value[2]: 1.0}
                out[did] = (value[1], list(task), [float(p) for p in task.values()])
        return out

    def gauges(self) -> list:
        """``(name, help, value)`` of the replica's ``/metrics`` series about the pending decisions in Redis."""
        return [("banditroute_redis_outcomes_up", "1 if the last call to Redis for pending decisions answered.",
                 int(self.up)),
                ("banditroute_redis_pending_written_total", "Pending decisions written to Redis (their outcome is "
                 "recorded on any replica).", self.n_written),
                ("banditroute_redis_pending_write_failures_total", "Decisions acknowledged without their pending "
                 "entry in Redis (Redis down): only this replica records their outcome.", self.n_write_failures),
                ("banditroute_redis_outcomes_taken_total", "Outcomes of decisions pending elsewhere, taken from "
                 "Redis and applied here.", self.n_taken),
                ("banditroute_redis_outcomes_unavailable_total", "Outcomes refused with 503 because Redis did not "
                 "answer (their decision was not pending here).", self.n_unavailable),
                ("banditroute_redis_outcomes_deferred", "Outcomes applied here while Redis was down whose pending "
                 "entries are not yet removed from Redis.", self.n_deferred),
                ("banditroute_redis_outcomes_conflicts_total", "Outcomes applied here while Redis was down that "
                 "another replica applied too (a repeat posted elsewhere as Redis came back).", self.n_conflicts)]

    async def aclose(self) -> None:
        """Take what an outage deferred (if Redis answers) and close both clients."""
        if self._deferred:
            await asyncio.get_running_loop().run_in_executor(None, self.flush_deferred)
        if self._client is not None:
            self._client.close()
        await self._batcher.aclose()

