"""The wire format of /chat: a small, named vocabulary of Server-Sent Events.

- Text deltas are plain `data:` events with no event name, one `data:` line per line of text.
- Named events carry compact JSON: `session`, `tool_call`, `tool_result`, `agent`, `error`, `done`.
- Every stream ends with `data: [DONE]`.

Lines end with a bare LF, so `curl -N` output reads cleanly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send

DONE_SENTINEL = "[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Named events, in the order a client meets them.
SESSION = "session"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
AGENT = "agent"
ERROR = "error"
DONE = "done"


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's reply, as it arrives."""

    text: str


@dataclass(frozen=True, slots=True)
class NamedEvent:
    """One of the named events above, with its JSON payload."""

    name: str
    data: dict[str, Any]


Frame = TextDelta | NamedEvent


def encode_text(text: str) -> bytes:
    """A text delta as SSE. Empty text sends nothing.

    A delta that is exactly `[DONE]` would read as the end of the stream, so it goes out as two
    deltas whose concatenation is the same text.
    """
    if not text:
        return b""
    if text == DONE_SENTINEL:
        return encode_text("[DONE") + encode_text("]")
    lines = _LINE_BREAK.split(text)
    # "replace": a lone surrogate (a model may send one as a JSON escape) cannot be UTF-8; it
    # goes out as "?" rather than ending the stream.
    return ("".join(f"data: {line}\n" for line in lines) + "\n").encode(errors="replace")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {_json(data)}\n\n".encode(errors="replace")


# A `done` event repeats the whole reply; for a 5 MB answer encoding it is ~30 ms of one
# uninterrupted step. Top-level strings longer than this are encoded in pieces of this many
# characters, so the writer can let other requests run between them.
PIECE_CHARS = 256 * 1024


def encode_pieces(frame: Frame) -> Iterator[bytes]:
    """The frame's bytes, in pieces of bounded work; joined, they are what encode() returns."""
    if isinstance(frame, TextDelta):
        yield encode_text(frame.text)
        return
    if not any(isinstance(v, str) and len(v) > PIECE_CHARS for v in frame.data.values()):
        yield encode_event(frame.name, frame.data)
        return
    # The JSON object written member by member: the same bytes json.dumps gives (compact
    # separators, insertion order), with the long strings cut into slices.
    opening = f"event: {frame.name}\ndata: {{"
    for index, (key, value) in enumerate(frame.data.items()):
        member = f"{',' if index else ''}{_json(key)}:"
        if not (isinstance(value, str) and len(value) > PIECE_CHARS):
            yield (opening + member + _json(value)).encode(errors="replace")
            opening = ""
            continue
        yield (opening + member + '"').encode(errors="replace")
        opening = ""
        for start in range(0, len(value), PIECE_CHARS):
            piece = encode_basestring(value[start : start + PIECE_CHARS])[1:-1]
            yield piece.encode(errors="replace")
        yield b'"'
    yield b"}\n\n"


def encode(frame: Frame) -> bytes:
    return b"".join(encode_pieces(frame))


class SSEResponse(EventSourceResponse):
    """sse-starlette's response, minus a cancel scope per message when no send timeout is set
    (it wraps every send in one, which costs more than the send on a fast stream)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)
