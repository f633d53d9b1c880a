"""A small HTTP/1.1 SSE client on raw asyncio streams, cheap enough to hold thousands of streams.

It posts a JSON body, reads the chunked response, and records when each text frame arrived and
how many words it carried (text frames are `data:` frames without an event name, except
`[DONE]`). With `upstream=True` it reads the fake upstream's own Responses stream instead (text:
`response.output_text.delta` events; the end: `response.completed`): the machine's floor, what
a client gets with no server in between.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamResult:
    ok: bool = False
    started: float = 0.0
    first_text: float | None = None
    finished: float | None = None
    words: int = 0
    text_times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_text is None else self.first_text - self.started

    @property
    def total(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    def gaps(self) -> list[float]:
        """Received gap before each token after the first (0 for tokens that shared a frame)."""
        times = self.text_times
        return [b - a for a, b in zip(times, times[1:], strict=False)]


async def stream_chat(
    host: str,
    port: int,
    message: str,
    session_id: str | None = None,
    keep_times: bool = False,
    upstream: bool = False,
) -> StreamResult:
    result = StreamResult(started=time.perf_counter())
    payload: dict[str, Any] = {"message": message}
    path = "/chat"
    if upstream:
        payload, path = {"model": "fake", "input": message, "stream": True}, "/v1/responses"
    elif session_id is not None:
        payload["session_id"] = session_id
    body = json.dumps(payload).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode() + body
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            result.error = head.split(b"\r\n", 1)[0].decode()
            return result
        chunked = b"chunked" in head.lower()
        await _read_events(reader, result, keep_times, chunked, upstream)
    except (OSError, asyncio.IncompleteReadError) as error:
        result.error = type(error).__name__
    finally:
        if writer is not None:
            writer.close()
    return result


async def _read_events(
    reader: asyncio.StreamReader,
    result: StreamResult,
    keep_times: bool,
    chunked: bool,
    upstream: bool,
) -> None:
    buffer = b""
    while True:
        if chunked:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            buffer += data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                break
            buffer += data
        if b"\n\n" not in buffer:
            continue
        *events, buffer = buffer.split(b"\n\n")
        now = time.perf_counter()
        for event in events:
            if upstream:
                text = _upstream_text(event)
                if text is None:
                    continue
            elif event.startswith((b"event:", b":")) or b"\nevent:" in event:
                continue
            else:
                text = b"\n".join(
                    line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")
                )
            if text == b"[DONE]":
                result.ok = True
                result.finished = now
                return
            if result.first_text is None:
                result.first_text = now
            words = len(text.split())
            result.words += words
            if keep_times:
                # One time per token, so a frame that carries several merged tokens counts as
                # the burst of frames it replaces: the first token waited, the rest came with it.
                result.text_times.extend([now] * words)
    result.finished = time.perf_counter()


def _upstream_text(event: bytes) -> bytes | None:
    """A Responses event's text delta, b"[DONE]" for its end, None for the other events."""
    if event.startswith(b"event: response.output_text.delta"):
        data = event.split(b"\ndata: ", 1)[1]
        return str(json.loads(data)["delta"]).encode()
    if event.startswith(b"event: response.completed"):
        return b"[DONE]"
    return None
