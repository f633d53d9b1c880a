"""Pure ASGI middleware: request ids and access logs, and a bound on request bodies.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and a client
disconnect reaches the route at once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townhall.errors import PayloadTooLargeError, error_body
from townhall.logs import RequestTags, current_request, mask_query

logger = logging.getLogger("townhall.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,64}$")


class RequestLogMiddleware:
    """Tags every log line with a request id, and logs one line per request when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        tags = RequestTags(request_id=incoming if _REQUEST_ID.match(incoming) else _new_id())
        token = current_request.set(tags)
        started = time.perf_counter()
        status = 500

        async def send_tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = tags.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_tagged)
        finally:
            logger.info(
                "%s %s %s %.1fms",
                scope["method"],
                _target(scope),
                status,
                (time.perf_counter() - started) * 1000,
            )
            current_request.reset(token)


def _target(scope: Scope) -> str:
    """The path and query string, secret-looking query values masked."""
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope['path']}?{mask_query(query)}" if query else scope["path"]


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` before anything parses them (413, JSON body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def receive_bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # HTTPException passes through FastAPI's body reading to our handler.
                    raise HTTPException(413, PayloadTooLargeError(self.max_bytes).message)
            return message

        await self.app(scope, receive_bounded, send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLargeError(self.max_bytes)
        body = json.dumps(error_body(error.code, error.message), separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
