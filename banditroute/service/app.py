"""The HTTP service: maps HTTP to the Router, acknowledging only what is durably logged.

Endpoints: ``POST /v1/decide``, ``POST /v1/outcome``, ``GET /v1/beliefs``, ``GET /healthz``,
``GET /metrics`` (Prometheus text) and ``GET /openapi.json``. A plain ASGI application run by
uvicorn (the optional ``service`` extra, imported lazily, so the library works without it).

Durable acknowledgement (group commit): a handler makes its router call (which buffers the
log rows) and then awaits a commit ticket. A committer detaches the buffered rows at most
every ``commit_interval_ms``, appends them to the log's journal (one fdatasync'ed line, see
:mod:`banditroute.logs.journal`; compacted into Parquet parts in the background) in a worker thread, and
resolves the tickets of every request whose rows were buffered before the detach; up to
``max_commits_in_flight`` commits overlap, and tickets resolve in commit order. A response
is sent only after its ticket resolved, so a SIGKILL loses nothing that was acknowledged.

Every 4xx/5xx is one JSON envelope naming the offending field::

    {"error": {"status": 422, "code": "invalid_request", "field": "context.task_type",
               "message": "context.task_type must be one of ['chat', 'code'], got 'poetry'"}}

Unexpected errors give a generic 500 (the traceback goes to the server log, never to clients).

An outcome is recorded by the replica that issued the decision (ids start with its writer
id). Replicas on one host forward outcomes to each other (:mod:`banditroute.service.forwarding`), so any
worker of ``serve --workers N`` accepts any outcome; replicas on other hosts answer 404: put
a load balancer with affinity on the id prefix in front of them.

>>> cfg = ServiceConfig(config="routes.toml", token="s3cret-token")
>>> cfg.max_body_bytes, cfg.commit_interval_ms
(65536, 1.0)
>>> ServiceConfig(config="routes.toml", max_body_bytes=0)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: max_body_bytes must be an integer >= 1, got 0
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

from ..config.profiles import check_number
from ..errors import BanditrouteError, ConfigError, LogError, NoFeasibleProfileError, UnknownDecisionError
from .group_commit import GroupCommit
from ..logs.store import LogWriter
from .openapi import openapi_spec

__all__ = ["ServiceConfig", "GroupCommit", "create_app", "app_from_env",
           "add_serve_parser", "run_serve", "openapi_spec"]

_log = logging.getLogger("banditroute.service.app")
ENV_CONFIG = "BANDITROUTE_SERVICE_CONFIG"


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
    commit_interval_ms : float
        At most one group commit starts per interval.
    max_commits_in_flight : int
        Group commits writing at the same time.
    redis_url : str or None
        Share posterior state through Redis (see :mod:`banditroute.service.shared_state`).
    redis_namespace : str
    sync_interval_ms : float
        Period of the shared-state sync.
    """

    config: str
    log_dir: str = "logs"
    token: str | None = None
    max_body_bytes: int = 65536
    commit_interval_ms: float = 1.0
    max_commits_in_flight: int = 8
    redis_url: str | None = None
    redis_namespace: str = "banditroute"
    sync_interval_ms: float = 100.0

    def __post_init__(self) -> None:
        for name in ("config", "log_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(name, getattr(self, name), "must be a non-empty path")
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise ConfigError("token", "<hidden>", "must be a string of at least 8 characters")
        for name in ("max_body_bytes", "max_commits_in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "must be an integer >= 1")
        check_number("commit_interval_ms", self.commit_interval_ms, lo=0.0)
        check_number("sync_interval_ms", self.sync_interval_ms, lo=0.0, lo_open=True)

    def shared_state(self):
        """The :class:`~banditroute.service.shared_state.SharedStateConfig`, or None without Redis."""
        if self.redis_url is None:
            return None
        from .shared_state import SharedStateConfig

        return SharedStateConfig(url=self.redis_url, namespace=self.redis_namespace,
                                 interval_s=self.sync_interval_ms / 1e3)


# -- HTTP ----------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error response: HTTP status, machine code, offending field and message."""

    def __init__(self, status: int, code: str, field: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message


class _Response:
    """What a handler returns: status, body bytes, media type and extra headers."""

    __slots__ = ("status", "body", "media_type", "headers")

    def __init__(self, status: int, body: bytes, media_type: str = "application/json", headers=None):
        self.status, self.body, self.media_type, self.headers = status, body, media_type, headers

    async def send(self, send) -> None:
        headers = [(b"content-type", self.media_type.encode()), (b"content-length", str(len(self.body)).encode())]
        if self.headers:
            headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _envelope(status: int, code: str, field: str | None, message: str, headers=None) -> _Response:
    body = json.dumps({"error": {"status": status, "code": code, "field": field, "message": message}})
    return _Response(status, body.encode(), headers=headers)


def _ok(payload) -> _Response:
    return _Response(200, _COMPACT.encode(payload).encode())


class _Request:
    """The parts of an ASGI HTTP request the handlers use."""

    __slots__ = ("scope", "receive", "headers", "path", "method")

    def __init__(self, scope, receive):
        self.scope, self.receive = scope, receive
        self.path, self.method = scope["path"], scope["method"]
        headers = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        self.headers = headers

    async def stream(self):
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "client_disconnected", "body", "the client disconnected before sending the body")
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


# built once: json.dumps/json.loads with options build an encoder/decoder on every call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_UNICODE = json.JSONEncoder(ensure_ascii=False)


async def _read_json(request, limit: int) -> dict:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        if not length.isdigit():
            raise ApiError(400, "invalid_header", "content-length", "content-length must be a non-negative integer")
        raise ApiError(413, "body_too_large", "body", f"body must be at most {limit} bytes, got {length}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", "body", f"body must be at most {limit} bytes")
        chunks.append(chunk)
    try:
        body = _DECODER.decode(b"".join(chunks).decode("utf-8"))  # JSON over HTTP is UTF-8 (RFC 8259)
    except (ValueError, RecursionError) as exc:
        reason = "is nested too deeply" if isinstance(exc, RecursionError) else f"is not valid JSON ({exc})"
        raise ApiError(400, "invalid_json", "body", f"body {reason}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "body", f"body must be a JSON object, got {type(body).__name__}")
    return body


def _check_keys(body: dict, required: tuple, optional: tuple = ()) -> None:
    for key in required:
        if key not in body:
            raise ApiError(422, "invalid_request", key, f"{key} is required")
    for key in body:
        if key not in required and key not in optional:
            raise ApiError(422, "invalid_request", str(key)[:64],
                           f"{str(key)[:64]!r} is not a known field (known: {sorted(required + optional)})")


def _portable(field: str, value) -> None:
    """Reject values the log cannot store (lone surrogates) or nesting too deep to encode."""
    try:
        _UNICODE.encode(value).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError, TypeError):
        raise ApiError(422, "invalid_request", field,
                       f"{field} must be finite JSON of valid UTF-8 text, nested at most ~900 deep") from None


class _Service:
    """Per-replica state behind the endpoints (built in the app's lifespan)."""

    def __init__(self, cfg: ServiceConfig, router):
        from .metrics import Metrics

        self.cfg = cfg
        self.router = router
        # the router's own writer would flush on its thresholds: the committer flushes instead
        # commits go to the journal (one append + fdatasync), compacted into Parquet parts later
        self.log = LogWriter(router.config.log_dir, durability="group", auto_flush=False, journal=True,
                             journal_compactor="process")
        router.use_log_writer(self.log)
        self.commit = GroupCommit(self.log, interval_s=cfg.commit_interval_ms / 1e3,
                                  max_in_flight=cfg.max_commits_in_flight)
        self.metrics = Metrics(router.profiles, replica=self.log.writer_id)
        self.shared = None
        shared_cfg = cfg.shared_state()
        if shared_cfg is not None:
            from .shared_state import SharedState

            self.shared = SharedState(router, config=shared_cfg)
        self.token = None if cfg.token is None else f"Bearer {cfg.token}".encode()
        from .forwarding import PeerLink

        self.peers = PeerLink(self.log.writer_id, cfg.token, lambda body: _forwarded(self, body))

    def authorize(self, request) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, self.token):
            raise ApiError(401, "unauthorized", "authorization",
                           "authorization must be 'Bearer <token>' with the service's token")

    def gauges(self) -> list:
        out = [("banditroute_commits_total", "Group commits written (one fdatasync'ed journal append each).",
                self.commit.n_commits),
               ("banditroute_outcomes_forwarded_total", "Outcomes forwarded to the replica that issued the decision.",
                self.peers.n_forwarded),
               ("banditroute_outcomes_received_forwarded_total", "Outcomes other replicas forwarded here.",
                self.peers.n_received)]
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
        return out


def _api_error(svc, exc: Exception, where: str) -> ApiError:
    """The envelope's error for any exception (internals are logged, never returned)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownDecisionError):
        return ApiError(404, "unknown_decision", exc.field,
                        f"{exc.message}; outcomes go to the replica that issued the decision "
                        f"(this is {svc.log.writer_id})")
    if isinstance(exc, NoFeasibleProfileError):
        return ApiError(422, "no_feasible_profile", exc.field, exc.message)
    if isinstance(exc, LogError):
        _log.error("decision log write failed", exc_info=exc)
        return ApiError(503, "log_unavailable", "log_dir",
                        "the decision log cannot be written; the request was not acknowledged")
    if isinstance(exc, BanditrouteError) and isinstance(exc, ValueError):
        return ApiError(422, "invalid_request", exc.field, exc.message)
    _log.error("unexpected error in %s", where, exc_info=exc)
    return ApiError(500, "internal", None, "internal error")


def _error_response(svc, exc: Exception, where: str) -> _Response:
    err = _api_error(svc, exc, where)
    svc.metrics.error(err.status, err.code)
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return _envelope(err.status, err.code, err.field, err.message, headers)


def _endpoint(handler, *, auth: bool = True):
    """Wrap a handler: auth, then every error becomes the envelope; nothing internal leaks."""

    async def endpoint(svc, request):
        try:
            if auth:
                svc.authorize(request)
            return await handler(svc, request)
        except Exception as exc:  # noqa: BLE001 - every error becomes an envelope
            return _error_response(svc, exc, request.path)

    return endpoint


async def _decide(svc: _Service, request):
    start = time.perf_counter()
    body = await _read_json(request, svc.cfg.max_body_bytes)
    _check_keys(body, ("context",))
    context = body["context"]
    if not isinstance(context, dict):
        raise ApiError(422, "invalid_request", "context", f"context must be a JSON object, got {type(context).__name__}")
    _portable("context", context)
    decision = svc.router.decide(context)
    await svc.commit.ack()
    svc.metrics.decision(decision.profile, time.perf_counter() - start)
    return _ok(decision.to_dict())


async def _outcome(svc: _Service, request):
    body = await _read_json(request, svc.cfg.max_body_bytes)
    decision_id = _outcome_id(body)
    if not svc.router.issued(decision_id):  # another replica's: forward it there if it listens on this host
        forwarded = await svc.peers.forward(decision_id.rpartition("-")[0], body)
        if forwarded is not None:
            return _Response(*forwarded)
    return _ok(await _record(svc, decision_id, body))


def _outcome_id(body: dict) -> str:
    _check_keys(body, ("decision_id",), ("quality", "cost_usd", "latency_ms"))
    decision_id = body["decision_id"]
    if not isinstance(decision_id, str):
        raise ApiError(422, "invalid_request", "decision_id",
                       f"decision_id must be a string, got {type(decision_id).__name__}")
    return decision_id


async def _record(svc: _Service, decision_id: str, body: dict) -> dict:
    """Record a checked outcome body (see :func:`_outcome_id`), once it is durable."""
    status = svc.router.record(decision_id, quality=body.get("quality"), cost_usd=body.get("cost_usd"),
                               latency_ms=body.get("latency_ms"))
    await svc.commit.ack()
    svc.metrics.outcome(status)
    return {"decision_id": decision_id, "status": status}


async def _forwarded(svc: _Service, body) -> tuple[int, bytes]:
    """An outcome forwarded by a replica on this host (see :mod:`banditroute.service.forwarding`)."""
    try:
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", "body", "body must be a JSON object")
        return 200, _COMPACT.encode(await _record(svc, _outcome_id(body), body)).encode()
    except Exception as exc:  # noqa: BLE001 - every error becomes an envelope
        response = _error_response(svc, exc, "forwarded outcome")
        return response.status, response.body


async def _beliefs(svc: _Service, request):
    return _ok({"replica": svc.log.writer_id, "policy_version": svc.router.policy_version,
                "beliefs": svc.router.beliefs().to_dicts()})


async def _healthz(svc: _Service, request):
    shared = "off" if svc.shared is None else ("up" if svc.shared.up else "down")
    return _ok({"status": "ok", "replica": svc.log.writer_id, "shared_state": shared})


async def _metrics(svc: _Service, request):
    return _Response(200, svc.metrics.render(svc.gauges()).encode(), media_type="text/plain; version=0.0.4")


async def _openapi(svc: _Service, request):
    return _ok(openapi_spec(svc.router, auth=svc.token is not None, max_body_bytes=svc.cfg.max_body_bytes))


class _App:
    """The ASGI application of one replica (plain ASGI: five routes need no framework, and
    every layer removed is CPU saved on each request). ``app.state.service`` is the replica's
    state once started."""

    def __init__(self, cfg: ServiceConfig, router=None):
        self.cfg = cfg
        self._router = router
        self.state = SimpleNamespace()
        self.routes = {"/v1/decide": ("POST", _endpoint(_decide)), "/v1/outcome": ("POST", _endpoint(_outcome)),
                       "/v1/beliefs": ("GET", _endpoint(_beliefs)), "/metrics": ("GET", _endpoint(_metrics)),
                       "/healthz": ("GET", _endpoint(_healthz, auth=False)),
                       "/openapi.json": ("GET", _endpoint(_openapi, auth=False))}

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websockets are not served: returning without accepting closes them

    async def _http(self, scope, receive, send) -> None:
        request = _Request(scope, receive)
        svc = getattr(self.state, "service", None)
        try:
            route = self.routes.get(request.path)
            if svc is None:
                response = _envelope(503, "starting", None, "the service is not started")
            elif route is None:
                response = self._not_served(svc, 404, "not_found", "path", request.path)
            elif request.method != route[0] and not (route[0] == "GET" and request.method == "HEAD"):
                response = self._not_served(svc, 405, "method_not_allowed", "method", request.method,
                                            {"Allow": route[0]})
            else:
                response = await route[1](svc, request)
        except Exception:  # noqa: BLE001 - a generic 500, the traceback only in the server log
            _log.exception("unhandled error in %s", request.path)
            response = _envelope(500, "internal", None, "internal error")
        await response.send(send)

    @staticmethod
    def _not_served(svc, status, code, field, value, headers=None) -> _Response:
        svc.metrics.error(status, code)
        return _envelope(status, code, field, f"{field} {value!r} is not served here", headers)

    async def _lifespan(self, receive, send) -> None:
        svc = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    svc = await self._start()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    _log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if svc is not None:
                    await self._stop(svc)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> "_Service":
        from ..decide.router import Router

        # The event loop must not wait the default 5 ms for the GIL while a commit thread
        # encodes: that wait would be added to every request's latency.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        cfg = self.cfg
        r = self._router if self._router is not None else Router.from_config(cfg.config, log_dir=cfg.log_dir,
                                                                             durability="group")
        if r.log_writer is None:
            raise ConfigError("log_dir", None, "must be set: the service acknowledges only logged requests")
        svc = _Service(cfg, r)
        if svc.shared is not None:
            await asyncio.get_running_loop().run_in_executor(None, svc.shared.start)
        svc.commit.start()
        await svc.peers.start()
        self.state.service = svc
        return svc

    async def _stop(self, svc: "_Service") -> None:
        await svc.peers.close()
        await svc.commit.close()
        if svc.shared is not None:
            await asyncio.get_running_loop().run_in_executor(None, svc.shared.stop)


def create_app(cfg: ServiceConfig, *, router=None) -> _App:
    """The ASGI application of one replica.

    The router is built from ``cfg.config`` at startup (in each worker process) unless given;
    startup pulls the shared state when Redis is configured. Shutdown commits what is
    waiting, flushes the log (compacting its journal) and pushes the last increments.
    """
    return _App(cfg, router)


def app_from_env():
    """App factory for uvicorn workers: the ServiceConfig comes as JSON in the environment."""
    return create_app(ServiceConfig(**json.loads(os.environ[ENV_CONFIG])))


# -- command line -------------------------------------------------------------------------------
def add_serve_parser(subparsers) -> None:
    """Add the ``serve`` subcommand to the CLI's subparsers (``run=run_serve``)."""
    p = subparsers.add_parser("serve", help="serve the router over HTTP (needs the 'service' extra)")
    p.add_argument("--config", required=True, help="routes TOML file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--log-dir", default="logs", help="decision log directory (default logs)")
    p.add_argument("--token", default=None, help="bearer token (default: $BANDITROUTE_TOKEN; none disables auth)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, each a replica (default 1)")
    p.add_argument("--redis-url", default=None, help="share posteriors through Redis (default: $BANDITROUTE_REDIS_URL)")
    p.add_argument("--redis-namespace", default="banditroute", help="key prefix in Redis (default banditroute)")
    p.add_argument("--sync-interval-ms", type=float, default=100.0, help="shared-state sync period (default 100)")
    p.add_argument("--max-body-bytes", type=int, default=65536, help="request body limit (default 65536)")
    p.add_argument("--commit-interval-ms", type=float, default=1.0, help="group commit period (default 1)")
    p.add_argument("--max-commits-in-flight", type=int, default=8, help="overlapping group commits (default 8)")
    p.set_defaults(run=run_serve)


def run_serve(args) -> int:
    """Validate the settings, then run uvicorn until SIGINT/SIGTERM (graceful: flushes)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve", None, "needs the service extra: pip install 'banditroute[service]'") from None
    from ..decide.router import Router

    cfg = ServiceConfig(config=args.config, log_dir=args.log_dir, token=args.token or os.environ.get("BANDITROUTE_TOKEN"),
                        max_body_bytes=args.max_body_bytes, commit_interval_ms=args.commit_interval_ms,
                        max_commits_in_flight=args.max_commits_in_flight,
                        redis_url=args.redis_url or os.environ.get("BANDITROUTE_REDIS_URL"),
                        redis_namespace=args.redis_namespace, sync_interval_ms=args.sync_interval_ms)
    if isinstance(args.workers, bool) or args.workers < 1:
        raise ConfigError("--workers", args.workers, "must be >= 1")
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", args.port, "must be in [0, 65535]")
    router = Router.from_config(cfg.config, log_dir=None)  # fail fast, in the parent, on a bad config
    if cfg.redis_url is not None:
        from .shared_state import SharedState

        SharedState(router, config=cfg.shared_state())
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("banditroute.service.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, loop="auto", http="auto", access_log=False,
                timeout_graceful_shutdown=10, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m banditroute.service.app --config routes.toml ...`` (same options as ``serve``)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="banditroute-serve")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(args)
    except BanditrouteError as exc:
        print(f"banditroute serve: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1


if __name__ == "__main__":
    raise SystemExit(main())
