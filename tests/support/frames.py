"""Reading SSE the way clients do: httpx-sse's parser over a response or raw bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource


@dataclass(frozen=True)
class Frame:
    event: str  # "message" for plain data events, as the SSE spec names them
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def read_frames(response: httpx.Response) -> list[Frame]:
    """Parse a streamed response with a real SSE parser (httpx-sse)."""
    return [Frame(sse.event, sse.data) async for sse in EventSource(response).aiter_sse()]


def named(frames: Sequence[Frame], event: str) -> list[Any]:
    return [frame.json() for frame in frames if frame.event == event]


def text_of(frames: Sequence[Frame]) -> str:
    return "".join(
        frame.data for frame in frames if frame.event == "message" and frame.data != "[DONE]"
    )


def parse_sse(stream: bytes) -> list[tuple[str, str]]:
    """Feed bytes through httpx-sse's line and event decoders (a spec-following parser)."""
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    lines = SSELineDecoder()
    decoder = SSEDecoder()
    events = []
    for line in lines.decode(stream.decode()) + lines.flush():
        event = decoder.decode(line)
        if event is not None:
            events.append((event.event, event.data))
    return events


_ID_LINE = re.compile(r"^id: [^\n]*\n", re.MULTILINE)


def without_ids(text: str) -> str:
    """An SSE body without its `id:` lines, for tests that read /chat's blocks as text."""
    return _ID_LINE.sub("", text)


IdFrame = tuple[str, str, str]  # (id, event, data): a frame with the id a client resumes from


async def read_id_frames(response: httpx.Response, limit: int | None = None) -> list[IdFrame]:
    """The response's frames with their ids (the first `limit`, then the reading stops: the
    caller's connection is then dropped, as a client on a train drops it)."""
    frames: list[IdFrame] = []
    async for sse in EventSource(response).aiter_sse():
        frames.append((sse.id, sse.event, sse.data))
        if limit is not None and len(frames) == limit:
            break
    return frames


def id_frames_text(frames: Sequence[IdFrame]) -> str:
    """The reply text of (id, event, data) frames."""
    return "".join(data for _, event, data in frames if event == "message" and data != "[DONE]")
