"""SIGTERM to a real `uvicorn api:app` process while residents are reading answers.

New turns get 503 shutting_down with Retry-After; answers that finish within the grace finish
normally; the rest end with an `error` event (server_restarting) and `data: [DONE]`, what they
produced is kept in the conversation, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.app import live_server
from tests.support.chatkit_client import user_input
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import ServerProcess, clean_env, server_processes

GRACE = 2.0


def env_for(upstream: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        OPENAI_API_KEY="sk-fake",
        OPENAI_BASE_URL=f"{upstream}/v1",
        OPENAI_API="responses",
        MODEL="fake",
        SHUTDOWN_GRACE_SECONDS=str(GRACE),
        SESSION_STORE=f"sqlite:///{tmp_path}/sessions.db",
        DATABASE_URL=f"sqlite:///{tmp_path}/records.db",
        OUTBOX_PATH=str(tmp_path / "outbox.db"),
        **extra,
    )


async def read_stream(
    client: httpx.AsyncClient, session_id: str, started: asyncio.Event
) -> list[tuple[str, str]]:
    """(event, data) pairs of one /chat stream, read to its end."""
    frames: list[tuple[str, str]] = []
    event = "message"
    payload = {"message": f"tell me a story {session_id}", "session_id": session_id}
    async with client.stream("POST", "/chat", json=payload) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((event, line.removeprefix("data: ")))
                if event == "message":
                    started.set()
                event = "message"
    return frames


async def wait_exit(server: ServerProcess, limit: float = 30) -> int:
    deadline = time.monotonic() + limit
    while (code := server.process.poll()) is None:
        if time.monotonic() > deadline:
            raise AssertionError("the server did not exit")
        await asyncio.sleep(0.02)
    return code


async def test_sigterm_drains_live_streams_then_exits_cleanly(tmp_path: Path) -> None:
    fake = FakeOpenAI(tokens=400, delay=0.05)  # 20 s answers: longer than the grace
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        env = env_for(upstream, tmp_path)
        async with server_processes([env], tmp_path) as (server,):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                started = [asyncio.Event() for _ in range(3)]
                streams = [
                    asyncio.create_task(read_stream(client, f"live-{n}", started[n]))
                    for n in range(3)
                ]
                await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 30)
                sent_at = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                refused = await client.post("/chat", json={"message": "hello?"})
                health = await client.get("/health")
                frames = await asyncio.wait_for(asyncio.gather(*streams), 30)
                ended_after = time.monotonic() - sent_at
            code = await wait_exit(server)
            exited_after = time.monotonic() - sent_at
        # The same conversations, from a new process on the same session store.
        async with server_processes([env], tmp_path) as (restarted,):
            async with httpx.AsyncClient(base_url=restarted.base_url) as client:
                history = (await client.get("/sessions/live-0")).json()
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert int(refused.headers["retry-after"]) > 0
    assert health.status_code == 503 and health.json()["checks"]["server"]["status"] == "down"
    for stream in frames:
        errors = [json.loads(data) for event, data in stream if event == "error"]
        assert [e["code"] for e in errors] == ["server_restarting"]
        assert "Traceback" not in errors[0]["message"]
        assert stream[-1] == ("message", "[DONE]")
        assert sum(1 for event, _ in stream if event == "message") > 2  # text came first
    assert GRACE <= ended_after < GRACE + 5
    assert code == 0 and exited_after < GRACE + 8
    roles = [m["role"] for m in history["messages"]]
    assert roles == ["user", "assistant"]
    assert "[interrupted: server restart]" in history["messages"][1]["content"]


async def test_answers_that_finish_within_the_grace_finish_normally(tmp_path: Path) -> None:
    fake = FakeOpenAI(tokens=20, delay=0.03)  # ~0.6 s answers: well inside the grace
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        async with server_processes([env_for(upstream, tmp_path)], tmp_path) as (server,):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                started = asyncio.Event()
                stream = asyncio.create_task(read_stream(client, "short", started))
                await asyncio.wait_for(started.wait(), 30)
                sent_at = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                frames = await asyncio.wait_for(stream, 30)
            code = await wait_exit(server)
            exited_after = time.monotonic() - sent_at
    assert [event for event, _ in frames if event not in ("message",)] == ["session", "done"]
    assert frames[-1] == ("message", "[DONE]")
    assert code == 0 and exited_after < GRACE  # it did not wait out the grace


async def test_a_chatkit_stream_ends_with_its_error_event(tmp_path: Path) -> None:
    fake = FakeOpenAI(tokens=400, delay=0.05)
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        async with server_processes([env_for(upstream, tmp_path)], tmp_path) as (server,):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                events: list[dict[str, Any]] = []
                signalled_at: float | None = None
                body = {"type": "threads.create", "params": {"input": user_input("a story")}}
                async with client.stream("POST", "/chatkit", json=body) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        events.append(json.loads(line.removeprefix("data: ")))
                        if events[-1]["type"] == "thread.item.updated" and signalled_at is None:
                            server.process.send_signal(signal.SIGTERM)
                            signalled_at = time.monotonic()
                ended_after = time.monotonic() - (signalled_at or 0)
            code = await wait_exit(server)
    assert events[-1]["type"] == "error"
    assert events[-1]["allow_retry"] is True
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert [item["type"] for item in done][-1] == "assistant_message"  # the partial, kept
    assert GRACE <= ended_after < GRACE + 5
    assert code == 0


async def read_lines(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], started: asyncio.Event
) -> list[str]:
    """Every non-empty line of a front end's stream, read to its end."""
    lines: list[str] = []
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.strip():
                lines.append(line)
                if len(lines) >= 3:
                    started.set()
    return lines


