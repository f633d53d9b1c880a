"""The SSE encoder: any text round-trips through a standard SSE parser."""

from __future__ import annotations

import json

import pytest

from tests.support.frames import parse_sse as parse
from townhall.protocols.sse import (
    DONE_FRAME,
    PIECE_CHARS,
    encode,
    encode_event,
    encode_pieces,
    encode_text,
)
from townhall.turns.events import Failed, Finished


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


@pytest.mark.parametrize("kind", ["done", "error"])
def test_a_long_reply_is_encoded_in_pieces_that_join_to_the_same_bytes(kind: str) -> None:
    # Every kind of character json escapes or keeps, cut wherever the slices fall.
    text = ('say "hi" \\ tab\t nl\n ctrl\x01 é ✓ 😀 ' * (3 * PIECE_CHARS // 30))[
        : 3 * PIECE_CHARS + 7
    ]
    event = (
        Finished(reply=text, usage={"requests": 1})
        if kind == "done"
        else Failed(code="x" * (PIECE_CHARS + 1), message=text)
    )
    data = (
        {"reply": text, "usage": {"requests": 1}}
        if kind == "done"
        else {"code": "x" * (PIECE_CHARS + 1), "message": text}
    )
    pieces = list(encode_pieces(event))
    compact = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert b"".join(pieces) == f"event: {kind}\ndata: {compact}\n\n".encode()
    assert encode(event) == encode_event(kind, data)
    assert len(pieces) > 5  # cut, not one block
    assert max(len(piece) for piece in pieces) < 4 * PIECE_CHARS + 100
    assert parse(b"".join(pieces)) == [(kind, compact)]


def test_a_lone_surrogate_from_the_model_does_not_end_the_stream() -> None:
    assert parse(encode_text("a\ud800b")) == [("message", "a?b")]
    assert b"a?b" in encode_event("done", {"reply": "a\ud800b"})
