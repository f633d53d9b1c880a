"""The triage agent and its desks: handoffs with the SDK's own handoff tools, the `agent` event,
the conversation continuing with the desk its last handoff went to, and each record filed once,
by the desk that owns its tool. ScriptedModel plays the model (one model for every agent; its
recorded calls say which agent was asked)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

import httpx
import pytest
from agents.testing import ModelCall, ScriptedModel, assistant_message, function_call

from agents_def import FEEDBACK_DESK_NAME, INCIDENT_DESK_NAME, TRIAGE_NAME
from api import create_app
from tests.support.app import asgi_client, live_server, make_settings
from tests.support.chatkit_client import ChatKitClient, of_type, thread_id_from
from tests.support.desks import (
    BACK_TO_TRIAGE,
    TO_FEEDBACK_DESK,
    TO_INCIDENT_DESK,
    back_to_triage,
    to_feedback_desk,
    to_incident_desk,
)
from tests.support.fake_openai import FakeOpenAI
from tests.support.frames import Frame, named, parse_sse

POTHOLE = {
    "category": "pothole",
    "description": "A deep pothole in the right lane",
    "location": "Main Street 3",
    "severity": 4,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": None,
    "reporter_contact": None,
}
LOCKERS = {
    "topic": "lockers at Ginza station",
    "summary": "Please add lockers in Ginza station for shopping bags.",
    "sentiment": "neutral",
    "location": "Ginza station",
    "name": None,
}


def _tool_name(tool: dict[str, Any]) -> str:
    """A tool's name in a request body: Responses (`name`) or Chat Completions (`function`)."""
    return str(tool.get("name") or tool["function"]["name"])


def rows(table: str) -> int:
    with contextlib.closing(sqlite3.connect("townhall.db")) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def asked(call: ModelCall) -> tuple[str, list[str]]:
    """Which agent a model call was for (its instructions' opening) and the tools it had."""
    instructions = call.system_instructions or ""
    for name in (INCIDENT_DESK_NAME, FEEDBACK_DESK_NAME):
        if f"You are the town hall's {name}" in instructions:
            break
    else:
        name = TRIAGE_NAME
    tools = sorted([t.name for t in call.tools] + [h.tool_name for h in call.handoffs])
    return name, tools


async def chat(client: httpx.AsyncClient, message: str, session_id: str) -> list[Frame]:
    response = await client.post("/chat", json={"message": message, "session_id": session_id})
    assert response.status_code == 200, response.text
    return [Frame(event, data) for event, data in parse_sse(response.content)]


def kinds(frames: list[Frame]) -> list[str]:
    """The frames' events with repeats of `message` folded (the text streams in pieces)."""
    out: list[str] = []
    for frame in frames:
        if not (frame.event == "message" and out and out[-1] == "message"):
            out.append(frame.event)
    return out


