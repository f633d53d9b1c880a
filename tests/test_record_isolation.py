"""A resident's report stays with the key that filed it, on every record store and entry point.

Two API keys, A and B, and the admin key. A files an incident that holds personal data; B tries
every way an outsider would to read it back: the same session label after A deleted it, A's
ChatKit thread id as a /chat session id, guessed references, the reference in other case and
spacing. Each attempt must answer exactly as for a reference that never existed, and nothing of
A's text may appear anywhere in B's responses. The stores are real (SQLite, PostgreSQL, and the
supabase client against a PostgREST double).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from chatkit.types import ThreadMetadata

from api import create_app
from tests.support.app import asgi_client, make_settings
from tests.support.backends import BACKENDS, backend
from tests.support.chatkit_client import ChatKitClient, thread_id_from, user_input
from tests.support.desks import back_to_triage, to_incident_desk
from townhall.db.sqlite import SQLiteFile
from townhall.protocols.chatkit.server import ChatKitRequestContext
from townhall.protocols.chatkit.store import CHATKIT_SCHEMA, ChatKitStore

KEYS = {"api_keys": "key-a-secret,key-b-secret", "admin_key": "admin-secret"}
A = {"Authorization": "Bearer key-a-secret"}
B = {"Authorization": "Bearer key-b-secret"}
ADMIN = {"Authorization": "Bearer admin-secret"}

PRIVATE = ("Ana Ruiz", "600 111 222", "Calle Mayor 7", "outside my front door")
REPORT = {
    "category": "pothole",
    "description": "A deep pothole outside my front door",
    "location": "Calle Mayor 7",
    "severity": 4,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": "Ana Ruiz",
    "reporter_contact": "+34 600 111 222",
}
NOT_FOUND_NOTE = "No report with this reference was filed by this resident."


def _last_reference(call: ModelCall) -> list[Any]:
    outputs = [
        json.loads(item["output"])
        for item in call.input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    ]
    filed = [output for output in outputs if "reference" in output]  # not the handoffs'
    return [assistant_message(f"Filed as {filed[-1]['reference']}.")]


_CALLS = itertools.count()


def _call_id() -> str:
    return f"call-{next(_CALLS)}"


@dataclass
class Town:
    """One app with a scripted model that each helper tells what to do next."""

    client: httpx.AsyncClient
    model: ScriptedModel

    async def file(self, headers: dict[str, str], session_id: str) -> str:
        self.model.extend(
            [
                to_incident_desk(),
                [function_call("report_incident", REPORT, call_id=_call_id())],
                back_to_triage(),  # the next filing in this conversation starts at triage again
                ModelStep.respond(_last_reference),
            ]
        )
        response = await self._chat(headers, session_id, "file it", stream=False)
        assert response.status_code == 200, response.text
        reference: str = response.json()["tool_calls"][0]["output"]["reference"]
        return reference

    async def look_up(
        self, headers: dict[str, str], session_id: str, reference: str, *, stream: bool
    ) -> tuple[dict[str, Any], str]:
        """The tool's answer, and the whole response text (to search for leaks)."""
        self.model.extend(
            [
                [
                    function_call(
                        "check_report_status", {"reference": reference}, call_id=_call_id()
                    )
                ],
                [assistant_message("Here is what I found.")],
            ]
        )
        response = await self._chat(headers, session_id, f"status of {reference}?", stream)
        assert response.status_code == 200, response.text
        if stream:
            data = response.text.split("event: tool_result\ndata: ")[1].split("\n")[0]
            return json.loads(data)["output"], response.text
        return response.json()["tool_calls"][0]["output"], response.text

    def _chat(self, headers: dict[str, str], session_id: str, message: str, stream: bool) -> Any:
        payload = {"message": message, "session_id": session_id, "stream": stream}
        return self.client.post("/chat", json=payload, headers=headers)


@pytest.fixture(params=BACKENDS)
async def town(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Town]:
    async with backend(request.param, tmp_path) as chosen:
        model = ScriptedModel([])
        settings = make_settings(**KEYS, **chosen.settings, outbox_path=str(tmp_path / "outbox.db"))
        async with asgi_client(create_app(settings, model=model)) as client:
            yield Town(client, model)


def assert_unknown(answer: dict[str, Any], text: str) -> None:
    """The answer for a reference that does not exist, and not a word of A's report."""
    assert answer == {
        "found": False,
        "reference": answer["reference"],
        "kind": None,
        "status": None,
        "category": None,
        "summary": None,
        "created_at": None,
        "note": NOT_FOUND_NOTE,
    }
    for private in PRIVATE:
        assert private not in text


@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
async def test_a_deleted_and_recreated_label_reaches_nothing_of_another_key(
    town: Town, stream: bool
) -> None:
    reference = await town.file(A, "shared-1")
    assert (await town.client.delete("/sessions/shared-1", headers=A)).status_code == 200
    answer, text = await town.look_up(B, "shared-1", reference, stream=stream)
    assert_unknown(answer, text)
    # A's own new conversation under the old label: a new instance, so no personal data.
    mine, mine_text = await town.look_up(A, "shared-1", reference, stream=stream)
    assert (mine["found"], mine["status"], mine["category"], mine["summary"]) == (
        True,
        "received",
        "pothole",
        None,
    )
    for private in PRIVATE:
        assert private not in mine_text


