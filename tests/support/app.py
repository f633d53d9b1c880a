"""The app under test: settings without the environment, an in-process ASGI client, the app
served by a real uvicorn on 127.0.0.1, and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

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
            # A client that leaves cancels its turn at once (no wait for a resume); the tests of
            # resumable streams set their own grace.
            "resume_grace_seconds": 0,
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
async def live_server(app: FastAPI, port: int = 0, http: str = "auto") -> AsyncIterator[str]:
    """The app behind a real uvicorn server on 127.0.0.1 (a free port by default), in this loop;
    `http` picks uvicorn's HTTP implementation (h11 or httptools)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http,  # type: ignore[arg-type]
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
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
