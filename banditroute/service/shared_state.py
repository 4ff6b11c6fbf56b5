"""Posterior state shared across router replicas through Redis (optional: needs ``redis``).

Without discounting the posterior's evidence beyond the prior is a sum over outcomes, so
replicas share it by adding increments (DESIGN section 6). Each replica, every
``interval_s``:

1. takes its local increment since the last round (under the router's lock) and waits until
   the log rows of those outcomes are durable (:meth:`~banditroute.logs.store.LogWriter.wait_durable`);
2. pushes it as one batch with a unique id: a Lua script ``SET batch-id NX`` and, only if
   the id was new, ``HINCRBYFLOAT`` of every cell. A retry of a batch whose answer was lost
   therefore never counts it twice;
3. pulls the merged totals and, under the router's lock, sets its evidence to
   ``totals + buffered + since`` (``buffered``: increments not yet in Redis; ``since``:
   outcomes recorded locally during the round trip), so no local outcome is lost.

Cells are keyed by name (``alpha|profile|task``), never by position. While Redis is
unreachable the router keeps deciding from its last state and increments accumulate in one
array per cell (memory bounded by the number of cells, whatever the outage's length),
reported by :attr:`SharedState.buffered_evidence`; they are pushed when Redis returns.
A replica that starts pulls the merged totals before serving.

A replica killed between two rounds leaves outcomes that are in its log but not in Redis.
Each replica therefore registers a *watermark* in Redis, updated atomically with each batch
(its outcomes with a lower ``seq`` are in Redis), and holds a lock in its log directory while
it lives (:func:`banditroute.logs.journal.writer_lock`). At start and every ``adopt_every``
rounds, a replica looks for registered writers whose lock in its own log directory is free
(dead processes), sums their logged outcomes at or above the watermark into one batch with a
deterministic id (two adopters count it once) and retires the writer. A replica that stops
gracefully pushes everything and retires itself.

Redis must keep its data across restarts (``appendonly yes``). If the totals ever go down
(Redis lost data) the replica does not apply them: it keeps its state, counts the event in
``n_regressions`` and logs an error.

>>> import banditroute as br
>>> router = br.Router([br.Profile("a"), br.Profile("b")], discount=0.99, seed=0)
>>> SharedState(router, config=SharedStateConfig(url="redis://127.0.0.1:1"))
Traceback (most recent call last):
...
banditroute.errors.ConfigError: discount must be 1 when posterior state is shared through Redis, got 0.99
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ..config.profiles import check_number
from ..errors import ConfigError

__all__ = ["SharedState", "SharedStateConfig"]

_log = logging.getLogger("banditroute.service.shared_state")

# KEYS: evidence hash, batch id, watermark hash. ARGV: batch ttl, writer, watermark ('-':
# retire the writer), then (cell, increment) pairs. The increments and the writer's
# watermark (its outcomes with a lower seq are in Redis) change together, or not at all.
_PUSH = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  for i = 4, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
  if ARGV[3] == '-' then redis.call('HDEL', KEYS[3], ARGV[2]) else redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) end
  return 1
end
return 0
"""
_TINY = 1e-12  # increments below this are float noise from set_evidence round trips