async def test_guessed_and_respelled_references_answer_as_unknown(town: Town) -> None:
    reference = await town.file(A, "a-1")
    suffix = reference.split("-")[1]
    guesses = [
        reference,
        reference.lower(),
        f"  {reference}  ",
        f" {reference.lower()}\t",
        f"INC-{suffix[::-1]}",
        "INC-222222",
        f"FB-{suffix}",
    ]
    for guess in guesses:
        answer, text = await town.look_up(B, "a-1", guess, stream=True)
        assert_unknown(answer, text)
    # The same spellings from A's conversation find the report in full.
    for spelling in (reference.lower(), f"  {reference}  "):
        answer, _ = await town.look_up(A, "a-1", spelling, stream=False)
        assert answer["found"] and answer["reference"] == reference
        assert "Calle Mayor 7" in answer["summary"]


async def test_the_admin_key_sees_every_report(town: Town) -> None:
    reference = await town.file(A, "a-2")
    answer, _ = await town.look_up(ADMIN, "admin-desk", reference, stream=False)
    assert answer["found"] and "Calle Mayor 7" in answer["summary"]


async def test_a_chatkit_thread_id_is_no_way_into_its_reports() -> None:
    model = ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", REPORT, call_id="kit-1")],
            [assistant_message("Filed.")],
        ]
    )
    async with asgi_client(create_app(make_settings(**KEYS), model=model)) as http:
        town = Town(http, model)
        a_kit = ChatKitClient(http)
        http.headers.update(A)
        events = await a_kit.create_thread("pothole outside my front door")
        http.headers.pop("Authorization")
        thread_id = thread_id_from(events)
        card = next(
            e.item.widget.model_dump_json()
            for e in events
            if getattr(e, "type", "") == "thread.item.done" and e.item.type == "widget"
        )
        reference = re.findall(r"INC-[0-9A-Z]{6}", card)[0]
        assert reference.startswith("INC-")

        answer, text = await town.look_up(B, thread_id, reference, stream=True)
        assert_unknown(answer, text)
        other_thread = await http.post(
            "/chatkit",
            json={"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
            headers=B,
        )
        missing_thread = await http.post(
            "/chatkit",
            json={"type": "threads.get_by_id", "params": {"thread_id": "thr_missing"}},
            headers=B,
        )
        intrude = await http.post(
            "/chatkit",
            json={
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": user_input(f"status {reference}")},
            },
            headers=B,
        )
        items = await http.post(
            "/chatkit",
            json={"type": "items.list", "params": {"thread_id": thread_id}},
            headers=B,
        )
        # A itself, through /chat with the thread id as a label: another conversation.
        mine, _ = await town.look_up(A, thread_id, reference, stream=False)
        admin, _ = await town.look_up(ADMIN, thread_id, reference, stream=False)
    for refused in (other_thread, intrude, items):
        assert refused.status_code == missing_thread.status_code == 404
        assert refused.json()["error"]["code"] == "thread_not_found"
        for private in PRIVATE:
            assert private not in refused.text
    assert mine["found"] and mine["summary"] is None and mine["category"] == "pothole"
    assert admin["found"] and "Calle Mayor 7" in admin["summary"]


async def test_chatkit_thread_ids_are_unguessable_and_another_keys_id_changes_no_page() -> None:
    async with asgi_client(create_app(make_settings(**KEYS))) as http:
        a_kit = ChatKitClient(http)
        http.headers.update(A)
        a_thread = thread_id_from(await a_kit.create_thread("mine"))
        http.headers.update(B)
        b_thread = thread_id_from(await a_kit.create_thread("theirs"))
        pages = {
            after: await a_kit.call("threads.list", {"after": after, "limit": 10})
            for after in (a_thread, "thr_00000000000000000000000000000000")
        }
        http.headers.pop("Authorization")
    assert a_thread.startswith("thr_") and len(a_thread) == len("thr_") + 32
    listed = {after: [t["id"] for t in page.json()["data"]] for after, page in pages.items()}
    assert listed[a_thread] == listed["thr_00000000000000000000000000000000"] == [b_thread]


async def test_a_colliding_thread_id_never_overwrites_another_keys_thread(tmp_path: Path) -> None:
    store = ChatKitStore(SQLiteFile(tmp_path / "threads.db", CHATKIT_SCHEMA))
    await store.open()
    try:
        mine = ThreadMetadata(id="thr_same", title="A's thread", created_at=datetime.now())
        await store.save_thread(mine, ChatKitRequestContext("r1", owner="key-a", creator="key-a"))
        theirs = mine.model_copy(update={"title": "B's thread"})
        await store.save_thread(theirs, ChatKitRequestContext("r2", owner="key-b", creator="key-b"))
        kept = await store.load_thread("thr_same", None)
        owner = await store.thread_owner("thr_same")
    finally:
        await store.close()
    assert kept.title == "A's thread" and owner == (True, "key-a")
