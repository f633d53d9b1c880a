"""The Next.js assistant front end's API, moved from OpenAI's Assistants API to this server:
`POST /chat/stream` takes `{"content", "threadId"}` and answers the Assistants run stream that
openai-node's `AssistantStream.fromReadableStream()` reads (protocols/assistant_stream.py).
`threadId` is the conversation: made when absent, returned in `X-Thread-Id` and in every run
event. The same agent, sessions, limits and errors as /chat."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from townhall.http.openapi import stream_responses
from townhall.http.schemas import not_blank, session_label_field, valid_session_label
from townhall.http.services import CallerDep, ServicesDep
from townhall.http.turn_request import event_stream, new_session_id, open_turn
from townhall.protocols.assistant_stream import BlankLine, RunWriter

NDJSON = "application/x-ndjson"
STREAM_DESCRIPTION = (
    'The Assistants API\'s run stream as newline-delimited JSON, one `{"event", "data"}` '
    "object a line (what `AssistantStream.fromReadableStream()` reads): `thread.run.created`; "
    "`thread.message.created` / `.delta` / `.completed` for the reply; `thread.run.step.created`"
    " / `.delta` / `.completed` for tool calls with their outputs; then `thread.run.completed`, "
    "or `thread.run.failed` with `last_error` `{code, message}`. Empty lines are keep-alives."
)


def new_thread_id() -> str:
    return "thread_" + new_session_id()


class AssistantMessage(BaseModel):
    """A resident's message to a thread. Unknown fields are ignored."""

    model_config = ConfigDict(populate_by_name=True)

    content: str = Field(min_length=1, description="What the resident wrote (not blank).")
    thread_id: str | None = session_label_field(
        "The thread (conversation) to continue", alias="threadId"
    )

    _content_not_blank = field_validator("content")(not_blank)
    _valid_thread = field_validator("thread_id")(valid_session_label)


def router() -> APIRouter:
    routes = APIRouter(tags=["Assistants stream"])
    routes.add_api_route(
        "/chat/stream",
        chat_stream,
        methods=["POST"],
        response_class=JSONResponse,
        responses=stream_responses(
            STREAM_DESCRIPTION,
            NDJSON,
            {"type": "string"},
            headers={"X-Thread-Id": {"schema": {"type": "string"}}},
        ),
    )
    return routes


async def chat_stream(
    body: AssistantMessage, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Send a message to a thread; the run streams back as the Assistants API streams it."""
    thread_id = body.thread_id or new_thread_id()
    turn = await open_turn(request, services, caller, session_id=thread_id, message=body.content)
    return event_stream(
        services,
        turn,
        RunWriter(thread_id),
        {"X-Thread-Id": thread_id},
        media_type=NDJSON,
        keep_alive=BlankLine,
    )
