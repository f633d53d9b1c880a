"""/chat with a scripted agent (agents.testing.ScriptedModel): frames, memory, concurrency,
disconnects and model failures."""

from __future__ import annotations

import asyncio
import logging

import httpx
import openai
import pytest
from agents import RunContextWrapper, function_tool
from agents.retry import ModelRetryAdvice
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from api import create_app
from tests.support.app import asgi_client, live_server, make_settings, wait_for
from tests.support.frames import named, read_frames, text_of, without_ids
from tests.support.model_streams import SlowStream
from townhall.context import AppContext


@function_tool
def lookup_ward(ctx: RunContextWrapper[AppContext], street: str) -> str:
    """Which city ward a street belongs to.

    Args:
        street: The street name as the resident wrote it.
    """
    return f"{street} is in ward 7 (session {ctx.context.session_id})"


def scripted_app(model: ScriptedModel, **settings: object):
    return create_app(make_settings(**settings), model=model, tools=[lookup_ward])


async def test_text_and_tool_call_frames() -> None:
    model = ScriptedModel(
        [
            [function_call("lookup_ward", {"street": "Main Street"}, call_id="call-1")],
            [assistant_message("Main Street is in ward 7.\nAnything else?")],
        ]
    )
    app = scripted_app(model)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        payload = {"message": "Which ward is Main Street?", "session_id": "s-tool"}
        async with client.stream("POST", "/chat", json=payload) as response:
            frames = await read_frames(response)
    assert [f.event for f in frames] == [
        "session",
        "tool_call",
        "tool_result",
        "message",
        "done",
        "message",
    ]
    assert named(frames, "session") == [{"session_id": "s-tool"}]
    assert named(frames, "tool_call") == [
        {"name": "lookup_ward", "arguments": {"street": "Main Street"}, "call_id": "call-1"}
    ]
    assert named(frames, "tool_result") == [
        {"call_id": "call-1", "output": "Main Street is in ward 7 (session s-tool)"}
    ]
    # One multi-line delta: the parser joins its data: lines back with a newline.
    assert frames[3].data == "Main Street is in ward 7.\nAnything else?"
    assert named(frames, "done")[0]["usage"]["requests"] == 2
    assert frames[-1].data == "[DONE]"
    model.assert_complete()


async def test_multi_line_delta_is_one_data_line_per_line() -> None:
    model = ScriptedModel([[assistant_message("line one\nline two")]])
    async with asgi_client(scripted_app(model)) as client:
        response = await client.post("/chat", json={"message": "hi", "session_id": "ml"})
    assert b"data: line one\ndata: line two\n\n" in response.content


async def test_second_turn_remembers_the_first() -> None:
    model = ScriptedModel([[assistant_message("Noted: pothole.")], [assistant_message("Yes.")]])
    async with asgi_client(scripted_app(model)) as client:
        first = await client.post(
            "/chat", json={"message": "Pothole on Main St", "session_id": "m1"}
        )
        second = await client.post("/chat", json={"message": "Did you get it?", "session_id": "m1"})
        history = (await client.get("/sessions/m1")).json()
    assert first.status_code == second.status_code == 200
    second_input = model.calls[1].input
    texts = [str(item.get("content")) for item in second_input if isinstance(item, dict)]
    assert any("Pothole on Main St" in text for text in texts)
    assert any("Noted: pothole." in text for text in texts)
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "Pothole on Main St"),
        ("assistant", "Noted: pothole."),
        ("user", "Did you get it?"),
        ("assistant", "Yes."),
    ]
    assert history["turns"] == 2


async def test_two_sessions_are_kept_apart() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        await client.post("/chat", json={"message": "alpha one", "session_id": "A"})
        await client.post("/chat", json={"message": "beta one", "session_id": "B"})
        await client.post("/chat", json={"message": "alpha two", "session_id": "A"})
        a = (await client.get("/sessions/A")).json()["messages"]
        b = (await client.get("/sessions/B")).json()["messages"]
        listed = (await client.get("/sessions")).json()
    assert [m["content"] for m in a if m["role"] == "user"] == ["alpha one", "alpha two"]
    assert [m["content"] for m in b if m["role"] == "user"] == ["beta one"]
    assert {s["session_id"]: s["turns"] for s in listed["sessions"]} == {"A": 2, "B": 1}


async def test_missing_session_id_gets_an_unguessable_one() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        one = await client.post("/chat", json={"message": "hi"})
        two = await client.post("/chat", json={"message": "hi"})
    ids = [r.headers["x-session-id"] for r in (one, two)]
    assert ids[0] != ids[1]
    assert all(len(i) >= 22 for i in ids)
    assert f'{{"session_id":"{ids[0]}"}}'.encode() in one.content


async def test_concurrent_message_on_a_busy_session_gets_409() -> None:
    stream = SlowStream(count=100, gap=0.01)
    model = ScriptedModel([ModelStep.stream(stream), [assistant_message("after")]])
    app = scripted_app(model)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        payload = {"message": "first", "session_id": "busy1"}
        async with client.stream("POST", "/chat", json=payload):
            await asyncio.wait_for(stream.first_sent.wait(), 5)
            second = await client.post("/chat", json={"message": "second", "session_id": "busy1"})
            assert second.status_code == 409
            assert second.json()["error"]["code"] == "session_busy"
            other = await client.post("/chat", json={"message": "x", "session_id": "free1"})
            assert other.status_code == 200
            assert "data: after" in other.text
    # the history holds only the first message: the refused one changed nothing
    conversation = app.state.services.registry.get("busy1")
    items = await conversation.history.get_items()
    assert not any("second" in str(item) for item in items)


