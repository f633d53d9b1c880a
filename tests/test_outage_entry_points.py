"""A database or Redis outage seen from every entry point: 503 with the one JSON error shape and
Retry-After, never a 500 or a stack trace; and service resumes when the store is back.

PostgreSQL is reached through a proxy whose connections are cut (a real outage); Redis is a
real client pointed at a port where nothing listens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from api import create_app
from tests.support.app import asgi_client, free_port, make_settings
from tests.support.backends import backend


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert "Traceback" not in response.text and "asyncpg" not in response.text


async def test_postgresql_cut_under_sessions_and_chatkit_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with backend("postgresql", tmp_path) as chosen:
        dsn = chosen.settings["database_url"]
        settings = make_settings(**chosen.settings, session_store=dsn)
        async with asgi_client(create_app(settings)) as client:
            before = await client.post("/chat", json={"message": "hello", "session_id": "o1"})
            kit = {"type": "threads.list", "params": {}}
            assert (await client.post("/chatkit", json=kit)).status_code == 200
            assert chosen.cut is not None and chosen.restore is not None
            chosen.cut()
            during = [
                await client.post("/chat", json={"message": "again", "session_id": "o1"}),
                await client.post("/chat", json={"message": "again", "stream": False}),
                await client.get("/sessions"),
                await client.get("/sessions/o1"),
                await client.delete("/sessions/o1"),
                await client.post("/chatkit", json=kit),
                await client.post(
                    "/chatkit",
                    json={"type": "items.list", "params": {"thread_id": "thr_x"}},
                ),
            ]
            health = await client.get("/health")
            chosen.restore()
            after = await client.post("/chat", json={"message": "back", "session_id": "o1"})
            after_kit = await client.post("/chatkit", json=kit)
    assert before.status_code == 200
    for response in during:
        assert_unavailable(response)
    assert health.status_code == 503  # the session store is required
    assert after.status_code == 200 and after.text.endswith("data: [DONE]\n\n")
    assert after_kit.status_code == 200
    assert "Traceback" not in caplog.text


async def test_redis_down_gives_503_not_500() -> None:
    settings = make_settings(session_store=f"redis://127.0.0.1:{free_port()}/0")
    async with asgi_client(create_app(settings)) as client:
        responses = [
            await client.post("/chat", json={"message": "hello", "session_id": "r1"}),
            await client.get("/sessions"),
            await client.get("/sessions/r1"),
        ]
    for response in responses:
        assert_unavailable(response)
