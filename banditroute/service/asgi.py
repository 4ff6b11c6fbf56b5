"""The HTTP layer under the service's handlers: plain ASGI requests and responses, JSON bodies
read within a size limit, and the one error envelope every 4xx/5xx carries::

    {"error": {"status": 422, "code": "invalid_request", "field": "context.task_type",
               "message": "context.task_type must be one of ['chat', 'code'], got 'poetry'"}}

>>> envelope(404, "not_found", "path", "path '/x' is not served here").body
b'{"error": {"status": 404, "code": "not_found", "field": "path", "message": "path \\'/x\\' is not served here"}}'
>>> check_keys({"context": {}, "extra": 1}, required=("context",))
Traceback (most recent call last):
...
banditroute.service.asgi.ApiError: 'extra' is not a known field (known: ['context'])
"""

from __future__ import annotations

import json
import re
import sys

from ..config.hygiene import MAX_DEPTH

__all__ = ["ApiError", "Request", "Response", "check_keys", "encode_compact", "envelope", "ok", "read_json"]


class ApiError(Exception):
    """An error response: HTTP status, machine code, offending field and message."""

    def __init__(self, status: int, code: str, field: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message


class Response:
    """What a handler returns: status, body bytes, media type and extra headers."""

    __slots__ = ("status", "body", "media_type", "headers")

    def __init__(self, status: int, body: bytes, media_type: str = "application/json", headers=None):
        self.status, self.body, self.media_type, self.headers = status, body, media_type, headers

    async def send(self, send) -> None:
        """Send this response over the ASGI ``send`` channel."""
        headers = [(b"content-type", self.media_type.encode()), (b"content-length", str(len(self.body)).encode())]
        if self.headers:
            headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def envelope(status: int, code: str, field: str | None, message: str, headers=None) -> Response:
    """The error envelope as a response."""
    body = json.dumps({"error": {"status": status, "code": code, "field": field, "message": message}})
    return Response(status, body.encode(), headers=headers)


class Request:
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
        """The body's chunks; a client that disconnects first gets a 400."""
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


def encode_compact(payload) -> bytes:
    """``payload`` as compact JSON bytes (the body of every 200)."""
    return _COMPACT.encode(payload).encode()


def ok(payload) -> Response:
    """A 200 response with ``payload`` as compact JSON."""
    return Response(200, encode_compact(payload))


async def read_json(request: Request, *, limit: int) -> dict:
    """The request body as a JSON object of at most ``limit`` bytes (else 400, 413 or 422)."""
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
    text = ""
    try:
        text = b"".join(chunks).decode("utf-8")  # JSON over HTTP is UTF-8 (RFC 8259)
        body = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        _unbuildable(text, exc)
        reason = "is nested too deeply" if isinstance(exc, RecursionError) else f"is not valid JSON ({exc})"
        raise ApiError(400, "invalid_json", "body", f"body {reason}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "body", f"body must be a JSON object, got {type(body).__name__}")
    return body


def check_keys(body: dict, *, required: tuple, optional: tuple = ()) -> None:
    """422 for a missing required key or an unknown one."""
    for key in required:
        if key not in body:
            raise ApiError(422, "invalid_request", key, f"{key} is required")
    for key in body:
        if key not in required and key not in optional:
            raise ApiError(422, "invalid_request", str(key)[:64],
                           f"{str(key)[:64]!r} is not a known field (known: {sorted(required + optional)})")


# a JSON token: a string (a key when followed by a colon), a bracket, a number (integer or not)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[{\]}]|-?\d+([.eE][-+.\deE]*)?')


def _unbuildable(text: str, exc: Exception) -> None:
    """422 naming the top-level field of a valid JSON body Python's decoder cannot build (nested
    deeper than it recurses, or an integer longer than Python converts): the limits of
    :mod:`banditroute.config.hygiene`, which every other value meets in the library. Returns
    for a body that is not JSON (a 400)."""
    if not isinstance(exc, RecursionError) and (isinstance(exc, json.JSONDecodeError) or not text):
        return
    digits = getattr(sys, "get_int_max_str_digits", lambda: 0)() or len(text)
    depth, key = 0, None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if key is not None and depth > MAX_DEPTH + 2 and isinstance(exc, RecursionError):
                raise ApiError(422, "invalid_request", key, f"{key} is nested too deeply to read (a context's "
                               f"values nest at most {MAX_DEPTH} levels)")
        elif token in ("]", "}"):
            depth -= 1
        elif match.group(1) is not None:
            if depth == 1:
                try:
                    key = _DECODER.decode(token[:token.rindex('"') + 1])[:64]
                except ValueError:  # not a JSON string after all: the body is not JSON
                    return
        elif token[0] != '"' and match.group(2) is None and len(token.lstrip("-")) > digits and key is not None:
            raise ApiError(422, "invalid_request", key, f"{key} holds an integer of more than {digits:,} digits "
                           "(context integers are int64, outcome numbers finite)")
