"""A whole turn as one JSON object: /chat with `"stream": false` (schemas.ChatReply), and any
front end that waits for the answer (`collect`)."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import aclosing
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from townhall.errors import AppError, error_body
from townhall.http.schemas import ChatReply, ToolCall, Usage
from townhall.turns.events import Failed, Finished, ToolResult
from townhall.turns.events import ToolCall as ToolCallEvent
from townhall.turns.pipeline import OpenTurn
from townhall.turns.runner import SERVER_RESTARTING

# A failed turn's status: closed by the client (409), cut by a restart (503), else the model's
# fault (502).
_FAILURE_STATUS = {"cancelled": 409, SERVER_RESTARTING.code: 503}


@dataclass
class Outcome:
    """How a turn ended: `finished` or `failed`, and the tool calls it made."""

    finished: Finished | None = None
    failed: Failed | None = None
    calls: list[ToolCall] = field(default_factory=list)


async def collect(turn: OpenTurn, request: Request | None = None) -> Outcome:
    """Run the turn to its end and give it back. With the `request` it answers, the turn is
    cancelled as soon as its client leaves (nobody would read the answer, and the conversation
    would stay busy until the model finished)."""
    if request is None:
        return await _collect(turn)
    collecting = asyncio.ensure_future(_collect(turn))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not collecting.done():
        collecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collecting  # its finally gives the turn back
        raise ClientGone()
    return collecting.result()


class ClientGone(Exception):
    """The client left before the whole answer was ready (nothing is sent)."""


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already: the next message is the
    disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(turn: OpenTurn) -> Outcome:
    calls: dict[str | None, ToolCall] = {}
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
                    return Outcome(failed=event, calls=list(calls.values()))
                elif isinstance(event, Finished):
                    return Outcome(finished=event, calls=list(calls.values()))
    finally:
        await turn.release()
    raise AppError("The turn ended without a reply.")


def failure_response(failed: Failed, session_id: str) -> JSONResponse:
    """A failed turn as our JSON error, with the status that says whose fault it was."""
    body = error_body(failed.code, failed.message) | {"session_id": session_id}
    return JSONResponse(body, _FAILURE_STATUS.get(failed.code, 502))


async def json_reply(turn: OpenTurn, request: Request | None = None) -> Response:
    try:
        outcome = await collect(turn, request)
    except ClientGone:
        return Response(status_code=499)  # never sent: there is nobody to send it to
    if outcome.finished is None:
        assert outcome.failed is not None  # collect ends with one or the other
        return failure_response(outcome.failed, turn.session_id)
    reply = ChatReply(
        session_id=turn.session_id,
        reply=outcome.finished.reply,
        tool_calls=outcome.calls,
        usage=Usage(**outcome.finished.usage),
    )
    return JSONResponse(reply.model_dump(), headers={"X-Session-Id": turn.session_id})
