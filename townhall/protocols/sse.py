"""The native protocol of /chat: a turn's events as a small, named vocabulary of SSE.

- Text deltas are plain `data:` events with no event name, one `data:` line per line of text.
- Named events carry compact JSON: `session`, `tool_call`, `tool_result`, `agent`, `error`, `done`.
- Every stream ends with `data: [DONE]`.

Lines end with a bare LF, so `curl -N` output reads cleanly.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import aclosing
from dataclasses import fields
from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False
from typing import Any, Protocol

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send

from townhall.turns.broadcast import Reader
from townhall.turns.events import TextDelta, TurnEvent
from townhall.turns.frame_log import Ended, Entry, Started

DONE_SENTINEL = "[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Sent first, by this adapter (not a turn event): the conversation the stream belongs to.
SESSION = "session"


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


def payload(event: TurnEvent) -> dict[str, Any]:
    """A named event's JSON data: its fields, in their order."""
    return {field.name: getattr(event, field.name) for field in fields(event)}


def encode_pieces(event: TurnEvent) -> Iterator[bytes]:
    """The event's bytes, in pieces of bounded work; joined, they are what encode() returns."""
    if isinstance(event, TextDelta):
        yield encode_text(event.text)
        return
    data = payload(event)
    if not any(isinstance(v, str) and len(v) > PIECE_CHARS for v in data.values()):
        yield encode_event(event.wire, data)
        return
    # The JSON object written member by member: the same bytes json.dumps gives (compact
    # separators, insertion order), with the long strings cut into slices.
    opening = f"event: {event.wire}\ndata: {{"
    for index, (key, value) in enumerate(data.items()):
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


def encode(event: TurnEvent) -> bytes:
    return b"".join(encode_pieces(event))


class SSEResponse(EventSourceResponse):
    """sse-starlette's response, minus a cancel scope per message when no send timeout is set
    (it wraps every send in one, which costs more than the send on a fast stream)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


# Bytes written between two turns of the event loop. Once the client has gone, uvicorn's send
# returns at once and sends nothing, and with a fast model nothing else makes this task wait: the
# turn would run to its end (pulling the whole answer) before sse-starlette's disconnect watcher
# gets to cancel it. A long frame is also let out in pieces with other requests in between.
YIELD_EVERY_BYTES = 64 * 1024


class FrameWriter(Protocol):
    """A front end's format: the frames for a turn's start, each of its events, and its end."""

    def start(self, opened: Started) -> Iterable[bytes]: ...

    def render(self, event: TurnEvent) -> Iterable[bytes]: ...

    def end(self) -> Iterable[bytes]: ...


def frames_of(writer: FrameWriter, entry: Entry) -> Iterable[bytes]:
    if isinstance(entry, Started):
        return writer.start(entry)
    if isinstance(entry, Ended):
        return writer.end()
    return writer.render(entry)


async def written(
    reader: Reader, writer: FrameWriter, *, ids: bool = False
) -> AsyncIterator[bytes]:
    """A turn's entries, as `reader` gives them, in `writer`'s format; with `ids`, each entry's
    first frame carries its SSE `id:` (the position a client resumes from). The reader is
    closed however the body ends (a reader of the turn itself then cancels the run)."""
    pacer = Pacer()
    try:
        async with aclosing(reader.entries()) as entries:
            async for frame_id, entry in entries:
                prefix = b"id: " + frame_id.encode() + b"\n" if ids and frame_id else b""
                for frame in frames_of(writer, entry):
                    if not frame:
                        continue
                    if prefix:
                        frame, prefix = prefix + frame, b""
                    yield frame
                    await pacer.sent(len(frame))
    finally:
        await reader.close()


class Pacer:
    """Lets other tasks run once every YIELD_EVERY_BYTES written (see above)."""

    def __init__(self) -> None:
        self.unyielded = 0

    async def sent(self, size: int) -> None:
        self.unyielded += size
        if self.unyielded >= YIELD_EVERY_BYTES:
            self.unyielded = 0
            await asyncio.sleep(0)


class NativeWriter:
    """/chat's own format: `session`, the events, `data: [DONE]`."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def start(self, opened: Started) -> list[bytes]:
        return [encode_event(SESSION, {"session_id": self.session_id})]

    def render(self, event: TurnEvent) -> Iterator[bytes]:
        return encode_pieces(event)

    def end(self) -> list[bytes]:
        return [DONE_FRAME]
