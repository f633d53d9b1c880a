"""API keys, ownership of conversations and threads, the admin key, and rate limits."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from api import create_app
from tests.support.app import asgi_client, make_settings
from tests.support.chatkit_client import ChatKitClient, thread_id_from
from tests.support.session_backends import session_settings
from townhall.http.auth import key_id
from townhall.turns.rate_limit import MemoryRateLimiter

KEYS = {"api_keys": "key-one-secret, key-two-secret", "admin_key": "admin-secret"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ONE, TWO, ADMIN = bearer("key-one-secret"), bearer("key-two-secret"), bearer("admin-secret")


async def test_without_keys_the_server_is_open_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with asgi_client(create_app(make_settings())) as client:
        assert (await client.get("/sessions")).status_code == 200
    assert "no API_KEYS set" in caplog.text


async def test_every_endpoint_but_the_open_ones_needs_a_valid_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with asgi_client(create_app(make_settings(**KEYS))) as client:
        open_paths = [await client.get(p) for p in ("/", "/health", "/demo", "/openapi.json")]
        refused = [
            await client.get("/sessions"),
            await client.get("/sessions", headers=bearer("wrong")),
            await client.get("/sessions", headers={"Authorization": "Basic a2V5LW9uZS1zZWNyZXQ="}),
            await client.post("/chat", json={"message": "hi"}),
            await client.post("/chatkit", json={"type": "threads.list", "params": {}}),
            await client.delete("/sessions/x"),
        ]
        allowed = await client.get("/sessions", headers=ONE)
    assert [r.status_code for r in open_paths] == [200, 200, 200, 200]
    for response in refused:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert allowed.status_code == 200
    for secret in ("key-one-secret", "key-two-secret", "admin-secret"):
        assert secret not in caplog.text


async def test_each_key_has_its_own_session_labels() -> None:
    """The same session_id sent by another key names another conversation: it can neither read,
    continue, delete nor detect the first one."""
    async with asgi_client(create_app(make_settings(**KEYS))) as client:
        mine = await client.post(
            "/chat", json={"message": "mine alone", "session_id": "s1"}, headers=ONE
        )
        snoop = await client.get("/sessions/s1", headers=TWO)
        never_used = await client.get("/sessions/s9", headers=TWO)
        theirs_turn = await client.post(
            "/chat", json={"message": "hello", "session_id": "s1", "stream": False}, headers=TWO
        )
        theirs_delete = await client.delete("/sessions/s1", headers=TWO)
        two_list = (await client.get("/sessions", headers=TWO)).json()
        one_view = (await client.get("/sessions/s1", headers=ONE)).json()
        admin_list = (await client.get("/sessions", headers=ADMIN)).json()
        one_id = key_id("key-one-secret")
        admin_view = await client.get(f"/sessions/s1?owner={one_id}", headers=ADMIN)
        ignored_owner = await client.get(f"/sessions/s1?owner={one_id}", headers=TWO)
    assert mine.status_code == 200
    assert snoop.status_code == never_used.status_code == 404
    assert snoop.json()["error"]["code"] == never_used.json()["error"]["code"]
    assert (
        snoop.json()["error"]["message"].replace("s1", "s9")
        == never_used.json()["error"]["message"]
    )
    assert theirs_turn.status_code == 200
    assert "mine" not in theirs_turn.text  # a new conversation, not the first key's history
    assert theirs_delete.status_code == 200  # the second key's own s1
    assert two_list["count"] == 0
    assert [m["content"] for m in one_view["messages"] if m["role"] == "user"] == ["mine alone"]
    assert sorted((s["session_id"], s["owner"]) for s in admin_list["sessions"]) == [("s1", one_id)]
    assert admin_view.status_code == 200 and admin_view.json()["turns"] == 1
    assert ignored_owner.status_code == 404  # only the admin key may name another owner


async def test_chatkit_threads_belong_to_the_key_that_made_them() -> None:
    app = create_app(make_settings(**KEYS))

    def as_key(headers: dict[str, str]) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)

    async with asgi_client(app), as_key(ONE) as h1, as_key(TWO) as h2, as_key(ADMIN) as h3:
        one, two, admin = ChatKitClient(h1), ChatKitClient(h2), ChatKitClient(h3)
        thread_id = thread_id_from(await one.create_thread("my thread"))
        snoop = await two.call("threads.get_by_id", {"thread_id": thread_id})
        two_threads = await two.threads()
        one_threads = await one.threads()
        admin_threads = await admin.threads()
    assert snoop.status_code == 404 and snoop.json()["error"]["code"] == "thread_not_found"
    assert two_threads.data == []
    assert [t.id for t in one_threads.data] == [thread_id]
    assert [t.id for t in admin_threads.data] == [thread_id]


async def test_cors_preflight_needs_no_key() -> None:
    async with asgi_client(create_app(make_settings(**KEYS))) as client:
        preflight = await client.options(
            "/chat",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert preflight.status_code == 200


async def test_rate_limit_per_key_answers_429_with_retry_after() -> None:
    app = create_app(make_settings(rate_limit_per_minute=3, **KEYS))
    async with asgi_client(app) as client:
        statuses = [
            (await client.post("/chat", json={"message": "hi"}, headers=ONE)).status_code
            for _ in range(4)
        ]
        limited = await client.post("/chat", json={"message": "hi"}, headers=ONE)
        other_key = await client.post("/chat", json={"message": "hi"}, headers=TWO)
        chatkit = await client.post(
            "/chatkit", json={"type": "threads.list", "params": {}}, headers=ONE
        )
    assert statuses == [200, 200, 200, 429]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert other_key.status_code == 200
    assert chatkit.status_code == 429


async def test_rate_limit_per_address_without_keys() -> None:
    app = create_app(make_settings(rate_limit_per_minute=2))
    async with asgi_client(app) as client:
        statuses = [
            (await client.post("/chat", json={"message": "hi"})).status_code for _ in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_memory_limits_reset_each_minute() -> None:
    now = [120.0]
    limiter = MemoryRateLimiter(2, clock=lambda: now[0])
    verdicts = [await limiter.hit("a") for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert verdicts[-1].retry_after == 60
    now[0] += 60
    assert (await limiter.hit("a")).allowed


async def test_limits_are_shared_through_redis(tmp_path: Path) -> None:
    async with session_settings("redis", tmp_path) as chosen:
        settings = make_settings(rate_limit_per_minute=3, **chosen)
        first, second = create_app(settings), create_app(settings)
        async with asgi_client(first) as a, asgi_client(second) as b:
            statuses = [
                (await a.post("/chat", json={"message": "1"})).status_code,
                (await a.post("/chat", json={"message": "2"})).status_code,
                (await b.post("/chat", json={"message": "3"})).status_code,
                (await b.post("/chat", json={"message": "4"})).status_code,
            ]
    assert statuses == [200, 200, 200, 429]


async def test_errors_name_the_callers_session_label_never_the_key_id() -> None:
    async with asgi_client(create_app(make_settings(**KEYS))) as client:
        missing = await client.get("/sessions/abc", headers=bearer("key-one-secret"))
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "No session with id 'abc'."
