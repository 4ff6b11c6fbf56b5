"""One service replica (one process, e.g. one worker of ``serve --workers N``): its router,
log writer, group commit, metrics, shared state and peer link, wired together, started and
stopped. Knows nothing of HTTP: :mod:`banditroute.service.app` maps requests to it.

The replica's log writer uses group durability, a journal (one fdatasync'ed append per
commit, compacted into Parquet parts in a background process) and no automatic flush: only
the :class:`~banditroute.service.group_commit.GroupCommit` writes, so a response can wait
for exactly the commit holding its rows.

Rollout commands (``/v1/rollout``) reach every replica through a command store, the log
directory's or, with Redis, a Redis list; each replica restores the stage from it before it
serves (without Redis: within ``Router.resume``) and polls it (:mod:`banditroute.service.rollout_store`).
While a canary runs, each replica's monitor watches it and rolls it back through the same store
(:mod:`banditroute.service.canary_monitor`).

:meth:`Replica.ready_report` and :meth:`Replica.stop_report` say in words what a replica took
over when it started and what it wrote when it stopped (``serve`` prints them, see
:func:`resumed_words`).

>>> from banditroute.service.config import ServiceConfig
>>> preflight(ServiceConfig(config="/nonexistent/routes.toml"))
Traceback (most recent call last):
...
banditroute.errors.ConfigError: config cannot be read (No such file or directory), got '/nonexistent/routes.toml'
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..decide.commands import Candidate, FileCommands
from ..decide.rollout_sync import RolloutSync, build_candidate
from ..errors import ConfigError
from ..logs.quarantine import n_quarantined
from ..logs.store import LogWriter
from .canary_monitor import monitor_for
from .config import ServiceConfig
from .forwarding import ESCALATION, PeerLink
from .group_commit import GroupCommit
from .metrics import Metrics
from .rollout_store import RedisCommands, RolloutPoller

__all__ = ["Replica", "SnapshotSchedule", "preflight", "resumed_words", "start_replica"]

_log = logging.getLogger("banditroute.service.replica")

#: Records an outcome forwarded by another replica on this host: ``(replica, body) -> (status, body bytes)``;
#: called with a third argument, ``"escalation"``, it issues a forwarded escalation.
ForwardedHandler = Callable[..., Awaitable[tuple[int, bytes]]]


class Replica:
    """The state of one replica behind the endpoints (built and started by :func:`start_replica`).

    Parameters
    ----------
    cfg : ServiceConfig
    router : Router
        Built with a log directory; the replica gives it its own log writer.
    handle_forwarded : async callable(replica, body[, kind]) -> (status, body bytes)
        Records an outcome forwarded by another replica as the HTTP endpoint would; with
        ``kind`` ``"escalation"``, issues a forwarded escalation as ``/v1/escalate`` would.

    Attributes
    ----------
    router, log, commit, metrics, peers
        The router, its log writer, the group commit, the metrics and the peer link.
    shared : SharedState or None
        The shared posterior state (None without Redis).
    rollout, rollout_poller : RolloutSync, RolloutPoller
        The router's end of the rollout command store, and its poll.
    monitor : CanaryMonitorLoop or None
        The canary monitor (None: ``monitor_interval_s`` is 0).
    writer_id : str
        The log writer's id; the replica's decision ids start with it.
    """

    def __init__(self, cfg: ServiceConfig, *, router, handle_forwarded: ForwardedHandler):
        self.cfg = cfg
        self.router = router
        # the router's own writer would flush on its thresholds: the committer flushes instead
        # commits go to the journal (one append + fdatasync), compacted into Parquet parts later
        self.log = LogWriter(router.config.log_dir, durability="group", auto_flush=False, journal=True,
                             journal_compactor="process")
        router.use_log_writer(self.log)
        self.writer_id = self.log.writer_id
        self.commit = GroupCommit(self.log, interval_s=cfg.commit_interval_ms / 1e3,
                                  max_in_flight=cfg.max_commits_in_flight)
        # with serve's metrics directory, every worker's scrape shows every replica (and those gone)
        self.metrics = Metrics(router.profiles, replica=self.writer_id, directory=cfg.metrics_dir, source=self.gauges)
        self.shared = None
        shared_cfg = cfg.shared_state()
        #: what a restart took over from the log (without Redis, which holds the shared state)
        self.resumed = None
        #: the pending decisions in Redis, so any replica records any outcome (None: no Redis)
        self.redis_outcomes = None
        if shared_cfg is not None:
            from .redis_outcomes import RedisOutcomes
            from .replica_router import ReplicaRouter
            from .shared_state import SharedState

            self.shared = SharedState(router, config=shared_cfg)
            if cfg.redis_outcomes and isinstance(router, ReplicaRouter):  # else outcomes go to the issuer
                self.redis_outcomes = RedisOutcomes(router, url=shared_cfg.url, namespace=shared_cfg.namespace,
                                                    timeout_s=shared_cfg.timeout_s)
                self.commit.side = self.redis_outcomes  # written with the rows of each group commit
                self.shared.lookup = self.redis_outcomes.decisions_of  # a dead replica's outcomes of others' decisions
        else:  # the beliefs and the pending decisions of the replicas that logged here before
            self.resumed = router.resume()
        self._token = None if cfg.token is None else cfg.token.encode()
        self.peers = PeerLink(self.writer_id, cfg.token, lambda body: handle_forwarded(self, body),
                              adopted=(self.resumed or {}).get("writers", ()),
                              handle_escalation=lambda body: handle_forwarded(self, body, ESCALATION))
        #: snapshots of the log for fast restarts (without Redis: with it, a restart reads the shared state)
        self.snapshots = None
        if shared_cfg is None and cfg.snapshot_interval_s > 0:
            self.snapshots = SnapshotSchedule(router, every_outcomes=cfg.snapshot_every_outcomes,
                                              interval_s=cfg.snapshot_interval_s, keep=cfg.snapshot_keep)
        # without Redis the stage was restored by resume(), from the same store
        store = (FileCommands(router.config.log_dir) if shared_cfg is None else
                 RedisCommands(url=shared_cfg.url, namespace=shared_cfg.namespace, timeout_s=shared_cfg.timeout_s))
        self.rollout = RolloutSync(router, store, log_dir=router.config.log_dir)
        self.rollout_poller = RolloutPoller(self.rollout, interval_s=cfg.rollout_poll_ms / 1e3,
                                            restored=shared_cfg is None)
        self.monitor = (None if cfg.monitor_interval_s <= 0 else
                        monitor_for(cfg, router, self.rollout, replica=self.writer_id))
        self._learned_at_start = router.n_updates
        #: whether the first pull from Redis succeeded (None: no Redis, or not started)
        self.shared_pulled: bool | None = None
        #: whether :meth:`stop` pushed the last increments to Redis (None: no Redis, or not stopped)
        self.shared_pushed: bool | None = None
        self._snapshots_at_stop: int | None = None  # snapshots the stop wrote (None: not stopped)

    @property
    def requires_auth(self) -> bool:
        """Whether requests must carry the bearer token."""
        return self._token is not None

    def authorized(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header value carries the service's token (always, without
        one); the scheme ``Bearer`` is case-insensitive (RFC 7235)."""
        if self._token is None:
            return True
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode("latin-1"), self._token)

    def stage(self, decision_id: str) -> None:
        """With Redis: write the pending entry of a decision just issued with its row (see
        :mod:`banditroute.service.redis_outcomes`)."""
        if self.redis_outcomes is not None:
            self.redis_outcomes.stage(decision_id)

    def gauges(self) -> list:
        """``(name, help, value)`` of the replica's gauges and counters beyond the request metrics."""
        out = [("banditroute_commits_total", "Group commits written (one fdatasync'ed journal append each).",
                self.commit.n_commits),
               ("banditroute_outcomes_forwarded_total", "Outcomes forwarded to the replica that issued the decision.",
                self.peers.n_forwarded),
               ("banditroute_outcomes_received_forwarded_total", "Outcomes other replicas forwarded here.",
                self.peers.n_received),
               ("banditroute_escalations_forwarded_total", "Escalations forwarded to the replica that issued the "
                "decision.", self.peers.n_escalations_forwarded),
               ("banditroute_escalations_received_forwarded_total", "Escalations other replicas forwarded here.",
                self.peers.n_escalations_received),
               ("banditroute_quarantined_files", "Damaged log files moved to <log_dir>/_quarantine (see "
                "'banditroute doctor').", n_quarantined(self.router.config.log_dir)),
               ("banditroute_rollout_commands_applied", "Rollout commands of the command store applied here "
                "(its position).", self.rollout.position),
               ("banditroute_rollout_poll_failures_total", "Polls of the rollout command store that failed.",
                self.rollout_poller.n_failures)]
        if self.monitor is not None:
            m = self.monitor
            out += [("banditroute_monitor_polls_total", "Canary monitor polls that fed the monitor.", m.n_polls),
                    ("banditroute_monitor_poll_failures_total", "Canary monitor polls that failed.", m.n_failures),
                    ("banditroute_monitor_rollbacks_total", "Canaries this replica's monitor rolled back.",
                     m.n_rollbacks),
                    ("banditroute_monitor_canary_rounds", "Rounds of the last watched canary fed to its monitor.",
                     m.n_rounds)]
        if self.shared is not None:
            s = self.shared
            out += [("banditroute_shared_state_up", "1 if the last sync with Redis succeeded.", int(s.up)),
                    ("banditroute_shared_state_buffered_evidence",
                     "Evidence (outcomes) recorded here and not yet pushed to Redis.", s.buffered_evidence),
                    ("banditroute_shared_state_sync_failures_total", "Sync rounds that failed.", s.n_failures),
                    ("banditroute_shared_state_regressions_total", "Pulls refused because Redis totals went down.",
                     s.n_regressions),
                    ("banditroute_shared_state_adopted_outcomes_total",
                     "Outcomes of dead replicas (logged, never pushed) this replica pushed to Redis.", s.n_adopted)]
        if self.redis_outcomes is not None:
            out += self.redis_outcomes.gauges()
        return out

    async def start(self) -> None:
        """Pull the shared state and restore the rollout stage from Redis (when configured),
        then start the committer, the peer link, the rollout poll and the canary monitor."""
        if self.shared is not None:
            self.shared_pulled = await asyncio.get_running_loop().run_in_executor(None, self.shared.start)
            await asyncio.get_running_loop().run_in_executor(None, self.rollout_poller.poll)  # the restore
        self.commit.start()
        await self.peers.start()
        if self.snapshots is not None:
            self.snapshots.start()
        self.rollout_poller.start()
        if self.monitor is not None:
            loop = asyncio.get_running_loop()  # the monitor thread's rollback event row: durable via the commit
            self.monitor.rollback.commit = lambda: asyncio.run_coroutine_threadsafe(self.commit.ack(), loop).result()
            self.monitor.start()

    async def stop(self) -> None:
        """Stop the canary monitor and the rollout poll, close the peer link, commit what is waiting
        (flushing the log), push the last increments."""
        if self.monitor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.monitor.stop)
        await asyncio.get_running_loop().run_in_executor(None, self.rollout_poller.stop)
        self.rollout.store.close()
        await self.peers.close()
        await self.commit.close()
        if self.redis_outcomes is not None:
            await self.redis_outcomes.aclose()
        self.metrics.close()  # a last publish; scrapes show this replica as gone at once
        self.router.close()  # the log is closed already; lets go of (and deletes) the dead writers' locks it took over
        if self.shared is not None:
            self.shared_pushed = await asyncio.get_running_loop().run_in_executor(None, self.shared.stop)
        if self.snapshots is not None:  # the last snapshot, of a log now complete, off the event loop
            written = self.snapshots.n_written
            await asyncio.get_running_loop().run_in_executor(None, self.snapshots.stop)
            self._snapshots_at_stop = self.snapshots.n_written - written

    def ready_report(self) -> str:
        """What this replica started from, in words: the shared state pulled from Redis, or what
        it took over from the log (:func:`resumed_words`)."""
        if self.shared is None:
            return resumed_words(self.resumed)
        if not self.shared_pulled:
            return "Redis unreachable at start: serving from the prior until it answers (shared state down)"
        n_outcomes = round(float(sum(e.sum() for e in self.router.evidence())))  # each outcome adds 1 in all
        adopted = self.shared.n_adopted
        return (f"shared state from Redis (namespace {self.cfg.redis_namespace!r}): evidence of "
                f"{_n(n_outcomes, 'outcome')}" + (f", {_n(adopted, 'outcome')} of dead replicas adopted" if adopted
                                                   else ""))

    def stop_report(self) -> str:
        """What :meth:`stop` wrote, in words: the log's rows this run, the last snapshot, the last push."""
        rows = self.router.log_position
        out = [f"log flushed and closed ({_n(rows, 'row')} this run in {_n(self.commit.n_commits, 'group commit')}, "
               f"journal compacted into Parquet)" if rows else "log closed (nothing logged this run)",
               f"{_n(self.router.n_updates - self._learned_at_start, 'outcome')} learned this run"]
        if self.shared is not None:
            out.append("last increments pushed to Redis" if self.shared_pushed else
                       "Redis unreachable: the last increments stay in the log for a replica to adopt")
        elif self.snapshots is None:
            out.append("snapshots off")
        elif self._snapshots_at_stop:
            out.append(f"snapshot {self.snapshots.last_file} written")
        elif self.snapshots.last_error is not None:
            out.append(f"snapshot not written: {self.snapshots.last_error}")
        else:
            out.append("no snapshot written (nothing learned since the last)" if self.snapshots.n_written else
                       "no snapshot written (nothing learned this run)")
        return "; ".join(out)