async def test_every_front_end_stream_ends_cleanly_on_sigterm(tmp_path: Path) -> None:
    """Streamlit's stream, the Assistants run stream and useChat's stream each end with their
    own failure, saying the server restarts, `/query` answers 503 with it, and the process exits
    0."""
    fake = FakeOpenAI(tokens=400, delay=0.05)
    ui_message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "a story"}]}
    bodies = {
        "/query/stream": {"prompt": "a story", "session_id": "fe-q"},
        "/chat/stream": {"content": "a story", "threadId": "thread_fe"},
        "/api/chat": {"id": "fe-ui", "messages": [ui_message], "trigger": "submit-message"},
    }
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        async with server_processes([env_for(upstream, tmp_path)], tmp_path) as (server,):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                started = {path: asyncio.Event() for path in bodies}
                streams = {
                    path: asyncio.create_task(read_lines(client, path, body, started[path]))
                    for path, body in bodies.items()
                }
                whole = asyncio.create_task(
                    client.post("/query", json={"prompt": "a story", "session_id": "fe-whole"})
                )
                await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started.values())), 30)
                server.process.send_signal(signal.SIGTERM)
                ended = await asyncio.wait_for(asyncio.gather(*streams.values()), 30)
                answered = await asyncio.wait_for(whole, 30)
            code = await wait_exit(server)
    query, assistant, ui = ended
    # The whole-answer request: our JSON error, 503, saying the server restarts.
    assert answered.status_code == 503
    assert answered.json()["error"]["code"] == "server_restarting"
    assert query[-2:] == [
        "event: error",
        'data: {"error":{"code":"server_restarting","message":"The server restarted before the'
        ' answer finished. Please send your message again."}}',
    ]
    last_run = json.loads(assistant[-1])
    assert last_run["event"] == "thread.run.failed"
    assert last_run["data"]["last_error"]["code"] == "server_restarting"
    chunks = [json.loads(line.removeprefix("data: ")) for line in ui[:-1]]
    assert [c["type"] for c in chunks[-2:]] == ["error", "finish"]
    assert chunks[-2]["errorText"].startswith("The server restarted")
    assert ui[-1] == "data: [DONE]"
    assert code == 0
