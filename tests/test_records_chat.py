"""Reports and feedback end to end: a scripted model calls the real tools through /chat, and the
rows land in the real store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from api import create_app
from tests.support.app import asgi_client, live_server, make_settings, wait_for
from tests.support.desks import back_to_triage, to_feedback_desk, to_incident_desk
from tests.support.frames import named, read_frames
from tests.support.model_streams import SlowStream
from townhall.records.model import Filer
from townhall.records.store import SQLiteRecordStore

POTHOLE_ARGS = {
    "category": "pothole",
    "description": "A deep pothole in the right lane",
    "location": "Main Street",
    "severity": 3,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": None,
    "reporter_contact": None,
}
GINZA_MESSAGE = (
    "hi there i would like to give some feedback, I would like to suggest we should have lockers "
    "in ginza station becaause people shop there more, it's hard to bring your shopping bags "
    "everywhere. My name is jao garcia."
)
GINZA_ARGS = {
    "topic": "lockers at Ginza station",
    "summary": "Add lockers in Ginza station: people shop there and carrying bags is hard.",
    "sentiment": "neutral",
    "location": "Ginza station",
    "name": "jao garcia",
}


def tool_outputs(call: ModelCall) -> list[Any]:
    """Outputs of the tool calls the model has seen so far, parsed when they are JSON (the
    handoffs' left out)."""
    outputs = []
    handoffs = {
        item.get("call_id")
        for item in call.input
        if isinstance(item, dict) and str(item.get("name", "")).startswith("transfer_to_")
    }
    for item in call.input:
        if (
            isinstance(item, dict)
            and item.get("type") == "function_call_output"
            and item.get("call_id") not in handoffs
        ):
            try:
                outputs.append(json.loads(item["output"]))
            except ValueError:
                outputs.append(item["output"])
    return outputs


def references(call: ModelCall) -> list[str]:
    return [o["reference"] for o in tool_outputs(call) if isinstance(o, dict) and "reference" in o]


def confirm_last_reference(call: ModelCall) -> list[Any]:
    return [assistant_message(f"Done, your reference is {references(call)[-1]}.")]


def chat(client: httpx.AsyncClient, message: str, session_id: str) -> Any:
    return client.post("/chat", json={"message": message, "session_id": session_id})


def sqlite_count(table: str) -> int:
    """Rows in the default store (the tests run in a temporary directory)."""
    with contextlib.closing(sqlite3.connect("townhall.db")) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_pothole_report_and_ginza_feedback_land_once_and_can_be_looked_up() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", POTHOLE_ARGS, call_id="inc-1")],
            ModelStep.respond(confirm_last_reference),
            back_to_triage(),
            to_feedback_desk(),
            [function_call("submit_feedback", GINZA_ARGS, call_id="fb-1")],
            ModelStep.respond(confirm_last_reference),
            ModelStep.respond(
                lambda call: [
                    function_call("check_report_status", {"reference": ref}, call_id=f"st-{i}")
                    for i, ref in enumerate(references(call))
                ]
            ),
            [assistant_message("Both are received.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        first = await chat(client, "Hello, I want to report a pothole on Main Street", "res-1")
        second = await chat(client, GINZA_MESSAGE, "res-1")
        status = await chat(client, "What is the status of both?", "res-1")

    incident_ref = json.loads(first.text.split("event: tool_result\ndata: ")[1].split("\n")[0])[
        "output"
    ]["reference"]
    assert incident_ref.startswith("INC-") and len(incident_ref) == 10
    assert f"data: Done, your reference is {incident_ref}." in first.text
    assert "data: Done, your reference is FB-" in second.text
    assert sqlite_count("incidents") == 1
    assert sqlite_count("feedback") == 1

    store = SQLiteRecordStore("townhall.db")
    await store.open()
    try:
        incident = await store.get(incident_ref)
        feedback_ref = [r for r in status.text.split('"') if r.startswith("FB-")][0]
        feedback = await store.get(feedback_ref)
    finally:
        await store.close()
    assert incident is not None and incident.session_id == "res-1"
    assert incident.row()["location"] == "Main Street" and incident.status == "received"
    assert feedback is not None and feedback.row()["name"] == "jao garcia"
    assert feedback.row()["topic"] == "lockers at Ginza station"

    results = [
        json.loads(line.removeprefix("data: "))["output"]
        for line in status.text.splitlines()
        if line.startswith('data: {"call_id":"st-')
    ]
    assert [(r["found"], r["reference"], r["status"]) for r in results] == [
        (True, incident_ref, "received"),
        (True, feedback_ref, "received"),
    ]
    assert "pothole at Main Street" in results[0]["summary"]
    model.assert_complete()


async def test_another_conversation_sees_status_and_category_but_no_personal_text() -> None:
    """On a server without keys every caller is the same principal ("anonymous"): from another
    conversation a reference answers with its status and category only."""
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", POTHOLE_ARGS, call_id="inc-1")],
            ModelStep.respond(confirm_last_reference),
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        first = await chat(client, "pothole on Main Street", "owner")
        reference = first.text.split("your reference is ")[1].split(".")[0]
        model.extend(
            [
                [function_call("check_report_status", {"reference": reference}, call_id="x")],
                [assistant_message("I can't find that one.")],
            ]
        )
        snoop = await chat(client, f"status of {reference}?", "stranger")
    output = json.loads(snoop.text.split("event: tool_result\ndata: ")[1].split("\n")[0])["output"]
    assert output | {"created_at": None} == {
        "found": True,
        "reference": reference,
        "kind": "incident",
        "status": "received",
        "category": "pothole",
        "summary": None,
        "created_at": None,
        "note": "Filed in another conversation: only its status and category can be shown here.",
    }
    assert "Main Street" not in snoop.text and "deep pothole" not in snoop.text


async def test_duplicate_tool_calls_in_one_turn_return_the_same_reference() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [
                function_call("report_incident", POTHOLE_ARGS, call_id="dup-1"),
                function_call("report_incident", POTHOLE_ARGS, call_id="dup-2"),
            ],
            [assistant_message("Filed.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        response = await client.post(
            "/chat", json={"message": "pothole!", "session_id": "d1", "stream": False}
        )
        # A retried tool call in a later turn (same session, same arguments) is a duplicate too.
        model.extend(
            [
                [function_call("report_incident", POTHOLE_ARGS, call_id="dup-3")],
                [assistant_message("ok")],
            ]
        )
        later = await client.post(
            "/chat", json={"message": "again", "session_id": "d1", "stream": False}
        )
    outputs = [call["output"] for call in response.json()["tool_calls"]]
    outputs += [call["output"] for call in later.json()["tool_calls"]]
    assert len({o["reference"] for o in outputs}) == 1
    assert sorted(o["duplicate"] for o in outputs) == [False, True, True]
    assert sqlite_count("incidents") == 1


async def test_invalid_tool_arguments_go_back_to_the_model() -> None:
    bad = POTHOLE_ARGS | {"severity": 9, "category": "meteor"}
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", bad, call_id="bad-1")],
            [function_call("report_incident", POTHOLE_ARGS, call_id="good-1")],
            [assistant_message("Filed after fixing.")],
        ]
    )
    app = create_app(make_settings(), model=model)
    async with asgi_client(app) as client:
        response = await client.post(
            "/chat", json={"message": "report", "session_id": "v1", "stream": False}
        )
    first, second = response.json()["tool_calls"]
    assert first["output"].startswith("The tool was not run: the arguments were invalid")
    assert "severity" in first["output"] and "category" in first["output"]
    assert second["output"]["reference"].startswith("INC-")
    heard = tool_outputs(model.calls[2])
    assert heard == [first["output"]]  # the model heard what to fix
    assert sqlite_count("incidents") == 1


async def test_record_survives_a_client_that_disconnects_right_after_the_tool_ran() -> None:
    slow = SlowStream(count=1000, gap=0.01)
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", POTHOLE_ARGS, call_id="inc-dc")],
            ModelStep.stream(slow),
        ]
    )
    app = create_app(make_settings(), model=model)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        payload = {"message": "pothole", "session_id": "dc-rec"}
        async with client.stream("POST", "/chat", json=payload) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: tool_result"):
                    break
        registry = app.state.services.registry
        await wait_for(lambda: not registry.get("dc-rec").busy, limit=2)
    assert slow.sent < 1000  # the run stopped, whether or not the next model call had begun
    assert sqlite_count("incidents") == 1


