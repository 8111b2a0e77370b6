"""Bounds on what one request may cost, whatever the client sends.

The server bounds only a request head still incomplete (app/server.py: past 28 KiB, or h11's
16 KiB); a head that arrives in one read (up to 64 KiB) is parsed whole, and the request target is
not bounded on its own. This middleware makes each limit one number: more than MAX_TARGET_BYTES of path and
query gets a 414, more than MAX_HEADER_BYTES of header fields a 431. It sits inside the tracing
and metrics middleware, so refused requests are traced and counted like any other.

REQUEST_TIMEOUT_SECONDS is the server's (app/server.py): how long a client may take to send a
request before the connection is closed.
"""

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HEADER_BYTES = 16 * 1024
# The request line limit of nginx (large_client_header_buffers 8k) and Apache (LimitRequestLine
# 8190): no link or form this app serves comes near it.
MAX_TARGET_BYTES = 8 * 1024
# Twice gunicorn's keep-alive (gunicorn.conf.py): a client behind any real network sends a request
# head in well under a second; a proxy in front sends it at once.
REQUEST_TIMEOUT_SECONDS = 10.0


class RequestHeadLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_target_bytes: int = MAX_TARGET_BYTES, max_header_bytes: int = MAX_HEADER_BYTES
    ) -> None:
        self.app = app
        self.max_target_bytes = max_target_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> PlainTextResponse | None:
        target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        if target > self.max_target_bytes:
            return PlainTextResponse("URI Too Long", status_code=414)
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            return PlainTextResponse("Request Header Fields Too Large", status_code=431)
        return None
