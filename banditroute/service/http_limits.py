"""Limits on a request's head (its request line and header fields), enforced in uvicorn's HTTP
protocol as ``serve`` runs it, before the application sees the request: see :func:`bounded_http`.
"""

from __future__ import annotations

import functools

from .asgi import envelope

__all__ = ["bounded_http"]


def bounded_http(*, max_header_bytes: int, max_headers: int, **protocol_args):
    """The HTTP protocol ``serve`` runs: ``uvicorn.run(http=functools.partial(bounded_http, ...))``.

    uvicorn's httptools protocol, which reads a request head of any size (copying a growing
    header value on every chunk: a 64 MB header takes seconds of CPU) and any number of header
    fields, refusing a head of more than ``max_header_bytes`` or more than ``max_headers``
    fields: a 431 error envelope (code ``header_too_large``, field ``headers``), then the
    connection is closed before more is read. Bytes are counted per chunk read (up to 256 KiB):
    a head is refused once the chunks it came in exceed the limit (a chunk that ends a
    pipelined request and begins the next is not counted). Without httptools, uvicorn's h11
    protocol, bounded by ``h11_max_incomplete_event_size`` (a 400 past it; the count of fields
    is then not bounded by itself).
    """
    return _bounded_protocol()(max_header_bytes, max_headers, **protocol_args)


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head past the limits."""


@functools.cache
def _bounded_protocol():
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return lambda max_header_bytes, max_headers, **protocol_args: H11Protocol(**protocol_args)

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, max_header_bytes: int, max_headers: int, **protocol_args):
            super().__init__(**protocol_args)
            self.max_header_bytes, self.max_headers = max_header_bytes, max_headers
            self._read = 0  # bytes of the head in the chunks before; None from its end to the next request
            self._chunk = 0  # bytes of the chunk being parsed
            self._in_request = False
            self._began = False  # a request began in the chunk being parsed
            self._refusal = None

        def data_received(self, data: bytes) -> None:
            idle, self._began, self._chunk = not self._in_request, False, len(data)
            super().data_received(data)
            # a request that began in this chunk began at its start unless the chunk ended another one
            if self._read is not None and (idle or not self._began) and not self.transport.is_closing():
                self._read += len(data)  # a head still incomplete (the parser holds the field being read)
                if self._read > self.max_header_bytes:
                    self._refuse(self._too_large())

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._read, self._in_request, self._began = 0, True, True

        def on_message_complete(self) -> None:
            self._in_request = False
            super().on_message_complete()

        def on_headers_complete(self) -> None:
            read, self._read = self._read, None
            if len(self.headers) > self.max_headers:
                self._stop(f"a request must have at most {self.max_headers} header fields")
            # the head is at most the chunks it came in: counted exactly only when they exceed the limit
            if read + self._chunk > self.max_header_bytes and len(self.url) + sum(
                    len(name) + len(value) + 4 for name, value in self.headers) > self.max_header_bytes:
                self._stop(self._too_large())
            super().on_headers_complete()

        def _too_large(self) -> str:
            return f"the request line and headers must be at most {self.max_header_bytes} bytes"

        def _stop(self, message: str) -> None:
            self._refusal = message
            raise _HeadTooLarge(message)  # the parser stops; uvicorn answers 400, send_400_response 431

        def send_400_response(self, msg: str) -> None:
            if self._refusal is None:
                super().send_400_response(msg)
            else:
                self._refuse(self._refusal)

        def _refuse(self, message: str) -> None:
            body = envelope(431, "header_too_large", "headers", message).body
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return BoundedHttpToolsProtocol
