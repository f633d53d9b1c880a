"""The SDK's own Chat Completions handler, for streams the lean one does not handle.

Reasoning or thinking deltas, logprobs, url annotations, raw usage and buffered tool calls go to
ChatCmplStreamHandler, fed chunk objects built from the chunk dicts (with the chunks seen so far
replayed when the lean stream hands over mid-way), with its text still accumulated linearly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any, cast

from agents.items import TResponseStreamEvent
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response
from pydantic import ValidationError


def _chunk_object(fields: dict[str, Any]) -> ChatCompletionChunk:
    """A chunk for the SDK handler: validated (fast), or built leniently as the client does."""
    try:
        return ChatCompletionChunk.model_validate(fields)
    except ValidationError:
        return cast(ChatCompletionChunk, construct_type(type_=ChatCompletionChunk, value=fields))


async def compat_events(
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


async def replayed(
    seen: Iterable[dict[str, Any]], rest: AsyncIterator[list[dict[str, Any]]]
) -> AsyncIterator[dict[str, Any]]:
    for chunk in seen:
        yield chunk
    async for batch in rest:
        for chunk in batch:
            yield chunk
