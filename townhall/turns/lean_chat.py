"""A lean Chat Completions stream: raw SSE bytes to the SDK's Responses-style events, linearly.

OpenAIChatCompletionsModel.stream_response reads the stream through the openai client, which
builds every chunk with `construct_type` (the larger part of a worker's CPU per chunk), and then
through agents' ChatCmplStreamHandler, which grows the answer with `part.text += delta` on a
pydantic model: the string is copied on every delta, quadratic in the answer's length.

LeanChatCompletionsModel keeps the SDK's request path (`_fetch_response`: the request, its
headers, client errors and retries before the stream starts) and replaces only the reading of a
successful stream: the SSE bytes are split and `json.loads`-ed here, the chunks are read as dicts,
text is kept as a list of pieces and joined once, and text deltas that arrived in the same network
read are merged into one event. The events are the ones ChatCmplStreamHandler emits (same types,
indexes, ids, provider_data, terminal checks, usage), so the Runner, tool calls and usage work
unchanged.

The lean reader handles text, refusals, function tool calls, usage and finish reasons. A stream
that uses more (reasoning or thinking deltas, logprobs, url annotations) before any output was
emitted is handed to the SDK's own handler, with the chunks seen so far replayed, and its text
still accumulated linearly (see _compat_events). If such a delta only arrives after output has
started, it is ignored with a warning. Logprobs, raw usage and buffered tool calls, which are
known from the settings, go to the SDK handler from the start.

Every stream is also bounded (stream_limits): at most MAX_ANSWER_CHARS delta characters, and paced
by the turn's StreamCredit so a slow reader stops the upstream being pulled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from types import SimpleNamespace
from typing import Any, cast

import openai
from agents.exceptions import AgentsException, ModelBehaviorError, UserError
from agents.items import TResponseStreamEvent
from agents.models._trace import model_config_for_trace
from agents.models.chatcmpl_helpers import ChatCmplHelpers
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler, _StreamOutputLayout
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing import generation_span
from agents.usage import _mark_request_completed_without_usage
from agents.util._error_tracing import model_span_errors
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import construct_type
from openai._streaming_cleanup import drain_response_async
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage
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
from pydantic import ValidationError

from townhall.turns.sse_decode import MAX_EVENT_BYTES, EventSplitter, StreamDecodeError, data_of
from townhall.turns.stream_limits import CURRENT_CREDIT, MAX_ANSWER_CHARS, guarded

logger = logging.getLogger(__name__)


# --- bytes to chunks --------------------------------------------------------------------------


async def chunk_batches(
    response: Any, max_event_bytes: int = MAX_EVENT_BYTES
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The JSON chunks of a Chat Completions stream, one list per network read, up to [DONE].

    Errors are the openai client's own: a transport failure is APIConnectionError or
    APITimeoutError, and an `{"error": ...}` chunk is APIError, as AsyncStream raises them.
    """
    request = response.request
    splitter = EventSplitter(max_event_bytes)
    try:
        async for data in response.aiter_bytes():
            events = splitter.feed(data)
            if not events:
                continue
            batch: list[dict[str, Any]] = []
            done = False
            try:
                for raw in events:
                    payload = data_of(raw)
                    if payload is None:  # a comment (keep-alive) or an event without data
                        continue
                    if payload.startswith(b"[DONE]"):
                        done = True
                        break
                    batch.append(_loads(payload, request))
            finally:
                # What decoded before a broken event is still passed on, then the error.
                if batch:
                    yield batch
            if done:
                if getattr(response, "http_version", None) == "HTTP/1.1":
                    await drain_response_async(response)  # so the connection can be reused
                return
        tail = splitter.tail()
        if tail:
            payload = data_of(tail)
            if payload is not None and not payload.startswith(b"[DONE]"):
                yield [_loads(payload, request)]
    except timeout_exceptions() as error:
        raise openai.APITimeoutError(request=request) from error
    except request_exceptions() as error:
        raise openai.APIConnectionError(request=request) from error