def resumed_words(resumed: dict) -> str:
    """What :meth:`Router.resume <banditroute.decide.router.Router.resume>` took over, in words.

    >>> resumed_words({"outcomes_applied": 0, "pending_restored": 0, "writers": [], "chains_restored": 0})
    'started from the prior (empty log)'
    >>> resumed_words({"outcomes_applied": 50000, "pending_restored": 3, "writers": ["a1"], "chains_restored": 0})
    'replayed 50000 outcomes from the log (no snapshot); 3 decisions of earlier runs pending'
    >>> resumed_words({"outcomes_applied": 50012, "outcomes_replayed": 12, "snapshot": "snap.arrow",
    ...                "skipped_snapshots": [], "pending_restored": 0, "writers": ["a1"], "chains_restored": 0})
    'resumed from snapshot snap.arrow (50000 outcomes) + replayed 12 outcomes logged after it'
    """
    n, replayed, file = resumed["outcomes_applied"], resumed.get("outcomes_replayed"), resumed.get("snapshot")
    skipped = resumed.get("skipped_snapshots") or []
    if file is not None:
        text = (f"resumed from snapshot {file} ({_n(n - replayed, 'outcome')}) + replayed "
                f"{_n(replayed, 'outcome')} logged after it")
    elif n:
        text = f"replayed {_n(n, 'outcome')} from the log ({'no valid snapshot' if skipped else 'no snapshot'})"
    else:
        text = f"started from the prior ({'no outcomes in the log' if resumed['writers'] else 'empty log'})"
    parts = [text]
    parts += [f"snapshot {s['snapshot']} skipped ({s['reason']})" for s in skipped]
    if resumed["pending_restored"]:
        parts.append(f"{_n(resumed['pending_restored'], 'decision')} of earlier runs pending")
    if resumed.get("chains_restored"):
        parts.append(f"{_n(resumed['chains_restored'], 'escalation chain')} restored")
    rollout = resumed.get("rollout")
    if rollout:
        canary = rollout.get("canary")
        parts.append(f"rollout stage restored ({_n(rollout['commands'], 'command')}"
                     + (f"; canary {canary['name']} at {canary['fraction']}" if canary else "")
                     + (f"; shadows {', '.join(rollout['shadows'])}" if rollout.get("shadows") else "") + ")")
    return "; ".join(parts)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


