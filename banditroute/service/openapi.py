"""The service's OpenAPI 3.0 description, built from the router (its task types and profiles)."""

from __future__ import annotations

from ..decide.commands import ACTIONS, COMMAND_ID, MAX_WHO, MAX_WHY, NAME
from .escalate_api import DEFAULT_REASON

__all__ = ["openapi_spec"]


def openapi_spec(router, *, auth: bool, max_body_bytes: int) -> dict:
    """OpenAPI 3.0 description of the service for ``router`` (its task types and profiles).

    >>> import banditroute as br
    >>> spec = openapi_spec(br.Router([br.Profile("a")], task_types=["chat"]), auth=False, max_body_bytes=100)
    >>> sorted(spec["paths"])
    ['/healthz', '/metrics', '/v1/beliefs', '/v1/decide', '/v1/escalate', '/v1/outcome', '/v1/rollout']
    """
    err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    errors = {str(s): err for s in (400, 401, 404, 405, 409, 413, 422, 500, 503)}
    number = {"type": "number", "nullable": True}
    prob_map = {"type": "object", "additionalProperties": {"type": "number"}}

    def op(op_id, summary, response_schema, body=None, secured=True, media="application/json", links=None):
        ok = {"description": "ok", "content": {media: {"schema": response_schema}}}
        if links:
            ok["links"] = links
        out = {"operationId": op_id, "summary": summary, "responses": {"200": ok, **errors}}
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if auth and secured:
            out["security"] = [{"bearer": []}]
        return out

    context = {"type": "object", "description": "Request fields; task_type or task_probs select the task.",
               "properties": {"task_type": {"type": "string", "enum": router.task_types},
                              "task_probs": {"type": "object", "additionalProperties": {
                                  "type": "number", "minimum": 0, "maximum": 1}}}, "additionalProperties": True}
    if len(router.task_types) > 1 and router.task_model is None:
        context["anyOf"] = [{"required": ["task_type"]}, {"required": ["task_probs"]}]
    decision = {"type": "object", "required": ["id", "profile", "propensity", "probabilities"], "properties": {
        "id": {"type": "string"}, "profile": {"type": "string", "enum": router.profiles},
        "propensity": {"type": "number"}, "probabilities": prob_map, "task_probs": prob_map,
        "policy_version": {"type": "string"}, "excluded": {"type": "object"},
        "fallback_reason": {"type": "string", "nullable": True},
        "parent_id": {"type": "string", "nullable": True, "description": "the escalated decision (escalations)"}}}
    kind = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"}
    budget = {"type": "object", "nullable": True, "additionalProperties": False, "description": (
        "This request's ceilings: profiles whose expected (learned) cost or latency is over one get probability "
        "0, the reason in the answer's excluded; the fallback rule applies when nothing fits."),
        "properties": {"max_cost_usd": {**number, "minimum": 0}, "max_latency_ms": {**number, "minimum": 0}}}
    outcome = {"type": "object", "required": ["decision_id"], "additionalProperties": False, "properties": {
        "decision_id": {"type": "string"}, "quality": {**number, "minimum": 0, "maximum": 1},
        "cost_usd": {**number, "minimum": 0}, "latency_ms": {**number, "minimum": 0},
        "error": {**kind, "nullable": True, "description": "The call failed (rate_limited, timeout, server_error, "
                  "...): counts against the profile's availability and cooldown; not with quality."}}}
    escalation = {"type": "object", "required": ["decision_id"], "additionalProperties": False, "properties": {
        "decision_id": {"type": "string"}, "reason": {**kind, "nullable": True, "default": DEFAULT_REASON},
        "budget": budget}}
    child = {**decision, "required": decision["required"] + ["parent_id"],
             "properties": {**decision["properties"], "parent_id": {"type": "string"}}}  # never null here
    text = {"type": "string", "minLength": 1}
    rollout_body = {"type": "object", "required": ["action", "who", "why"], "additionalProperties": False,
                    "properties": {
                        "action": {"type": "string", "enum": list(ACTIONS)},
                        "name": {"type": "string", "pattern": "^" + NAME.pattern + "$"},
                        "fraction": {"type": "number", "minimum": 0, "maximum": 1},
                        "who": {**text, "maxLength": MAX_WHO}, "why": {**text, "maxLength": MAX_WHY},
                        "candidate_toml": {**text, "description": "routes-file content (the format of --config)"},
                        "candidate_config": {"type": "string", "description": "a name given to serve's "
                                             "--candidate-config NAME=PATH"},
                        "command_id": {"type": "string", "pattern": "^" + COMMAND_ID.pattern + "$"}}}
    candidate = {"type": "object", "properties": {"name": {"type": "string"}, "since": {"type": "string"},
                                                  "learns": {"type": "boolean"}, "n_updates": {"type": "integer",
                                                                                              "nullable": True}}}
    stage = {"type": "object", "properties": {
        "replica": {"type": "string"}, "position": {"type": "integer"},
        "shadows": {"type": "array", "items": candidate},
        "canary": {**candidate, "nullable": True, "properties": {**candidate["properties"], "fraction": {
            "type": "number"}}}, "last_command": {"type": "object", "nullable": True}}}
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "banditroute", "version": "1",
                 "description": f"Thompson-sampling router. Request bodies up to {max_body_bytes} bytes."},
        "paths": {
            "/v1/decide": {"post": op("decide", "Choose a profile; acknowledged once durably logged", decision, {
                "type": "object", "required": ["context"], "additionalProperties": False,
                "properties": {"context": context, "budget": budget}}, links={"RecordOutcome": {
                    "operationId": "recordOutcome", "requestBody": {"decision_id": "$response.body#/id"}}})},
            "/v1/escalate": {"post": op("escalate", "Decide again among the profiles the chain has not tried (the "
                                        "answer failed); a child decision, acknowledged once durably logged; 409 "
                                        "beyond max_escalations or when already escalated", child, escalation)},
            "/v1/outcome": {"post": op("recordOutcome", "Record a decision's outcome; acknowledged once durably logged", {
                "type": "object", "properties": {"decision_id": {"type": "string"}, "status": {
                    "type": "string", "enum": ["applied", "duplicate", "late"]}}}, outcome)},
            "/v1/beliefs": {"get": op("beliefs", "Posterior per (profile, task type)", {"type": "object"})},
            "/v1/rollout": {
                "get": op("rollout", "This replica's rollout stage: shadows, canary and fraction, last command",
                          stage),
                "post": op("rolloutCommand", "Shadow, canary, fraction, promote or rollback; stored, logged with "
                           "who and why, applied by every replica", {"type": "object", "properties": {
                               "status": {"type": "string", "enum": ["applied", "duplicate"]},
                               "command": {"type": "object"}, "rollout": stage}}, rollout_body)},
            "/healthz": {"get": op("healthz", "Liveness", {"type": "object"}, secured=False)},
            "/metrics": {"get": op("metrics", "Prometheus metrics", {"type": "string"}, media="text/plain")},
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["status", "code", "field", "message"], "properties": {
                "status": {"type": "integer"}, "code": {"type": "string"},
                "field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}}}},
    }
    if auth:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return spec
