"""A Chat Completions stream's bytes to its JSON chunks, without the openai client's parser.

The client builds every chunk with `construct_type` (the larger part of a worker's CPU per
chunk); here the SSE bytes are split and `json.loads`-ed, and the chunks stay dicts. Chunks that
arrived in the same network read come out as one batch, so their text deltas can be merged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import openai
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._streaming_cleanup import drain_response_async

from townhall.turns.sse_decode import MAX_EVENT_BYTES, EventSplitter, StreamDecodeError, data_of

__all__ = ["StreamDecodeError", "chunk_batches"]


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
