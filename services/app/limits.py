"""A deterministic cap on request header size.

uvicorn's h11 parser answers 400 only when an incomplete header block passes 16 KiB; a block
that arrives in one read (up to 64 KiB) is accepted whole. This middleware makes the limit
one number: more than MAX_HEADER_BYTES of request headers gets a 431.
"""

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HEADER_BYTES = 16 * 1024


class HeaderSizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self.max_header_bytes:
                response = PlainTextResponse("Request Header Fields Too Large", status_code=431)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
