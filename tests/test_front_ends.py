"""Every front end's wire format, read by that front end's own client library:

- Streamlit: `POST /query` and `POST /query/stream` read with `requests` (`iter_lines()`);
- a Next.js assistant front end: `POST /chat/stream` read by openai-node's
  `AssistantStream.fromReadableStream()` (tests/node/assistant_stream.mjs, the `openai` npm
  package);
- the AI SDK's `useChat`: `POST /api/chat` sent by `DefaultChatTransport` and read by
  `readUIMessageStream` (tests/node/use_chat.mjs, the `ai` npm package).

The model is a ScriptedModel that hands off to the Incident desk and files a real report; the
server is a real uvicorn on 127.0.0.1 (the clients read a real stream). The rules every front
end shares with /chat (keys, rate limits, a busy conversation, capacity, bad bodies) are one
table of cases at the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import requests
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from agents_def import INCIDENT_DESK_NAME
from api import create_app
from tests.support.app import live_server, make_settings
from tests.support.desks import to_incident_desk
from tests.support.model_streams import Gate, SlowStream
from tests.support.node import node

POTHOLE = {
    "category": "pothole",
    "description": "Deep pothole in the right lane",
    "location": "Main Street 3",
    "severity": 3,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": None,
    "reporter_contact": None,
}


def filing_script() -> list[Any]:
    """Text, a handoff, a filed report, and the desk's answer with the reference."""
    return [
        to_incident_desk(),
        [function_call("report_incident", POTHOLE, call_id="fe-call-1")],
        ModelStep.respond(reference_answer),
    ]


def reference_answer(call: ModelCall) -> list[Any]:
    outputs = [
        json.loads(item["output"])
        for item in call.input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]
    reference = [o for o in outputs if "reference" in o][-1]["reference"]
    return [assistant_message(f"Filed as {reference}.\nThanks!")]


def remembers(call: ModelCall) -> list[Any]:
    said = [
        item["content"]
        for item in call.input
        if isinstance(item, dict) and item.get("role") == "user"
    ]
    return [assistant_message(f"You said: {' | '.join(str(s) for s in said)}")]


def streamlit_lines(url: str, body: dict[str, Any]) -> tuple[int, list[str], dict[str, str]]:
    """What a Streamlit app reads: `data: ` lines through requests' iter_lines()."""
    with requests.post(url, json=body, stream=True, timeout=30) as response:
        lines = [line.decode() for line in response.iter_lines() if line]
        return response.status_code, lines, dict(response.headers)


async def test_streamlit_query_and_stream_keep_a_conversation() -> None:
    model = ScriptedModel(
        [
            [assistant_message("Hello! How can I help?")],
            ModelStep.respond(remembers),
            *filing_script(),
        ]
    )
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        first = await asyncio.to_thread(
            requests.post, f"{base}/query", json={"prompt": "hi"}, timeout=30
        )
        session_id = first.json()["session_id"]
        body = {"prompt": "what did I say?", "session_id": session_id}
        status, lines, headers = await asyncio.to_thread(
            streamlit_lines, f"{base}/query/stream", body
        )
        body = {"prompt": "pothole on Main Street 3, file it", "session_id": session_id}
        _, filed, _ = await asyncio.to_thread(streamlit_lines, f"{base}/query/stream", body)
    assert first.status_code == 200
    assert first.json() == {
        "model": "ScriptedModel",
        "answer": "Hello! How can I help?",
        "session_id": session_id,
    }
    assert (status, headers["content-type"].split(";")[0]) == (200, "text/event-stream")
    assert headers["x-session-id"] == session_id
    assert all(line.startswith("data: ") for line in lines)
    assert (
        "".join(line.removeprefix("data: ") for line in lines) == "You said: hi | what did I say?"
    )
    # A line break in the answer: one SSE event of two data lines; a line reader sees both.
    chunks = [line.removeprefix("data: ") for line in filed]
    assert chunks[0].startswith("Filed as INC-") and chunks[-1] == "Thanks!"
    model.assert_complete()


