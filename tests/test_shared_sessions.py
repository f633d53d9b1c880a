"""Two server processes sharing one session store (Redis, PostgreSQL or SQLite): any worker serves
any turn, one turn at a time across workers, a killed worker's lock lapses, history survives a
restart, and a DELETE on one worker stops a turn running on another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app import live_server
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import clean_env, server_processes
from tests.support.session_backends import session_settings

BACKENDS = ["redis", "postgresql", "sqlite"]
LOCK_SECONDS = 1.5


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A fake upstream, and a factory of server processes that share one session store."""
    fake = FakeOpenAI(tokens=6)
    async with (
        session_settings(request.param, tmp_path) as chosen,
        live_server(fake) as upstream,  # type: ignore[arg-type]
    ):
        counter = iter(range(100))

        def workers(count: int) -> Any:
            return server_processes([worker_env() for _ in range(count)], tmp_path)

        def worker_env() -> dict[str, str]:
            n = next(counter)
            return clean_env(
                OPENAI_API_KEY="sk-fake",
                OPENAI_BASE_URL=f"{upstream}/v1",
                OPENAI_API="chat_completions",
                MODEL="fake",
                MODEL_RETRY_BACKOFF_SECONDS="0.05",
                SESSION_LOCK_SECONDS=str(LOCK_SECONDS),
                DATABASE_URL=f"sqlite:///{tmp_path}/records.db",
                OUTBOX_PATH=str(tmp_path / f"outbox-{n}.db"),
                **{key.upper(): str(value) for key, value in chosen.items()},
            )

        yield workers, fake


async def ask(url: str, session_id: str, message: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post(
            "/chat", json={"message": message, "session_id": session_id, "stream": False}
        )


async def test_a_turn_on_one_worker_is_remembered_on_the_other(cluster: Any) -> None:
    workers, fake = cluster
    async with workers(2) as (a, b):
        first = await ask(a.base_url, "x1", "first message here")
        second = await ask(b.base_url, "x1", "second one")
        async with httpx.AsyncClient() as client:
            listed = (await client.get(f"{a.base_url}/sessions")).json()
            history = (await client.get(f"{b.base_url}/sessions/x1")).json()
    assert first.json()["reply"].startswith("[1] first")
    assert second.json()["reply"].startswith("[2] second")  # b sent both user messages
    assert [(s["session_id"], s["turns"]) for s in listed["sessions"]] == [("x1", 2)]
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]


async def test_simultaneous_turns_on_two_workers_give_exactly_one_409(cluster: Any) -> None:
    workers, fake = cluster
    fake.tokens, fake.delay = 40, 0.02
    async with workers(2) as (a, b):
        await ask(a.base_url, "race", "warm up")
        replies = await asyncio.gather(
            ask(a.base_url, "race", "from a"), ask(b.base_url, "race", "from b")
        )
    assert sorted(r.status_code for r in replies) == [200, 409]
    refused = next(r for r in replies if r.status_code == 409)
    assert refused.json()["error"]["code"] == "session_busy"


async def test_a_killed_workers_session_is_usable_after_the_lock_lapses(cluster: Any) -> None:
    workers, fake = cluster
    fake.tokens, fake.delay = 400, 0.05
    async with workers(2) as (a, b):
        async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as client:
            payload = {"message": "a long story", "session_id": "k1"}
            async with client.stream("POST", "/chat", json=payload) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: [1]"):
                        break
                a.kill_hard()
        fake.tokens, fake.delay = 6, 0.0
        blocked = await ask(b.base_url, "k1", "anyone there?")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_SECONDS + 5
        while (reply := await ask(b.base_url, "k1", "anyone there?")).status_code == 409:
            assert loop.time() < deadline, "the dead worker's lock never lapsed"
            await asyncio.sleep(0.2)
    assert blocked.status_code == 409
    assert reply.status_code == 200
    assert reply.json()["reply"].startswith("[")


async def test_history_survives_a_restart(cluster: Any) -> None:
    workers, _ = cluster
    async with workers(1) as (a,):
        await ask(a.base_url, "r1", "before the restart")
    async with workers(1) as (again,):
        async with httpx.AsyncClient() as client:
            history = (await client.get(f"{again.base_url}/sessions/r1")).json()
        after = await ask(again.base_url, "r1", "after the restart")
    assert history["messages"][0]["content"] == "before the restart"
    assert after.json()["reply"].startswith("[2] after")


async def test_delete_on_one_worker_stops_a_turn_on_the_other(cluster: Any) -> None:
    workers, fake = cluster
    fake.tokens, fake.delay = 400, 0.05
    async with workers(2) as (a, b):
        async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as client:
            payload = {"message": "long", "session_id": "d1"}
            async with client.stream("POST", "/chat", json=payload) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("data: [1]"):
                        break
                async with httpx.AsyncClient() as other:
                    deleted = await other.delete(f"{b.base_url}/sessions/d1")
                rest = [line async for line in lines]
    assert deleted.json()["cancelled_turn"] is True
    errors = [json.loads(x.removeprefix("data: ")) for x in rest if x.startswith('data: {"code"')]
    assert errors == [
        {
            "code": "cancelled",
            "message": "This conversation was closed while the answer was running.",
        }
    ]
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
