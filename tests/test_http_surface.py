"""CORS for browser front ends, the OpenAPI document, and request ids."""

from __future__ import annotations

from api import create_app
from tests.support.app import asgi_client, make_settings


async def test_cors_preflight_from_the_default_front_end_origin() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        response = await client.options(
            "/chat",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_cors_exposes_the_session_header_and_refuses_other_origins() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        allowed = await client.post(
            "/chat", json={"message": "hi"}, headers={"Origin": "http://127.0.0.1:3000"}
        )
        other = await client.options(
            "/chat",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
        )
    assert "x-session-id" in allowed.headers["access-control-expose-headers"].lower()
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


async def test_wildcard_origin_never_comes_with_credentials() -> None:
    async with asgi_client(create_app(make_settings(cors_origins="*"))) as client:
        response = await client.get("/", headers={"Origin": "http://anything.test"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_openapi_documents_the_sse_events() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    chat = spec["paths"]["/chat"]["post"]
    ok = chat["responses"]["200"]
    assert "text/event-stream" in ok["content"]
    for event in ("session", "tool_call", "tool_result", "error", "done", "[DONE]"):
        assert event in ok["description"]
    assert {"409", "413", "415", "422"} <= set(chat["responses"])
    assert docs.status_code == 200


async def test_every_documented_error_is_our_error_body() -> None:
    """Each route declares the error statuses it can send, all with `{"error": {...}}`; FastAPI's
    HTTPValidationError (which the server never sends) is nowhere in the document."""
    async with asgi_client(create_app(make_settings())) as client:
        spec = (await client.get("/openapi.json")).json()
    declared: dict[str, set[str]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {s for s in operation["responses"] if s[0] in "45" and path != "/health"}
            declared[f"{method.upper()} {path}"] = errors
            for status in errors:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    assert "HTTPValidationError" not in str(spec)
    keyed = [op for op in declared if op.split(" ")[1] not in {"/", "/health", "/demo"}]
    assert all("401" in declared[op] for op in keyed)
    assert {"400", "401", "409", "413", "415", "422", "429", "503"} <= declared["POST /chat"]
    assert {"401", "404", "422", "503"} <= declared["GET /sessions/{session_id}"]
    assert {"401", "404", "422", "503"} <= declared["DELETE /sessions/{session_id}"]
    assert {"403", "404", "422"} <= declared["POST /admin/dead-letters/{reference}/retry"]
    assert {"400", "404", "409", "429", "503"} <= declared["POST /chatkit"]


async def test_request_id_is_returned_and_kept_when_given() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        given = await client.get("/health", headers={"X-Request-Id": "abc-123"})
        made = await client.get("/health")
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 16
