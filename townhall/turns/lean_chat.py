"""A lean Chat Completions stream: raw SSE bytes to the SDK's Responses-style events, linearly.

OpenAIChatCompletionsModel.stream_response reads the stream through the openai client, which
builds every chunk with `construct_type` (the larger part of a worker's CPU per chunk), and then
through agents' ChatCmplStreamHandler, which grows the answer with `part.text += delta` on a
pydantic model: the string is copied on every delta, quadratic in the answer's length.

LeanChatCompletionsModel keeps the SDK's request path (`_fetch_response`: the request, its
headers, client errors and retries before the stream starts) and replaces only the reading of a
successful stream, in three steps:

- chat_chunks: the SSE bytes are split and `json.loads`-ed, one batch of chunk dicts per read;
- chat_stream: LeanChatStream turns them into the events ChatCmplStreamHandler emits (same
  types, indexes, ids, provider_data, terminal checks, usage; chat_events builds them), text kept
  as pieces joined once and the text deltas of one read merged into one event;
- chat_compat: a stream that uses more (reasoning or thinking deltas, logprobs, url annotations)
  before any output was emitted is handed to the SDK's own handler, with the chunks seen so far
  replayed and its text still accumulated linearly. If such a delta only arrives after output has
  started, it is ignored with a warning. Logprobs, raw usage and buffered tool calls, which are
  known from the settings, go to the SDK handler from the start.

So the Runner, tool calls and usage work unchanged. Every stream is also bounded (stream_limits):
at most MAX_ANSWER_CHARS delta characters, and paced by the turn's StreamCredit so a slow reader
stops the upstream being pulled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from agents.exceptions import ModelBehaviorError
from agents.items import TResponseStreamEvent
from agents.models._trace import model_config_for_trace
from agents.models.chatcmpl_helpers import ChatCmplHelpers
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing import generation_span
from agents.util._error_tracing import model_span_errors
from openai import AsyncOpenAI
from openai.types.responses import Response

from townhall.turns.chat_chunks import chunk_batches
from townhall.turns.chat_compat import compat_events, replayed
from townhall.turns.chat_stream import LeanChatStream, NeedsFullHandler
from townhall.turns.response_request import UntransformedChatClient
from townhall.turns.stream_limits import CURRENT_CREDIT, MAX_ANSWER_CHARS, guarded

logger = logging.getLogger(__name__)


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
            compat_events(
                response, replayed((), batches), buffer_tool_calls=buffer_tool_calls, **options
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
            except NeedsFullHandler:
                # Nothing but response.created was made: the SDK's handler takes over, fed the
                # chunks seen so far again (they end with this one), its response.created dropped
                # (so the sequence numbers still line up).
                for event in lean.take():
                    yield event
                seen = [*(lean.seen or [chunk]), *batch[position + 1 :]]
                async with aclosing(
                    compat_events(
                        response, replayed(seen, batches), buffer_tool_calls=False, **options
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
    provider stream on every exit are the SDK's code paths, called as the SDK calls them. The
    request itself goes out without the openai client's parameter transform (response_request).
    """

    def __init__(
        self, *args: Any, max_answer_chars: int | None = MAX_ANSWER_CHARS, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_answer_chars = max_answer_chars

    def _get_client(self) -> AsyncOpenAI:
        return cast(AsyncOpenAI, UntransformedChatClient(super()._get_client()))

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