def _loads(payload: bytes, request: Any) -> dict[str, Any]:
    try:
        fields = json.loads(payload)
    except ValueError as error:
        raise StreamDecodeError("the model stream sent an event that is not JSON") from error
    if not isinstance(fields, dict):
        raise StreamDecodeError("the model stream sent an event that is not a JSON object")
    failure = fields.get("error")
    if failure:  # as openai.AsyncStream does for an error sent inside the stream
        message = failure.get("message") if isinstance(failure, dict) else None
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        raise openai.APIError(message=message, request=request, body=failure)
    return fields


# --- chunks to events -------------------------------------------------------------------------


class _NeedsFullHandler(Exception):
    """The stream uses something only the SDK's handler does, and nothing was emitted yet."""


class _Call:
    """A function tool call being streamed; its arguments kept as parts."""

    __slots__ = ("call_id", "name", "parts", "provider_data", "streaming")

    def __init__(self) -> None:
        self.call_id = ""
        self.name = ""
        self.parts: list[str] = []
        self.provider_data: dict[str, Any] | None = None
        self.streaming = False


class LeanChatStream:
    """ChatCmplStreamHandler.handle_stream's logic for text, refusals and function calls, fed
    chunk dicts; events accumulate in `out`. Each method mirrors the handler's branch for it."""

    def __init__(
        self,
        response: Response,
        *,
        model: str | None,
        strict_feature_validation: bool = False,
        raise_on_length_truncation: bool = False,
        require_finish_reason: bool = False,
    ) -> None:
        self.response = response
        self.model = model
        self.strict = strict_feature_validation
        self.raise_on_length_truncation = raise_on_length_truncation
        self.require_finish_reason = require_finish_reason
        self.out: list[TResponseStreamEvent] = []
        self.emitted_output = False  # anything beyond response.created
        self.seen: list[dict[str, Any]] | None = []  # chunks fed before any output, for replay
        self.sequence = 0
        self.usage: Any = None
        self.provider_data: dict[str, Any] = {}
        self.calls: dict[int, _Call] = {}
        self.ignored_call_indexes: set[int] = set()
        # The SDK's layout class reads only these two attributes of its state.
        self.layout_state = SimpleNamespace(
            reasoning_content_index_and_output=None, function_calls=self.calls
        )
        self.layout = _StreamOutputLayout()
        self.text_index: int | None = None
        self.text_parts: list[str] = []
        self.pending_text: list[str] = []
        self.refusal_index: int | None = None
        self.refusal_parts: list[str] = []
        self.started = False
        self.saw_content_filter = self.saw_length = self.saw_finish_reason = False
        self.warned_choices = self.warned_ignored = False

    def _seq(self) -> int:
        number = self.sequence
        self.sequence += 1
        return number

    def _emit(self, event: Any) -> None:
        if self.pending_text:
            self.flush_text()
        self.out.append(event)
        self.emitted_output = True

    def flush_text(self) -> None:
        """Emit the text deltas gathered since the last event as one delta."""
        delta = self.pending_text[0] if len(self.pending_text) == 1 else "".join(self.pending_text)
        self.pending_text.clear()
        # The part keeps the merged delta, the same string the event (and the turn) holds, so a
        # long answer is held once, not as pieces plus merged copies.
        self.text_parts.append(delta)
        self.out.append(
            ResponseTextDeltaEvent(
                content_index=cast(int, self.text_index),
                delta=delta,
                item_id=FAKE_RESPONSES_ID,
                output_index=self._message_index(),
                type="response.output_text.delta",
                sequence_number=self._seq(),
                logprobs=[],
            )
        )
        self.emitted_output = True

    def _message_index(self) -> int:
        return self.layout.assistant_message_output_index(cast(Any, self.layout_state))

    def _call_index(self, index: int) -> int:
        return self.layout.function_call_output_index(cast(Any, self.layout_state), index)

    def _unsupported(self, what: str) -> None:
        if not self.emitted_output:
            raise _NeedsFullHandler(what)
        if not self.warned_ignored:
            logger.warning(
                "lean chat stream: ignoring %s that arrived after the output began", what
            )
            self.warned_ignored = True

    def feed(self, chunk: dict[str, Any]) -> None:
        if self.seen is not None:
            if self.emitted_output:
                self.seen = None
            else:
                self.seen.append(chunk)
        if not self.started:
            self.started = True
            self.out.append(
                ResponseCreatedEvent(
                    response=self.response, type="response.created", sequence_number=self._seq()
                )
            )
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return
        if len(choices) > 1 or any(c.get("index") != 0 for c in choices):
            self._warn_choices()
        choice = next((c for c in choices if c.get("index") == 0), None)
        if choice is None:
            return
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            self.saw_finish_reason = True
        if finish_reason == "content_filter":
            self.saw_content_filter = True
        elif finish_reason == "length":
            self.saw_length = True
        delta = choice.get("delta")
        if not isinstance(delta, dict):  # absent or null: the handler skips the chunk
            return
        if self.model:
            self.provider_data["model"] = self.model
        elif chunk.get("model"):
            self.provider_data["model"] = chunk["model"]
        if chunk.get("id"):
            self.provider_data["response_id"] = chunk["id"]
        if delta.get("audio"):
            raise AgentsException("Audio is not currently supported")
        for key in ("reasoning_content", "reasoning", "thinking_blocks"):
            if delta.get(key):
                self._unsupported(key)
        logprobs = choice.get("logprobs")
        if logprobs and logprobs.get("content"):
            self._unsupported("logprobs")
        if delta.get("annotations") and ChatCmplHelpers.convert_url_citations(delta["annotations"]):
            self._unsupported("annotations")
        content = delta.get("content")
        if content is not None:
            if not isinstance(content, str):
                self._unsupported("non-text content")
            elif content or self.text_index is not None:
                self._text(content)
        refusal = delta.get("refusal")
        if refusal:
            self._refusal(refusal)
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for tool_call in tool_calls:
                self._tool_call(tool_call)

    def _warn_choices(self) -> None:
        message = (
            "Chat Completions streaming with multiple choices or nonzero choice indexes "
            "is not fully supported; only choice index 0 can be processed."
        )
        if self.strict:
            raise UserError(message)
        if not self.warned_choices:
            logger.warning(
                "%s Ignoring the other choices; enable strict feature validation to "
                "raise an error instead.",
                message,
            )
            self.warned_choices = True

    def _message_item(self, status: str) -> ResponseOutputMessage:
        item = ResponseOutputMessage(
            id=FAKE_RESPONSES_ID,
            content=[],
            role="assistant",
            type="message",
            status=status,  # type: ignore[arg-type]
        )
        if self.provider_data:
            item.provider_data = self.provider_data.copy()  # type: ignore[attr-defined]
        return item

    def _text(self, content: str) -> None:
        if self.text_index is None:
            self.text_index = 1 if self.refusal_index is not None else 0
            if self.text_index == 0:
                self._emit(
                    ResponseOutputItemAddedEvent(
                        item=self._message_item("in_progress"),
                        output_index=self._message_index(),
                        type="response.output_item.added",
                        sequence_number=self._seq(),
                    )
                )
            self._emit(
                ResponseContentPartAddedEvent(
                    content_index=self.text_index,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._message_index(),
                    part=ResponseOutputText(
                        text="", type="output_text", annotations=[], logprobs=[]
                    ),
                    type="response.content_part.added",
                    sequence_number=self._seq(),
                )
            )
        self.pending_text.append(content)

    def _refusal(self, refusal: str) -> None:
        if self.refusal_index is None:
            self.refusal_index = 1 if self.text_index is not None else 0
            if self.refusal_index == 0:
                self._emit(
                    ResponseOutputItemAddedEvent(
                        item=self._message_item("in_progress"),
                        output_index=self._message_index(),
                        type="response.output_item.added",
                        sequence_number=self._seq(),
                    )
                )
            self._emit(
                ResponseContentPartAddedEvent(
                    content_index=self.refusal_index,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._message_index(),
                    part=ResponseOutputRefusal(refusal="", type="refusal"),
                    type="response.content_part.added",
                    sequence_number=self._seq(),
                )
            )
        self._emit(
            ResponseRefusalDeltaEvent(
                content_index=self.refusal_index,
                delta=refusal,
                item_id=FAKE_RESPONSES_ID,
                output_index=self._message_index(),
                type="response.refusal.delta",
                sequence_number=self._seq(),
            )
        )
        self.refusal_parts.append(refusal)

    def _tool_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index")
        if index in self.ignored_call_indexes:
            return
        if delta.get("type") == "custom":
            if self.strict:
                raise UserError(
                    "Custom tool calls are not supported by the Chat Completions converter"
                )
            self.ignored_call_indexes.add(cast(int, index))
            return
        call = self.calls.get(cast(int, index))
        if call is None:
            call = self.calls[cast(int, index)] = _Call()
        function = delta.get("function") or {}
        arguments = function.get("arguments")
        if arguments:
            call.parts.append(arguments)
        if function.get("name"):
            call.name = function["name"]
        if delta.get("id"):
            call.call_id = ChatCmplHelpers.clean_gemini_tool_call_id(delta["id"], self.model)
        if call.provider_data is None and self.provider_data:
            call.provider_data = self.provider_data.copy()
        signature = None
        fields = delta.get("provider_specific_fields")
        if fields and self.model and "gemini" in self.model.lower() and isinstance(fields, dict):
            signature = fields.get("thought_signature")
        extra = delta.get("extra_content")
        if extra and isinstance(extra, dict) and isinstance(extra.get("google"), dict):
            signature = extra["google"].get("thought_signature") or signature
        if signature:
            call.provider_data = {**self.provider_data, "thought_signature": signature}
        if not call.streaming and call.name and call.call_id:
            output_index = self._call_index(cast(int, index))
            call.streaming = True
            self._emit(
                ResponseOutputItemAddedEvent(
                    item=self._call_item(call, ""),
                    output_index=output_index,
                    type="response.output_item.added",
                    sequence_number=self._seq(),
                )
            )
        if call.streaming and arguments:
            self._emit(
                ResponseFunctionCallArgumentsDeltaEvent(
                    delta=arguments,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._call_index(cast(int, index)),
                    type="response.function_call_arguments.delta",
                    sequence_number=self._seq(),
                )
            )

    def _call_item(self, call: _Call, arguments: str) -> ResponseFunctionToolCall:
        """ChatCmplStreamHandler._function_call_item: provider data of the stream and the call."""
        kwargs: dict[str, Any] = {
            "id": FAKE_RESPONSES_ID,
            "call_id": call.call_id,
            "arguments": arguments,
            "name": call.name,
            "type": "function_call",
        }
        if self.provider_data or call.provider_data:
            kwargs["provider_data"] = {**self.provider_data, **(call.provider_data or {})}
        return ResponseFunctionToolCall(**kwargs)

    def _state_call(self, call: _Call) -> ResponseFunctionToolCall:
        """The call as the handler's state holds it (what response.completed's output carries)."""
        item = ResponseFunctionToolCall(
            id=FAKE_RESPONSES_ID,
            arguments="".join(call.parts),
            name=call.name,
            type="function_call",
            call_id=call.call_id,
        )
        if call.provider_data is not None:
            item.provider_data = call.provider_data  # type: ignore[attr-defined]
        return item

    def _usage(self) -> Any:
        if self.usage is None:
            return None
        usage = construct_type(type_=CompletionUsage, value=self.usage)
        return ChatCmplStreamHandler._build_response_usage(cast(CompletionUsage, usage))

    def finish(self) -> None:
        """The handler's end of stream: its checks, then the done events and response.completed."""
        if self.pending_text:
            self.flush_text()
        if (
            self.saw_content_filter
            and self.text_index is None
            and self.refusal_index is None
            and not self.calls
        ):
            message = "Response withheld by the provider's content filter."
            self.refusal_index = 0
            self.refusal_parts = [message]
            self._emit(
                ResponseOutputItemAddedEvent(
                    item=self._message_item("in_progress"),
                    output_index=self._message_index(),
                    type="response.output_item.added",
                    sequence_number=self._seq(),
                )
            )
            self._emit(
                ResponseContentPartAddedEvent(
                    content_index=0,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._message_index(),
                    part=ResponseOutputRefusal(refusal="", type="refusal"),
                    type="response.content_part.added",
                    sequence_number=self._seq(),
                )
            )
            self._emit(
                ResponseRefusalDeltaEvent(
                    content_index=0,
                    delta=message,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._message_index(),
                    type="response.refusal.delta",
                    sequence_number=self._seq(),
                )
            )
        nothing = self.text_index is None and self.refusal_index is None and not self.calls
        if (self.require_finish_reason and not self.saw_finish_reason) or (
            self.saw_length and self.raise_on_length_truncation and nothing
        ):
            usage = self._usage()
            if usage is not None:
                self.response.usage = usage
            else:
                _mark_request_completed_without_usage(self.response)
            if self.require_finish_reason and not self.saw_finish_reason:
                raise ModelBehaviorError(
                    "Chat Completions stream ended before receiving a finish_reason for choice 0."
                )
            raise ModelBehaviorError(
                "Chat Completions stream terminated with finish_reason='length' "
                "but produced no assistant text, tool call, or refusal."
            )
        parts: list[tuple[int, Any]] = []
        if self.text_index is not None:
            text = ResponseOutputText(
                text="".join(self.text_parts), type="output_text", annotations=[], logprobs=[]
            )
            self.text_parts = []
            parts.append((self.text_index, text))
            self._emit(
                ResponseContentPartDoneEvent(
                    content_index=self.text_index,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._message_index(),
                    part=text,
                    type="response.content_part.done",
                    sequence_number=self._seq(),
                )
            )
        if self.refusal_index is not None:
            refusal = ResponseOutputRefusal(refusal="".join(self.refusal_parts), type="refusal")
            parts.append((self.refusal_index, refusal))
            self._emit(
                ResponseContentPartDoneEvent(
                    content_index=self.refusal_index,
                    item_id=FAKE_RESPONSES_ID,
                    output_index=self._message_index(),
                    part=refusal,
                    type="response.content_part.done",
                    sequence_number=self._seq(),
                )
            )
        for index, call in self.calls.items():
            output_index = self._call_index(index)
            arguments = "".join(call.parts)
            if call.streaming:
                self._emit(
                    ResponseOutputItemDoneEvent(
                        item=self._call_item(call, arguments),
                        output_index=output_index,
                        type="response.output_item.done",
                        sequence_number=self._seq(),
                    )
                )
            else:  # the name or id never came: all three events at once, as the handler does
                item = self._call_item(call, arguments)
                self._emit(
                    ResponseOutputItemAddedEvent(
                        item=item,
                        output_index=output_index,
                        type="response.output_item.added",
                        sequence_number=self._seq(),
                    )
                )
                self._emit(
                    ResponseFunctionCallArgumentsDeltaEvent(
                        delta=arguments,
                        item_id=FAKE_RESPONSES_ID,
                        output_index=output_index,
                        type="response.function_call_arguments.delta",
                        sequence_number=self._seq(),
                    )
                )
                self._emit(
                    ResponseOutputItemDoneEvent(
                        item=item,
                        output_index=output_index,
                        type="response.output_item.done",
                        sequence_number=self._seq(),
                    )
                )
        state_calls = {index: self._state_call(call) for index, call in self.calls.items()}
        before = self.layout.function_calls_before_message(cast(Any, self.layout_state))
        after = self.layout.function_calls_after_message(cast(Any, self.layout_state))
        by_id = {id(call): index for index, call in self.calls.items()}
        outputs: list[Any] = [state_calls[by_id[id(call)]] for call in before]
        if parts:
            done_message = self._message_item("completed")
            parts.sort(key=lambda entry: entry[0])
            done_message.content.extend(part for _, part in parts)
            outputs.append(done_message)
            self._emit(
                ResponseOutputItemDoneEvent(
                    item=done_message,
                    output_index=self._message_index(),
                    type="response.output_item.done",
                    sequence_number=self._seq(),
                )
            )
        outputs.extend(state_calls[by_id[id(call)]] for call in after)
        final = self.response.model_copy()
        final.output = outputs
        final.usage = self._usage()
        if self.usage is None:
            _mark_request_completed_without_usage(final)
        self._emit(
            ResponseCompletedEvent(
                response=final, type="response.completed", sequence_number=self._seq()
            )
        )

    def take(self) -> list[TResponseStreamEvent]:
        events, self.out = self.out, []
        return events


