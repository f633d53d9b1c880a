"""Refuses state-changing requests that a web page on another origin sends without asking.

CORS only stops a page from *reading* a cross-site response. A "simple" request (a form post,
or `fetch` with a `text/plain` body) is sent and run without a preflight, so without API keys
any page a resident visits could start turns and file reports through their browser: `/chat`
refuses such bodies (415), but the ChatKit protocol reads its body whatever its Content-Type.
Browsers name the page's origin on every POST; one that is neither this server's own origin
nor in CORS_ORIGINS gets 403 `origin_not_allowed` before anything runs. Clients that are not
browsers (curl, Postman, servers) send no Origin and are not affected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from townhall.errors import OriginNotAllowedError, error_body

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class OriginCheckMiddleware:
    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.any_origin = "*" in allowed
        self.allowed = frozenset(origin.rstrip("/").lower() for origin in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS and not self.any_origin:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allows(origin, headers.get("host", "")):
                error = OriginNotAllowedError(origin)
                response = JSONResponse(error_body(error.code, error.message), error.status_code)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allows(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/").lower()
        # The server's own pages (/demo) post to it from its own origin.
        return origin in self.allowed or urlsplit(origin).netloc == host.lower()
