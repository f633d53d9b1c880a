"""Admission by capacity (MAX_CONCURRENT_TURNS) on a real uvicorn server with the fake upstream
answering slowly: past the limit a new turn gets 503 `at_capacity` with Retry-After before any
stream starts, on /chat and on ChatKit alike, and changes nothing; every way a turn can end
(finished, the client left, refused by a later check) gives its slot back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from api import create_app
from tests.support.app import live_server, wait_for
from tests.support.chatkit_client import user_input
from tests.support.upstream import Upstream

LIMIT = 2


@contextlib.asynccontextmanager
async def server(upstream: Upstream, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    upstream.fake.tokens = 60
    upstream.fake.delay = 0.05  # three seconds an answer: long enough to hold slots
    settings = upstream.settings(
        max_concurrent_turns=LIMIT,
        database_url=f"sqlite:///{tmp_path}/records.db",
        outbox_path=str(tmp_path / "outbox.db"),
    )
    async with (
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def answering(client: httpx.AsyncClient, session_id: str) -> AsyncIterator[Any]:
    """A /chat stream that has started answering (its first text frame is in), held open."""
    payload = {"message": f"tell me a story {session_id}", "session_id": session_id}
    async with client.stream("POST", "/chat", json=payload) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        event = "message"
        async for line in lines:
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if event == "message":
                    break  # text: the model is answering
                event = "message"
        yield lines


async def turns(client: httpx.AsyncClient) -> dict[str, int]:
    health = (await client.get("/health")).json()
    return health["checks"]["turns"]["detail"]  # type: ignore[no-any-return]


async def test_past_the_limit_a_turn_is_refused_before_it_starts_and_changes_nothing(
    upstream: Upstream, tmp_path: Path
) -> None:
    async with server(upstream, tmp_path) as client:
        async with answering(client, "first"), answering(client, "second"):
            assert (await turns(client))["answering"] == LIMIT
            refused = await client.post("/chat", json={"message": "hello", "session_id": "third"})
            chatkit = await client.post(
                "/chatkit",
                json={"type": "threads.create", "params": {"input": user_input("hello")}},
            )
            served_while_full = upstream.fake.served
            missing = await client.get("/sessions/third")
            threads = await client.post("/chatkit", json={"type": "threads.list", "params": {}})
            state = await turns(client)
    for response in (refused, chatkit):
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "at_capacity"
        assert (
            "try" in response.json()["error"]["message"]
            or "again" in (response.json()["error"]["message"])
        )
    assert served_while_full == 2  # the refused turns never reached the model
    assert missing.status_code == 404  # no conversation was made for the refused one
    assert threads.json()["data"] == []  # nor a ChatKit thread
    assert state == {"answering": LIMIT, "limit": LIMIT, "refused": 2}


async def test_a_slot_comes_back_when_a_turn_finishes_when_its_client_leaves_and_when_refused(
    upstream: Upstream, tmp_path: Path
) -> None:
    async with server(upstream, tmp_path) as client:
        # Finished: a whole answer, then both slots are free again.
        upstream.fake.tokens = 3
        done = await client.post("/chat", json={"message": "hi", "session_id": "a"})
        assert done.status_code == 200 and "[DONE]" in done.text
        await wait_for_answering(client, 0)
        upstream.fake.tokens = 60
        # The client leaves mid-answer: its slot comes back.
        async with answering(client, "b"):
            assert (await turns(client))["answering"] == 1
        await wait_for_answering(client, 0)
        # Refused by a later check (the conversation is busy: 409): no slot is kept for it.
        async with answering(client, "c"):
            busy = await client.post("/chat", json={"message": "again", "session_id": "c"})
            assert busy.status_code == 409
            assert (await turns(client))["answering"] == 1
            # So the second slot is still there for someone else.
            async with answering(client, "d"):
                assert (await turns(client))["answering"] == LIMIT
        await wait_for_answering(client, 0)
        # A ChatKit answer gives its slot back too, read to its end or left.
        upstream.fake.tokens = 3
        thread = await client.post(
            "/chatkit", json={"type": "threads.create", "params": {"input": user_input("hi")}}
        )
        assert thread.status_code == 200 and "thread.item.done" in thread.text
        await wait_for_answering(client, 0)
        upstream.fake.tokens = 60
        payload = {"type": "threads.create", "params": {"input": user_input("a story")}}
        async with client.stream("POST", "/chatkit", json=payload) as response:
            async for line in response.aiter_lines():
                if "assistant_message.content_part.text_delta" in line:
                    break
        await wait_for_answering(client, 0)


async def wait_for_answering(client: httpx.AsyncClient, count: int, limit: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while (await turns(client))["answering"] != count:
        assert asyncio.get_running_loop().time() < deadline, f"slots not back to {count}"
        await asyncio.sleep(0.05)


async def test_no_limit_when_zero(upstream: Upstream, tmp_path: Path) -> None:
    upstream.fake.tokens = 60
    upstream.fake.delay = 0.05
    settings = upstream.settings(
        max_concurrent_turns=0,
        database_url=f"sqlite:///{tmp_path}/records.db",
        outbox_path=str(tmp_path / "outbox.db"),
    )
    async with (
        live_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        async with contextlib.AsyncExitStack() as streams:
            for n in range(5):
                await streams.enter_async_context(answering(client, f"s{n}"))
            assert (await turns(client))["answering"] == 5
        await wait_for(lambda: upstream.fake.open_streams == 0, limit=5)