def _chunk_object(fields: dict[str, Any]) -> ChatCompletionChunk:
    """A chunk for the SDK handler: validated (fast), or built leniently as the client does."""
    try:
        return ChatCompletionChunk.model_validate(fields)
    except ValidationError:
        return cast(ChatCompletionChunk, construct_type(type_=ChatCompletionChunk, value=fields))


async def _compat_events(
    response: Response,
    chunks: AsyncIterator[dict[str, Any]],
    *,
    buffer_tool_calls: bool,
    **handler_options: Any,
) -> AsyncGenerator[TResponseStreamEvent, None]:
    """The SDK's own handler, with text kept linear: after the text part opened, each content
    delta reaches the handler as "" (so its `text += delta` copies nothing) and is put back into
    the delta event here; the part's text is joined once, at its done event."""
    texts: deque[str] = deque()  # the real content of each chunk that makes a text delta event
    opened = False

    async def objects() -> AsyncIterator[ChatCompletionChunk]:
        nonlocal opened
        async for fields in chunks:
            chunk = _chunk_object(fields)
            choice = next((c for c in chunk.choices or () if c.index == 0), None)
            delta = choice.delta if choice is not None else None
            content = getattr(delta, "content", None) if delta is not None else None
            if delta is not None and isinstance(content, str) and (opened or content):
                texts.append(content)
                if opened:
                    delta.content = ""
                opened = True
            yield chunk

    stream: AsyncIterator[ChatCompletionChunk] = objects()
    if buffer_tool_calls:
        stream = ChatCmplStreamHandler.buffer_tool_call_stream(stream)
    parts: list[str] = []
    handler = ChatCmplStreamHandler.handle_stream(response, cast(Any, stream), **handler_options)
    async with aclosing(cast(AsyncGenerator[TResponseStreamEvent, None], handler)) as events:
        async for event in events:
            if event.type == "response.output_text.delta":
                event.delta = texts.popleft()
                parts.append(event.delta)
            elif event.type == "response.content_part.done" and event.part.type == "output_text":
                event.part.text = "".join(parts)  # the same object is in the done message
            yield event


