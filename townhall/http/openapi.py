"""The OpenAPI document: the limits this app was configured with, and /chat's event stream,
described from the turn's event classes (turns/events.py) so that docs and wire cannot drift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter
from sse_starlette import EventSourceResponse

from townhall.http.schemas import ChatReply, error_responses
from townhall.protocols.chatkit.routes import chatkit_request_schema
from townhall.protocols.sse import SESSION
from townhall.settings import Settings
from townhall.turns.events import EVENT_TYPES, TextDelta


def _event_rows() -> list[str]:
    rows = ['| `session` | `{"session_id"}` | first, always |']
    for event in EVENT_TYPES:
        when = (event.__doc__ or "").strip().splitlines()[0]
        if event is TextDelta:
            rows.append(f"| *(none)* | reply text, one `data:` line per line of text | {when} |")
            continue
        names = ", ".join(f'"{field.name}"' for field in fields(event))
        rows.append(f"| `{event.wire}` | `{{{names}}}` | {when} |")
    rows.append("| *(none)* | `[DONE]` | last, always, after `done` or `error` |")
    return rows


SSE_DESCRIPTION = (
    "A stream of Server-Sent Events (`text/event-stream`), lines ending in LF:\n\n"
    "| event | data | when |\n|---|---|---|\n"
    + "\n".join(_event_rows())
    + "\n\nA comment line (`: ping ...`) is sent every 15 s while the stream is open.\n"
    'With `"stream": false` the reply is one JSON object (`ChatReply`).\n'
)

SSE_EXAMPLE = (
    'event: session\ndata: {"session_id":"test123"}\n\n'
    "data: Hello\n\ndata: from\n\ndata: the\n\ndata: backend\n\n"
    'event: done\ndata: {"reply":"Hello from the backend","usage":{"requests":1,'
    '"input_tokens":4,"output_tokens":4,"total_tokens":8}}\n\n'
    "data: [DONE]\n\n"
)

SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One Server-Sent Event: a named event with JSON data, or reply text.",
    "properties": {
        "event": {
            "type": "string",
            "enum": [TextDelta.wire, SESSION, *(e.wire for e in EVENT_TYPES if e is not TextDelta)],
            "description": "Not sent for reply text and the final [DONE]: parsers read that as "
            "the SSE default, `message`.",
        },
        "data": {"type": "string"},
    },
    "required": ["data"],
    # The JSON each named event's `data` holds, from the same classes.
    "x-event-data": {
        event.wire: TypeAdapter(event).json_schema()
        for event in EVENT_TYPES
        if event is not TextDelta
    },
}

# What a route that starts a turn may answer instead, before its stream starts (every front end).
TURN_ERRORS = error_responses(
    400,
    401,
    403,
    409,
    413,
    415,
    422,
    429,
    503,
    s403="A web page on an origin not in CORS_ORIGINS sent it.",
    s409="The conversation is answering another message.",
)


def stream_responses(
    description: str,
    media_type: str,
    schema: dict[str, Any],
    headers: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a front end's streaming route: its stream, and the errors a turn
    may be refused with before the stream starts."""
    ok: dict[str, Any] = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        ok["headers"] = headers
    return {200: ok, **TURN_ERRORS}


CHAT_DOCS: dict[str, Any] = {
    "response_class": EventSourceResponse,
    "responses": {
        200: {
            "description": SSE_DESCRIPTION,
            "content": {
                # Before OpenAPI 3.2, the schema of an event stream describes one event.
                "text/event-stream": {"schema": SSE_EVENT_SCHEMA, "example": SSE_EXAMPLE},
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatReply"}},
            },
        },
        **TURN_ERRORS,
    },
}


def with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with the limits this app was configured with filled in."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema["components"]["schemas"]
            components["ChatRequest"]["properties"]["message"]["maxLength"] = (
                settings.max_message_chars
            )
            # The JSON reply of `"stream": false`, referenced from POST /chat's 200 response.
            reply = ChatReply.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(reply.pop("$defs", {}))
            components["ChatReply"] = reply
            chatkit_request, definitions = chatkit_request_schema()
            components.update(definitions)
            components["ChatKitRequest"] = chatkit_request
        return app.openapi_schema or {}

    return openapi
