"""The HTTP server under the app: gunicorn's uvicorn worker on one of uvicorn's HTTP/1.1
protocols (HTTP_PARSER: httptools, compiled, by default; h11, pure Python), with the bounds
uvicorn 0.54 lacks for clients that never finish a request.

- A deadline for each request: from the moment a connection opens, or the previous response ends,
  the client has REQUEST_TIMEOUT_SECONDS to send the whole request (head and body). uvicorn's own
  keep-alive timer starts only after a first response and stops at the first byte received, so a
  client that sends half a request line and stops holds its connection forever. Past the deadline
  a started request gets a 408 and the connection is closed; an idle one is just closed.
- A bound on the request head: httptools buffers a head of any size until it is complete
  (measured: 20 MB from one client), so past MAX_HEAD_BYTES still incomplete it gets a 431 and
  the connection is closed. h11 has its own (a 400 past 16 KiB incomplete).
- A request target of one of the forms HTTP/1.1 defines (RFC 9112, section 3.2): both parsers
  accept other visible characters, and a target that does not start with `/` (`healthz`,
  `x/metrics`, `?x`) would let the Host header complete the URL that
  OTEL_PYTHON_FASTAPI_EXCLUDED_URLS is matched against. Anything else gets a 400 here, before the
  app, like the parsers' own malformed-request 400s.
- uvicorn's `limit_concurrency`, fed from gunicorn's `worker_connections` (the uvicorn worker
  ignores that setting): past it, requests get a 503.

Selected by `worker_class` in gunicorn.conf.py.
"""

import asyncio
import logging
import os
import re
from typing import Any, ClassVar

import h11
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn_worker import UvicornWorker as BaseUvicornWorker  # type: ignore[import-untyped]  # untyped upstream

from app.limits import MAX_HEADER_BYTES, MAX_TARGET_BYTES, REQUEST_TIMEOUT_SECONDS

logger = logging.getLogger("uvicorn.error")


def _plain_close(status: bytes, text: bytes) -> bytes:
    """A whole response that closes the connection, written straight to the transport."""
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


_REQUEST_TIMEOUT_RESPONSE = _plain_close(b"408 Request Timeout", b"Request Timeout")
_HEAD_TOO_LARGE_RESPONSE = _plain_close(b"431 Request Header Fields Too Large", b"Request Header Fields Too Large")
# The longest request head the httptools protocol buffers: the app's own limits (app/limits.py)
# on the target and the header fields, plus the request line's and fields' framing.
MAX_HEAD_BYTES = MAX_TARGET_BYTES + MAX_HEADER_BYTES + 4 * 1024
# The client still owes (part of) its request in these states: IDLE before or inside the request
# head, SEND_BODY inside the body.
_AWAITING_CLIENT = (h11.IDLE, h11.SEND_BODY)


# Absolute form starts with a URI scheme (RFC 3986, section 3.1).
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def well_formed_target(scope: Scope) -> bool:
    """Origin form (`/path`), absolute form (`http://host/path`) or `*`. (CONNECT's authority
    form is for proxies; this is not one.)"""
    path: str = scope["path"]
    return path.startswith("/") or path == "*" or _ABSOLUTE_FORM.match(path) is not None


def reject_malformed_targets(app: ASGIApp) -> ASGIApp:
    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not well_formed_target(scope):
            await PlainTextResponse("Bad Request: malformed request target", status_code=400)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


class RequestDeadline(asyncio.Protocol):
    """The request deadline, for either protocol: armed while the client owes (part of) a request,
    not re-armed by the bytes it sends. A protocol says what it owes (`_awaiting_client`) and
    whether a request head is started (`_head_started`)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    app: Any  # the protocol's ASGI app (uvicorn's own type)
    _request_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = reject_malformed_targets(self.app)  # one protocol instance per connection
        self._watch_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _awaiting_client(self) -> bool:
        raise NotImplementedError

    def _head_started(self) -> bool:
        raise NotImplementedError

    def _watch_request(self) -> None:
        """Arm the deadline while the client owes a request; disarm it once the request is in,
        the connection switches protocol or is closing."""
        protocol: object = self.transport.get_protocol()  # another one after a protocol switch
        awaiting = self._awaiting_client() and not self.transport.is_closing() and protocol is self
        if not awaiting:
            self._stop_watching()
        elif self._request_deadline is None:
            self._request_deadline = self.loop.call_later(REQUEST_TIMEOUT_SECONDS, self._request_timed_out)

    def _stop_watching(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _request_timed_out(self) -> None:
        self._request_deadline = None
        if self.transport.is_closing():
            return
        if self._head_started():
            # Part of a request head: say why before closing. Anything later (a body still owed
            # while the app answers, or after it answered) is cut off by the close itself.
            self.transport.write(_REQUEST_TIMEOUT_RESPONSE)
            logger.warning("Request not received within %.0f s: 408, connection closed.", REQUEST_TIMEOUT_SECONDS)
        self.transport.close()


class BoundedH11Protocol(RequestDeadline, H11Protocol):
    """uvicorn's pure-Python h11 protocol: it answers 400 to a head still incomplete past 16 KiB."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_request()

    def _awaiting_client(self) -> bool:
        return self.conn.their_state in _AWAITING_CLIENT

    def _head_started(self) -> bool:
        received, _ = self.conn.trailing_data
        return self.conn.our_state is h11.IDLE and bool(received)


class BoundedHttpToolsProtocol(RequestDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, compiled), which buffers a request head of any size
    until it is complete: here a head still incomplete past MAX_HEAD_BYTES gets a 431 and the
    connection is closed (a complete one, up to one read, meets the app's 414/431)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_bytes = 0  # received since the current request head began
        self._in_head = True  # the next bytes belong to a request head
        self._requests_received = 0
        self._responses_sent = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.write(_HEAD_TOO_LARGE_RESPONSE)
            logger.warning("Request head past %d bytes: 431, connection closed.", MAX_HEAD_BYTES)
            self.transport.close()
        self._watch_request()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._requests_received += 1
        self._in_head, self._head_bytes = True, 0

    def on_response_complete(self) -> None:
        self._responses_sent += 1
        super().on_response_complete()
        self._watch_request()

    def _awaiting_client(self) -> bool:
        # Every request received is answered (the client owes the next), or one is arriving.
        return self._requests_received == self._responses_sent or not self._in_head

    def _head_started(self) -> bool:
        return self._in_head and self._head_bytes > 0


# HTTP_PARSER picks one; httptools unless the benchmark says otherwise (docs/benchmarks.md).
PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"h11": BoundedH11Protocol, "httptools": BoundedHttpToolsProtocol}
DEFAULT_PARSER = "httptools"


class UvicornWorker(BaseUvicornWorker):  # type: ignore[misc]  # untyped upstream
    """uvicorn_worker's worker on the HTTP_PARSER's bounded protocol, with gunicorn's
    `worker_connections` as uvicorn's `limit_concurrency`."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": PROTOCOLS[DEFAULT_PARSER]}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parser = os.environ.get("HTTP_PARSER", DEFAULT_PARSER).strip()
        if parser not in PROTOCOLS:
            raise SystemExit(f"HTTP_PARSER={parser!r}: use one of {', '.join(PROTOCOLS)}")
        self.config.http = PROTOCOLS[parser]  # read by Config.load(), when the server starts
        self.config.limit_concurrency = self.cfg.worker_connections
