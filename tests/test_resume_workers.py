"""Resumable streams across workers: two server processes sharing Redis. A client drops a /chat
stream on one worker and resumes on the other (nothing lost, nothing twice); the turn's worker
keeps the turn past its grace while the other follows it; a reader on the other worker of a
turn whose worker is killed (kill -9) ends with `interrupted` and [DONE]; the AI SDK's resume
(GET /api/chat/{id}/stream, read by the `ai` package) on the other worker gets the whole
message under its original id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from tests.support.app import live_server
from tests.support.fake_openai import FakeOpenAI
from tests.support.frames import IdFrame as Frame
from tests.support.frames import id_frames_text as text
from tests.support.frames import read_id_frames as frames_of
from tests.support.node import node
from tests.support.processes import clean_env, server_processes
from tests.support.session_backends import session_settings

LOCK_SECONDS = 1.5


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Any]:
    fake = FakeOpenAI(tokens=80, delay=0.03)
    async with (
        session_settings("redis", tmp_path) as chosen,
        live_server(fake) as upstream,  # type: ignore[arg-type]
    ):

        def workers(count: int, api: str = "responses", **settings: str) -> Any:
            envs = [
                clean_env(
                    OPENAI_API_KEY="sk-fake",
                    OPENAI_BASE_URL=f"{upstream}/v1",
                    OPENAI_API=api,
                    MODEL="fake",
                    RATE_LIMIT_PER_MINUTE="0",
                    SESSION_LOCK_SECONDS=str(LOCK_SECONDS),
                    DATABASE_URL=f"sqlite:///{tmp_path}/records.db",
                    OUTBOX_PATH=str(tmp_path / f"outbox-{n}.db"),
                    **{key.upper(): str(value) for key, value in chosen.items()},
                    **settings,
                )
                for n in range(count)
            ]
            return server_processes(envs, tmp_path)

        yield workers, fake


async def chat(base: str, session_id: str, limit: int | None = None) -> list[Frame]:
    payload = {"message": "a long story about the pothole", "session_id": session_id}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with client.stream("POST", "/chat", json=payload) as response:
            assert response.status_code == 200
            return await frames_of(response, limit)


async def resume(base: str, session_id: str, last: str | None = None) -> tuple[int, list[Frame]]:
    headers = {"Last-Event-ID": last} if last else {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        url = f"/sessions/{session_id}/stream"
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, [("", "status", response.text)]
            return 200, await frames_of(response)


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_a_stream_dropped_on_one_worker_resumes_on_the_other(cluster: Any, api: str) -> None:
    workers, fake = cluster
    async with workers(2, api) as (a, b):
        dropped = await chat(a.base_url, "train", limit=8)
        status, rest = await resume(b.base_url, "train", dropped[-1][0])
        _, replay_b = await resume(b.base_url, "train")  # after the end: the whole turn
        _, replay_a = await resume(a.base_url, "train")
        after_end = await resume(b.base_url, "train", rest[-1][0])
        gone = await resume(b.base_url, "train", "1-3")
        malformed = await resume(b.base_url, "train", "three")
    assert status == 200
    assert dropped + rest == replay_b == replay_a
    assert len({frame_id for frame_id, _, _ in replay_b}) == len(replay_b)
    assert [f[1] for f in rest[-2:]] == ["done", "message"] and rest[-1][2] == "[DONE]"
    assert text(replay_b) == json.loads(rest[-2][2])["reply"]
    assert text(replay_b).startswith("[1] a long story")
    assert after_end[0] == 204
    assert gone[0] == 410 and json.loads(gone[1][0][2])["error"]["code"] == "stream_position_gone"
    assert malformed[0] == 422


async def test_a_reader_on_another_worker_keeps_the_turn_past_its_grace(cluster: Any) -> None:
    workers, fake = cluster
    fake.tokens, fake.delay = 120, 0.03  # about 3.6 s, well past the 1 s grace
    async with workers(2, RESUME_GRACE_SECONDS="1") as (a, b):
        dropped = await chat(a.base_url, "far", limit=3)
        status, rest = await resume(b.base_url, "far", dropped[-1][0])
    assert status == 200
    assert [f[1] for f in rest if f[1] in ("done", "error")] == ["done"]
    assert len(json.loads(rest[-2][2])["reply"].split()) == 120


async def test_nobody_following_anywhere_cancels_after_the_grace(cluster: Any) -> None:
    workers, fake = cluster
    fake.tokens, fake.delay = 2000, 0.01
    async with workers(2, RESUME_GRACE_SECONDS="1") as (a, b):
        dropped = await chat(a.base_url, "lost", limit=3)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while fake.open_streams:
            assert loop.time() < deadline, "the abandoned turn never stopped"
            await asyncio.sleep(0.1)
        status, rest = await resume(b.base_url, "lost", dropped[-1][0])
    assert status == 200
    assert json.loads(rest[-2][2])["code"] == "abandoned" and rest[-1][2] == "[DONE]"


async def test_a_reader_of_a_killed_workers_turn_ends_with_interrupted(cluster: Any) -> None:
    workers, fake = cluster
    fake.tokens, fake.delay = 2000, 0.02
    async with workers(2) as (a, b):
        dropped = await chat(a.base_url, "crash", limit=3)
        async with httpx.AsyncClient(base_url=b.base_url, timeout=30) as client:
            headers = {"Last-Event-ID": dropped[-1][0]}
            async with client.stream("GET", "/sessions/crash/stream", headers=headers) as response:
                assert response.status_code == 200
                frames: list[Frame] = []
                events = EventSource(response).aiter_sse()
                async with asyncio.timeout(30):
                    async for sse in events:
                        frames.append((sse.id, sse.event, sse.data))
                        if len(frames) == 5:
                            a.kill_hard()
    assert len(frames) > 5
    assert frames[-2][1] == "error" and json.loads(frames[-2][2])["code"] == "interrupted"
    assert frames[-1][2] == "[DONE]"


async def test_the_ai_sdk_resumes_a_running_chat_on_the_other_worker(cluster: Any) -> None:
    workers, fake = cluster
    async with workers(2) as (a, b):
        body = {
            "id": "ui-train",
            "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as client:
            async with client.stream("POST", "/api/chat", json=body) as response:
                first = [json.loads(s.data) async for s in _first(response, 4)]
        resumed = await node("resume_chat.mjs", b.base_url, "ui-train")
        after = await node("resume_chat.mjs", b.base_url, "ui-train")
        never = await node("resume_chat.mjs", b.base_url, "no-such-chat")
    assert first[0]["type"] == "start"
    assert resumed["status"] == 200 and not resumed["errors"] and resumed["thrown"] is None
    assert resumed["message"]["id"] == first[0]["messageId"]  # the SDK replaces, not adds
    assert resumed["text"].startswith("[1] hi") and len(resumed["text"].split()) == 80
    assert after["status"] == 204 and never["status"] == 204


async def _first(response: httpx.Response, count: int) -> AsyncIterator[Any]:
    seen = 0
    async for sse in EventSource(response).aiter_sse():
        yield sse
        seen += 1
        if seen == count:
            return
