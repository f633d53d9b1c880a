"""POST /chat: a turn through the pipeline, rendered as SSE (native) or as one JSON reply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from townhall.http.openapi import CHAT_DOCS
from townhall.http.schemas import ChatRequest
from townhall.http.services import CallerDep, ServicesDep
from townhall.http.turn_request import event_stream, new_session_id, open_turn
from townhall.protocols.json_reply import json_reply
from townhall.protocols.sse import NativeWriter


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/chat", chat, methods=["POST"], **CHAT_DOCS)
    return routes


async def chat(
    body: ChatRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Send a message; the reply streams back as Server-Sent Events (see the 200 response)."""
    session_id = body.session_id or new_session_id()
    turn = await open_turn(request, services, caller, session_id=session_id, message=body.message)
    if not body.stream:
        return await json_reply(turn, request)
    return event_stream(services, turn, NativeWriter(session_id), ids=True)
