"""The Streamlit front end's stream (`POST /query/stream`): the reply's text and nothing else.

Each text delta is one SSE event (`data: <chunk>`), so a client reading lines with requests'
`iter_lines()` shows each chunk as it comes, and an SSE parser joins them back exactly (a delta
with a line break is one event of several `data:` lines: a line reader sees each line). Tool
calls and handoffs are not sent; a failure is an `error` event with our JSON error, after which
the stream ends. The end of the stream is the end of the answer (no end marker a line reader
would print).
"""

from __future__ import annotations

from townhall.errors import error_body
from townhall.protocols.sse import encode_event, encode_text
from townhall.turns.events import Failed, TextDelta, TurnEvent
from townhall.turns.frame_log import Started


class TextLines:
    """The FrameWriter of protocols.sse.written for this format."""

    def start(self, opened: Started) -> list[bytes]:
        return []

    def render(self, event: TurnEvent) -> list[bytes]:
        if isinstance(event, TextDelta):
            chunk = encode_text(event.text)
            return [chunk] if chunk else []
        if isinstance(event, Failed):
            return [encode_event("error", error_body(event.code, event.message))]
        return []

    def end(self) -> list[bytes]:
        return []