async def _replayed(
    seen: Iterable[dict[str, Any]], rest: AsyncIterator[list[dict[str, Any]]]
) -> AsyncIterator[dict[str, Any]]:
    for chunk in seen:
        yield chunk
    async for batch in rest:
        for chunk in batch:
            yield chunk


async def lean_chat_events(
    response: Response,
    batches: AsyncIterator[list[dict[str, Any]]],
    *,
    model: str | None,
    full_handler: bool = False,
    buffer_tool_calls: bool = False,
    strict_feature_validation: bool = False,
    raise_on_length_truncation: bool = False,
    require_finish_reason: bool = False,
    preserve_raw_usage: bool = False,
) -> AsyncGenerator[TResponseStreamEvent, None]:
    """The events ChatCmplStreamHandler.handle_stream makes of these chunk batches."""
    options: dict[str, Any] = {
        "model": model,
        "strict_feature_validation": strict_feature_validation,
        "raise_on_length_truncation": raise_on_length_truncation,
        "require_finish_reason": require_finish_reason,
    }
    if preserve_raw_usage:
        options["preserve_raw_usage"] = True
    if full_handler:
        async with aclosing(
            _compat_events(
                response, _replayed((), batches), buffer_tool_calls=buffer_tool_calls, **options
            )
        ) as events:
            async for event in events:
                yield event
        return
    lean = LeanChatStream(response, **options)
    async for batch in batches:
        for position, chunk in enumerate(batch):
            try:
                lean.feed(chunk)
            except _NeedsFullHandler:
                # Nothing but response.created was made: the SDK's handler takes over, fed the
                # chunks seen so far again (they end with this one), its response.created dropped
                # (so the sequence numbers still line up).
                for event in lean.take():
                    yield event
                seen = [*(lean.seen or [chunk]), *batch[position + 1 :]]
                async with aclosing(
                    _compat_events(
                        response, _replayed(seen, batches), buffer_tool_calls=False, **options
                    )
                ) as events:
                    async for event in events:
                        if event.type != "response.created":
                            yield event
                return
        if lean.pending_text:
            lean.flush_text()
        for event in lean.take():
            yield event
    lean.finish()
    for event in lean.take():
        yield event


