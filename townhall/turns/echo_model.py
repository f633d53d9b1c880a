"""Echo mode: an Agents SDK `Model` that streams the resident's last message back, word by word.

It runs through exactly the same Runner, session and SSE path as a real model, so sessions,
streaming and CORS can be tried with no key and no network. Each word is one text delta with no
surrounding whitespace, so `curl -N` shows `data: Hello`, `data: from`, ...; the stored reply
keeps the message as typed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse, ModelSettings, ModelTracing, Usage
from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

ECHO_MODEL_NAME = "echo"
_ids = itertools.count(1)


def last_user_text(input: str | list[TResponseInputItem]) -> str:
    """The text of the most recent user message in the model input."""
    if isinstance(input, str):
        return input
    for item in reversed(input):
        if isinstance(item, dict) and item.get("role") == "user":
            return _content_text(item.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class EchoModel(Model):
    """Streams the user's message back as one text delta per word."""

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        text = last_user_text(input)
        message = _message(f"echo-msg-{next(_ids)}", text)
        return ModelResponse(output=[message], usage=_usage(text), response_id=None)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        text = last_user_text(input)
        for event in message_events(f"echo-msg-{next(_ids)}", text):
            yield event


def message_events(item_id: str, text: str) -> list[TResponseStreamEvent]:
    """The event sequence the Responses API sends for one text message, a delta per word."""
    message = _message(item_id, text)
    part = message.content[0]
    empty_part = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
    seq = itertools.count()
    where: dict[str, Any] = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[Any] = [
        ResponseCreatedEvent(
            type="response.created",
            response=_response([], "in_progress"),
            sequence_number=next(seq),
        ),
        ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            item=message.model_copy(update={"content": [], "status": "in_progress"}),
            output_index=0,
            sequence_number=next(seq),
        ),
        ResponseContentPartAddedEvent(
            type="response.content_part.added", part=empty_part, sequence_number=next(seq), **where
        ),
    ]
    events.extend(
        ResponseTextDeltaEvent(
            type="response.output_text.delta",
            delta=word,
            logprobs=[],
            sequence_number=next(seq),
            **where,
        )
        for word in text.split()
    )
    events += [
        ResponseTextDoneEvent(
            type="response.output_text.done",
            text=text,
            logprobs=[],
            sequence_number=next(seq),
            **where,
        ),
        ResponseContentPartDoneEvent(
            type="response.content_part.done", part=part, sequence_number=next(seq), **where
        ),
        ResponseOutputItemDoneEvent(
            type="response.output_item.done",
            item=message,
            output_index=0,
            sequence_number=next(seq),
        ),
        ResponseCompletedEvent(
            type="response.completed",
            response=_response([message], "completed", text),
            sequence_number=next(seq),
        ),
    ]
    return events


def _message(item_id: str, text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=item_id,
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )


def _usage(text: str) -> Usage:
    words = len(text.split())
    return Usage(requests=1, input_tokens=words, output_tokens=words, total_tokens=2 * words)


def _response(output: list[Any], status: Any, text: str = "") -> Response:
    usage = _usage(text)
    return Response.model_validate(
        {
            "id": f"echo-resp-{next(_ids)}",
            "created_at": 0,
            "model": ECHO_MODEL_NAME,
            "object": "response",
            "output": output,
            "tool_choice": "none",
            "tools": [],
            "top_p": None,
            "parallel_tool_calls": False,
            "status": status,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
            if status == "completed"
            else None,
        }
    )
