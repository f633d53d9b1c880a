"""The AI SDK's `useChat` API: `POST /api/chat` takes the hook's request body (`id`,
`messages` as UI messages, `trigger`, `messageId`) and answers the UI message stream
(protocols/ui_message_stream.py). The chat `id` is the conversation; the server keeps the
history itself, so only the last user message of the body is read (a client cannot rewrite what
was said). The same agent, sessions, limits and errors as /chat."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from townhall.http.openapi import stream_responses
from townhall.http.schemas import SESSION_ID_PATTERN, SESSION_ID_RULE, valid_session_label
from townhall.http.services import CallerDep, ServicesDep
from townhall.http.turn_request import event_stream, open_turn
from townhall.protocols.ui_message_stream import HEADERS, MessageWriter

STREAM_DESCRIPTION = (
    "The AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: v1`): SSE, one JSON "
    "chunk per `data:` line: `start`, `start-step`/`finish-step`, `text-start`/`text-delta`/"
    "`text-end`, `tool-input-available` and `tool-output-available` for each tool call, "
    "`data-agent` (`{name}`) on a handoff, `error` (`errorText`) on a failure, `finish`, "
    "then `data: [DONE]`."
)


# Before OpenAPI 3.2, the schema of an event stream describes one event.
CHUNK_EVENT = {
    "type": "object",
    "description": "One Server-Sent Event: a UI message chunk.",
    "properties": {
        "event": {"type": "string", "enum": ["message"]},
        "data": {"type": "string", "description": "One chunk as JSON (`{type, ...}`), or [DONE]."},
    },
    "required": ["data"],
}


class UIPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = Field(default_factory=list)


class UIChatRequest(BaseModel):
    """The body `useChat`'s DefaultChatTransport sends. Unknown fields are ignored."""

    id: str = Field(
        json_schema_extra={"pattern": SESSION_ID_PATTERN, "minLength": 1, "maxLength": 128},
        description=f"The chat: the conversation it continues ({SESSION_ID_RULE}).",
    )
    messages: list[UIMessage] = Field(
        min_length=1, description="The chat's messages; only the last user message is read."
    )
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    message_id: str | None = Field(None, alias="messageId")

    _valid_id = field_validator("id")(valid_session_label)

    @field_validator("messages")
    @classmethod
    def _ends_with_a_user_message(cls, messages: list[UIMessage]) -> list[UIMessage]:
        if not last_user_text(messages).strip():
            raise PydanticCustomError("no_message", "must hold a user message with text")
        return messages


def last_user_text(messages: list[UIMessage]) -> str:
    """The text of the last user message (its text parts, joined)."""
    for message in reversed(messages):
        if message.role == "user":
            return "".join(p.text or "" for p in message.parts if p.type == "text")
    return ""


def router() -> APIRouter:
    routes = APIRouter(tags=["AI SDK"])
    routes.add_api_route(
        "/api/chat",
        ui_chat,
        methods=["POST"],
        response_class=JSONResponse,
        responses=stream_responses(STREAM_DESCRIPTION, "text/event-stream", CHUNK_EVENT),
    )
    return routes


async def ui_chat(
    body: UIChatRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """useChat's request; the answer streams back as the AI SDK's UI message stream."""
    message = last_user_text(body.messages)
    turn = await open_turn(request, services, caller, session_id=body.id, message=message)
    return event_stream(services, turn, MessageWriter(), HEADERS)
