"""Resuming a stream: a client whose connection dropped reads the rest of the answer.

- `GET /sessions/{session_id}/stream`: /chat's own frames after `Last-Event-ID` (the header a
  browser's EventSource sends when it reconnects; also `?last_event_id=`), then the live turn to
  its end and `data: [DONE]`; without an id, the conversation's last turn from its start. 204
  when there is nothing to send (no turn kept, or the client has the last frame).
- `GET /api/chat/{id}/stream`: the AI SDK's resume (`useChat({ resume: true })`): the running
  turn's UI message stream from its start (the SDK replays the message it replaces); 204 when no
  turn runs.

The frames come from the turn's log (turns/broadcast.py): this worker's, or with a Redis
session store any worker's. The caller's key and owner rules are those of the conversation.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from townhall.errors import SessionNotFoundError
from townhall.http.caller import session_key
from townhall.http.openapi import SSE_EVENT_SCHEMA
from townhall.http.params import (
    LastEventIdHeader,
    LastEventIdQuery,
    OwnerQuery,
    SessionIdPath,
)
from townhall.http.routes.ui_chat import CHUNK_EVENT
from townhall.http.schemas import error_responses
from townhall.http.services import CallerDep, ServicesDep
from townhall.http.turn_request import reader_stream
from townhall.protocols.sse import NativeWriter
from townhall.protocols.ui_message_stream import HEADERS, MessageWriter
from townhall.turns.frame_log import Position


def router() -> APIRouter:
    routes = APIRouter(tags=["Resume"])
    routes.add_api_route(
        "/sessions/{session_id}/stream",
        resume_session,
        methods=["GET"],
        response_class=JSONResponse,
        responses={
            200: {
                "description": "The conversation's frames after the given one, as /chat sends "
                "them (each with its `id:`), then the live turn to `data: [DONE]`.",
                "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
            },
            204: {"description": "Nothing to send: no turn kept, or the client has it all."},
            **error_responses(401, 404, 410, 422, 503),
        },
    )
    routes.add_api_route(
        "/api/chat/{chat_id}/stream",
        resume_ui_chat,
        methods=["GET"],
        response_class=JSONResponse,
        tags=["AI SDK"],
        responses={
            200: {
                "description": "The running turn's UI message stream, from its `start`.",
                "content": {"text/event-stream": {"schema": CHUNK_EVENT}},
            },
            204: {"description": "No turn of this chat is running."},
            **error_responses(401, 422, 503),
        },
    )
    return routes


async def resume_session(
    session_id: SessionIdPath,
    services: ServicesDep,
    caller: CallerDep,
    owner: OwnerQuery = None,
    last_event_id: LastEventIdHeader = None,
    last_event_id_query: LastEventIdQuery = None,
) -> Any:
    """Take up a /chat stream where the connection dropped (see the 200 response)."""
    chosen = last_event_id if last_event_id is not None else last_event_id_query
    after = Position.parse(chosen) if chosen else None
    key = session_key(caller, session_id, owner)
    await services.sessions.get(key, owner=caller.owner)  # 404 for a conversation not theirs
    reader = await services.broadcaster.logs.reader(key, after, running=False)
    if reader is None:
        return Response(status_code=204)
    return reader_stream(services, session_id, reader, NativeWriter(session_id), ids=True)


async def resume_ui_chat(chat_id: SessionIdPath, services: ServicesDep, caller: CallerDep) -> Any:
    """useChat's resume: the chat's running answer again, from its start."""
    key = session_key(caller, chat_id)
    try:
        await services.sessions.get(key, owner=caller.owner)
    except SessionNotFoundError:
        return Response(status_code=204)  # a chat that never sent a message has no stream
    reader = await services.broadcaster.logs.reader(key, None, running=True)
    if reader is None:
        return Response(status_code=204)
    return reader_stream(services, chat_id, reader, MessageWriter(), HEADERS)
