"""/chat with `"stream": false`: the whole turn as one JSON object (schemas.ChatReply)."""

from __future__ import annotations

from contextlib import aclosing

from fastapi.responses import JSONResponse

from townhall.errors import AppError, error_body
from townhall.http.schemas import ChatReply, ToolCall, Usage
from townhall.turns.events import Failed, Finished, ToolResult
from townhall.turns.events import ToolCall as ToolCallEvent
from townhall.turns.pipeline import OpenTurn
from townhall.turns.runner import SERVER_RESTARTING

# A failed turn's status: closed by the client (409), cut by a restart (503), else the model's
# fault (502).
_FAILURE_STATUS = {"cancelled": 409, SERVER_RESTARTING.code: 503}


async def json_reply(turn: OpenTurn) -> JSONResponse:
    calls: dict[str | None, ToolCall] = {}
    session_id = turn.session_id
    try:
        async with aclosing(turn.events):
            async for event in turn.events:
                turn.observe(event)
                if isinstance(event, ToolCallEvent):
                    calls[event.call_id] = ToolCall(
                        name=event.name, arguments=event.arguments, call_id=event.call_id
                    )
                elif isinstance(event, ToolResult) and event.call_id in calls:
                    calls[event.call_id].output = event.output
                elif isinstance(event, Failed):
                    body = error_body(event.code, event.message)
                    status = _FAILURE_STATUS.get(event.code, 502)
                    return JSONResponse(body | {"session_id": session_id}, status)
                elif isinstance(event, Finished):
                    reply = ChatReply(
                        session_id=session_id,
                        reply=event.reply,
                        tool_calls=list(calls.values()),
                        usage=Usage(**event.usage),
                    )
                    return JSONResponse(reply.model_dump(), headers={"X-Session-Id": session_id})
    finally:
        await turn.release()
    raise AppError("The turn ended without a reply.")