async def test_a_failing_outbox_and_store_still_ends_the_stream_well(tmp_path: Path) -> None:
    """Even when nothing can be written, the resident hears the truth and the stream ends."""
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", POTHOLE_ARGS, call_id="inc-x")],
            [assistant_message("Sorry, please try again later.")],
        ]
    )
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path}/records.db", outbox_path=str(tmp_path / "outbox.db")
    )
    app = create_app(settings, model=model)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        desk = app.state.services.desk
        await desk.store.close()  # both writers gone: every write raises
        await desk.outbox.close()
        async with client.stream("POST", "/chat", json={"message": "x", "session_id": "f"}) as r:
            frames = await read_frames(r)
        health = await client.get("/health")
    assert named(frames, "tool_result")[0]["output"].startswith("The tool failed because of a")
    assert frames[-1].data == "[DONE]"
    assert "Traceback" not in str(frames)
    assert health.status_code == 503
    assert health.json()["checks"]["outbox"]["status"] == "down"


async def test_root_and_health_report_the_record_store() -> None:
    async with asgi_client(create_app(make_settings())) as client:
        info = (await client.get("/")).json()
        health = (await client.get("/health")).json()
    assert info["records"] == "sqlite"
    assert health["checks"]["records"] == {
        "status": "ok",
        "required": False,
        "detail": {"backend": "sqlite", "last_error": None},
    }
    assert health["checks"]["outbox"]["detail"] == {
        "depth": 0,
        "stored": 0,
        "queued": 0,
        "synced": 0,
        "dead": 0,
    }
    assert health["checks"]["dead_letters"]["status"] == "ok"


async def test_parallel_identical_filings_write_one_row() -> None:
    app = create_app(make_settings(), model=ScriptedModel([]))
    async with asgi_client(app):
        from townhall.records.model import Incident

        desk = app.state.services.desk
        filer = Filer("anonymous", "conv_p1", "p1")
        records = [Incident.create(filer, **POTHOLE_ARGS) for _ in range(5)]
        filings = await asyncio.gather(*(desk.file(r) for r in records))
    assert len({f.reference for f in filings}) == 1
    assert sum(not f.duplicate for f in filings) == 1
    assert sqlite_count("incidents") == 1
