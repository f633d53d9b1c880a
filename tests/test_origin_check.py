"""A web page on another origin cannot make a resident's browser start turns or file reports:
a state-changing request whose Origin is neither the server's own nor in CORS_ORIGINS gets 403
`origin_not_allowed` and changes nothing, whatever its Content-Type (ChatKit reads its body
whatever it is labelled). Requests without an Origin (curl, Postman) and reads are untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api import create_app
from tests.support.app import asgi_client, make_settings
from tests.support.chatkit_client import user_input

EVIL = "https://evil.example"
CREATE = json.dumps({"type": "threads.create", "params": {"input": user_input("file it")}})


def app(**overrides: Any) -> Any:
    return create_app(make_settings(**overrides))


async def test_a_cross_site_chatkit_post_is_refused_and_runs_nothing() -> None:
    async with asgi_client(app()) as client:
        refused = await client.post(
            "/chatkit", content=CREATE, headers={"origin": EVIL, "content-type": "text/plain"}
        )
        chat = await client.post(
            "/chat", json={"message": "hello", "session_id": "x"}, headers={"origin": EVIL}
        )
        threads = await client.post("/chatkit", json={"type": "threads.list", "params": {}})
        session = await client.get("/sessions/x")
    for response in (refused, chat):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "origin_not_allowed"
        assert "CORS_ORIGINS" in response.json()["error"]["message"]
    assert threads.json()["data"] == []
    assert session.status_code == 404


@pytest.mark.parametrize(
    ("origin", "overrides"),
    [
        ("http://localhost:3000", {}),  # in the default CORS_ORIGINS
        ("http://LOCALHOST:3000/", {}),  # origins compare without case or a trailing slash
        ("http://test", {}),  # the server's own pages (/demo)
        (EVIL, {"cors_origins": "*"}),  # any origin, when the operator says so
        (None, {}),  # not a browser
    ],
)
async def test_allowed_origins_and_clients_without_one_go_through(
    origin: str | None, overrides: dict[str, Any]
) -> None:
    headers = {"origin": origin} if origin else {}
    async with asgi_client(app(**overrides)) as client:
        response = await client.post("/chatkit", content=CREATE, headers=headers)
    assert response.status_code == 200
    assert "thread.created" in response.text


async def test_reads_are_not_refused_and_the_message_is_bounded() -> None:
    huge = "https://" + "a" * 5000 + ".example"
    async with asgi_client(app()) as client:
        health = await client.get("/health", headers={"origin": EVIL})
        refused = await client.delete("/sessions/x", headers={"origin": huge})
    assert health.status_code == 200
    assert refused.status_code == 403
    assert len(refused.json()["error"]["message"]) < 300
