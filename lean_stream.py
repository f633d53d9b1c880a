"""A lean decoder for the Responses API's event stream, and the model class that uses it.

The `openai` client turns every streamed event into a typed object by matching it against a
union of some sixty event types (about 40 us an event, measured here); at streaming speed that,
not the network, is where a worker's time goes. Here the event's `type` is read first and the
event is validated as that one type (about 1 us). An event type this version of the `openai`
package does not know is built the client's lenient way, as the client would. Deltas that
arrived in the same network read are also merged into one, so the Agents SDK and the SSE writer
handle one event where there were several; merging never waits for more data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast, get_args

from agents.models.openai_responses import OpenAIResponsesModel, _ResponseStreamWithRequestId
from openai._models import construct_type
from openai.types.responses import ResponseStreamEvent, ResponseTextDeltaEvent
from pydantic import BaseModel

from stream_limits import CURRENT_CREDIT, MAX_ANSWER_CHARS, guarded

_TEXT_DELTA = "response.output_text.delta"


def _classes_by_type() -> dict[str, type[BaseModel]]:
    """Each event class of the ResponseStreamEvent union, by its `type` literal."""
    union = get_args(ResponseStreamEvent)[0]
    classes: dict[str, type[BaseModel]] = {}
    for event_class in get_args(union):
        for literal in get_args(event_class.model_fields["type"].annotation):
            classes[literal] = event_class
    return classes


_EVENT_CLASSES = _classes_by_type()


class StreamDecodeError(ValueError):
    """The upstream sent an event that is not JSON."""


def decode_event(payload: bytes) -> ResponseStreamEvent | None:
    """One SSE event's bytes (its lines, without the blank line) to a typed event, or None."""
    data = b"\n".join(
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in payload.split(b"\n")
        if line.startswith(b"data:")
    )
    if not data or data == b"[DONE]":
        return None
    try:
        fields: dict[str, Any] = json.loads(data)
    except ValueError as error:
        raise StreamDecodeError("the model stream sent an event that is not JSON") from error
    event_class = _EVENT_CLASSES.get(fields.get("type"))  # type: ignore[arg-type]
    if event_class is None:
        return cast(ResponseStreamEvent, construct_type(type_=ResponseStreamEvent, value=fields))
    return cast(ResponseStreamEvent, event_class.model_validate(fields))


def coalesce(events: list[ResponseStreamEvent]) -> list[ResponseStreamEvent]:
    """Merge runs of text deltas of the same content part into one delta each."""
    merged: list[Any] = []
    for event in events:
        last: Any = merged[-1] if merged else None
        current: Any = event
        if (
            last is not None
            and current.type == _TEXT_DELTA
            and last.type == _TEXT_DELTA
            and current.item_id == last.item_id
            and current.content_index == last.content_index
        ):
            merged[-1] = ResponseTextDeltaEvent.model_validate(
                {
                    "type": _TEXT_DELTA,
                    "item_id": current.item_id,
                    "output_index": current.output_index,
                    "content_index": current.content_index,
                    "delta": last.delta + current.delta,
                    "logprobs": [*(last.logprobs or []), *(current.logprobs or [])],
                    "sequence_number": current.sequence_number,
                }
            )
        else:
            merged.append(current)
    return merged


async def decode_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[ResponseStreamEvent]:
    """Typed events from the raw bytes of a Responses API stream, merged per network read."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:  # CRLF line ends; one may straddle two reads, so fix the buffer
            buffer = buffer.replace(b"\r\n", b"\n")
        if b"\n\n" not in buffer:
            continue
        *complete, buffer = buffer.split(b"\n\n")
        events: list[ResponseStreamEvent] = []
        try:
            for raw in complete:
                event = decode_event(raw)
                if event is not None:
                    events.append(event)
        finally:
            # What decoded before a broken event is still passed on, then the error.
            for event in coalesce(events):
                yield event
    if buffer.strip():
        event = decode_event(buffer)
        if event is not None:
            yield event


class LeanResponsesModel(OpenAIResponsesModel):
    """OpenAIResponsesModel reading its stream with decode_stream instead of the client's parser.

    Requests, retries, tracing and errors before the stream starts are the SDK's and the
    client's own; only the decoding of a successful stream differs. The stream is bounded by
    stream_limits: at most `max_answer_chars` delta characters, paced by the turn's credit.
    """

    max_answer_chars: int | None = MAX_ANSWER_CHARS

    async def _fetch_response(  # type: ignore[override]
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        stream: bool = False,
        prompt: Any = None,
    ) -> Any:
        if not stream:
            return await super()._fetch_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                stream=False,
                prompt=prompt,
            )
        create_kwargs = self._build_response_create_kwargs(
            system_instructions=system_instructions,
            input=input,
            model_settings=model_settings,
            tools=tools,
            output_schema=output_schema,
            handoffs=handoffs,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            stream=True,
            prompt=prompt,
        )
        opening = self._get_client().responses.with_streaming_response.create(**create_kwargs)
        api_response = await opening.__aenter__()
        # The SDK's own wrapper: it attaches the request id and closes the HTTP response when the
        # stream ends or the run is cancelled.
        return _ResponseStreamWithRequestId(
            guarded(
                decode_stream(api_response.http_response.aiter_bytes()),
                max_chars=self.max_answer_chars,
                credit=CURRENT_CREDIT.get(),
            ),
            request_id=getattr(api_response, "request_id", None),
            cleanup=lambda: opening.__aexit__(None, None, None),
        )
