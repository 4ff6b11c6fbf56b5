"""The service's ASGI application: maps HTTP to the Router, acknowledging only what is durably logged.

Endpoints: ``POST /v1/decide``, ``POST /v1/outcome``, ``POST /v1/escalate`` (see
:mod:`banditroute.service.escalate_api`), ``GET /v1/beliefs``, ``GET|POST /v1/rollout``
(the rollout stage, see :mod:`banditroute.service.rollout_api`), ``GET /healthz``, ``GET /metrics``
(Prometheus text) and ``GET /openapi.json``. A plain ASGI application run by
uvicorn (the optional ``service`` extra, started by ``banditroute serve``, see
:mod:`banditroute.cli.serve`), so the library works without it.

This module holds the handlers and the routing; the replica behind them (router, log writer,
group commit, shared state, peers) is :mod:`banditroute.service.replica`, the request,
response and error-envelope primitives are :mod:`banditroute.service.asgi`.

Durable acknowledgement: a handler makes its router call (which buffers the log rows) and
then awaits a commit ticket of the replica's group commit
(:mod:`banditroute.service.group_commit`); the response is sent only after its rows are in
the journal, so a SIGKILL loses nothing that was acknowledged.

Every 4xx/5xx is one JSON envelope naming the offending field; unexpected errors give a
generic 500 (the traceback goes to the server log, never to clients).

With ``announce`` (``serve`` sets it) a replica prints a line on stderr once it is ready, saying
what it took over, and one when it stopped, saying what it wrote; with ``access_log``
(``serve --access-log``) one line per request. The access log is this application's own, not
uvicorn's: uvicorn's line has no duration and goes through ``logging`` (a record and a
formatter per request, ~21 us a line to /dev/null); this one is a ``perf_counter`` pair and one
``write`` (~3 us), and when off the request path is the same function as before (nothing is
wrapped). Responses uvicorn's protocol sends by itself (431 for an oversized head, 400 for bad
HTTP) are not in it.

An outcome is recorded, and an escalation issued, by the replica that issued the decision (ids
start with its writer id). Replicas on one host forward outcomes and escalations to each other
(:mod:`banditroute.service.forwarding`), so any worker of ``serve --workers N`` accepts any
outcome or escalation; replicas on other hosts answer 404: put a load balancer with affinity on
the id prefix in front of them. With Redis (``--redis-url``) any replica sharing the namespace,
on any host, records any outcome: the pending decisions are in Redis
(:mod:`banditroute.service.redis_outcomes`); escalations still go to the issuer.

>>> app = create_app(ServiceConfig(config="routes.toml"))
>>> sorted(app.routes)
['/healthz', '/metrics', '/openapi.json', '/v1/beliefs', '/v1/decide', '/v1/escalate', '/v1/outcome', '/v1/rollout']
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from types import SimpleNamespace

from ..errors import (BanditrouteError, EscalationError, LogError, NoFeasibleProfileError, OutcomeInFlightError,
                      UnknownDecisionError)
from .asgi import ApiError, Request, Response, check_keys, encode_compact, envelope, ok, read_json
from .config import ServiceConfig
from .escalate_api import budget_of, escalate, escalation_id, post_escalate
from .forwarding import ESCALATION
from .openapi import openapi_spec
from .outcome_api import record_shared
from .replica import Replica, start_replica
from .rollout_api import get_rollout, post_rollout

__all__ = ["ServiceConfig", "create_app", "app_from_env", "openapi_spec", "ENV_CONFIG", "APP_FACTORY"]

_log = logging.getLogger("banditroute.service.app")

#: The environment variable through which ``serve`` hands the ServiceConfig (as JSON) to its workers.
ENV_CONFIG = "BANDITROUTE_SERVICE_CONFIG"
#: The app factory uvicorn workers call (``module:function``).
APP_FACTORY = "banditroute.service.app:app_from_env"


# -- errors ---------------------------------------------------------------------------------------
def _api_error(svc: Replica, exc: Exception, where: str) -> ApiError:
    """The envelope's error for any exception (internals are logged, never returned)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownDecisionError):
        return ApiError(404, "unknown_decision", exc.field,
                        f"{exc.message}; outcomes and escalations go to the replica that issued the decision "
                        f"(this is {svc.writer_id})")
    if isinstance(exc, EscalationError):
        return ApiError(409, "escalation_refused", exc.field, exc.message)
    if isinstance(exc, OutcomeInFlightError):
        return ApiError(503, "outcome_in_flight", exc.field, exc.message)
    if isinstance(exc, NoFeasibleProfileError):
        return ApiError(422, "no_feasible_profile", exc.field, exc.message)
    if isinstance(exc, LogError):
        _log.error("decision log write failed", exc_info=exc)
        return ApiError(503, "log_unavailable", "log_dir",
                        "the decision log cannot be written; the request was not acknowledged "
                        "and changed nothing: retry it")
    if isinstance(exc, BanditrouteError) and isinstance(exc, ValueError):
        return ApiError(422, "invalid_request", exc.field, exc.message)
    _log.error("unexpected error in %s", where, exc_info=exc)
    return ApiError(500, "internal", None, "internal error")