class SnapshotSchedule:
    """Writes snapshots of the log (:meth:`Router.snapshot <banditroute.decide.router.Router.snapshot>`)
    in a thread of its own, so the event loop never waits for one: once the replica learned
    ``every_outcomes`` outcomes since the last, or after ``interval_s`` seconds if it learned
    any, and a last one at :meth:`stop`.

    A snapshot is the state a replay of the log computes up to a position (every writer's
    outcomes, as a restart replays them), never this replica's live state: with ``serve
    --workers N`` on one log each replica learns only its own outcomes, yet any of them may
    write a snapshot, which a restart of any of them can start from (one at a time: a lock
    file in ``<log_dir>/_snapshots``). The router's lock is not taken: the replay runs on a
    router of its own.
    """

    def __init__(self, router, *, every_outcomes: int, interval_s: float, keep: int):
        self.router = router
        self.every_outcomes, self.interval_s, self.keep = every_outcomes, interval_s, keep
        self.n_written = 0  #: snapshots written
        self.last_file: str | None = None  #: the name of the last one written
        self.last_error: str | None = None  #: why the last attempt failed (None: it did not)
        self._learned = router.n_updates  # at the last snapshot (or at start)
        self._stop = threading.Event()
        self._writing = threading.Lock()
        self._thread = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="banditroute-snapshots", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        since = time.monotonic()
        while not self._stop.wait(min(1.0, self.interval_s / 4)):
            learned = self.router.n_updates - self._learned
            if learned >= self.every_outcomes or (learned and time.monotonic() - since >= self.interval_s):
                self.write()
                since = time.monotonic()

    def write(self) -> None:
        """Write a snapshot now if the replica learned anything since the last one. A failure is
        logged, never raised: a snapshot only shortens a restart, the log stays the record."""
        with self._writing:
            learned = self.router.n_updates
            if learned == self._learned:
                return
            try:
                self.last_file = Path(self.router.snapshot(keep=self.keep)).name
            except Exception as exc:  # noqa: BLE001 - see above
                self.last_error = str(exc)
                _log.warning("snapshot not written: %s", exc, exc_info=exc)
                return
            self._learned, self.last_error = learned, None
            self.n_written += 1

    def stop(self) -> None:
        """Stop the thread and write the last snapshot (call once the log is flushed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.write()


async def start_replica(cfg: ServiceConfig, *, router=None, handle_forwarded: ForwardedHandler) -> Replica:
    """Build (the router from ``cfg.config`` unless given) and start one replica."""
    from .replica_router import ReplicaRouter

    # The event loop must not wait the default 5 ms for the GIL while a commit thread
    # encodes: that wait would be added to every request's latency.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
    if router is None:
        router = ReplicaRouter.from_config(cfg.config, log_dir=cfg.log_dir, durability="group")
    if router.log_writer is None:
        raise ConfigError("log_dir", None, "must be set: the service acknowledges only logged requests")
    replica = Replica(cfg, router=router, handle_forwarded=handle_forwarded)
    await replica.start()
    return replica


def preflight(cfg: ServiceConfig) -> None:
    """Fail fast, before starting workers, on a bad routes file or shared-state setting; create the log directory."""
    from ..decide.router import Router

    router = Router.from_config(cfg.config, log_dir=None)
    for name, path in (cfg.candidate_configs or {}).items():  # each builds, and fits the service
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--candidate-config {name}", path, f"cannot be read ({getattr(exc, 'strerror', exc)})") \
                from None
        try:
            build_candidate(router, Candidate.of(text, config=name, path=path))
        except ConfigError as exc:
            raise ConfigError(f"--candidate-config {name}", path, exc.problem) from None
    if cfg.redis_url is not None:
        from .shared_state import SharedState

        SharedState(router, config=cfg.shared_state())
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
