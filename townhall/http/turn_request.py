"""Opening a turn for any route that takes a resident's message: the caller's conversation key,
rate identity and request id, and the streaming response every SSE front end shares."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi import Request
from sse_starlette import ServerSentEvent
from starlette.background import BackgroundTask

from townhall.http.auth import Principal
from townhall.http.caller import rate_identity, session_key
from townhall.http.services import Services
from townhall.logs import current_request
from townhall.protocols.sse import FrameWriter, SSEResponse, written
from townhall.turns.broadcast import Reader
from townhall.turns.pipeline import OpenTurn


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


async def open_turn(
    request: Request,
    services: Services,
    caller: Principal,
    *,
    session_id: str,
    message: str,
) -> OpenTurn:
    """Admit and start a turn on the caller's conversation `session_id` (raises the AppError
    that says why not: rate limit, busy, capacity, ...)."""
    tags = current_request.get()
    turn = await services.pipeline.open(
        caller,
        key=session_key(caller, session_id),
        session_id=session_id,
        message=message,
        rate_identity=rate_identity(request, caller),
        request_id=tags.request_id if tags else "-",
    )
    if tags is not None:
        tags.session_id = session_id
    return turn


def event_stream(
    services: Services,
    turn: OpenTurn,
    writer: FrameWriter,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> SSEResponse:
    """A turn, started in its driver (turns.broadcast), streamed in `writer`'s format
    (`options`: reader_stream's)."""
    reader = services.broadcaster.stream(turn)
    return reader_stream(services, turn.session_id, reader, writer, headers, **options)


def reader_stream(
    services: Services,
    session_id: str,
    reader: Reader,
    writer: FrameWriter,
    headers: dict[str, str] | None = None,
    *,
    media_type: str = "text/event-stream",
    keep_alive: Callable[[], ServerSentEvent] | None = None,
    ids: bool = False,
) -> SSEResponse:
    """What `reader` reads as a streaming response (text/event-stream unless `media_type` says
    otherwise), with a keep-alive every SSE_PING_SECONDS (an SSE comment unless `keep_alive`
    makes another). The reader is closed however the response ends (also when the client left
    before the body started)."""
    return SSEResponse(
        written(reader, writer, ids=ids),
        headers={"Cache-Control": "no-cache", "X-Session-Id": session_id, **(headers or {})},
        media_type=media_type,
        sep="\n",
        ping=services.settings.sse_ping_seconds,
        ping_message_factory=keep_alive,
        background=BackgroundTask(reader.close),
    )