async def test_streamlit_stream_reports_a_failure_as_our_json_error() -> None:
    model = ScriptedModel([RuntimeError("the model broke")])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        status, lines, _ = await asyncio.to_thread(
            streamlit_lines, f"{base}/query/stream", {"prompt": "hello"}
        )
        failed = await asyncio.to_thread(
            requests.post,
            f"{base}/query",
            json={"prompt": "hello"},
            timeout=30,
        )
    assert status == 200 and lines[0] == "event: error"
    assert json.loads(lines[1].removeprefix("data: "))["error"]["code"] == "model_error"
    assert "Traceback" not in "".join(lines)
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "model_error"


async def test_assistant_stream_reads_the_run_with_openai_node() -> None:
    model = ScriptedModel([[assistant_message("Hello, resident.")], *filing_script()])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        first = await node("assistant_stream.mjs", base, "hello")
        filed = await node("assistant_stream.mjs", base, "file a pothole", first["threadId"])
    assert first["status"] == 200 and first["contentType"] == "application/x-ndjson"
    assert first["threadId"].startswith("thread_")
    assert first["text"] == "Hello, resident." and first["textCreated"] == 1
    assert first["events"] == [
        "thread.run.created",
        "thread.message.created",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.completed",
    ]
    assert set(first["runThreadIds"]) == {first["threadId"]}
    assert filed["threadId"] == first["threadId"]  # the same conversation
    assert filed["toolCallsCreated"] == [
        {"id": "fe-call-1", "name": "report_incident", "arguments": json.dumps(POTHOLE)}
    ]
    (output,) = filed["toolCallDeltas"]
    assert json.loads(output["output"])["reference"].startswith("INC-")
    assert filed["text"].startswith("Filed as INC-")
    assert filed["events"][:3] == [
        "thread.run.created",
        "thread.run.step.created",
        "thread.run.step.delta",
    ]
    assert filed["events"][-1] == "thread.run.completed"
    assert filed["finalRun"] == {"status": "completed", "last_error": None}
    model.assert_complete()


async def test_assistant_stream_failure_is_a_failed_run_with_last_error() -> None:
    model = ScriptedModel([RuntimeError("the model broke")])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        seen = await node("assistant_stream.mjs", base, "hello")
    assert seen["events"] == ["thread.run.created", "thread.run.failed"]
    assert seen["finalRun"] == {
        "status": "failed",
        "last_error": {
            "code": "model_error",
            "message": "Sorry, something went wrong while answering. Please try again.",
        },
    }
    assert seen["error"] is None


