"""``banditroute serve``: serve the router over HTTP with uvicorn (needs the ``service`` extra).

Each uvicorn worker is one replica (:mod:`banditroute.service.replica`) built by
:func:`banditroute.service.app.app_from_env` from the settings this command puts in the
environment, among them the run's metrics directory, where every worker keeps its counters for
the others' scrapes (:func:`banditroute.service.metrics.metrics_directory`, removed on exit).
Requests are parsed by uvicorn's httptools protocol within the head limits of
:func:`banditroute.service.http_limits.bounded_http`.

On stderr: one line with the settings and the address, then one per replica when it is ready
(what it took over: a snapshot and the outcomes replayed after it, the pending decisions, or the
shared state from Redis) and one when it stopped (what it wrote); with ``--access-log`` one per
request (see :mod:`banditroute.service.app`).

>>> import argparse
>>> args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--config", "routes.toml"])
>>> args.host, args.port, args.workers, args.log_dir, args.max_header_bytes, args.max_headers, args.access_log
('127.0.0.1', 8080, 1, 'logs', 65536, 100, False)
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import sys
from dataclasses import asdict, replace

from ..errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``serve`` to the CLI's subparsers (``run=run``)."""
    p = subparsers.add_parser("serve", help="serve the router over HTTP (needs the 'service' extra)",
                              description="Serve the router over HTTP with uvicorn, one replica per worker (needs the "
                                          "'service' extra: pip install 'banditroute[service]').")
    p.add_argument("--config", required=True, help="routes TOML file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--log-dir", default="logs", help="decision log directory (default logs)")
    p.add_argument("--token", default=None, help="bearer token (default: $BANDITROUTE_TOKEN; none disables auth)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow serving a non-loopback address without a token (a warning is printed)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, each a replica (default 1)")
    p.add_argument("--access-log", action="store_true",
                   help="print a line per request on stderr: client, method, path, status, duration (default off)")
    p.add_argument("--redis-url", default=None, help="share posteriors through Redis (default: $BANDITROUTE_REDIS_URL)")
    p.add_argument("--redis-namespace", default="banditroute", help="key prefix in Redis (default banditroute)")
    p.add_argument("--no-redis-outcomes", action="store_true",
                   help="with --redis-url, share posteriors only: outcomes go to the issuing replica (forwarded on "
                        "one host) instead of any replica taking them from Redis (saves a Redis round trip each)")
    p.add_argument("--sync-interval-ms", type=float, default=100.0, help="shared-state sync period (default 100)")
    p.add_argument("--max-body-bytes", type=int, default=65536, help="request body limit (default 65536)")
    p.add_argument("--max-header-bytes", type=int, default=65536,
                   help="request line + headers limit: 431 and the connection closed past it (default 65536)")
    p.add_argument("--max-headers", type=int, default=100, help="header fields per request: 431 past it (default 100)")
    p.add_argument("--commit-interval-ms", type=float, default=1.0, help="group commit period (default 1)")
    p.add_argument("--max-commits-in-flight", type=int, default=8, help="overlapping group commits (default 8)")
    p.add_argument("--snapshot-every-outcomes", type=int, default=50_000,
                   help="without Redis, snapshot the log's learned state every N outcomes (default 50000)")
    p.add_argument("--snapshot-interval-s", type=float, default=300.0,
                   help="... or every S seconds if any were learned (default 300; 0 disables snapshots)")
    p.add_argument("--candidate-config", action="append", default=[], metavar="NAME=PATH",
                   help="a routes file POST /v1/rollout may name as its candidate (candidate_config: NAME); "
                        "repeatable")
    p.add_argument("--rollout-poll-ms", type=float, default=500.0,
                   help="how often each replica polls for rollout commands (default 500)")
    p.add_argument("--monitor-interval-s", type=float, default=10.0,
                   help="while a canary runs, each replica's monitor checks it every S seconds and rolls it back "
                        "(for every replica) when it is worse (default 10; 0 disables)")
    p.add_argument("--monitor-metric", choices=("quality", "reward"), default="quality",
                   help="outcome compared by the monitor (default quality, in [0, 1])")
    p.add_argument("--monitor-reward-range", default=None, metavar="LO:HI",
                   help="known range of the reward (required with --monitor-metric reward)")
    p.add_argument("--monitor-alpha", type=float, default=0.05,
                   help="the monitor's error probability over the whole canary (default 0.05)")
    p.add_argument("--monitor-margin", type=float, default=0.0,
                   help="roll back once the candidate is shown worse by more than this (default 0)")
    p.add_argument("--monitor-wait-s", type=float, default=None,
                   help="outcomes arriving later than this after their decision are not counted by the monitor; "
                        "rounds are checked once this old (default: the routes file's wait_window_s)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Validate the settings, then run uvicorn until SIGINT/SIGTERM (graceful: flushes)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve", problem="needs the service extra: pip install 'banditroute[service]'") from None
    from ..service.app import APP_FACTORY, ENV_CONFIG
    from ..service.http_limits import bounded_http
    from ..service.config import ServiceConfig
    from ..service.metrics import metrics_directory
    from ..service.replica import preflight

    cfg = ServiceConfig(config=args.config, log_dir=args.log_dir, token=args.token or os.environ.get("BANDITROUTE_TOKEN"),
                        max_body_bytes=args.max_body_bytes, max_header_bytes=args.max_header_bytes,
                        max_headers=args.max_headers, commit_interval_ms=args.commit_interval_ms,
                        max_commits_in_flight=args.max_commits_in_flight,
                        redis_url=args.redis_url or os.environ.get("BANDITROUTE_REDIS_URL"),
                        redis_namespace=args.redis_namespace, sync_interval_ms=args.sync_interval_ms,
                        redis_outcomes=not args.no_redis_outcomes,
                        snapshot_every_outcomes=args.snapshot_every_outcomes,
                        snapshot_interval_s=args.snapshot_interval_s,
                        candidate_configs=_candidate_configs(args.candidate_config),
                        rollout_poll_ms=args.rollout_poll_ms, monitor_interval_s=args.monitor_interval_s,
                        monitor_metric=args.monitor_metric, monitor_reward_range=_range(args.monitor_reward_range),
                        monitor_alpha=args.monitor_alpha, monitor_margin=args.monitor_margin,
                        monitor_wait_s=args.monitor_wait_s, announce=True, access_log=args.access_log)
    if isinstance(args.workers, bool) or args.workers < 1:
        raise ConfigError("--workers", args.workers, "must be >= 1")
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", args.port, "must be in [0, 65535]")
    if cfg.token is None and not _loopback(args.host):
        if not args.insecure_no_auth:
            raise ConfigError("--host", args.host, "is not a loopback address: give --token (or $BANDITROUTE_TOKEN), "
                              "or --insecure-no-auth to serve without authentication")
        print(f"banditroute serve: WARNING: {args.host} is served without authentication (--insecure-no-auth)",
              file=sys.stderr)
    preflight(cfg)
    print(f"banditroute serve: {args.config} on http://{args.host}:{args.port} ({args.workers} worker(s), "
          f"log dir {args.log_dir}, auth {'on' if cfg.token else 'off'}, shared state "
          f"{'Redis' if cfg.redis_url else 'none'}, access log {'on' if cfg.access_log else 'off'}); "
          f"a line follows when each replica is ready", file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httptools' protocol with the head limits (uvicorn's h11 has a size limit but costs ~40% throughput)
    http = functools.partial(bounded_http, max_header_bytes=cfg.max_header_bytes, max_headers=cfg.max_headers)
    with metrics_directory() as metrics_dir:  # the workers' metrics tables, this run's only
        os.environ[ENV_CONFIG] = json.dumps(asdict(replace(cfg, metrics_dir=metrics_dir)))
        uvicorn.run(APP_FACTORY, factory=True, host=args.host, port=args.port, workers=args.workers, loop="auto",
                    http=http, h11_max_incomplete_event_size=cfg.max_header_bytes, access_log=False,
                    timeout_graceful_shutdown=10, log_level="warning")
    return 0


def _candidate_configs(pairs: list[str]) -> dict | None:
    """``--candidate-config NAME=PATH`` arguments as ``{NAME: absolute PATH}`` (None: none given)."""
    configs = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ConfigError("--candidate-config", pair, "must be NAME=PATH")
        if name in configs:
            raise ConfigError("--candidate-config", name, "is given twice")
        configs[name] = os.path.abspath(path)
    return configs or None


def _range(text: str | None) -> tuple[float, float] | None:
    """``--monitor-reward-range LO:HI`` as ``(LO, HI)``."""
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        return (float(lo), float(hi)) if sep else _range_error(text)
    except ValueError:
        return _range_error(text)


def _range_error(text: str):
    raise ConfigError("--monitor-reward-range", text, "must be LO:HI (two numbers)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only "localhost" is known to stay on this machine
        return False
