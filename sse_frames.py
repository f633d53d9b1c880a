"""The wire format of /chat: a small, named vocabulary of Server-Sent Events.

- Text deltas are plain `data:` events with no event name, one `data:` line per line of text.
- Named events carry compact JSON: `session`, `tool_call`, `tool_result`, `agent`, `error`, `done`.
- Every stream ends with `data: [DONE]`.

Lines end with a bare LF, so `curl -N` output reads cleanly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
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
    return ("".join(f"data: {line}\n" for line in lines) + "\n").encode()


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {name}\ndata: {payload}\n\n".encode()


def encode(frame: Frame) -> bytes:
    if isinstance(frame, TextDelta):
        return encode_text(frame.text)
    return encode_event(frame.name, frame.data)


class SSEResponse(EventSourceResponse):
    """sse-starlette's response, minus a cancel scope per message when no send timeout is set
    (it wraps every send in one, which costs more than the send on a fast stream)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)