async def test_use_chat_reads_text_a_tool_part_and_the_desk() -> None:
    model = ScriptedModel([ModelStep.respond(remembers), *filing_script()])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        # useChat sends the whole chat; the server reads only its last user message.
        first = await node("use_chat.mjs", base, "chat-fe-1", "hi there", "a message never sent")
        filed = await node("use_chat.mjs", base, "chat-fe-1", "file a pothole", "hi there")
    assert first["thrown"] is None and first["errors"] == []
    parts = first["message"]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "text"]
    assert parts[1] == {"type": "text", "text": "You said: hi there", "state": "done"}

    parts = filed["message"]["parts"]
    agent = [p for p in parts if p["type"] == "data-agent"]
    tools = [p for p in parts if p["type"] == "tool-report_incident"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert agent == [{"type": "data-agent", "id": "agent", "data": {"name": INCIDENT_DESK_NAME}}]
    assert len(tools) == 1 and tools[0]["state"] == "output-available"
    assert tools[0]["input"] == POTHOLE and tools[0]["output"]["reference"].startswith("INC-")
    assert texts[-1].startswith("Filed as INC-")
    assert [p["type"] for p in parts].count("step-start") == 2  # the tool step, the answer
    model.assert_complete()


async def test_use_chat_sees_a_failure_as_an_error_chunk() -> None:
    model = ScriptedModel([RuntimeError("the model broke")])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        seen = await node("use_chat.mjs", base, "chat-fe-2", "hello")
        refused = await node("use_chat.mjs", base, "not a valid id!", "hello")
        wordless = await node("use_chat.mjs", base, "chat-fe-3", "  ")
    assert wordless["thrown"]["status"] == 422
    assert "must hold a user message with text" in wordless["thrown"]["message"]
    assert seen["errors"] == ["Sorry, something went wrong while answering. Please try again."]
    assert seen["thrown"] is None
    assert refused["thrown"]["status"] == 422
    assert json.loads(refused["thrown"]["message"])["error"]["code"] == "invalid_request"


FRONT_ENDS = {
    "chat": ("/chat", lambda s: {"message": "hello", "session_id": s}),
    "query": ("/query", lambda s: {"prompt": "hello", "session_id": s}),
    "query_stream": ("/query/stream", lambda s: {"prompt": "hello", "session_id": s}),
    "assistant": ("/chat/stream", lambda s: {"content": "hello", "threadId": s}),
    "ui_chat": (
        "/api/chat",
        lambda s: {
            "id": s,
            "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
            "trigger": "submit-message",
        },
    ),
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
async def test_every_front_end_keeps_the_rules_of_chat(front_end: str) -> None:
    """Keys, a busy conversation, capacity, rate limits and bad bodies: the same JSON errors,
    before any stream starts, on every front end's endpoint."""
    path, body = FRONT_ENDS[front_end]
    first, second = Gate("Held open while the test knocks."), Gate("Held open too.")
    model = ScriptedModel([ModelStep.stream(first), ModelStep.stream(second)])
    settings = make_settings(api_keys="fe-key-1", max_concurrent_turns=2, rate_limit_per_minute=5)
    app = create_app(settings, model=model)
    key = {"Authorization": "Bearer fe-key-1"}

    def hold(session_id: str) -> asyncio.Task[httpx.Response]:
        payload = {"message": "hold", "session_id": session_id}
        return asyncio.create_task(client.post("/chat", json=payload, headers=key))

    async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        no_key = await client.post(path, json=body("fe-s1"))
        bad = await client.post(path, json={"nothing": "useful"}, headers=key)
        holders = [hold("fe-s1")]  # a turn answering on conversation fe-s1 (rate: 1)
        await asyncio.wait_for(first.first_sent.wait(), 10)
        busy = await client.post(path, json=body("fe-s1"), headers=key)  # 2
        holders.append(hold("fe-h2"))  # 3: now both slots of this worker answer
        await asyncio.wait_for(second.first_sent.wait(), 10)
        full = await client.post(path, json=body("fe-s2"), headers=key)  # 4
        first.opened.set()
        second.opened.set()
        await asyncio.gather(*holders)
        await client.post(path, json=body("fe-s3"), headers=key)  # 5: the last one allowed
        limited = await client.post(path, json=body("fe-s4"), headers=key)
    statuses = {
        "no key": no_key.status_code,
        "bad body": bad.status_code,
        "busy": busy.status_code,
        "at capacity": full.status_code,
        "rate limited": limited.status_code,
    }
    assert statuses == {
        "no key": 401,
        "bad body": 422,
        "busy": 409,
        "at capacity": 503,
        "rate limited": 429,
    }
    for response in (no_key, bad, busy, full, limited):
        assert set(response.json()) == {"error"}, response.text
    assert full.json()["error"]["code"] == "at_capacity" and "retry-after" in full.headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/query", {"prompt": "a long answer", "session_id": "gone-q"}),
        ("/chat", {"message": "a long answer", "session_id": "gone-c", "stream": False}),
    ],
)
async def test_a_client_that_leaves_a_whole_answer_request_stops_the_turn(
    path: str, body: dict[str, Any]
) -> None:
    """A JSON reply waits for the whole answer; a client that leaves meanwhile must not keep
    the model running and the conversation busy (409) until the answer is done."""
    slow = SlowStream(count=2000, gap=0.01)  # a 20 s answer
    model = ScriptedModel([ModelStep.stream(slow), [assistant_message("Here now.")]])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=0.5) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post(path, json=body)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            statuses = []
            for _ in range(20):  # 2 s at most
                again = await client.post(path, json=body)
                statuses.append(again.status_code)
                if again.status_code == 200:
                    break
                await asyncio.sleep(0.1)
    assert statuses[-1] == 200 and len(statuses) <= 5, statuses
    assert slow.sent < 500  # the run stopped soon after the client left


