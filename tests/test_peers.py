"""Forwarding outcomes between replicas on one host (abstract Unix sockets, Linux)."""

import asyncio
import sys
import uuid

import pytest

from banditroute.service.forwarding import PeerLink

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux-only")


async def _exchange(server_token, client_token, owner_override=None):
    seen = []

    async def handle(body):
        seen.append(body)
        return 200, b'{"status": "applied"}'

    owner = "t" + uuid.uuid4().hex[:11]
    server = PeerLink(owner, server_token, handle)
    client = PeerLink("c" + uuid.uuid4().hex[:11], client_token, handle)
    await server.start()
    try:
        answer = await client.forward(owner_override or owner, {"decision_id": f"{owner}-3", "quality": 1.0})
    finally:
        await server.close()
    return answer, seen


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_forward_reaches_the_owner_and_checks_the_token(loop):
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        run = uvloop.run
    else:
        run = asyncio.run
    answer, seen = run(_exchange("same-token-1", "same-token-1"))
    assert answer == (200, b'{"status": "applied"}') and seen == [{"decision_id": seen[0]["decision_id"],
                                                                    "quality": 1.0}]
    answer, seen = run(_exchange("same-token-1", "another-token"))
    assert answer[0] == 401 and seen == []  # the socket grants nothing the HTTP port does not
    answer, seen = run(_exchange(None, None, owner_override="nobody" + uuid.uuid4().hex[:6]))
    assert answer is None  # no such replica on this host: the caller answers 404 itself