def _error_response(svc: Replica, exc: Exception, where: str) -> Response:
    err = _api_error(svc, exc, where)
    svc.metrics.error(err.status, err.code)
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {"Retry-After": "1"} if err.status == 503 else None
    return envelope(err.status, err.code, err.field, err.message, headers)


def _authorize(svc: Replica, request: Request) -> None:
    if not svc.authorized(request.headers.get("authorization", "")):
        raise ApiError(401, "unauthorized", "authorization",
                       "authorization must be 'Bearer <token>' with the service's token")


def _endpoint(handler, *, auth: bool = True):
    """Wrap a handler: auth, then every error becomes the envelope; nothing internal leaks."""

    async def endpoint(svc, request):
        try:
            if auth:
                _authorize(svc, request)
            return await handler(svc, request)
        except Exception as exc:  # noqa: BLE001 - every error becomes an envelope
            return _error_response(svc, exc, request.path)

    return endpoint


# -- handlers -------------------------------------------------------------------------------------
async def _decide(svc: Replica, request: Request) -> Response:
    start = time.perf_counter()
    body = await read_json(request, limit=svc.cfg.max_body_bytes)
    check_keys(body, required=("context",), optional=("budget",))
    context = body["context"]
    if not isinstance(context, dict):
        raise ApiError(422, "invalid_request", "context", f"context must be a JSON object, got {type(context).__name__}")
    # validated there (banditroute.config.hygiene, config.mechanisms.request_budget): a 422 naming the field
    decision = svc.router.decide(context, budget=budget_of(body))
    svc.stage(decision.id)  # with Redis: its pending entry is written with its row
    try:
        await svc.commit.ack()
    except BaseException:
        svc.router.withdraw(decision.id)  # not acknowledged: it is not pending either
        raise
    svc.metrics.decision(decision.profile, time.perf_counter() - start)
    return ok(decision.to_dict())


async def _outcome(svc: Replica, request: Request) -> Response:
    body = await read_json(request, limit=svc.cfg.max_body_bytes)
    decision_id = _outcome_id(body)
    if svc.redis_outcomes is not None and not svc.redis_outcomes.local_only(decision_id):
        # taken from Redis, on any replica; shielded: a taken entry is recorded or put back
        return await asyncio.shield(asyncio.ensure_future(record_shared(svc, decision_id, body, _record)))
    if not svc.router.issued(decision_id):  # another replica's: forward it there if it listens on this host
        forwarded = await svc.peers.forward(decision_id.rpartition("-")[0], body)
        if forwarded is not None:
            return Response(*forwarded)
    return ok(await _record(svc, decision_id, body))