async def test_client_disconnect_cancels_the_run_and_the_session_stays_usable() -> None:
    stream = SlowStream(count=1000, gap=0.01)
    model = ScriptedModel([ModelStep.stream(stream), [assistant_message("Still here.")]])
    app = scripted_app(model)
    registry = app.state.services.registry
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        payload = {"message": "tell me a long story", "session_id": "dc1"}
        async with client.stream("POST", "/chat", json=payload) as response:
            received = 0
            async for line in response.aiter_lines():
                if line.startswith("data: tok"):
                    received += 1
                if received == 3:
                    break
        # The response is closed: the server must notice and stop pulling tokens within 1 s.
        await wait_for(lambda: stream.closed, limit=1.0)
        pulled = stream.sent
        await wait_for(lambda: not registry.get("dc1").busy, limit=1.0)
        await asyncio.sleep(0.1)
        assert stream.sent == pulled < 1000
        next_turn = await client.post("/chat", json={"message": "hello?", "session_id": "dc1"})
    frames_text = next_turn.text
    assert next_turn.status_code == 200
    assert "data: Still here." in frames_text
    assert "event: done" in frames_text
    assert registry.get("dc1").turns == 1  # the cancelled turn does not count


async def test_model_error_mid_stream_ends_with_error_then_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = ScriptedModel([ModelStep.stream(SlowStream(count=10, gap=0, fail_after=2))])
    caplog.set_level(logging.ERROR)
    async with asgi_client(scripted_app(model)) as client:
        response = await client.post("/chat", json={"message": "hi", "session_id": "err1"})
        follow_up = await client.get("/sessions/err1")
    body = without_ids(response.text)
    assert response.status_code == 200
    assert body.endswith(
        'event: error\ndata: {"code":"model_error","message":"Sorry, something '
        'went wrong while answering. Please try again."}\n\ndata: [DONE]\n\n'
    )
    assert "tok0" in body and "tok1" in body
    for leak in ("sk-test-123", "Traceback", "exploded", "/srv/app.py"):
        assert leak not in body
    assert "upstream exploded" in caplog.text  # the traceback is in the log ...
    failed = [r for r in caplog.records if r.name == "townhall.turns.runner"]
    assert failed and failed[0].exc_info is not None
    assert follow_up.json()["busy"] is False


async def test_failure_before_any_text_is_retried() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/responses")
    error = openai.APIConnectionError(request=request)
    model = ScriptedModel(
        [
            ModelStep.raise_error(
                error, retry_advice=ModelRetryAdvice(suggested=True, retry_after=0)
            ),
            [assistant_message("Recovered.")],
        ]
    )
    async with asgi_client(scripted_app(model)) as client:
        response = await client.post("/chat", json={"message": "hi", "session_id": "retry1"})
    assert "event: error" not in response.text
    assert "data: Recovered." in response.text
    model.assert_complete()


async def test_failure_that_is_not_retried_becomes_a_resident_message() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/responses")
    response_429 = httpx.Response(429, request=request, json={"error": {"message": "slow down"}})
    error = openai.RateLimitError("rate limited", response=response_429, body=None)
    model = ScriptedModel([error])
    async with asgi_client(scripted_app(model, model_max_retries=0)) as client:
        response = await client.post("/chat", json={"message": "hi", "session_id": "rl1"})
    frames = without_ids(response.text).split("\n\n")
    assert frames[-3].startswith("event: error")
    assert '"code":"model_rate_limited"' in frames[-3]
    assert frames[-2] == "data: [DONE]"


async def test_non_streaming_reply_is_one_json_object() -> None:
    model = ScriptedModel(
        [
            [function_call("lookup_ward", {"street": "Elm"}, call_id="c9")],
            [assistant_message("Elm is in ward 7.")],
        ]
    )
    async with asgi_client(scripted_app(model)) as client:
        response = await client.post(
            "/chat", json={"message": "Elm?", "session_id": "js1", "stream": False}
        )
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == "js1"
    assert body["reply"] == "Elm is in ward 7."
    assert body["tool_calls"] == [
        {
            "name": "lookup_ward",
            "arguments": {"street": "Elm"},
            "call_id": "c9",
            "output": "Elm is in ward 7 (session js1)",
        }
    ]
    assert body["usage"]["requests"] == 2


async def test_delete_cancels_a_running_turn_then_forgets_the_session() -> None:
    stream = SlowStream(count=1000, gap=0.01)
    model = ScriptedModel([ModelStep.stream(stream)])
    app = scripted_app(model)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        payload = {"message": "long", "session_id": "del1"}
        async with client.stream("POST", "/chat", json=payload) as response:
            await asyncio.wait_for(stream.first_sent.wait(), 5)
            deleted = await client.delete("/sessions/del1")
            frames = await read_frames(response)
        gone = await client.get("/sessions/del1")
        again = await client.delete("/sessions/del1")
    assert deleted.json() == {"session_id": "del1", "deleted": True, "cancelled_turn": True}
    assert named(frames, "error") == [
        {
            "code": "cancelled",
            "message": "This conversation was closed while the answer was running.",
        }
    ]
    assert frames[-1].data == "[DONE]"
    assert stream.closed and stream.sent < 1000
    assert text_of(frames).startswith("tok0 ")
    assert gone.status_code == again.status_code == 404


async def test_keepalive_comment_is_sent_while_waiting() -> None:
    stream = SlowStream(count=3, gap=0.4)
    model = ScriptedModel([ModelStep.stream(stream)])
    app = scripted_app(model, sse_ping_seconds=0.1)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        async with client.stream("POST", "/chat", json={"message": "x", "session_id": "p1"}) as r:
            lines = []
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith(": ping"):
                    break
    assert any(line.startswith(": ping") for line in lines)
