"""The ChatKit protocol at /chatkit, checked with chatkit.types: threads, memory, a filed report
with its widget, listing, feedback, titles, deletion, restarts and clean protocol errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from typing import Any

import httpx
import pytest
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from api import create_app
from tests.support.app import asgi_client, live_server, make_settings
from tests.support.chatkit_client import (
    ChatKitClient,
    assistant_text,
    of_type,
    thread_id_from,
    user_input,
)
from tests.support.desks import to_incident_desk
from tests.support.model_streams import SlowStream
from townhall.protocols.chatkit.routes import create_hosted_session

POTHOLE = {
    "category": "pothole",
    "description": "Deep pothole by the bus stop",
    "location": "Main Street 3",
    "severity": 4,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": None,
    "reporter_contact": None,
}


async def test_new_thread_streams_the_echo_reply_and_takes_its_title_from_the_message() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        events = await client.create_thread("Hello from the ChatKit widget")
        thread_id = thread_id_from(events)
        thread = await client.thread(thread_id)
    types = [e.type for e in events]
    assert types[0] == "thread.created"
    assert "stream_options" in types
    assert of_type(events, "thread.item.done")[0].item.type == "user_message"
    deltas = [
        e.update.delta
        for e in of_type(events, "thread.item.updated")
        if e.update.type == "assistant_message.content_part.text_delta"
    ]
    assert deltas == ["Hello", "from", "the", "ChatKit", "widget"]
    assert assistant_text(events) == "Hello from the ChatKit widget"
    assert thread.title == "Hello from the ChatKit widget"
    assert [item.type for item in thread.items.data] == ["user_message", "assistant_message"]


async def test_second_message_remembers_the_first() -> None:
    model = ScriptedModel(
        [[assistant_message("Noted.")], [assistant_message("You said potholes.")]]
    )
    async with asgi_client(create_app(make_settings(), model=model)) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("Potholes everywhere"))
        events = await client.send(thread_id, "What did I say?")
    assert assistant_text(events) == "You said potholes."
    second_input = json.dumps(model.calls[1].input)
    assert "Potholes everywhere" in second_input and "Noted." in second_input


async def test_a_filed_report_shows_progress_and_a_receipt_card() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", POTHOLE, call_id="c1")],
            [assistant_message("Your report is filed.")],
        ]
    )
    async with asgi_client(create_app(make_settings(), model=model)) as http:
        client = ChatKitClient(http)
        events = await client.create_thread("Pothole on Main Street 3, quite dangerous")
        thread_id = thread_id_from(events)
        items = await client.items(thread_id, order="asc")
    progress = of_type(events, "progress_update")
    assert [p.text for p in progress] == [
        "Incident desk is answering",
        "Filing your report with the city…",
    ]
    widgets = [e.item for e in of_type(events, "thread.item.done") if e.item.type == "widget"]
    assert len(widgets) == 1
    card = widgets[0].widget.model_dump(exclude_none=True)
    reference = _find(card, "reference")["value"]
    assert reference.startswith("INC-")
    assert "Incident reported" in json.dumps(card)
    with contextlib.closing(sqlite3.connect("townhall.db")) as conn:
        rows = conn.execute("SELECT reference, session_id FROM incidents").fetchall()
    assert rows == [(reference, thread_id)]
    assert [item.type for item in items.data] == ["user_message", "widget", "assistant_message"]


async def test_list_get_update_feedback_and_delete_threads() -> None:
    app = create_app(make_settings())
    async with asgi_client(app) as http:
        client = ChatKitClient(http)
        first = thread_id_from(await client.create_thread("first thread"))
        second = thread_id_from(await client.create_thread("second thread"))
        listed = await client.threads(order="desc")
        paged = await client.threads(order="asc", limit=1)
        rest = await client.threads(order="asc", limit=1, after=paged.after)
        renamed = await client.call("threads.update", {"thread_id": first, "title": "Renamed"})
        items = await client.items(first)
        answer = next(i for i in items.data if i.type == "assistant_message")
        feedback = await client.call(
            "items.feedback", {"thread_id": first, "item_ids": [answer.id], "kind": "positive"}
        )
        stored_feedback = await app.state.services.chatkit.threads.load_feedback(first)
        unknown = await client.call(
            "items.feedback",
            {"thread_id": first, "item_ids": [answer.id, "msg_nope"], "kind": "negative"},
        )
        after_unknown = await app.state.services.chatkit.threads.load_feedback(first)
        deleted = await client.call("threads.delete", {"thread_id": second})
        gone = await client.call("threads.get_by_id", {"thread_id": second})
        remaining = await client.threads()
    assert [t.id for t in listed.data] == [second, first]
    assert (paged.has_more, [t.id for t in paged.data]) == (True, [first])
    assert (rest.has_more, [t.id for t in rest.data]) == (False, [second])
    assert renamed.status_code == 200 and renamed.json()["title"] == "Renamed"
    assert feedback.status_code == 200 and feedback.json() == {}
    assert stored_feedback == {answer.id: "positive"}
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert after_unknown == stored_feedback  # all or nothing: the known item kept its feedback
    assert deleted.status_code == 200
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "thread_not_found"
    assert [t.id for t in remaining.data] == [first]


async def test_threads_survive_a_restart() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        thread_id = thread_id_from(await ChatKitClient(http).create_thread("remember me"))
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        threads = await client.threads()
        thread = await client.thread(thread_id)
    assert [t.id for t in threads.data] == [thread_id]
    assert thread.title == "remember me"
    assert len(thread.items.data) == 2


async def test_protocol_errors_are_clean_json_before_any_stream() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        not_json = await http.post(
            "/chatkit", content=b"{nope", headers={"content-type": "application/json"}
        )
        unknown_op = await client.call("threads.explode", {})
        missing_field = await client.call("threads.add_user_message", {"input": user_input("x")})
        unknown_thread = await client.call(
            "threads.add_user_message", {"thread_id": "thr_missing", "input": user_input("x")}
        )
        unknown_items = await client.call("items.list", {"thread_id": "thr_missing"})
        attachment = await client.call(
            "attachments.create", {"name": "a.png", "size": 3, "mime_type": "image/png"}
        )
    for response, status, code in [
        (not_json, 400, "invalid_chatkit_request"),
        (unknown_op, 400, "invalid_chatkit_request"),
        (missing_field, 400, "invalid_chatkit_request"),
        (unknown_thread, 404, "thread_not_found"),
        (unknown_items, 404, "thread_not_found"),
        (attachment, 400, "invalid_chatkit_request"),
    ]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == code


async def test_a_message_over_the_limit_is_refused_as_on_chat_and_nothing_is_kept() -> None:
    async with asgi_client(create_app(make_settings(max_message_chars=50))) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("short"))
        too_long = await client.call(
            "threads.add_user_message", {"thread_id": thread_id, "input": user_input("x" * 51)}
        )
        new_thread = await client.call("threads.create", {"input": user_input("y" * 51)})
        chat = await http.post("/chat", json={"message": "z" * 51, "stream": False})
        items = await client.call("items.list", {"thread_id": thread_id})
        threads = await client.call("threads.list", {})
    for refused in (too_long, new_thread):
        assert refused.status_code == chat.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == chat.json()["error"]["code"]
    kept = [item["type"] for item in items.json()["data"]]
    assert sorted(kept) == ["assistant_message", "user_message"]  # only the first exchange
    assert len(threads.json()["data"]) == 1


async def test_a_blank_message_is_refused_as_on_chat_and_nothing_is_kept() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("hello"))
        blank_reply = await client.call(
            "threads.add_user_message", {"thread_id": thread_id, "input": user_input("  \n ")}
        )
        blank_thread = await client.call("threads.create", {"input": user_input("")})
        chat = await http.post("/chat", json={"message": "   ", "stream": False})
        items = await client.call("items.list", {"thread_id": thread_id})
        threads = await client.call("threads.list", {})
    assert chat.status_code == 422  # /chat: a blank message field
    for refused in (blank_reply, blank_thread):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_chatkit_request"
        assert "no text" in refused.json()["error"]["message"]
    assert sorted(item["type"] for item in items.json()["data"]) == [
        "assistant_message",
        "user_message",
    ]
    assert len(threads.json()["data"]) == 1


async def test_a_thread_title_is_bounded() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("hello"))
        renamed = await client.call("threads.update", {"thread_id": thread_id, "title": "t" * 200})
        too_long = await client.call("threads.update", {"thread_id": thread_id, "title": "t" * 201})
        thread = await client.call("threads.get_by_id", {"thread_id": thread_id})
    assert renamed.status_code == 200
    assert too_long.status_code == 400
    assert "at most 200" in too_long.json()["error"]["message"]
    assert thread.json()["title"] == "t" * 200  # the refused rename changed nothing


async def test_retrying_after_an_unknown_item_is_a_404_not_an_empty_stream() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("hello"))
        unknown = await client.call(
            "threads.retry_after_item", {"thread_id": thread_id, "item_id": "msg_nope"}
        )
        items = await client.call("items.list", {"thread_id": thread_id})
        first = next(i for i in items.json()["data"] if i["type"] == "user_message")
        known = await client.call(
            "threads.retry_after_item", {"thread_id": thread_id, "item_id": first["id"]}
        )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert "msg_nope" in unknown.json()["error"]["message"]
    assert known.status_code == 200 and "thread.item.done" in known.text


async def test_a_busy_thread_gets_409() -> None:
    slow = SlowStream(count=300, gap=0.01)
    model = ScriptedModel([[assistant_message("first")], ModelStep.stream(slow)])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("start"))
        payload = {
            "type": "threads.add_user_message",
            "params": {"thread_id": thread_id, "input": user_input("long one")},
        }
        async with http.stream("POST", "/chatkit", json=payload):
            await asyncio.wait_for(slow.first_sent.wait(), 5)
            second = await client.call(
                "threads.add_user_message", {"thread_id": thread_id, "input": user_input("again")}
            )
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "thread_busy"


async def test_cors_allows_the_front_end_origin_on_chatkit() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        preflight = await http.options(
            "/chatkit",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_hosted_session_is_503_with_a_clear_message_when_not_configured() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        response = await http.post("/api/chatkit/session", json={})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "chatkit_not_configured"
    assert "CHATKIT_WORKFLOW_ID" in response.json()["error"]["message"]


def fake_chatkit_sessions(seen: list[dict[str, Any]]) -> Any:
    """OpenAI's ChatKit sessions endpoint, on 127.0.0.1: records each request, mints a secret."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def sessions(request: Request) -> JSONResponse:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return JSONResponse(
            {
                "id": "cksess_1",
                "object": "chatkit.session",
                "client_secret": "ek_test_secret",
                "expires_at": 1_900_000_000,
                "status": "active",
                "user": "resident-1",
            }
        )

    return Starlette(routes=[Route("/v1/chatkit/sessions", sessions, methods=["POST"])])


