"""The Streamlit front end's stream (`POST /query/stream`): the reply's text and nothing else.

Each text delta is one SSE event (`data: <chunk>`), so a client reading lines with requests'
`iter_lines()` shows each chunk as it comes, and an SSE parser joins them back exactly (a delta
with a line break is one event of several `data:` lines: a line reader sees each line). Tool
calls and handoffs are not sent; a failure is an `error` event with our JSON error, after which
the stream ends. The end of the stream is the end of the answer (no end marker a line reader
would print).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from townhall.errors import error_body
from townhall.protocols.sse import Pacer, encode_event, encode_text
from townhall.turns.events import Failed, TextDelta
from townhall.turns.pipeline import OpenTurn


async def text_lines(turn: OpenTurn) -> AsyncIterator[bytes]:
    pacer = Pacer()
    try:
        async with aclosing(turn.events):
            async for event in turn.events:
                turn.observe(event)
                if isinstance(event, TextDelta):
                    if chunk := encode_text(event.text):
                        yield chunk
                        await pacer.sent(len(chunk))
                elif isinstance(event, Failed):
                    yield encode_event("error", error_body(event.code, event.message))
    finally:
        await turn.release()
