"""The README's echo transcript, byte for byte, through ASGI and a real uvicorn process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api import create_app
from tests.support.app import asgi_client, make_settings
from tests.support.frames import read_frames
from tests.support.processes import clean_env, server_process

HELLO = {"message": "Hello from the backend", "session_id": "test123"}
# Each frame's `id:` is <the turn's start, ms since the epoch>-<n>; "T" stands for the first part.
EXPECTED = (
    b'id: T-0\nevent: session\ndata: {"session_id":"test123"}\n\n'
    b"id: T-1\ndata: Hello\n\n"
    b"id: T-2\ndata: from\n\n"
    b"id: T-3\ndata: the\n\n"
    b"id: T-4\ndata: backend\n\n"
    b'id: T-5\nevent: done\ndata: {"reply":"Hello from the backend","usage":{"requests":1,'
    b'"input_tokens":4,"output_tokens":4,"total_tokens":8}}\n\n'
    b"id: T-6\ndata: [DONE]\n\n"
)
README = Path(__file__).resolve().parent.parent / "README.md"


def normalized(body: bytes) -> bytes:
    """The transcript with its turn's start time as T (one turn: one start time)."""
    turns = set(re.findall(rb"^id: ([0-9]+)-[0-9]+$", body, re.MULTILINE))
    assert len(turns) == 1, turns
    return re.sub(rb"^id: [0-9]+-", b"id: T-", body, flags=re.MULTILINE)


def test_the_readme_shows_this_transcript() -> None:
    text = README.read_text()
    block = text.split("prints, in echo mode (a real transcript):\n\n```text\n", 1)[1]
    assert normalized(block.split("```", 1)[0].encode()) == EXPECTED


async def test_echo_transcript_through_asgi() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        response = await client.post("/chat", json=HELLO)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-session-id"] == "test123"
    assert normalized(response.content) == EXPECTED


@pytest.fixture(scope="module")
def uvicorn_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`uvicorn api:app` as its own process, on the embedded defaults (no key, no services)."""
    data = tmp_path_factory.mktemp("data")
    env = clean_env(DATABASE_URL=f"sqlite:///{data}/townhall.db", OUTBOX_PATH=str(data / "o.db"))
    with server_process(env, data / "server.log") as server:
        yield server.base_url


async def test_echo_transcript_through_uvicorn_process(uvicorn_process: str) -> None:
    async with httpx.AsyncClient(base_url=uvicorn_process, timeout=10) as client:
        async with client.stream("POST", "/chat", json=HELLO | {"session_id": "proc1"}) as response:
            body = await response.aread()
    assert response.status_code == 200
    assert normalized(body) == EXPECTED.replace(b"test123", b"proc1")


async def test_echo_transcript_parses_with_a_real_sse_parser(uvicorn_process: str) -> None:
    async with httpx.AsyncClient(base_url=uvicorn_process, timeout=10) as client:
        async with client.stream("POST", "/chat", json=HELLO | {"session_id": "proc2"}) as response:
            frames = await read_frames(response)
    assert [(f.event, f.data) for f in frames] == [
        ("session", '{"session_id":"proc2"}'),
        ("message", "Hello"),
        ("message", "from"),
        ("message", "the"),
        ("message", "backend"),
        ("done", frames[5].data),
        ("message", "[DONE]"),
    ]
    assert frames[5].json()["reply"] == "Hello from the backend"


async def test_service_info_and_health_say_echo_mode(uvicorn_process: str) -> None:
    async with httpx.AsyncClient(base_url=uvicorn_process, timeout=10) as client:
        info = (await client.get("/")).json()
        health = await client.get("/health")
    assert info["status"] == "ok"
    assert info["service"] == "Digital Town Hall API"
    assert info["model"] == "echo"
    assert "OPENAI_API_KEY" in info["notice"]
    assert set(info["endpoints"]) >= {"chat", "sessions", "health"}
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert health.json()["checks"]["model"]["detail"]["mode"] == "echo"
