"""``POST /v1/outcome`` when the replicas keep their pending decisions in Redis (``--redis-url``):
any replica, on any host, records any outcome (see :mod:`banditroute.service.redis_outcomes`).

The way of one outcome (a body already checked by the endpoint):

1. its values are checked (422 before Redis is asked);
2. a decision pending here that has its outcome: ``duplicate`` (as without Redis);
3. otherwise the entry is taken from Redis atomically: taken (from this replica's window or
   another's) -> held in this router's pending window if it was not pending here, and recorded
   as one of its own decisions (``applied``), logged in this replica's log; a tombstone ->
   ``duplicate``; nothing, for a decision known here (pending, or issued here) -> the tombstone
   is set and the router answers (``applied`` or ``late``);
4. nothing, for a decision of another replica: forwarded to it if it listens on this host (a
   decision Redis never had: made while Redis was down); else ``late`` (logged here) if a replica
   of the namespace issued it, 404 if none did;
5. a commit that fails (503 ``log_unavailable``) puts the entry back: the retry is applied.

Redis unreachable: an outcome whose decision is pending here is applied here as without Redis,
and its entry is taken from Redis once Redis answers (a repeat posted to another replica in
between would be applied twice: counted in ``banditroute_redis_outcomes_conflicts_total``);
any other outcome is a 503 ``redis_unavailable`` and nothing is recorded (retry).
"""

from __future__ import annotations

import asyncio

from ..decide.outcomes import check_values
from .asgi import ApiError, Response, ok
from .redis_outcomes import ABSENT, DUPLICATE, UNKNOWN

__all__ = ["record_shared"]

_releasing: set = set()  # releases under way (a task must be referenced until it is done)


async def record_shared(svc, decision_id: str, body: dict, record) -> Response:
    """Record an outcome through the pending decisions in Redis (see the module); ``record(svc,
    decision_id, body, begin=, settled=)`` is the service's durable recording."""
    import redis

    store, router = svc.redis_outcomes, svc.router
    check_values(body.get("quality"), body.get("cost_usd"), body.get("latency_ms"), body.get("error"))
    local = router.pending_entry(decision_id)
    if local is not None and router.has_outcome(decision_id):
        return ok(await record(svc, decision_id, body))  # the router answers "duplicate"
    loop = asyncio.get_running_loop()
    begin = None
    try:
        got = await store.take(decision_id, local if local is not None else router.issued(decision_id))
        if got == ABSENT:  # not in Redis: maybe a decision Redis never had, of a replica on this host
            forwarded = await svc.peers.forward(decision_id.rpartition("-")[0], body)
            if forwarded is not None:
                return Response(*forwarded)
            got, begin = await store.claim_late(decision_id), router.begin_record_elsewhere
    except redis.RedisError as exc:
        if local is not None:  # pending here: applied here; its entry is taken from Redis once it answers
            return ok(await record(svc, decision_id, body,
                                   settled=lambda committed: committed and store.defer(decision_id, local)))
        store.n_unavailable += 1
        raise ApiError(503, "redis_unavailable", "redis_url",
                       f"Redis, where the replicas keep their pending decisions, does not answer "
                       f"({type(exc).__name__}): the outcome was not recorded; retry") from None
    if got == UNKNOWN:
        raise ApiError(404, "unknown_decision", "decision_id", f"decision_id was not issued by a replica sharing "
                       f"this Redis namespace, got {decision_id!r}")
    if got == DUPLICATE:
        svc.metrics.outcome("duplicate")
        return ok({"decision_id": decision_id, "status": "duplicate"})
    taken = got if isinstance(got, bytes) else None
    held = taken is not None and local is None
    begun = False

    def settled(committed: bool) -> None:
        if not committed:  # the entry goes back to Redis: a retry is applied, here or elsewhere
            _releasing.add(task := loop.create_task(store.release(decision_id, taken)))
            task.add_done_callback(_releasing.discard)
        elif held:
            store.n_taken += 1

    def begin_step(*args, **kwargs):
        nonlocal begun
        claim = (begin or router.begin_record)(*args, **kwargs)
        begun = True
        return claim

    try:
        if held:
            try:
                entry = store.decode(taken)
            except ValueError as exc:
                raise ApiError(409, "decision_not_applicable", "decision_id",
                               f"decision_id {decision_id!r} cannot be recorded here: {exc} (replicas sharing "
                               f"a Redis namespace need the same routes file)") from None
            router.hold(decision_id, entry)
        return ok(await record(svc, decision_id, body, begin=begin_step, settled=settled))
    except BaseException:
        if not begun:  # nothing committed nor being committed: undone now (else by settled())
            await store.release(decision_id, taken)
        raise