def _outcome_id(body: dict) -> str:
    check_keys(body, required=("decision_id",), optional=("quality", "cost_usd", "latency_ms", "error"))
    decision_id = body["decision_id"]
    if not isinstance(decision_id, str):
        raise ApiError(422, "invalid_request", "decision_id",
                       f"decision_id must be a string, got {type(decision_id).__name__}")
    return decision_id


async def _record(svc: Replica, decision_id: str, body: dict, *, begin=None, settled=None) -> dict:
    """Record a checked outcome body (see :func:`_outcome_id`), once it is durable. ``begin``:
    the router's first step (default ``begin_record``); ``settled(committed)``: called once the
    commit's result is known."""
    claim = (begin or svc.router.begin_record)(decision_id, quality=body.get("quality"),
                                               cost_usd=body.get("cost_usd"), latency_ms=body.get("latency_ms"),
                                               error=body.get("error"))

    # Learned from only once its row is durable, and a failed commit changes nothing: settled
    # when the commit's result is known (in commit order), even if this request is cancelled.
    def done(ticket) -> None:
        committed = not ticket.cancelled() and ticket.exception() is None
        svc.router.settle_record(claim, committed=committed)
        if settled is not None:
            settled(committed)

    ack = asyncio.ensure_future(svc.commit.ack())
    ack.add_done_callback(done)
    await asyncio.shield(ack)
    svc.metrics.outcome(claim.status)
    if claim.error is not None and claim.status == "applied":  # what the profile's availability counts
        svc.metrics.failed_call(svc.router.profiles[claim.entry.k], claim.error)
    return {"decision_id": decision_id, "status": claim.status}


async def _forwarded(svc: Replica, body, kind: str | None = None) -> tuple[int, bytes]:
    """An outcome (``kind`` ``"escalation"``: an escalation) forwarded by a replica on this host
    (see :mod:`banditroute.service.forwarding`)."""
    try:
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", "body", "body must be a JSON object")
        if kind == ESCALATION:
            return 200, encode_compact(await escalate(svc, escalation_id(body), body))
        decision_id = _outcome_id(body)
        if svc.redis_outcomes is not None and not svc.redis_outcomes.local_only(decision_id):
            response = await record_shared(svc, decision_id, body, _record)  # tombstone set: repeats are duplicates
            return response.status, response.body
        return 200, encode_compact(await _record(svc, decision_id, body))
    except Exception as exc:  # noqa: BLE001 - every error becomes an envelope
        response = _error_response(svc, exc, f"forwarded {kind or 'outcome'}")
        return response.status, response.body


async def _beliefs(svc: Replica, request: Request) -> Response:
    return ok({"replica": svc.writer_id, "policy_version": svc.router.policy_version,
               "beliefs": svc.router.beliefs().to_dicts()})


async def _healthz(svc: Replica, request: Request) -> Response:
    shared = "off" if svc.shared is None else ("up" if svc.shared.up else "down")
    return ok({"status": "ok", "replica": svc.writer_id, "shared_state": shared, "resumed": svc.resumed})


async def _metrics(svc: Replica, request: Request) -> Response:
    return Response(200, svc.metrics.render(svc.gauges()).encode(), media_type="text/plain; version=0.0.4")


async def _openapi(svc: Replica, request: Request) -> Response:
    return ok(openapi_spec(svc.router, auth=svc.requires_auth, max_body_bytes=svc.cfg.max_body_bytes))


