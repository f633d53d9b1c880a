"""The SSE encoder: any text round-trips through a standard SSE parser."""

from __future__ import annotations

import pytest
from support import parse_sse as parse

from sse_frames import DONE_FRAME, encode_event, encode_text


@pytest.mark.parametrize(
    "text",
    ["Hello", " leading space", "trailing ", "two\nlines", "\n", "a\n\nb", "[DONE]x", "é✓ 漢字"],
)
def test_text_round_trips(text: str) -> None:
    assert parse(encode_text(text)) == [("message", text)]


def test_carriage_returns_become_line_feeds() -> None:
    assert parse(encode_text("a\r\nb\rc")) == [("message", "a\nb\nc")]


def test_a_delta_that_reads_done_is_split_so_the_stream_does_not_end() -> None:
    events = parse(encode_text("[DONE]"))
    assert events == [("message", "[DONE"), ("message", "]")]


def test_empty_delta_sends_nothing() -> None:
    assert encode_text("") == b""


def test_named_event_is_compact_json_on_one_line() -> None:
    frame = encode_event("tool_call", {"name": "x", "arguments": {"text": "a\nb"}})
    assert frame == b'event: tool_call\ndata: {"name":"x","arguments":{"text":"a\\nb"}}\n\n'
    assert parse(DONE_FRAME) == [("message", "[DONE]")]