# --- the model --------------------------------------------------------------------------------


class LeanChatCompletionsModel(OpenAIChatCompletionsModel):
    """OpenAIChatCompletionsModel reading its stream with lean_chat_events.

    Only stream_response is overridden, and only its reading of the stream: the request
    (`_fetch_response`), the generation span, request-id propagation and the closing of the
    provider stream on every exit are the SDK's code paths, called as the SDK calls them.
    """

    def __init__(
        self, *args: Any, max_answer_chars: int | None = MAX_ANSWER_CHARS, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_answer_chars = max_answer_chars

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: Any,
        input: Any,
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        tracing: Any,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        # From here to the `try` this is OpenAIChatCompletionsModel.stream_response (0.24).
        self._handle_unsupported_server_managed_conversation_state(
            previous_response_id=previous_response_id, conversation_id=conversation_id
        )
        self._handle_unsupported_prompt(prompt)
        with (
            generation_span(
                model=str(self.model),
                model_config=model_config_for_trace(
                    model_settings, tracing, base_url=self._client.base_url
                ),
                disabled=tracing.is_disabled(),
            ) as span_generation,
            model_span_errors(
                span_generation,
                message="Error streaming response",
                trace_include_sensitive_data=tracing.include_data(),
            ),
        ):
            response, stream = await self._fetch_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                span_generation,
                tracing,
                stream=True,
                prompt=None,
            )
            self._attach_stream_request_id(response, stream)
            # `stream` is the client's AsyncStream; its parser has not started (it is lazy), so
            # its HTTP response is read raw here, and the stream itself is closed as the SDK does.
            http_response = getattr(stream, "response", None)
            events: AsyncIterator[TResponseStreamEvent]
            if http_response is None or not hasattr(http_response, "aiter_bytes"):
                # A custom client yielding chunk objects: the SDK's handler, as the SDK calls it.
                chunks: Any = stream
                if self._buffer_streamed_tool_calls:
                    chunks = ChatCmplStreamHandler.buffer_tool_call_stream(stream)
                events = ChatCmplStreamHandler.handle_stream(
                    response,
                    chunks,
                    model=self.model,
                    strict_feature_validation=self._strict_feature_validation,
                    raise_on_length_truncation=True,
                    require_finish_reason=ChatCmplHelpers.is_openai(self._client),
                    preserve_raw_usage=model_settings.preserve_raw_usage is True,
                )
            else:
                events = lean_chat_events(
                    response,
                    chunk_batches(http_response),
                    model=self.model,
                    full_handler=(
                        self._buffer_streamed_tool_calls
                        or model_settings.top_logprobs is not None
                        or model_settings.preserve_raw_usage is True
                    ),
                    buffer_tool_calls=self._buffer_streamed_tool_calls,
                    strict_feature_validation=self._strict_feature_validation,
                    raise_on_length_truncation=True,
                    require_finish_reason=ChatCmplHelpers.is_openai(self._client),
                    preserve_raw_usage=model_settings.preserve_raw_usage is True,
                )
            close_stream_in_background = False
            yielded_terminal_event = False
            try:
                async with aclosing(
                    guarded(events, max_chars=self.max_answer_chars, credit=CURRENT_CREDIT.get())
                ) as paced:
                    async for event in paced:
                        if event.type == "response.completed":
                            yielded_terminal_event = True
                            self._populate_stream_generation_span(
                                span_generation, event.response, tracing
                            )
                        yield event
            except ModelBehaviorError:
                self._populate_stream_generation_span(span_generation, response, tracing)
                raise
            except asyncio.CancelledError:
                close_stream_in_background = True
                self._schedule_async_iterator_close(stream)
                raise
            finally:
                if not close_stream_in_background:
                    try:
                        await self._close_stream_allowing_background_completion(stream)
                    except Exception as exc:
                        if not yielded_terminal_event:
                            raise
                        logger.debug("Ignoring stream cleanup error after terminal event: %s", exc)
