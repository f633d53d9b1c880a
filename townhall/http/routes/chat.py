"""POST /chat: a turn through the pipeline, rendered as SSE (native) or as one JSON reply."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from starlette.background import BackgroundTask

from townhall.http.caller import rate_identity, session_key
from townhall.http.openapi import CHAT_DOCS
from townhall.http.schemas import ChatRequest
from townhall.http.services import CallerDep, ServicesDep
from townhall.logs import current_request
from townhall.protocols.json_reply import json_reply
from townhall.protocols.sse import SSEResponse, sse_body


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/chat", chat, methods=["POST"], **CHAT_DOCS)
    return routes


async def chat(
    body: ChatRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Send a message; the reply streams back as Server-Sent Events (see the 200 response)."""
    session_id = body.session_id or secrets.token_urlsafe(18)
    tags = current_request.get()
    turn = await services.pipeline.open(
        caller,
        key=session_key(caller, session_id),
        session_id=session_id,
        message=body.message,
        rate_identity=rate_identity(request, caller),
        request_id=tags.request_id if tags else "-",
    )
    if tags is not None:
        tags.session_id = session_id
    if not body.stream:
        return await json_reply(turn)
    return SSEResponse(
        sse_body(turn),
        headers={"Cache-Control": "no-cache", "X-Session-Id": session_id},
        sep="\n",
        ping=services.settings.sse_ping_seconds,
        # Also runs when the client left before the body started (the generator never ran).
        background=BackgroundTask(turn.release),
    )
