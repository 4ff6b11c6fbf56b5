"""The settings of one service replica (:class:`ServiceConfig`), validated once.

>>> cfg = ServiceConfig(config="routes.toml", token="s3cret-token")
>>> cfg.max_body_bytes, cfg.commit_interval_ms, cfg.max_header_bytes, cfg.max_headers
(65536, 1.0, 65536, 100)
>>> ServiceConfig(config="routes.toml", max_body_bytes=0)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: max_body_bytes must be an integer >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.profiles import check_number
from ..decide.commands import NAME as CANDIDATE_NAME
from ..errors import ConfigError

__all__ = ["MONITOR_METRICS", "ServiceConfig"]

MONITOR_METRICS = ("quality", "reward")  #: what the canary monitor may compare


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings of one service replica.

    Parameters
    ----------
    config : str
        Routes TOML file.
    log_dir : str
        Root of the decision log.
    token : str or None
        Bearer token required on ``/v1/*`` and ``/metrics``; None disables auth.
    max_body_bytes : int
        Larger request bodies get 413.
    max_header_bytes : int
        A request whose line and headers (the head) exceed this many bytes gets 431 and the
        connection is closed before more is read (enforced by ``serve``'s HTTP protocol,
        :func:`banditroute.service.http_limits.bounded_http`).
    max_headers : int
        A request with more header fields gets 431 (likewise).
    commit_interval_ms : float
        At most one group commit starts per interval.
    max_commits_in_flight : int
        Group commits writing at the same time.
    redis_url : str or None
        Share posterior state through Redis (see :mod:`banditroute.service.shared_state`).
    redis_namespace : str
    sync_interval_ms : float
        Period of the shared-state sync.
    redis_outcomes : bool
        With Redis: keep the pending decisions there too, so any replica records any outcome
        (:mod:`banditroute.service.redis_outcomes`; a Redis round trip per outcome). False: an
        outcome goes to the replica that issued its decision, as without Redis.
    metrics_dir : str or None
        The directory where the workers of one ``serve`` process keep their metrics tables (made
        by ``serve``, see :func:`banditroute.service.metrics.metrics_directory`); None: the
        replica's metrics are its own.
    snapshot_every_outcomes : int
        Without Redis, a replica writes a snapshot of the log's learned state (for a fast
        restart, see :meth:`Router.snapshot <banditroute.decide.router.Router.snapshot>`) once it
        learned this many outcomes since the last (default 50,000; ``serve --snapshot-every-outcomes``) ...
    snapshot_interval_s : float
        ... or after this many seconds if it learned any (default 300; ``serve --snapshot-interval-s``),
        and at a graceful shutdown; 0 writes none.
    snapshot_keep : int
        Snapshots kept in ``<log_dir>/_snapshots`` (the newest).
    candidate_configs : dict of str to str, or None
        Routes files a ``POST /v1/rollout`` may name as its candidate (``candidate_config``),
        by name (``serve --candidate-config NAME=PATH``); a request never gives a path.
    rollout_poll_ms : float
        Period of each replica's poll of the rollout command store (see
        :mod:`banditroute.service.rollout_store`).
    monitor_interval_s : float
        While a canary is in effect, each replica feeds its logged rounds to an anytime-valid
        monitor every this many seconds and rolls it back (a command to every replica) when the
        monitor says so (see :mod:`banditroute.service.canary_monitor`); 0 disables. Default 10.
    monitor_metric : {"quality", "reward"}
        The outcome column compared; ``"quality"`` lies in [0, 1], ``"reward"`` needs ...
    monitor_reward_range : (float, float) or None
        ... its known range (``serve --monitor-reward-range LO:HI``).
    monitor_alpha, monitor_margin : float
        The monitor's ``alpha`` (over the whole canary) and ``margin`` (:class:`ope.MonitorOptions`).
    monitor_wait_s : float or None
        How long after a decision its outcome counts for the monitor (rounds are fed once that
        old; a later outcome is not counted); None: the router's ``wait_window_s``.
    announce : bool
        Print a line on stderr when the replica is ready (what it took over: a snapshot, outcomes
        replayed, pending decisions, the shared state) and when it stops (what it wrote); ``serve``
        sets it.
    access_log : bool
        Print a line on stderr per request: client, method, path, status, duration in ms
        (``serve --access-log``); off, requests take no extra step.
    """

    config: str
    log_dir: str = "logs"
    token: str | None = None
    max_body_bytes: int = 65536
    max_header_bytes: int = 65536
    max_headers: int = 100
    commit_interval_ms: float = 1.0
    max_commits_in_flight: int = 8
    redis_url: str | None = None
    redis_namespace: str = "banditroute"
    sync_interval_ms: float = 100.0
    redis_outcomes: bool = True
    metrics_dir: str | None = None
    snapshot_every_outcomes: int = 50_000
    snapshot_interval_s: float = 300.0
    snapshot_keep: int = 2
    candidate_configs: dict | None = None
    rollout_poll_ms: float = 500.0
    monitor_interval_s: float = 10.0
    monitor_metric: str = "quality"
    monitor_reward_range: tuple | list | None = None
    monitor_alpha: float = 0.05
    monitor_margin: float = 0.0
    monitor_wait_s: float | None = None
    announce: bool = False
    access_log: bool = False

    def __post_init__(self) -> None:
        for name in ("config", "log_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(name, getattr(self, name), "must be a non-empty path")
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise ConfigError("token", "<hidden>", "must be a string of at least 8 characters")
        if self.metrics_dir is not None and (not isinstance(self.metrics_dir, str) or not self.metrics_dir):
            raise ConfigError("metrics_dir", self.metrics_dir, "must be a non-empty path or None")
        for name in ("announce", "access_log", "redis_outcomes"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be true or false")
        for name in ("max_body_bytes", "max_commits_in_flight", "max_header_bytes", "max_headers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "must be an integer >= 1")
        check_number("commit_interval_ms", self.commit_interval_ms, lo=0.0)
        check_number("sync_interval_ms", self.sync_interval_ms, lo=0.0, lo_open=True)
        for name in ("snapshot_every_outcomes", "snapshot_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "must be an integer >= 1")
        check_number("snapshot_interval_s", self.snapshot_interval_s, lo=0.0)
        check_number("rollout_poll_ms", self.rollout_poll_ms, lo=0.0, lo_open=True)
        self._check_monitor()
        if self.candidate_configs is not None:
            if not isinstance(self.candidate_configs, dict):
                raise ConfigError("candidate_configs", self.candidate_configs, "must be a mapping NAME -> PATH")
            for name, path in self.candidate_configs.items():
                if not isinstance(name, str) or not CANDIDATE_NAME.fullmatch(name):
                    raise ConfigError("candidate_configs", name, f"names must match {CANDIDATE_NAME.pattern}")
                if not isinstance(path, str) or not path:
                    raise ConfigError(f"candidate_configs.{name}", path, "must be a non-empty path")

    def _check_monitor(self) -> None:
        check_number("monitor_interval_s", self.monitor_interval_s, lo=0.0)
        if self.monitor_metric not in MONITOR_METRICS:
            raise ConfigError("monitor_metric", self.monitor_metric, f"must be one of {MONITOR_METRICS}")
        rng = self.monitor_reward_range
        if rng is not None:
            if not isinstance(rng, (tuple, list)) or len(rng) != 2:
                raise ConfigError("monitor_reward_range", rng, "must be (low, high)")
            check_number("monitor_reward_range", rng[0])
            check_number("monitor_reward_range", rng[1])
            if not rng[0] < rng[1]:
                raise ConfigError("monitor_reward_range", list(rng), "must have low < high")
        elif self.monitor_metric == "reward":
            raise ConfigError("monitor_reward_range", None, "is required with monitor_metric 'reward' "
                              "(serve --monitor-reward-range LO:HI)")
        check_number("monitor_alpha", self.monitor_alpha, lo=0.0, hi=0.5, lo_open=True, hi_open=True)
        check_number("monitor_margin", self.monitor_margin)
        if self.monitor_wait_s is not None:
            check_number("monitor_wait_s", self.monitor_wait_s, lo=0.0)

    def monitor_options(self):
        """The :class:`ope.MonitorOptions` of the canary monitor."""
        from ope.monitor import MonitorOptions

        rng = (0.0, 1.0) if self.monitor_reward_range is None else tuple(float(x) for x in self.monitor_reward_range)
        return MonitorOptions(alpha=self.monitor_alpha, margin=self.monitor_margin, reward_range=rng)

    def shared_state(self):
        """The :class:`~banditroute.service.shared_state.SharedStateConfig`, or None without Redis."""
        if self.redis_url is None:
            return None
        from .shared_state import SharedStateConfig

        return SharedStateConfig(url=self.redis_url, namespace=self.redis_namespace,
                                 interval_s=self.sync_interval_ms / 1e3)
