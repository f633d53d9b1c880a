"""Every kind of bad request gets a 4xx with a JSON body naming the problem, and changes nothing."""

from __future__ import annotations

import httpx
import pytest
from agents.testing import ScriptedModel

from api import create_app
from tests.support.app import asgi_client, live_server, make_settings


def _cases() -> list[tuple[str, dict[str, object], int, str, str]]:
    json_headers = {"content-type": "application/json"}
    return [
        (
            "malformed json",
            {"content": b'{"message": ', "headers": json_headers},
            400,
            "malformed_json",
            "not valid JSON",
        ),
        (
            "missing message",
            {"json": {"session_id": "x"}},
            422,
            "invalid_request",
            "message: Field required",
        ),
        (
            "blank message",
            {"json": {"message": "  \n\t"}},
            422,
            "invalid_request",
            "message: must not be blank",
        ),
        (
            "message not a string",
            {"json": {"message": 42}},
            422,
            "invalid_request",
            "message: Input should be a valid string",
        ),
        (
            "message too long",
            {"json": {"message": "x" * 101}},
            422,
            "message_too_long",
            "message is 101 characters long; the limit is 100.",
        ),
        (
            "session id with a space",
            {"json": {"message": "hi", "session_id": "a b"}},
            422,
            "invalid_request",
            "session_id: must be 1-128 characters",
        ),
        (
            "session id too long",
            {"json": {"message": "hi", "session_id": "a" * 129}},
            422,
            "invalid_request",
            "session_id: must be 1-128 characters",
        ),
        (
            "empty session id",
            {"json": {"message": "hi", "session_id": ""}},
            422,
            "invalid_request",
            "session_id: must be 1-128 characters",
        ),
        (
            "session id with newline",
            {"json": {"message": "hi", "session_id": "abc\n"}},
            422,
            "invalid_request",
            "session_id: must be 1-128 characters",
        ),
        ("body is a list", {"json": ["hi"]}, 422, "invalid_request", "valid dictionary"),
        (
            "form content type",
            {"data": {"message": "hi"}},
            415,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ),
        (
            "text content type",
            {"content": b'{"message":"hi"}', "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
            "application/json",
        ),
        ("no body", {}, 415, "unsupported_media_type", "application/json"),
        (
            "body over 64 KiB",
            {"json": {"message": "x" * 70_000}},
            413,
            "payload_too_large",
            "larger than 65536 bytes",
        ),
    ]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code", "message"),
    [case[1:] for case in _cases()],
    ids=[case[0] for case in _cases()],
)
async def test_bad_chat_request(
    request_kwargs: dict[str, object], status: int, code: str, message: str
) -> None:
    model = ScriptedModel([])  # any model call would raise: bad input must not reach it
    app = create_app(make_settings(max_message_chars=100), model=model)
    async with asgi_client(app) as client:
        response = await client.post("/chat", **request_kwargs)  # type: ignore[arg-type]
        sessions = (await client.get("/sessions")).json()
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    assert sessions["count"] == 0
    assert model.calls == ()


async def test_chunked_body_over_the_limit_is_refused_while_reading() -> None:
    """No Content-Length: the bound applies to the bytes as they arrive, on a real server."""
    app = create_app(make_settings(), model=ScriptedModel([]))

    async def chunks():
        yield b'{"message": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(
            "/chat", content=chunks(), headers={"content-type": "application/json"}
        )
        count = (await client.get("/sessions")).json()["count"]
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert count == 0


@pytest.mark.parametrize("session_id", ["nope", "a" * 129, "bad id"])
async def test_unknown_or_invalid_session_paths(session_id: str) -> None:
    async with asgi_client(create_app(make_settings())) as client:
        got = await client.get(f"/sessions/{session_id}")
        deleted = await client.delete(f"/sessions/{session_id}")
    expected = 404 if session_id == "nope" else 422
    assert got.status_code == deleted.status_code == expected
    assert got.json()["error"]["code"] in {"session_not_found", "invalid_request"}


async def test_unknown_route_and_wrong_method_are_json() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        missing = await client.get("/nowhere")
        wrong = await client.get("/chat")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "field", "rule"),
    [
        ("GET", "/sessions/bad%20id", "session_id", "1-128 characters of A-Z a-z 0-9 _ - . :"),
        ("DELETE", "/sessions/" + "a" * 129, "session_id", "1-128 characters of A-Z"),
        ("GET", "/sessions/ok?owner=key-XYZ", "owner", "key- and 16 hex digits"),
        ("POST", "/admin/dead-letters/inc-1/retry", "reference", "2-3 capital letters"),
    ],
)
async def test_a_bad_path_or_query_parameter_reads_like_a_bad_body_field(
    method: str, path: str, field: str, rule: str
) -> None:
    """The same plain "field: must be ..." a body field gets, not the regex; and a POST with no
    body is not blamed on its (absent) Content-Type. (The admin key, so that the admin route
    looks at its parameter: any other caller gets 403 first.)"""
    settings = make_settings(api_keys="bad-param-key", admin_key="bad-param-admin")
    admin = {"Authorization": "Bearer bad-param-admin"}
    async with asgi_client(create_app(settings)) as client:
        response = await client.request(method, path, headers=admin)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field}: must be {rule}")
    assert error["details"][0]["field"] == field
    assert "pattern" not in error["message"] and "^" not in error["message"]
