"""Outcomes and escalations that reach the wrong replica are forwarded to the replica that issued the decision.

Only the replica that issued a decision knows its pending entry (the profile and the task
posterior to learn with, the request to decide again for), so an outcome must be recorded, and an
escalation issued, there. Replicas on one host (the
workers of ``banditroute serve --workers N`` share one port, and a client's connection pool
spreads its requests over them) each listen on an abstract Unix socket named after their
writer id (Linux), and after the writer ids of the dead replicas whose decisions they took over
at a restart. A replica that receives an outcome whose decision id starts with another
writer id forwards the body there and relays the answer: the owner validates, records,
commits and acknowledges as for its own HTTP requests. The token travels with the message
and is checked by the owner, so the socket grants nothing the HTTP port does not.

Protocol: one JSON line per request (``{"token": ..., "body": {...}}``, with ``"kind":
"escalation"`` for an escalation; an outcome's message has no kind) and one per answer
(``{"status": 200, "body": "<the HTTP response body>"}``), a connection per forward.
Replicas on other hosts (or other systems) are not reachable this way: the outcome (or
escalation) gets 404, as before, and a load balancer with affinity on the decision-id prefix is the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import sys

__all__ = ["ESCALATION", "PeerLink", "SOCKET_PREFIX"]

_log = logging.getLogger("banditroute.service.forwarding")
SOCKET_PREFIX = "\0banditroute-replica-"  # abstract namespace: no file, no path length limit
_MAX_LINE = 1 << 20
#: The ``kind`` of a forwarded escalation's message.
ESCALATION = "escalation"


class PeerLink:
    """One replica's end: serves forwarded outcomes and escalations, and forwards foreign ones.

    Parameters
    ----------
    writer_id : str
        This replica's writer id (its decision ids start with it).
    token : str or None
        The service's bearer token (forwarded messages must carry it).
    handle : async callable(body: dict) -> (status: int, body: bytes)
        Records one outcome as the HTTP endpoint would.
    adopted : iterable of str
        Writer ids of dead replicas whose decisions this one took over at a restart (their
        outcomes are recorded here): it listens under those names too.
    handle_escalation : async callable(body: dict) -> (status: int, body: bytes), optional
        Escalates a decision as the HTTP endpoint would (None: forwarded escalations get 404).

    Attributes
    ----------
    n_forwarded, n_received : int
        Outcomes forwarded from here, and received here.
    n_escalations_forwarded, n_escalations_received : int
        The same for escalations.
    """

    def __init__(self, writer_id: str, token: str | None, handle, *, adopted=(), handle_escalation=None):
        self.writer_id = writer_id
        self.adopted = tuple(adopted)
        self._token = (token or "").encode()
        self._handle = handle
        self._handle_escalation = handle_escalation
        self._servers = []
        self.n_forwarded = 0
        self.n_received = 0
        self.n_escalations_forwarded = 0
        self.n_escalations_received = 0

    @staticmethod
    def supported() -> bool:
        return sys.platform.startswith("linux")

    async def start(self) -> None:
        if self.supported():
            self._servers.append(await asyncio.start_unix_server(self._serve, path=SOCKET_PREFIX + self.writer_id,
                                                                 limit=_MAX_LINE))
            for name in self.adopted:  # each taken over by this replica only (its lock is held here)
                try:
                    self._servers.append(await asyncio.start_unix_server(self._serve, path=SOCKET_PREFIX + name,
                                                                         limit=_MAX_LINE))
                except OSError as exc:
                    _log.warning("cannot listen for outcomes of %s, taken over here: %s", name, exc)

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                    token = str(message.get("token") or "").encode()
                    body, kind = message["body"], message.get("kind")
                except (ValueError, KeyError, AttributeError, TypeError):
                    break
                if not hmac.compare_digest(token, self._token):
                    status, payload = 401, b'{"error": {"status": 401, "code": "unauthorized", "field": ' \
                                           b'"authorization", "message": "forwarded without the service token"}}'
                elif kind is None:
                    self.n_received += 1
                    status, payload = await self._handle(body)
                elif kind == ESCALATION and self._handle_escalation is not None:
                    self.n_escalations_received += 1
                    status, payload = await self._handle_escalation(body)
                else:
                    status, payload = 404, json.dumps({"error": {
                        "status": 404, "code": "not_found", "field": "kind",
                        "message": f"forwarded {str(kind)[:64]!r} requests are not served here"}}).encode()
                writer.write(json.dumps({"status": status, "body": payload.decode()}).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def forward(self, owner: str, body: dict, *, kind: str | None = None) -> tuple[int, bytes] | None:
        """The owner's (status, body) for this outcome (``kind`` :data:`ESCALATION`: this
        escalation), or None if no replica ``owner`` listens here."""
        if not self.supported() or owner == self.writer_id:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # connected by hand: uvloop's open_unix_connection rejects abstract-namespace paths
            await asyncio.get_running_loop().sock_connect(sock, SOCKET_PREFIX + owner)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_MAX_LINE)
        except OSError:
            sock.close()
            return None
        try:
            message = {"token": self._token.decode(), "body": body, **({} if kind is None else {"kind": kind})}
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await reader.readline())
            if kind is None:
                self.n_forwarded += 1
            else:
                self.n_escalations_forwarded += 1
            return int(answer["status"]), answer["body"].encode()
        except (OSError, ValueError, KeyError) as exc:
            # the owner went away mid-request: unknown whether it recorded the outcome (issued the escalation)
            what = "an outcome" if kind is None else "an escalation"
            _log.warning("forwarding %s to replica %s failed: %s", what, owner, exc)
            retry = ("outcomes are idempotent" if kind is None else
                     "a retry of an escalation that was issued gets 409 naming its child decision")
            return 503, json.dumps({"error": {"status": 503, "code": "replica_unavailable", "field": "decision_id",
                                              "message": f"the replica that issued this decision ({owner}) did not "
                                                         f"answer; retry ({retry})"}}).encode()
        finally:
            writer.close()