@dataclass(frozen=True, kw_only=True)
class SharedStateConfig:
    """Where and how often a replica syncs its posterior.

    Parameters
    ----------
    url : str
        Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
    namespace : str
        Prefix of the keys; replicas of one routing policy share a namespace.
    interval_s : float
        Seconds between sync rounds.
    timeout_s : float
        Socket timeout of each Redis call.
    startup_timeout_s : float
        How long a starting replica retries its first pull before it serves from its prior.
    batch_ttl_s : int
        How long a pushed batch id is remembered (a retry after that would count twice).
    adopt_every : int
        Rounds between looks for dead writers' outcomes to adopt (see above).

    >>> SharedStateConfig(url="redis://127.0.0.1:6379/0").namespace
    'banditroute'
    """

    url: str
    namespace: str = "banditroute"
    interval_s: float = 0.1
    timeout_s: float = 0.5
    startup_timeout_s: float = 5.0
    batch_ttl_s: int = 7 * 86400
    adopt_every: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis_url", self.url, "must be a redis://, rediss:// or unix:// URL")
        if not isinstance(self.namespace, str) or not self.namespace or any(c in self.namespace for c in "{}| "):
            raise ConfigError("redis_namespace", self.namespace, "must be a non-empty name without {}| or spaces")
        check_number("sync_interval_s", self.interval_s, lo=0.0, lo_open=True)
        check_number("redis_timeout_s", self.timeout_s, lo=0.0, lo_open=True)
        check_number("startup_timeout_s", self.startup_timeout_s, lo=0.0)
        if isinstance(self.batch_ttl_s, bool) or not isinstance(self.batch_ttl_s, int) or self.batch_ttl_s < 60:
            raise ConfigError("batch_ttl_s", self.batch_ttl_s, "must be an integer >= 60")
        if isinstance(self.adopt_every, bool) or not isinstance(self.adopt_every, int) or self.adopt_every < 1:
            raise ConfigError("adopt_every", self.adopt_every, "must be an integer >= 1")