async def test_hosted_session_asks_openai_for_a_client_secret() -> None:
    """Against a fake OpenAI endpoint on 127.0.0.1, the request the openai client really sends."""
    from openai import AsyncOpenAI

    seen: list[dict[str, Any]] = []
    fake = fake_chatkit_sessions(seen)
    async with live_server(fake) as base_url:  # type: ignore[arg-type]
        client = AsyncOpenAI(api_key="sk-test", base_url=f"{base_url}/v1", max_retries=0)
        session = await create_hosted_session(client, "wf_123", "resident-1")
    assert session.client_secret == "ek_test_secret"
    assert seen[0]["body"] == {"user": "resident-1", "workflow": {"id": "wf_123"}}
    assert seen[0]["headers"]["openai-beta"] == "chatkit_beta=v1"
    assert seen[0]["headers"]["authorization"] == "Bearer sk-test"


async def test_hosted_sessions_count_against_the_rate_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each secret is a call to OpenAI on the city's key: past RATE_LIMIT_PER_MINUTE, 429 and no
    call. The openai client is pointed at a fake on 127.0.0.1 through its own OPENAI_BASE_URL."""
    calls: list[dict[str, Any]] = []
    fake = fake_chatkit_sessions(calls)
    async with live_server(fake) as base_url:  # type: ignore[arg-type]
        monkeypatch.setenv("OPENAI_BASE_URL", f"{base_url}/v1")
        settings = make_settings(
            chatkit_workflow_id="wf_1", openai_api_key="sk-test", rate_limit_per_minute=2
        )
        # Echo mode for turns: the model is not what is under test here.
        app = create_app(settings, model=ScriptedModel([]))
        async with asgi_client(app) as http:
            answers = [(await http.post("/api/chatkit/session", json={})) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "rate_limited"
    assert "retry-after" in answers[2].headers
    assert len(calls) == 2


def _find(node: Any, component_id: str) -> Any:
    if isinstance(node, dict):
        if node.get("id") == component_id:
            return node
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            found = _find(child, component_id)
            if found is not None:
                return found
    return None


async def test_threads_live_in_postgresql_when_the_records_do(pg_dsn: str) -> None:
    app = create_app(make_settings(database_url=pg_dsn))
    async with asgi_client(app) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("kept in postgres"))
        await client.send(thread_id, "second")
        items = await client.items(thread_id, order="asc", limit=2)
        rest = await client.items(thread_id, order="asc", limit=2, after=items.after)
    async with asgi_client(create_app(make_settings(database_url=pg_dsn))) as http:
        thread = await ChatKitClient(http).thread(thread_id)
    assert [i.type for i in items.data + rest.data] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]
    assert items.has_more and not rest.has_more
    assert thread.title == "kept in postgres"


async def test_page_limits_past_what_sqlite_holds_or_below_one_get_a_clear_answer() -> None:
    """A limit past 64 bits was a 500 (OverflowError from SQLite); it is a page of at most
    MAX_PAGE_SIZE now, and a limit below 1 is a 400 that says so."""
    async with asgi_client(create_app(make_settings())) as http:
        client = ChatKitClient(http)
        thread_id = thread_id_from(await client.create_thread("a pothole"))
        huge = await client.call(
            "items.list", {"thread_id": thread_id, "limit": 2**63, "order": "asc"}
        )
        threads = await client.call("threads.list", {"limit": 2**63 - 1})
        negative = await client.call("items.list", {"thread_id": thread_id, "limit": -2})
    assert huge.status_code == threads.status_code == 200
    assert [item["type"] for item in huge.json()["data"]] == ["user_message", "assistant_message"]
    assert [t["id"] for t in threads.json()["data"]] == [thread_id]
    assert negative.status_code == 400
    assert negative.json()["error"] == {
        "code": "invalid_chatkit_request",
        "message": "params.limit must be at least 1.",
    }


async def test_an_error_does_not_send_a_huge_input_back() -> None:
    async with asgi_client(create_app(make_settings())) as http:
        bad_type = await http.post("/chatkit", json={"type": "Z" * 60_000})
        no_thread = await ChatKitClient(http).call("threads.get_by_id", {"thread_id": "Z" * 60_000})
    assert bad_type.status_code == 400 and len(bad_type.content) < 1_000
    assert no_thread.status_code == 404 and len(no_thread.content) < 1_000