async def test_assistant_stream_parallel_tool_calls_and_a_handoff_mid_answer() -> None:
    """Two tool calls at once reach openai-node one after the other (it announces a call again
    if their deltas interleave), and the words before a handoff stay a message of their own."""
    status = {"reference": "INC-AAAAAA"}
    model = ScriptedModel(
        [
            [assistant_message("Let me pass you to the desk."), *to_incident_desk()],
            [
                function_call("report_incident", POTHOLE, call_id="par-1"),
                function_call("check_report_status", status, call_id="par-2"),
            ],
            [assistant_message("Filed, and that old one is unknown.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base:
        seen = await node("assistant_stream.mjs", base, "pothole, and what about INC-AAAAAA?")
    assert [c["id"] for c in seen["toolCallsCreated"]] == ["par-1", "par-2"]
    assert [d["id"] for d in seen["toolCallDeltas"]] == ["par-1", "par-2"]
    outputs = [json.loads(d["output"]) for d in seen["toolCallDeltas"]]
    assert outputs[0]["reference"].startswith("INC-") and outputs[1]["found"] is False
    assert [c["id"] for c in seen["toolCallsDone"]] == ["par-1", "par-2"]
    assert all(c["output"] for c in seen["toolCallsDone"])
    assert seen["messagesDone"] == [
        "Let me pass you to the desk.",
        "Filed, and that old one is unknown.",
    ]
    assert seen["finalRun"]["status"] == "completed" and seen["error"] is None


def test_a_failed_turn_closes_its_open_tool_calls_on_every_stream() -> None:
    """A call whose turn failed before its output: useChat gets its error (a tool part left
    `input-available` spins forever), the Assistants step completes as failed."""
    from townhall.protocols.assistant_stream import RunWriter
    from townhall.protocols.ui_message_stream import MessageWriter
    from townhall.turns.events import Failed, ToolCall

    call = ToolCall(name="ward_of", arguments={"street": "x"}, call_id="open-1")
    failed = Failed("model_error", "Sorry, something went wrong while answering.")
    ui, run = MessageWriter(), RunWriter("thread_x")
    ui_chunks = [json.loads(c[6:]) for e in (call, failed) for c in ui.render(e)]
    run_lines = [json.loads(line) for e in (call, failed) for line in run.render(e)]
    assert [c["type"] for c in ui_chunks] == [
        "start-step",
        "tool-input-available",
        "tool-output-error",
        "finish-step",
        "error",
        "finish",
    ]
    assert ui_chunks[2] == {
        "type": "tool-output-error",
        "toolCallId": "open-1",
        "errorText": failed.message,
    }
    steps = [line for line in run_lines if line["event"] == "thread.run.step.completed"]
    assert [step["data"]["status"] for step in steps] == ["failed"]
    assert run_lines[-1]["event"] == "thread.run.failed"


async def test_a_lone_surrogate_from_the_model_does_not_break_the_reply_or_the_history() -> None:
    model = ScriptedModel([[assistant_message("Broken \ud800 text")]])
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base, httpx.AsyncClient(base_url=base) as client:
        reply = await client.post("/query", json={"prompt": "hi", "session_id": "sur-1"})
        history = await client.get("/sessions/sur-1")
    assert reply.status_code == 200 and reply.json()["answer"] == "Broken ? text"
    assert history.status_code == 200
    assert history.json()["messages"][-1]["content"] == "Broken ? text"


async def test_a_long_use_chat_history_fits_when_only_the_new_message_is_sent() -> None:
    """useChat resends the whole chat each turn; past 64 KiB that is refused (413). The
    README's transport sends only the new message: the server keeps the history anyway."""
    model = ScriptedModel([[assistant_message("Still here.")]])
    app = create_app(make_settings(), model=model)
    long_ago = "a long earlier answer " * 4000  # ~88 KB of chat so far
    async with live_server(app) as base:
        whole = await node("use_chat.mjs", base, "chat-long", "and now?", long_ago)
        last_only = await node(
            "use_chat.mjs", base, "chat-long", "and now?", long_ago, LAST_ONLY="1"
        )
    assert whole["thrown"]["status"] == 413
    assert last_only["thrown"] is None
    assert last_only["message"]["parts"][-1]["text"] == "Still here."