class SharedState:
    """Keeps one router's posterior in step with the totals in Redis.

    Parameters
    ----------
    router : Router
        Must not discount (``discount == 1``): only then is evidence additive.
    config : SharedStateConfig
    client : redis.Redis, optional
        Defaults to one built from ``config.url``.
    """

    def __init__(self, router, *, config: SharedStateConfig, client=None):
        if router.config.discount != 1.0:
            raise ConfigError("discount", router.config.discount,
                              "must be 1 when posterior state is shared through Redis")
        self.router = router
        self.config = config
        self._client = client
        self._script = None
        ns = "{" + config.namespace + "}"  # hash tag: every key in one cluster slot
        self._key = f"{ns}:evidence"
        self._batch_prefix = f"{ns}:batch:"
        self._watermarks = f"{ns}:watermarks"
        self._writer = router.writer_id
        self._log_dir = None if router.log_writer is None else router.log_writer.log_dir
        self._registered = False
        self._watermark = 0  # router seq at the last snapshot: its outcomes below it are in _unsent/_inflight
        self.n_adopted = 0  # outcomes of dead writers adopted into Redis
        #: ids -> {id: (profile, task types, task probabilities)} of decisions logged elsewhere whose
        #: outcomes were recorded here (``RedisOutcomes.decisions_of``); None: every decision is in this log
        self.lookup = None
        names, tasks = router.profiles, router.task_types
        self._cells = [(f"alpha|{p}|{t}", f"beta|{p}|{t}") for p in names for t in tasks]
        shape = (len(names), len(tasks))
        self._base = [np.zeros(shape), np.zeros(shape)]   # router evidence already accounted for
        self._unsent = [np.zeros(shape), np.zeros(shape)]  # increments not yet in a batch
        self._inflight = None                              # (batch id, alpha inc, beta inc) sent, unconfirmed
        self._totals = None                                # last totals pulled
        self.up = False
        self.n_rounds = 0
        self.n_failures = 0
        self.n_batches = 0
        self.n_regressions = 0
        self._stop = threading.Event()
        self._thread = None
        with router.lock:
            self._base = [e.copy() for e in router.evidence()]

    # -- one round ---------------------------------------------------------------------------
    @property
    def buffered_evidence(self) -> float:
        """Evidence (alpha + beta mass; one per outcome with a one-hot task) not yet in Redis."""
        total = float(self._unsent[0].sum() + self._unsent[1].sum())
        if self._inflight is not None:
            total += float(self._inflight[1].sum() + self._inflight[2].sum())
        return total

    def _redis(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.config.url, socket_timeout=self.config.timeout_s,
                                                socket_connect_timeout=self.config.timeout_s)
        if self._script is None:
            self._script = self._client.register_script(_PUSH)
        return self._client

    def sync(self) -> bool:
        """Push local increments and pull the merged totals; return whether Redis answered."""
        import redis

        self.n_rounds += 1
        with self.router.lock:
            self._watermark = self.router.settled_position  # outcomes below it are in the evidence
            alpha, beta = self.router.evidence()
            for i, now in enumerate((alpha, beta)):
                delta = now - self._base[i]
                self._unsent[i] += np.where(np.abs(delta) < _TINY, 0.0, delta)
                self._base[i] = now
        try:
            client = self._redis()
            if not self._registered:
                # from now on a crash of this replica leaves its unpushed outcomes to adopt
                client.hsetnx(self._watermarks, self._writer, 0)
                self._registered = True
            self._push()
            if (self.n_rounds - 1) % self.config.adopt_every == 0:  # the first round, then every adopt_every
                self.adopt()
            raw = client.hgetall(self._key)
        except redis.RedisError as exc:
            if self.up:
                _log.warning("shared state: Redis unreachable (%s); deciding from local state", type(exc).__name__)
            self.up = False
            self.n_failures += 1
            return False
        self._pull(raw)
        self.up = True
        return True

    def _push(self) -> None:
        if self._inflight is None and (self._unsent[0].any() or self._unsent[1].any()):
            if self.router.log_writer is not None:
                # the log first: Redis never counts an outcome whose row a crash could still lose
                self.router.log_writer.wait_durable()
            self._inflight = (uuid.uuid4().hex, self._unsent[0], self._unsent[1], self._watermark)
            self._unsent = [np.zeros_like(self._unsent[0]), np.zeros_like(self._unsent[1])]
        if self._inflight is None:
            return
        batch_id, inc_a, inc_b, watermark = self._inflight
        pairs = _pairs((cell, d) for (ka, kb), da, db in zip(self._cells, inc_a.ravel().tolist(), inc_b.ravel().tolist())
                       for cell, d in ((ka, da), (kb, db)))
        self._send(batch_id, self._writer, watermark, pairs)
        self._inflight = None  # applied now or by an earlier try: either way counted exactly once
        self.n_batches += 1

    def _send(self, batch_id: str, writer: str, watermark, pairs: list) -> None:
        args = [self.config.batch_ttl_s, writer, str(watermark), *pairs]
        self._script(keys=[self._key, self._batch_prefix + batch_id, self._watermarks], args=args,
                     client=self._client)

    def adopt(self) -> int:
        """Push the outcomes dead writers logged here but never pushed; return how many."""
        if self._log_dir is None:
            return 0
        from ..logs.journal import forget_writer, writer_lock

        n = 0
        for raw_writer, raw_mark in self._client.hgetall(self._watermarks).items():
            writer, watermark = raw_writer.decode(), int(float(raw_mark))
            if writer == self._writer:
                continue
            with writer_lock(self._log_dir, writer) as state:
                if state != "dead":
                    continue
                pairs, count = _logged_increments(self._log_dir, writer, watermark, self.lookup)
                self._send(f"adopt-{writer}-{watermark}", writer, "-", pairs)
                forget_writer(self._log_dir, writer)
            n += count
            if count:
                _log.warning("shared state: adopted %d outcome(s) of dead replica %s", count, writer)
        self.n_adopted += n
        return n

    def _pull(self, raw: dict) -> None:
        shape = self._base[0].shape
        totals = [np.zeros(shape), np.zeros(shape)]
        values = {k.decode(): float(v) for k, v in raw.items()}
        for j, (ka, kb) in enumerate(self._cells):
            totals[0].flat[j] = values.get(ka, 0.0)
            totals[1].flat[j] = values.get(kb, 0.0)
        if self._totals is not None and any((t < old - 1e-9).any() for t, old in zip(totals, self._totals)):
            self.n_regressions += 1
            _log.error("shared state: Redis totals went down (data lost?); keeping local state")
            return
        self._totals = totals
        buffered = [self._unsent[i] + (self._inflight[i + 1] if self._inflight else 0.0) for i in range(2)]
        with self.router.lock:
            alpha, beta = self.router.evidence()
            since = [alpha - self._base[0], beta - self._base[1]]
            new = [totals[i] + buffered[i] + since[i] for i in range(2)]
            self.router.set_evidence(np.maximum(new[0], 0.0), np.maximum(new[1], 0.0))
            after = self.router.evidence()
            # read back: the router's own float representation, so rounding is never pushed
            self._base = [after[i] - since[i] for i in range(2)]

    # -- background loop ---------------------------------------------------------------------
    def start(self) -> bool:
        """Pull the shared state (retrying up to ``startup_timeout_s``), then sync in a thread.

        Returns whether the first pull succeeded (otherwise the replica starts from its prior
        and reconciles once Redis answers).
        """
        deadline = time.monotonic() + self.config.startup_timeout_s
        ok = self.sync()
        while not ok and time.monotonic() < deadline:
            time.sleep(min(0.2, self.config.interval_s))
            ok = self.sync()
        if not ok:
            _log.error("shared state: Redis unreachable at startup; serving from the prior until it answers")
        self._thread = threading.Thread(target=self._run, name="banditroute-shared-state", daemon=True)
        self._thread.start()
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - the sync thread must outlive any surprise
                self.n_failures += 1
                _log.exception("shared state: sync round failed")

    def stop(self) -> bool:
        """Stop the thread and push what is buffered (one last round); return its success."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            ok = self.sync()
            if ok and self._inflight is None and not (self._unsent[0].any() or self._unsent[1].any()):
                try:  # everything of ours is in Redis: nobody needs to adopt this writer
                    self._client.hdel(self._watermarks, self._writer)
                except Exception:  # noqa: BLE001 - a registered, fully pushed writer adopts to nothing
                    pass
            return ok
        finally:
            if self._client is not None:
                self._client.close()


def _logged_increments(log_dir, writer: str, watermark: int, lookup=None) -> tuple[list, int]:
    """(cell, increment) pairs of ``writer``'s applied outcomes with ``seq >= watermark``, as
    the router applied them (weights from the logged task posterior), and their number. The
    decisions are those of this log (any writer's) and, for the others, ``lookup``'s."""
    import polars as pl

    from ..logs.store import scan_table

    outcomes = (scan_table(log_dir, "outcomes")
                .filter((pl.col("writer") == writer) & (pl.col("seq") >= watermark)
                        & (pl.col("status") == "applied") & pl.col("quality").is_not_null())
                .select("decision_id", "quality")).collect()
    if outcomes.height == 0:
        return [], 0
    writers = outcomes.get_column("decision_id").str.replace(r"-[0-9]+$", "").unique().to_list()
    decisions = (scan_table(log_dir, "decisions").filter(pl.col("writer").is_in(writers))
                 .select("decision_id", "profile", "task_types", "task_probs")).collect()
    joined = outcomes.join(decisions, on="decision_id", how="inner")
    missing = outcomes.join(decisions, on="decision_id", how="anti").get_column("decision_id").to_list()
    found = lookup(missing) if missing and lookup is not None else {}
    if found:  # decisions of other replicas' logs, taken from Redis
        extra = pl.DataFrame([(d, *v) for d, v in found.items()], schema=decisions.schema, orient="row")
        joined = pl.concat([joined, outcomes.join(extra, on="decision_id", how="inner")])
    if len(found) < len(missing):
        _log.warning("shared state: %d outcome(s) of dead replica %s name decisions found neither in its log nor "
                     "in Redis; not adopted", len(missing) - len(found), writer)
    if joined.height == 0:
        return [], 0
    cells = (joined.explode("task_types", "task_probs")
             .group_by("profile", "task_types")
             .agg((pl.col("task_probs") * pl.col("quality")).sum().alias("a"),
                  (pl.col("task_probs") * (1.0 - pl.col("quality"))).sum().alias("b"))
             .sort("profile", "task_types"))
    pairs = _pairs((cell, d) for profile, task, a, b in cells.iter_rows()
                   for cell, d in ((f"alpha|{profile}|{task}", a), (f"beta|{profile}|{task}", b)))
    return pairs, joined.height


def _pairs(increments) -> list:
    """The push script's flat ``cell, increment`` arguments for the non-zero increments."""
    return [arg for cell, d in increments if d for arg in (cell, repr(d))]
