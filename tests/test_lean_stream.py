"""The lean Responses stream decoder: same events as the openai client's parser, fewer of them
when deltas arrive together, and clear failures on broken streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from tests.support.fake_openai import ResponsesStream, ToolCallStream
from townhall.turns.lean_responses import StreamDecodeError, decode_stream

FULL = TypeAdapter[ResponseStreamEvent](ResponseStreamEvent)


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decode(*parts: bytes) -> list[Any]:
    return [event async for event in decode_stream(chunks_of(*parts))]


def reference_events(raw: bytes) -> list[Any]:
    """What full validation of every event (the openai client's way) makes of the stream."""
    return [
        FULL.validate_json(block.split(b"data: ", 1)[1])
        for block in raw.split(b"\n\n")
        if b"data: " in block
    ]


async def test_one_event_per_read_gives_the_same_events_as_full_validation() -> None:
    chunks = ResponsesStream(["Hello", "from", "the", "backend"], 1).chunks()
    events = await decode(*chunks)
    assert events == reference_events(b"".join(chunks))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == [
        "Hello",
        " from",
        " the",
        " backend",
    ]


async def test_deltas_that_arrive_together_are_merged_and_nothing_else_is() -> None:
    chunks = ResponsesStream(["Hello", "from", "the", "backend"], 1).chunks()
    events = await decode(b"".join(chunks))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert [d.delta for d in deltas] == ["Hello from the backend"]
    assert deltas[0].sequence_number == 6  # the last merged delta's
    others = [e for e in events if e.type != "response.output_text.delta"]
    assert others == [
        e for e in reference_events(b"".join(chunks)) if e.type != "response.output_text.delta"
    ]


async def test_events_split_across_reads_and_crlf_line_ends() -> None:
    raw = b"".join(ResponsesStream(["a", "b"], 2).chunks()).replace(b"\n", b"\r\n")
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    events = await decode(*pieces)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "a b"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output[0].content[0].text == "a b"


async def test_tool_calls_and_done_markers() -> None:
    stream = ToolCallStream(["x"], 3, "report_incident", {"category": "pothole"})
    events = await decode(*stream.chunks(), b"data: [DONE]\n\n")
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert json.loads(events[2].delta) == {"category": "pothole"}


async def test_a_malformed_event_raises() -> None:
    good = ResponsesStream(["a"], 4).chunks()[:3]
    with pytest.raises(StreamDecodeError):
        await decode(*good, b"data: {not json\n\n")


async def test_an_event_of_the_wrong_shape_is_refused_by_full_validation() -> None:
    with pytest.raises(ValueError):
        await decode(b'data: {"type": "response.completed", "response": 42}\n\n')


async def test_events_before_a_malformed_one_in_the_same_read_still_arrive() -> None:
    good = b"".join(ResponsesStream(["a", "b"], 5).chunks()[:5])
    seen: list[Any] = []
    with pytest.raises(StreamDecodeError):
        async for event in decode_stream(chunks_of(good + b"data: {not json\n\n")):
            seen.append(event)
    assert [e.type for e in seen][-1] == "response.output_text.delta"
    assert "".join(e.delta for e in seen if e.type == "response.output_text.delta") == "a b"


async def test_text_deltas_decode_alike_whichever_way_their_json_is_spaced() -> None:
    # Compact JSON with `type` first takes the one-step path; anything else the general one.
    compact = b'{"type":"response.output_text.delta","delta":"a","logprobs":[],"item_id":"m",'
    compact += b'"output_index":0,"content_index":0,"sequence_number":3}'
    spaced = json.dumps(json.loads(compact)).encode()
    assert spaced != compact
    decoded = [await decode(b"data: " + data + b"\n\n") for data in (compact, spaced)]
    assert decoded[0] == decoded[1] == [FULL.validate_json(compact)]


async def test_a_text_delta_that_is_broken_is_refused_as_before() -> None:
    start = b'data: {"type":"response.output_text.delta"'
    with pytest.raises(StreamDecodeError):  # not JSON: the stream's own error
        await decode(start + b', "delta": \n\n')
    with pytest.raises(ValueError):  # JSON of the wrong shape: the validation error
        await decode(start + b',"delta":5,"item_id":"m"}\n\n')
