"""The HTTP server under the app: gunicorn's uvicorn worker on uvicorn's h11 protocol, with the
bounds uvicorn 0.54 lacks for clients that never finish a request.

- A deadline for each request: from the moment a connection opens, or the previous response ends,
  the client has REQUEST_TIMEOUT_SECONDS to send the whole request (head and body). uvicorn's own
  keep-alive timer starts only after a first response and stops at the first byte received, so a
  client that sends half a request line and stops holds its connection forever. Past the deadline
  a started request gets a 408 and the connection is closed; an idle one is just closed.
- A request target of one of the forms HTTP/1.1 defines (RFC 9112, section 3.2): h11 accepts any
  visible characters, and a target that does not start with `/` (`healthz`, `x/metrics`, `?x`)
  would let the Host header complete the URL that OTEL_PYTHON_FASTAPI_EXCLUDED_URLS is matched
  against. Anything else gets a 400 here, before the app, like h11's own malformed-request 400s.
- uvicorn's `limit_concurrency`, fed from gunicorn's `worker_connections` (the uvicorn worker
  ignores that setting): past it, requests get a 503.

Selected by `worker_class` in gunicorn.conf.py; h11 is named explicitly, so installing httptools
(which buffers a header block of any size) changes nothing.
"""

import asyncio
import logging
import re
from typing import Any, ClassVar

import h11
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from uvicorn_worker import UvicornWorker as BaseUvicornWorker  # type: ignore[import-untyped]  # untyped upstream

from app.limits import REQUEST_TIMEOUT_SECONDS

logger = logging.getLogger("uvicorn.error")

_REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request Timeout"
)
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


class BoundedH11Protocol(H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.app = reject_malformed_targets(self.app)
        self._request_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch_request(self) -> None:
        """Arm the deadline while the client owes a request (not re-armed by the bytes it sends);
        disarm it once the request is in, the connection switches protocol or is closing."""
        awaiting = self.conn.their_state in _AWAITING_CLIENT and not self.transport.is_closing()
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
        received, _ = self.conn.trailing_data
        if self.conn.our_state is h11.IDLE and received:
            # Part of a request head: say why before closing. Anything later (a body still owed
            # while the app answers, or after it answered) is cut off by the close itself.
            self.transport.write(_REQUEST_TIMEOUT_RESPONSE)
            logger.warning("Request not received within %.0f s: 408, connection closed.", REQUEST_TIMEOUT_SECONDS)
        self.transport.close()


class UvicornWorker(BaseUvicornWorker):  # type: ignore[misc]  # untyped upstream
    """uvicorn_worker's worker on BoundedH11Protocol, with gunicorn's `worker_connections` as
    uvicorn's `limit_concurrency`."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": BoundedH11Protocol}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
