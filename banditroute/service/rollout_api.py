"""``GET /v1/rollout`` and ``POST /v1/rollout``: the rollout stage of a running service.

``POST`` takes one command as a JSON object::

    {"action": "canary_start", "name": "cheaper", "fraction": 0.1,
     "candidate_toml": "[router]\\n...",            # or "candidate_config": "cheaper" (serve --candidate-config)
     "who": "alice", "why": "cheaper on chat",
     "command_id": "6f1c..."}                        # optional: a retry with the same id applies it once

``action`` is ``shadow_start`` / ``shadow_stop`` (``name``), ``canary_start`` (``name``,
``fraction``), ``canary_fraction`` (``fraction``), ``promote`` (the canary decides all traffic:
fraction 1) or ``rollback`` (production decides all traffic again). A candidate is a routes file
(the format ``banditroute serve --config`` reads, built with ``log_dir=None``): its content in
the body, or the name of one the operator allowed at start-up (``serve --candidate-config
NAME=PATH``; never a path from the request). Its profiles must be among the service's, its task
types must cover the service's. ``who`` and ``why`` are required.

Answers: 200 with ``status`` (``applied``, or ``duplicate`` for a ``command_id`` applied
already), the stored command and this replica's stage; 422 naming the field for any malformed
input (unknown field, wrong type, out of range, too long, a candidate that does not build); 409
naming the field when the command does not fit the stage (a canary already running, ...); 401
without the token; 503 if the command store or the log cannot be written (the command did not
happen unless a retry with its ``command_id`` says ``duplicate``).

The command is stored, applied here with its event row in the log, durable, then acknowledged;
every other replica applies it within :data:`~banditroute.service.rollout_store.PROPAGATION_S`
(see :mod:`banditroute.service.rollout_store`). ``GET`` answers for the replica that serves the
request (``replica``: its writer id): its shadows, its canary with the fraction, when each
started, how many outcomes a learning candidate learned, the last command (who, why, when) and
its position in the command store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from ..decide.commands import ACTIONS, MAX_CANDIDATE_BYTES, STARTS, Candidate, RolloutCommand, new_command_id
from ..decide.rollout_sync import RolloutConflictError
from ..errors import ConfigError
from .asgi import ApiError, Request, Response, ok, read_json

__all__ = ["FIELDS", "get_rollout", "parse_command", "post_rollout", "read_candidate_config"]

_log = logging.getLogger("banditroute.service.rollout_api")

FIELDS = ("action", "name", "fraction", "who", "why", "candidate_toml", "candidate_config", "command_id")


def _bad(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", field, message)


def read_candidate_config(configs: dict | None, name) -> Candidate:
    """The candidate of ``serve --candidate-config NAME=PATH`` named ``name`` (422 if it is not one)."""
    allowed = sorted(configs or {})
    if not isinstance(name, str) or name not in allowed:
        shown = name if isinstance(name, str) and len(name) <= 64 else type(name).__name__
        raise _bad("candidate_config", f"candidate_config must be one of the configs allowed at start-up "
                                       f"{allowed} (serve --candidate-config NAME=PATH), got {shown!r}")
    path = Path(configs[name])
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CANDIDATE_BYTES + 1)
        if len(raw) > MAX_CANDIDATE_BYTES:
            raise _bad("candidate_config", f"candidate_config {name!r} is a file of more than "
                                           f"{MAX_CANDIDATE_BYTES} bytes")
        return Candidate.of(raw.decode("utf-8"), config=name, path=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        _log.error("candidate config %r (%s) cannot be read", name, path, exc_info=exc)
        raise ApiError(503, "candidate_unreadable", "candidate_config",
                       f"candidate_config {name!r} cannot be read now (see the server log)") from None


def parse_command(body: dict, *, replica: str, configs: dict | None) -> RolloutCommand:
    """The command of a ``POST /v1/rollout`` body; :class:`ApiError` 422 naming the field (as every endpoint)."""
    for key in body:
        if key not in FIELDS:
            shown = str(key)[:64]
            raise _bad(shown, f"{shown!r} is not a known field (known: {sorted(FIELDS)})")
    for key in ("action", "who", "why"):
        if key not in body:
            raise _bad(key, f"{key} is required")
    given = [k for k in ("candidate_toml", "candidate_config") if body.get(k) is not None]
    action = body["action"]
    if len(given) > 1:
        raise _bad("candidate_config", "give candidate_toml or candidate_config, not both")
    if action in STARTS and not given:
        raise _bad("candidate_toml", f"candidate_toml or candidate_config is required for action {action!r}")
    if given and isinstance(action, str) and action in ACTIONS and action not in STARTS:
        raise _bad(given[0], f"{given[0]} must be absent for action {action!r}")
    try:
        candidate = None
        if given == ["candidate_toml"]:
            candidate = Candidate.of(body["candidate_toml"])
        elif given:
            candidate = read_candidate_config(configs, body["candidate_config"])
        return RolloutCommand(command_id=body.get("command_id", new_command_id()), action=action,
                              name=body.get("name"), fraction=body.get("fraction"), who=body["who"],
                              why=body["why"], ts_us=time.time_ns() // 1000, replica=replica, candidate=candidate)
    except ConfigError as exc:
        raise _bad(exc.field, exc.message) from None


async def post_rollout(svc, request: Request) -> Response:
    try:
        body = await read_json(request, limit=svc.cfg.max_body_bytes)
    except ApiError as exc:
        raise (_bad(exc.field, exc.message) if exc.status == 422 else exc) from None
    loop = asyncio.get_running_loop()
    command = await loop.run_in_executor(None, lambda: parse_command(
        body, replica=svc.writer_id, configs=svc.cfg.candidate_configs))
    try:
        status = await loop.run_in_executor(None, svc.rollout.submit, command)
    except RolloutConflictError as exc:
        raise ApiError(409, "rollout_conflict", exc.field, exc.message) from None
    except ConfigError as exc:  # the candidate does not build, or does not fit the service
        raise _bad(exc.field, exc.message) from None
    except OSError as exc:  # the command store cannot be read or written (the log directory, Redis)
        _log.error("rollout command %s not stored", command.command_id, exc_info=exc)
        raise ApiError(503, "rollout_store_unavailable", "command_id",
                       f"the rollout command {command.command_id} could not be stored; retry with this "
                       "command_id") from None
    await svc.commit.ack()  # the event row (written by the command) is durable before the answer
    return ok({"status": status, "command": _command_view(command), "rollout": _stage_view(svc)})


async def get_rollout(svc, request: Request) -> Response:
    return ok(_stage_view(svc))


def _stage_view(svc) -> dict:
    stage = svc.rollout.stage()
    for entry in stage["shadows"] + ([stage["canary"]] if stage["canary"] else []):
        entry["since"] = _iso(entry["since_us"])
    if stage["last_command"] is not None:
        stage["last_command"]["ts"] = _iso(stage["last_command"]["ts_us"])
    poller = svc.rollout_poller
    return {"replica": svc.writer_id, "store": svc.rollout.store.kind, "poll_interval_s": poller.interval_s,
            "poll_ok": poller.last_error is None, **stage}


def _command_view(command: RolloutCommand) -> dict:
    data = command.to_data()
    candidate = data.pop("candidate")
    if candidate is not None:  # its content is stored; the answer names it by its hash
        data["candidate"] = {k: candidate[k] for k in ("sha256", "config")}
    data["ts"] = _iso(command.ts_us)
    return data


def _iso(ts_us) -> str | None:
    if ts_us is None:
        return None
    return datetime.fromtimestamp(ts_us / 1e6, tz=timezone.utc).isoformat().replace("+00:00", "Z")