async def test_a_report_goes_through_the_incident_desk_and_the_conversation_stays_there() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [assistant_message("Where exactly is it?")],
            [function_call("report_incident", POTHOLE, call_id="inc-1")],
            [assistant_message("Filed.")],
            back_to_triage(),
            [assistant_message("Happy to help with anything else.")],
            [assistant_message("Hello again.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        first = await chat(client, "There is a pothole", "desk-1")
        second = await chat(client, "Main Street 3, please file it", "desk-1")
        third = await chat(client, "Thanks, what are your opening hours?", "desk-1")
        fourth = await chat(client, "Hello?", "desk-1")

    # The handoff is an `agent` frame, not a tool call; a turn that continues with a desk says
    # so first; the hand back names the assistant; a turn at triage says nothing.
    assert kinds(first) == ["session", "agent", "message", "done", "message"]
    assert named(first, "agent") == [{"name": INCIDENT_DESK_NAME}]
    assert kinds(second) == [
        "session",
        "agent",
        "tool_call",
        "tool_result",
        "message",
        "done",
        "message",
    ]
    assert named(second, "agent") == [{"name": INCIDENT_DESK_NAME}]
    assert kinds(third) == ["session", "agent", "agent", "message", "done", "message"]
    assert named(third, "agent") == [{"name": INCIDENT_DESK_NAME}, {"name": TRIAGE_NAME}]
    assert kinds(fourth) == ["session", "message", "done", "message"]

    # Who the model was asked as, and with which tools.
    triage_tools = sorted(["check_report_status", TO_INCIDENT_DESK, TO_FEEDBACK_DESK])
    incident_tools = sorted(["report_incident", "check_report_status", BACK_TO_TRIAGE])
    assert [asked(call) for call in model.calls] == [
        (TRIAGE_NAME, triage_tools),
        (INCIDENT_DESK_NAME, incident_tools),
        (INCIDENT_DESK_NAME, incident_tools),  # the second message: still at the desk
        (INCIDENT_DESK_NAME, incident_tools),
        (INCIDENT_DESK_NAME, incident_tools),  # the third: hands back
        (TRIAGE_NAME, triage_tools),
        (TRIAGE_NAME, triage_tools),  # the fourth: triage from the start
    ]
    assert rows("incidents") == 1
    model.assert_complete()


async def test_feedback_after_an_incident_passes_back_through_triage() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", POTHOLE, call_id="inc-1")],
            [assistant_message("Filed.")],
            back_to_triage(),
            to_feedback_desk(),
            [function_call("submit_feedback", LOCKERS, call_id="fb-1")],
            [assistant_message("Sent.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        await chat(client, "Pothole at Main Street 3, severity 4, file it", "desk-2")
        frames = await chat(client, "Also: lockers in Ginza station, please", "desk-2")
    assert [a["name"] for a in named(frames, "agent")] == [
        INCIDENT_DESK_NAME,
        TRIAGE_NAME,
        FEEDBACK_DESK_NAME,
    ]
    assert named(frames, "tool_call")[0]["name"] == "submit_feedback"
    assert (rows("incidents"), rows("feedback")) == (1, 1)
    model.assert_complete()


async def test_triage_cannot_file_a_report_itself() -> None:
    """Only the Incident desk owns report_incident: a model that calls it at triage files
    nothing, and the resident gets an error frame, not a stack trace."""
    model = ScriptedModel([[function_call("report_incident", POTHOLE, call_id="rogue")]])
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        frames = await chat(client, "file a pothole", "desk-3")
        health = await client.get("/health")
    assert named(frames, "error") == [
        {
            "code": "model_error",
            "message": "Sorry, something went wrong while answering. Please try again.",
        }
    ]
    assert "Traceback" not in json.dumps([f.data for f in frames])
    assert rows("incidents") == 0
    assert health.status_code == 200


async def test_a_desk_keeps_its_conversation_through_a_failed_turn() -> None:
    """A turn that fails after the handoff keeps the handoff (the SDK saved it): the next
    message continues at the desk, with no dangling handoff call in the history."""
    model = ScriptedModel(
        [to_incident_desk(), RuntimeError("the model broke"), [assistant_message("Back.")]]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        failed = await chat(client, "pothole", "desk-4")
        again = await chat(client, "hello?", "desk-4")
    assert kinds(failed)[-2:] == ["error", "message"]
    assert named(again, "agent") == [{"name": INCIDENT_DESK_NAME}]
    assert asked(model.calls[-1])[0] == INCIDENT_DESK_NAME


async def test_chatkit_shows_the_handoff_and_keeps_the_desk_for_the_next_message() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [assistant_message("Where is it?")],
            [function_call("report_incident", POTHOLE, call_id="kit-inc")],
            [assistant_message("Filed.")],
        ]
    )
    async with asgi_client(create_app(make_settings(), model=model)) as http:
        client = ChatKitClient(http)
        events = await client.create_thread("There is a pothole")
        thread_id = thread_id_from(events)
        follow_up = await client.send(thread_id, "Main Street 3, please file it")
    progress = [p.text for p in of_type(events, "progress_update")]
    assert progress == [f"{INCIDENT_DESK_NAME} is answering"]
    later = [p.text for p in of_type(follow_up, "progress_update")]
    assert later == [f"{INCIDENT_DESK_NAME} is answering", "Filing your report with the city…"]
    assert [asked(call)[0] for call in model.calls] == [TRIAGE_NAME] + [INCIDENT_DESK_NAME] * 3
    assert rows("incidents") == 1
    model.assert_complete()


async def test_echo_mode_answers_at_triage_and_never_hands_off() -> None:
    app = create_app(make_settings())  # no key, no base URL: the echo model
    async with asgi_client(app) as client:
        frames = await chat(client, "pothole on Main Street", "echo-desk")
    assert "agent" not in kinds(frames)
    assert kinds(frames) == ["session", "message", "done", "message"]


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_a_handoff_over_each_http_model_path(api: str) -> None:
    """The same handoff with the real OpenAI client and our decoders for each wire API, against
    the fake OpenAI-compatible server (it hands a `REPORT:` message to the desk, which files
    it)."""
    fake = FakeOpenAI(tokens=3)
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        settings = make_settings(
            openai_api_key="sk-fake",
            openai_base_url=f"{upstream}/v1",
            openai_api=api,
            model="fake",
        )
        async with asgi_client(create_app(settings)) as client:
            frames = await chat(client, "REPORT: broken light at the corner", "http-desk")
    assert kinds(frames) == [
        "session",
        "agent",
        "tool_call",
        "tool_result",
        "message",
        "done",
        "message",
    ]
    assert named(frames, "agent") == [{"name": INCIDENT_DESK_NAME}]
    assert named(frames, "tool_result")[0]["output"]["reference"].startswith("INC-")
    offered = [sorted(_tool_name(t) for t in request["tools"]) for request in fake.requests]
    assert offered == [
        sorted(["check_report_status", TO_INCIDENT_DESK, TO_FEEDBACK_DESK]),
        sorted(["report_incident", "check_report_status", BACK_TO_TRIAGE]),
        sorted(["report_incident", "check_report_status", BACK_TO_TRIAGE]),
    ]
    assert rows("incidents") == 1


async def test_two_handoffs_at_once_follow_the_first_in_this_turn_and_the_next() -> None:
    """The SDK follows the first of two handoffs called together and answers the second
    "ignoring this one": the next message must go to the desk that answered, not the last
    handoff called, and the ignored one is no tool_result frame."""
    model = ScriptedModel(
        [
            [
                function_call(TO_INCIDENT_DESK, {}, call_id="first"),
                function_call(TO_FEEDBACK_DESK, {}, call_id="second"),
            ],
            [assistant_message("Incident desk here.")],
            [assistant_message("Still the Incident desk.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        first = await chat(client, "pothole, and also some feedback", "desk-twice")
        second = await chat(client, "hello?", "desk-twice")
    assert kinds(first) == ["session", "agent", "message", "done", "message"]
    assert named(first, "agent") == [{"name": INCIDENT_DESK_NAME}]
    assert named(second, "agent") == [{"name": INCIDENT_DESK_NAME}]
    assert [asked(call)[0] for call in model.calls] == [TRIAGE_NAME] + [INCIDENT_DESK_NAME] * 2