# -- the application ------------------------------------------------------------------------------
class _App:
    """The ASGI application of one replica (plain ASGI: eight routes need no framework, and
    every layer removed is CPU saved on each request). ``app.state.service`` is the replica
    (:class:`~banditroute.service.replica.Replica`) once started."""

    def __init__(self, cfg: ServiceConfig, router=None):
        self.cfg = cfg
        self._router = router
        self.state = SimpleNamespace()
        self._serve_http = self._http_logged if cfg.access_log else self._http  # off: no per-request step
        self.routes = {"/v1/decide": {"POST": _endpoint(_decide)}, "/v1/outcome": {"POST": _endpoint(_outcome)},
                       "/v1/escalate": {"POST": _endpoint(post_escalate)},
                       "/v1/beliefs": {"GET": _endpoint(_beliefs)}, "/metrics": {"GET": _endpoint(_metrics)},
                       "/v1/rollout": {"GET": _endpoint(get_rollout), "POST": _endpoint(post_rollout)},
                       "/healthz": {"GET": _endpoint(_healthz, auth=False)},
                       "/openapi.json": {"GET": _endpoint(_openapi, auth=False)}}

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve_http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websockets are not served: returning without accepting closes them

    async def _http(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        svc = getattr(self.state, "service", None)
        try:
            route = self.routes.get(request.path)
            method = "GET" if request.method == "HEAD" else request.method
            if svc is None:
                response = envelope(503, "starting", None, "the service is not started")
            elif route is None:
                response = self._not_served(svc, 404, "not_found", "path", request.path)
            elif method not in route:
                response = self._not_served(svc, 405, "method_not_allowed", "method", request.method,
                                            {"Allow": ", ".join(route)})
            else:
                response = await route[method](svc, request)
        except Exception:  # noqa: BLE001 - a generic 500, the traceback only in the server log
            _log.exception("unhandled error in %s", request.path)
            response = envelope(500, "internal", None, "internal error")
        await response.send(send)

    async def _http_logged(self, scope, receive, send) -> None:
        """:meth:`_http`, then one access-log line on stderr (``access_log``)."""
        start = time.perf_counter()
        status = "-"  # no response sent (the client went away)

        async def send_logged(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._http(scope, receive, send_logged)
        finally:
            ms = (time.perf_counter() - start) * 1e3
            svc = getattr(self.state, "service", None)
            client = scope.get("client")
            path = scope["path"]
            if len(path) > 200 or not path.isprintable():  # a client's path: no line breaks, bounded
                path = path[:200].encode("unicode_escape").decode("ascii")
            sys.stderr.write(f"banditroute serve: access {'-' if svc is None else svc.writer_id} "
                             f"{'-' if client is None else f'{client[0]}:{client[1]}'} "
                             f'"{scope["method"]} {path}" {status} {ms:.2f} ms\n')

    @staticmethod
    def _not_served(svc, status, code, field, value, headers=None) -> Response:
        svc.metrics.error(status, code)
        return envelope(status, code, field, f"{field} {value!r} is not served here", headers)

    async def _lifespan(self, receive, send) -> None:
        svc = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    svc = await start_replica(self.cfg, router=self._router, handle_forwarded=_forwarded)
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    _log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.state.service = svc
                self._announce(svc, f"ready: {svc.ready_report()}")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if svc is not None:
                    try:
                        await svc.stop()
                    except BaseException as exc:
                        self._announce(svc, f"stop failed: {type(exc).__name__}: {exc}")
                        raise
                    self._announce(svc, f"stopped: {svc.stop_report()}")
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _announce(self, svc: Replica, what: str) -> None:
        """One line on stderr about the replica (``announce``)."""
        if self.cfg.announce:
            print(f"banditroute serve: replica {svc.writer_id} (pid {os.getpid()}) {what}", file=sys.stderr, flush=True)


def create_app(cfg: ServiceConfig, *, router=None) -> _App:
    """The ASGI application of one replica.

    The router is built from ``cfg.config`` at startup (in each worker process) unless given;
    startup pulls the shared state when Redis is configured. Shutdown commits what is
    waiting, flushes the log (compacting its journal) and pushes the last increments.
    """
    return _App(cfg, router)


def app_from_env() -> _App:
    """App factory for uvicorn workers (:data:`APP_FACTORY`): the ServiceConfig comes as JSON in
    the environment variable :data:`ENV_CONFIG`."""
    return create_app(ServiceConfig(**json.loads(os.environ[ENV_CONFIG])))
