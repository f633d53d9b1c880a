"""The Streamlit front end's API: `POST /query` answers `{"model", "answer"}` once the turn is
done; `POST /query/stream` streams the answer's text as `data: <chunk>` lines
(protocols/text_lines.py). The same agent, sessions, limits and errors as /chat."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, field_validator

from townhall.http.openapi import TURN_ERRORS, stream_responses
from townhall.http.schemas import not_blank, session_label_field, valid_session_label
from townhall.http.services import CallerDep, Services, ServicesDep
from townhall.http.turn_request import event_stream, new_session_id, open_turn
from townhall.protocols.json_reply import ClientGone, collect, failure_response
from townhall.protocols.text_lines import TextLines
from townhall.turns.pipeline import OpenTurn

STREAM_DESCRIPTION = (
    "The answer's text as Server-Sent Events: one `data: <chunk>` event per piece, as it "
    "arrives (read them with `requests`' `iter_lines()`, or any SSE parser). Tool calls are "
    "not sent. A failure after the stream started is an `error` event whose data is our JSON "
    "error; the stream ends with the answer (no end marker)."
)


# Before OpenAPI 3.2, the schema of an event stream describes one event.
TEXT_EVENT = {
    "type": "object",
    "description": "One Server-Sent Event: a piece of the answer, or an error.",
    "properties": {
        "event": {"type": "string", "enum": ["message", "error"]},
        "data": {"type": "string", "description": "The text; for `error`, our JSON error."},
    },
    "required": ["data"],
}


class QueryRequest(BaseModel):
    """A resident's question. Unknown fields are ignored."""

    prompt: str = Field(min_length=1, description="What the resident asked (not blank).")
    session_id: str | None = session_label_field("Conversation to continue")

    _prompt_not_blank = field_validator("prompt")(not_blank)
    _valid_session = field_validator("session_id")(valid_session_label)


class QueryAnswer(BaseModel):
    model: str = Field(description="The model that answered.")
    answer: Any = Field(description="The whole answer.")
    session_id: str = Field(description="Send it again to continue the conversation.")


def router() -> APIRouter:
    routes = APIRouter(tags=["Streamlit"])
    routes.add_api_route(
        "/query", query, methods=["POST"], response_model=QueryAnswer, responses=TURN_ERRORS
    )
    routes.add_api_route(
        "/query/stream",
        query_stream,
        methods=["POST"],
        response_class=JSONResponse,
        responses=stream_responses(STREAM_DESCRIPTION, "text/event-stream", TEXT_EVENT),
    )
    return routes


async def _open(
    body: QueryRequest, request: Request, services: Services, caller: CallerDep
) -> OpenTurn:
    session_id = body.session_id or new_session_id()
    return await open_turn(request, services, caller, session_id=session_id, message=body.prompt)


async def query(
    body: QueryRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Ask; the whole answer comes back once it is done."""
    turn = await _open(body, request, services, caller)
    try:
        outcome = await collect(turn, request)
    except ClientGone:
        return Response(status_code=499)  # never sent: there is nobody to send it to
    if outcome.finished is None:
        assert outcome.failed is not None
        return failure_response(outcome.failed, turn.session_id)
    answer = QueryAnswer(
        model=services.model.name, answer=outcome.finished.reply, session_id=turn.session_id
    )
    return JSONResponse(answer.model_dump(), headers={"X-Session-Id": turn.session_id})


async def query_stream(
    body: QueryRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Ask; the answer's text streams back as `data: <chunk>` lines (see the 200 response)."""
    turn = await _open(body, request, services, caller)
    return event_stream(services, turn, TextLines())
