"""The Responses-style events ChatCmplStreamHandler emits for a Chat Completions stream.

One method per event type, numbered in the order they are made. Every item of a Chat Completions
answer has the SDK's fake response id, as the handler gives it. The lean stream (chat_stream)
decides when each is due; this module only knows their shapes.
"""

from __future__ import annotations

from typing import Any

from agents.models.fake_id import FAKE_RESPONSES_ID
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseRefusalDeltaEvent,
    ResponseTextDeltaEvent,
)

Part = ResponseOutputText | ResponseOutputRefusal


def message_item(status: str, provider_data: dict[str, Any]) -> ResponseOutputMessage:
    """The assistant message as the handler builds it, opened (in_progress) or done."""
    item = ResponseOutputMessage(
        id=FAKE_RESPONSES_ID,
        content=[],
        role="assistant",
        type="message",
        status=status,  # type: ignore[arg-type]
    )
    if provider_data:
        item.provider_data = provider_data.copy()  # type: ignore[attr-defined]
    return item


def call_item(
    call_id: str, name: str, arguments: str, provider_data: dict[str, Any] | None
) -> ResponseFunctionToolCall:
    """ChatCmplStreamHandler._function_call_item: a function call with the provider's data."""
    kwargs: dict[str, Any] = {
        "id": FAKE_RESPONSES_ID,
        "call_id": call_id,
        "arguments": arguments,
        "name": name,
        "type": "function_call",
    }
    if provider_data:
        kwargs["provider_data"] = provider_data
    return ResponseFunctionToolCall(**kwargs)


def empty_text() -> ResponseOutputText:
    return ResponseOutputText(text="", type="output_text", annotations=[], logprobs=[])


class ChatEvents:
    """Builds the handler's events with consecutive sequence numbers."""

    def __init__(self) -> None:
        self.sequence = 0

    def _next(self) -> int:
        number = self.sequence
        self.sequence += 1
        return number

    def created(self, response: Response) -> ResponseCreatedEvent:
        return ResponseCreatedEvent(
            response=response, type="response.created", sequence_number=self._next()
        )

    def item_added(self, item: Any, output_index: int) -> ResponseOutputItemAddedEvent:
        return ResponseOutputItemAddedEvent(
            item=item,
            output_index=output_index,
            type="response.output_item.added",
            sequence_number=self._next(),
        )

    def part_added(
        self, content_index: int, output_index: int, part: Part
    ) -> ResponseContentPartAddedEvent:
        return ResponseContentPartAddedEvent(
            content_index=content_index,
            item_id=FAKE_RESPONSES_ID,
            output_index=output_index,
            part=part,
            type="response.content_part.added",
            sequence_number=self._next(),
        )

    def text_delta(
        self, content_index: int, output_index: int, delta: str
    ) -> ResponseTextDeltaEvent:
        return ResponseTextDeltaEvent(
            content_index=content_index,
            delta=delta,
            item_id=FAKE_RESPONSES_ID,
            output_index=output_index,
            type="response.output_text.delta",
            sequence_number=self._next(),
            logprobs=[],
        )

    def refusal_delta(
        self, content_index: int, output_index: int, delta: str
    ) -> ResponseRefusalDeltaEvent:
        return ResponseRefusalDeltaEvent(
            content_index=content_index,
            delta=delta,
            item_id=FAKE_RESPONSES_ID,
            output_index=output_index,
            type="response.refusal.delta",
            sequence_number=self._next(),
        )

    def arguments_delta(
        self, output_index: int, delta: str
    ) -> ResponseFunctionCallArgumentsDeltaEvent:
        return ResponseFunctionCallArgumentsDeltaEvent(
            delta=delta,
            item_id=FAKE_RESPONSES_ID,
            output_index=output_index,
            type="response.function_call_arguments.delta",
            sequence_number=self._next(),
        )

    def part_done(
        self, content_index: int, output_index: int, part: Part
    ) -> ResponseContentPartDoneEvent:
        return ResponseContentPartDoneEvent(
            content_index=content_index,
            item_id=FAKE_RESPONSES_ID,
            output_index=output_index,
            part=part,
            type="response.content_part.done",
            sequence_number=self._next(),
        )

    def item_done(self, item: Any, output_index: int) -> ResponseOutputItemDoneEvent:
        return ResponseOutputItemDoneEvent(
            item=item,
            output_index=output_index,
            type="response.output_item.done",
            sequence_number=self._next(),
        )

    def completed(self, response: Response) -> ResponseCompletedEvent:
        return ResponseCompletedEvent(
            response=response, type="response.completed", sequence_number=self._next()
        )
