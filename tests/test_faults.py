"""The server pointed at a fake OpenAI-compatible upstream that fails on purpose: it retries what
is safe (nothing streamed yet), ends every other stream with `error` then `[DONE]`, and stays
healthy. Both the Responses API and Chat Completions paths."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api import create_app
from tests.support.app import asgi_client, live_server, wait_for
from tests.support.fake_openai import FakeOpenAI
from tests.support.frames import without_ids
from tests.support.upstream import Upstream, serve_upstream

APIS = ["responses", "chat_completions"]


@contextlib.asynccontextmanager
async def server_on_fake(
    api: str, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeOpenAI]]:
    async with serve_upstream(tokens=8) as upstream:
        async with asgi_client(create_app(upstream.settings(api, **settings))) as client:
            yield client, upstream.fake


async def chat(client: httpx.AsyncClient, message: str = "hello there friend", **body: Any) -> str:
    response = await client.post("/chat", json={"message": message, **body})
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    return response.text


def reply_text(text: str) -> str:
    """The streamed reply: unnamed data frames (SSE strips one space after `data:`)."""
    blocks = [
        b for b in without_ids(text).split("\n\n") if b.startswith("data: ") and b != "data: [DONE]"
    ]
    return "".join(b.removeprefix("data: ") for b in blocks)


def error_codes(text: str) -> list[str]:
    import json

    return [
        json.loads(block.split("data: ", 1)[1])["code"]
        for block in without_ids(text).split("\n\n")
        if block.startswith("event: error")
    ]


@pytest.mark.parametrize("api", APIS)
async def test_a_healthy_upstream_streams_text_with_its_spaces(api: str) -> None:
    async with server_on_fake(api) as (client, fake):
        text = await chat(client, "hello there friend", session_id="h1")
        again = await chat(client, "second message", session_id="h1")
    # Deltas that arrive together may be merged into one frame; the text is the same.
    assert reply_text(text) == "[1] hello there friend hello there friend hello"
    assert '"reply":"[1] hello there friend hello there friend hello"' in text
    assert reply_text(again).startswith("[2]")  # the second request carried both user messages
    assert error_codes(text) == []
    assert fake.served == 2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("fault", ["429", "500"])
async def test_failures_before_any_text_are_retried(api: str, fault: str) -> None:
    async with server_on_fake(api) as (client, fake):
        fake.faults.extend([fault, fault])
        text = await chat(client)
    assert error_codes(text) == []
    assert reply_text(text).startswith("[1]")
    assert fake.served == 3


@pytest.mark.parametrize("api", APIS)
async def test_a_hanging_upstream_times_out_and_is_retried(api: str) -> None:
    async with server_on_fake(api, model_timeout_seconds=0.5) as (client, fake):
        fake.faults.append("hang")
        text = await chat(client)
    assert error_codes(text) == []
    assert fake.served == 2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("faults", "code"),
    [
        (["500", "500"], "model_unavailable"),
        (["429", "429"], "model_rate_limited"),
        (["hang", "hang"], "model_timeout"),
    ],
)
async def test_retries_run_out_into_a_resident_message(
    api: str, faults: list[str], code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with server_on_fake(api, model_max_retries=1, model_timeout_seconds=0.5) as (
        client,
        fake,
    ):
        fake.faults.extend(faults)
        text = await chat(client, session_id="out1")
        after = await chat(client, session_id="out1")
        health = await client.get("/health")
    assert error_codes(text) == [code]
    assert "sk-fake" not in text and "Traceback" not in text
    assert error_codes(after) == []
    # The failed turn's message stays in the history (the resident did say it); no answer to it.
    assert reply_text(after).startswith("[2]")
    assert health.json()["status"] == "healthy"
    assert_one_warning_and_no_traceback(caplog, code)


def assert_one_warning_and_no_traceback(caplog: pytest.LogCaptureFixture, code: str) -> None:
    """An expected upstream fault: one WARNING line naming its code (with the request id, as
    every line about a request has), and no traceback anywhere."""
    failed = [r for r in caplog.records if r.getMessage().startswith("turn failed")]
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in failed] == [
        ("WARNING", f"turn failed: {code}")
    ]
    assert "Traceback" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_a_stream_broken_after_text_is_not_replayed(
    api: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with server_on_fake(api) as (client, fake):
        fake.faults.append(fault)
        text = await chat(client, session_id="b1")
        sessions = (await client.get("/sessions/b1")).json()
        after = await chat(client, session_id="b1")
    assert reply_text(text).startswith("[1]")  # text had reached the client ...
    assert len(error_codes(text)) == 1  # ... so the failure is reported, not replayed
    assert fake.served == 2  # the broken request and the next turn: no replay in between
    assert sessions["busy"] is False
    assert error_codes(after) == []
    assert_one_warning_and_no_traceback(caplog, error_codes(text)[0])


async def test_no_upstream_stream_is_left_open_after_clients_leave(upstream: Upstream) -> None:
    fake = upstream.fake
    fake.tokens, fake.delay = 400, 0.01
    app = create_app(upstream.settings("responses"))
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        for n in range(5):
            async with client.stream("POST", "/chat", json={"message": f"long {n}"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:  "):
                        break
        await wait_for(lambda: fake.open_streams == 0, limit=3)
    assert fake.served == 5
