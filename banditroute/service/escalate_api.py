"""``POST /v1/escalate``: decide again for a request whose answer failed (a verifier, a judge, a
failed call), among the profiles its escalation chain has not tried
(:meth:`Router.escalate <banditroute.decide.router.Router.escalate>`).

The body::

    {"decision_id": "3f9a...-17",           # the decision whose answer failed (a root or a child)
     "reason": "verifier_failed",           # optional (this default): a short identifier
     "budget": {"max_cost_usd": 0.005}}     # optional: give the request's budget again

The answer is the child decision, in the shape of ``/v1/decide``'s answer, plus ``parent_id``;
the child is acknowledged once its log row (``parent_id`` set) is durable, as a decision is. 404
for a decision not issued by a replica on this host or no longer pending; 409 (``escalation_refused``)
for a decision already escalated (the message names its child) or a chain at ``max_escalations``;
422 naming the field for malformed input (and ``no_feasible_profile`` when the chain tried every
profile); 503 when the log refuses the row (nothing acknowledged, the child withdrawn).

A decision issued by another replica on this host is escalated there (forwarded like an outcome,
:mod:`banditroute.service.forwarding`): only the issuer knows the request to decide again for.

>>> budget_of({"budget": {"max_cost_usd": 0.01}})
{'max_cost_usd': 0.01}
>>> budget_of({"budget": [0.01]})
Traceback (most recent call last):
...
banditroute.service.asgi.ApiError: budget must be a JSON object with max_cost_usd and/or max_latency_ms, got list
"""

from __future__ import annotations

from ..errors import UnknownDecisionError
from .asgi import ApiError, Request, Response, check_keys, ok, read_json
from .forwarding import ESCALATION

__all__ = ["DEFAULT_REASON", "budget_of", "escalate", "escalation_id", "post_escalate"]

#: The reason of an escalation whose body gives none.
DEFAULT_REASON = "verifier_failed"


def budget_of(body: dict) -> dict | None:
    """The request budget of a ``/v1/decide`` or ``/v1/escalate`` body (None: absent or null); its
    fields are checked by the router (a 422 naming ``budget.<field>`` and the value)."""
    budget = body.get("budget")
    if budget is not None and not isinstance(budget, dict):
        raise ApiError(422, "invalid_request", "budget", "budget must be a JSON object with max_cost_usd and/or "
                       f"max_latency_ms, got {type(budget).__name__}")
    return budget


def escalation_id(body: dict) -> str:
    """The decision id of a checked ``/v1/escalate`` body (422 for an unknown field or a non-string id)."""
    check_keys(body, required=("decision_id",), optional=("reason", "budget"))
    decision_id = body["decision_id"]
    if not isinstance(decision_id, str):
        raise ApiError(422, "invalid_request", "decision_id",
                       f"decision_id must be a string, got {type(decision_id).__name__}")
    return decision_id


async def escalate(svc, decision_id: str, body: dict) -> dict:
    """Escalate ``decision_id`` (a body checked by :func:`escalation_id`); the child once durable."""
    reason = _reason(body)
    if svc.redis_outcomes is not None and not svc.router.issued(decision_id):  # another's, held for its outcome
        raise UnknownDecisionError("decision_id", decision_id, "was not issued by this router")
    child = svc.router.escalate(decision_id, reason=reason, budget=budget_of(body))  # validates reason, budget
    svc.stage(child.id)  # with Redis: its pending entry is written with its row
    try:
        await svc.commit.ack()
    except BaseException:
        svc.router.withdraw(child.id)  # not acknowledged: it is not pending either
        raise
    svc.metrics.escalation(reason, child.profile)
    return {**child.to_dict(), "parent_id": decision_id}


def _reason(body: dict):
    reason = body.get("reason")
    return DEFAULT_REASON if reason is None else reason  # null is absent, as in every body


async def post_escalate(svc, request: Request) -> Response:
    body = await read_json(request, limit=svc.cfg.max_body_bytes)
    decision_id = escalation_id(body)
    if not svc.router.issued(decision_id):  # another replica's: escalated there if it listens on this host
        # the reason goes explicitly: a replica that does not know escalations refuses the body
        forwarded = await svc.peers.forward(decision_id.rpartition("-")[0],
                                            {**body, "reason": _reason(body)},
                                            kind=ESCALATION)
        if forwarded is not None:
            return Response(*forwarded)
    return ok(await escalate(svc, decision_id, body))
