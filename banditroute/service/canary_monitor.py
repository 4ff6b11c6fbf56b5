"""The canary monitor inside the service: each replica watches a running canary and rolls it
back, for every replica, when the anytime-valid monitor says it is worse.

While a canary is in effect, :class:`CanaryMonitorLoop` polls a
:class:`~banditroute.evaluation.canary.CanaryWatcher` every ``serve --monitor-interval-s`` seconds
(default 10; 0 disables) in a thread of its own. The watcher reads the canary's rounds from the
log directory (every writer's, journal segments included) once they are ``wait_window`` old
(``--monitor-wait-s``, default the router's ``wait_window_s``: an outcome arriving later than
that is not counted by the monitor), plus :data:`COMMIT_LAG_S` for commits on their way, and feeds
them to :class:`ope.CanaryMonitor` (``--monitor-metric``, ``--monitor-alpha``,
``--monitor-margin``).

On ``"rollback"`` the watcher calls :class:`RollbackCommand`, which submits a
``rollback`` :class:`~banditroute.decide.commands.RolloutCommand` (``who="monitor"``, ``why`` =
the monitor's numbers as JSON) through the replica's
:class:`~banditroute.decide.rollout_sync.RolloutSync`: stored in the command store, applied by
every replica and restored at a restart, like a person's command. Its ``command_id`` is derived
from the canary's start (``monitor-rollback-<start µs>``), the same at every replica, so the
watchers of several workers that reach the decision store it once (``"duplicate"`` for the
others); a canary already gone (a conflict) counts as done.

A poll never raises: failures are counted (``banditroute_monitor_poll_failures_total``) and
logged once per outage.

>>> rollback_id(1_700_000_000_123_456)
'monitor-rollback-1700000000123456'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

from ..decide.commands import MAX_WHY, RolloutCommand
from ..decide.rollout_sync import RolloutConflictError
from ..evaluation.canary import CanaryWatcher
from .periodic import Periodic

__all__ = ["COMMIT_LAG_S", "CanaryMonitorLoop", "RollbackCommand", "rollback_id", "monitor_for"]

_log = logging.getLogger("banditroute.service.canary_monitor")

#: Rounds are fed this much later than ``wait_window`` after their decision: an outcome that
#: arrived in time may still be in a group commit on its way to the journal.
COMMIT_LAG_S = 2.0


def rollback_id(since_us: int) -> str:
    """The monitor's rollback command id for the canary started at ``since_us`` (epoch µs)."""
    return f"monitor-rollback-{int(since_us)}"


def _short(why: str) -> str:
    """The monitor's numbers as they fit a command's ``why`` (the guardrails dropped if too long)."""
    if len(why) <= MAX_WHY:
        return why
    data = json.loads(why)
    data = {k: v for k, v in data.items() if k not in ("guardrails",)}
    return json.dumps(data, separators=(",", ":"))[:MAX_WHY]


class RollbackCommand:
    """A ``rollback(who, why)`` for :class:`CanaryWatcher` that submits a rollback command through
    ``sync`` (a :class:`~banditroute.decide.rollout_sync.RolloutSync`). Returns ``"applied"``,
    ``"duplicate"`` (another replica's monitor stored it) or ``"gone"`` (no canary any more)."""

    def __init__(self, sync, *, replica: str, commit=None):
        self.sync, self.replica = sync, replica
        #: blocks until the log rows buffered so far are durable (the service's group commit: the
        #: rollback's event row is committed by the log's owner, see ``Ledger.event``)
        self.commit = commit
        self.n_applied = 0  #: rollback commands stored and applied by this replica

    def __call__(self, who: str, why: str) -> str:
        canary = self.sync.stage()["canary"]
        if canary is None or canary.get("since_us") is None:
            return "gone"
        command = RolloutCommand(command_id=rollback_id(canary["since_us"]), action="rollback", name=canary["name"],
                                 fraction=None, who=who, why=_short(why), ts_us=time.time_ns() // 1000,
                                 replica=self.replica)
        try:
            status = self.sync.submit(command)
        except RolloutConflictError:  # rolled back (or promoted and gone) meanwhile
            return "gone"
        if status == "applied":
            self.n_applied += 1
            if self.commit is not None:
                self.commit()
            _log.warning("canary %r rolled back by the monitor: %s", canary["name"], why)
        return status


def monitor_for(cfg, router, sync, *, replica: str) -> "CanaryMonitorLoop":
    """The monitor loop of a replica with settings ``cfg`` (a ServiceConfig), its watcher
    submitting rollbacks through ``sync``."""
    wait_s = router.config.wait_window_s if cfg.monitor_wait_s is None else cfg.monitor_wait_s
    rollback = RollbackCommand(sync, replica=replica)
    watcher = CanaryWatcher(router, router.config.log_dir, options=cfg.monitor_options(), metric=cfg.monitor_metric,
                            wait_window=dt.timedelta(seconds=float(wait_s)), who="monitor", rollback=rollback)
    return CanaryMonitorLoop(watcher, sync, interval_s=cfg.monitor_interval_s, rollback=rollback)


class CanaryMonitorLoop(Periodic):
    """Polls ``watcher`` every ``interval_s`` seconds while ``sync``'s router runs a canary, in a
    thread of its own; a poll never raises (see the module docstring)."""

    thread_name = "banditroute-canary-monitor"

    def __init__(self, watcher: CanaryWatcher, sync, *, interval_s: float, lag_s: float = COMMIT_LAG_S,
                 rollback: RollbackCommand | None = None):
        super().__init__(interval_s)
        self.watcher, self.sync, self.rollback = watcher, sync, rollback
        self.lag_s = float(lag_s)
        self.n_polls = 0  #: polls that fed the monitor
        self.n_failures = 0  #: polls that failed
        self.last_result = None  #: the monitor's last result (``MonitorResult``)
        self.last_error: str | None = None

    def poll(self) -> None:
        """One round: nothing without a canary; else feed the watcher, act on a rollback."""
        try:
            if self.sync.stage()["canary"] is None:
                return
            now_us = time.time_ns() // 1000 - int(self.lag_s * 1e6)
            self.last_result = self.watcher.poll(now_us=now_us)
            self.n_polls += 1
        except Exception as exc:  # noqa: BLE001 - the monitor must never take the service down
            self.n_failures += 1
            if self.last_error is None:
                _log.warning("canary monitor poll failed (%s: %s); retrying every %.3g s", type(exc).__name__, exc,
                             self.interval_s, exc_info=exc)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        self.last_error = None

    @property
    def n_rollbacks(self) -> int:
        """Canaries rolled back by this replica's monitor (its command stored and applied)."""
        return 0 if self.rollback is None else self.rollback.n_applied

    @property
    def n_rounds(self) -> int:
        """Rounds of the last watched canary fed to its monitor."""
        return 0 if self.last_result is None else self.last_result.n_rounds

