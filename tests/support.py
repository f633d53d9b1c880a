"""Shared test helpers: settings without the environment, ASGI and uvicorn clients, SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from agents.items import TResponseStreamEvent
from agents.testing import ModelCall
from fastapi import FastAPI
from httpx_sse import EventSource
from openai.types.responses import ResponseTextDeltaEvent

from townhall.settings import Settings


def make_settings(**overrides: Any) -> Settings:
    """Settings built from explicit values only: the test machine's environment never leaks in.
    Model retries back off for milliseconds, not seconds; the GC of the test process is left
    alone (tuning it is a server-process policy)."""
    return Settings.model_validate(
        {
            "tracing": "off",
            "model_retry_backoff_seconds": 0.02,
            "gc_tuning": False,
            # live_server's teardown ends turns at once, as after a grace run out.
            "shutdown_grace_seconds": 0,
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client speaking ASGI directly (note: it buffers whole streaming responses)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@contextlib.asynccontextmanager
async def live_server(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """The app behind a real uvicorn server on 127.0.0.1 (a free port by default), in this loop."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started, limit=10)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll an observable condition instead of sleeping for a guessed time."""
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def delta(text: str, sequence: int = 0) -> TResponseStreamEvent:
    return ResponseTextDeltaEvent(
        type="response.output_text.delta",
        item_id="msg-1",
        output_index=0,
        content_index=0,
        delta=text,
        logprobs=[],
        sequence_number=sequence,
    )


class SlowStream:
    """A scripted model stream that sends `count` deltas, `gap` seconds apart, and records how many
    it sent and whether it was closed early (the run was cancelled)."""

    def __init__(self, count: int = 500, gap: float = 0.02, fail_after: int | None = None) -> None:
        self.count = count
        self.gap = gap
        self.fail_after = fail_after
        self.sent = 0
        self.closed = False
        self.first_sent = asyncio.Event()

    async def __call__(self, call: ModelCall) -> AsyncIterator[TResponseStreamEvent]:
        try:
            for index in range(self.count):
                if self.fail_after is not None and index == self.fail_after:
                    raise RuntimeError("upstream exploded: secret sk-test-123 in /srv/app.py")
                yield delta(f"tok{index} ", index)
                self.sent += 1
                self.first_sent.set()
                await asyncio.sleep(self.gap)
        finally:
            self.closed = True


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
