"""Resumable streams on one server (memory store): every /chat frame has an ordered `id:`; a
client that dropped reads the rest from GET /sessions/{id}/stream with Last-Event-ID (header or
query) and gets no frame twice and none lost; after the end, with an id of another turn, a
malformed id, a trimmed buffer; the grace a left turn runs on, and what is kept (500 idle turns,
then nothing once the retention has passed)."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from agents import RunResultStreaming

from api import create_app
from tests.support.app import live_server, make_settings, wait_for
from tests.support.fake_openai import FakeOpenAI
from tests.support.frames import IdFrame as Frame
from tests.support.frames import id_frames_text as text
from tests.support.frames import read_id_frames as frames_of


def position(frame_id: str) -> tuple[int, int]:
    turn, index = frame_id.split("-")
    return int(turn), int(index)


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A paced fake upstream and a real uvicorn server; settings from the test's marker."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    fake = FakeOpenAI(tokens=40, delay=0.02)
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        settings = make_settings(
            openai_api_key="sk-fake",
            openai_base_url=f"{upstream}/v1",
            openai_api="responses",
            model="fake",
            rate_limit_per_minute=0,
            **{"resume_grace_seconds": 10, **overrides},
        )
        app = create_app(settings)
        async with live_server(app) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                yield client, app, fake


async def chat(client: httpx.AsyncClient, session_id: str, limit: int | None = None) -> list[Frame]:
    payload = {"message": "tell me about the pothole", "session_id": session_id}
    async with client.stream("POST", "/chat", json=payload) as response:
        assert response.status_code == 200
        return await frames_of(response, limit)


async def resume(
    client: httpx.AsyncClient, session_id: str, last: str | None = None, *, query: bool = False
) -> tuple[int, list[Frame], Any]:
    headers = {"Accept": "text/event-stream"}
    params = {}
    if last is not None and query:
        params["last_event_id"] = last
    elif last is not None:
        headers["Last-Event-ID"] = last
    url = f"/sessions/{session_id}/stream"
    async with client.stream("GET", url, headers=headers, params=params) as response:
        if response.status_code != 200:
            await response.aread()
            body = response.json() if response.content else None
            return response.status_code, [], body
        return 200, await frames_of(response), None


async def test_every_frame_carries_an_ordered_id_unique_in_the_conversation(server: Any) -> None:
    client, _, fake = server
    fake.delay = 0.0
    first = await chat(client, "ids")
    second = await chat(client, "ids")
    for frames in (first, second):
        ids = [position(frame_id) for frame_id, _, _ in frames]
        assert [index for _, index in ids] == list(range(len(frames)))
        assert len({turn for turn, _ in ids}) == 1
        assert frames[0][1] == "session" and frames[-1][2] == "[DONE]"
    assert position(second[0][0])[0] > position(first[0][0])[0]  # a later turn: later ids


@pytest.mark.parametrize("query", [False, True], ids=["header", "query"])
async def test_a_dropped_stream_resumes_after_its_last_frame_and_loses_nothing(
    server: Any, query: bool
) -> None:
    client, app, fake = server
    dropped = await chat(client, "train", limit=6)
    registry = app.state.services.registry
    assert registry.get("train").busy  # the turn runs on without its client
    status, rest, _ = await resume(client, "train", dropped[-1][0], query=query)
    assert status == 200
    _, replay, _ = await resume(client, "train")  # the whole turn, kept after its end
    assert dropped + rest == replay
    assert rest[-1][2] == "[DONE]" and not any(f[1] == "error" for f in rest)
    assert len({f[0] for f in replay}) == len(replay)
    done = next(f for f in replay if f[1] == "done")
    assert text(replay) == json.loads(done[2])["reply"]
    assert registry.get("train").turns == 1  # it finished, and counts as a turn


async def test_after_the_end_the_rest_then_nothing(server: Any) -> None:
    client, _, fake = server
    fake.delay = 0.0
    whole = await chat(client, "ended")
    status, rest, _ = await resume(client, "ended", whole[3][0])
    assert (status, rest) == (200, whole[4:])
    assert (await resume(client, "ended", whole[-1][0]))[0] == 204  # it has the last frame
    status, _, body = await resume(client, "nobody-here")
    assert status == 404 and body["error"]["code"] == "session_not_found"


async def test_ids_that_are_not_of_this_turn_are_refused_with_a_reason(server: Any) -> None:
    client, _, fake = server
    fake.delay = 0.0
    first = await chat(client, "odd")
    await chat(client, "odd")
    turn, index = position(first[-1][0])
    cases = {
        "not-an-id": (422, "invalid_request"),
        "12-x": (422, "invalid_request"),
        first[2][0]: (410, "stream_position_gone"),  # the previous turn's: replaced
        f"{turn + 10**9}-3": (410, "stream_position_gone"),
    }
    for last, (status, code) in cases.items():
        got, frames, body = await resume(client, "odd", last)
        assert (got, body["error"]["code"], frames) == (status, code, []), last
    # Nothing changed: the last turn still replays whole.
    assert (await resume(client, "odd"))[1][-1][2] == "[DONE]"


async def test_another_keys_conversation_cannot_be_resumed() -> None:
    fake = FakeOpenAI(tokens=5)
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        settings = make_settings(
            openai_api_key="sk-fake",
            openai_base_url=f"{upstream}/v1",
            model="fake",
            api_keys="key-one-secret,key-two-secret",
        )
        async with live_server(create_app(settings)) as base_url:
            one = httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": "Bearer key-one-secret"}
            )
            two = httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": "Bearer key-two-secret"}
            )
            anyone = httpx.AsyncClient(base_url=base_url)
            async with one, two, anyone:
                frames = await chat(one, "mine")
                theirs = await resume(two, "mine", frames[1][0])
                nobody = await anyone.get("/sessions/mine/stream")
                own = await resume(one, "mine", frames[1][0])
    assert theirs[0] == 404 and theirs[1] == []
    assert nobody.status_code == 401
    assert own[0] == 200 and own[1] == frames[2:]


@pytest.mark.settings(resume_grace_seconds=1.0)
async def test_a_turn_nobody_resumes_is_cancelled_after_the_grace(server: Any) -> None:
    client, app, fake = server
    fake.tokens, fake.delay = 2000, 0.01
    dropped = await chat(client, "gone", limit=4)
    registry = app.state.services.registry
    loop = asyncio.get_running_loop()
    left_at = loop.time()
    await asyncio.sleep(0.5)
    assert registry.get("gone").busy and fake.open_streams == 1  # still answering
    await wait_for(lambda: not registry.get("gone").busy, limit=5)
    assert loop.time() - left_at >= 0.9
    await wait_for(lambda: fake.open_streams == 0, limit=5)
    assert app.state.services.broadcaster.running == 0
    status, rest, _ = await resume(client, "gone", dropped[-1][0])
    assert status == 200 and [f[1] for f in rest[-2:]] == ["error", "message"]
    assert '"abandoned"' in rest[-2][2] and rest[-1][2] == "[DONE]"
    fake.tokens, fake.delay = 5, 0.0
    follow_up = await client.post(
        "/chat", json={"message": "still there?", "session_id": "gone", "stream": False}
    )
    assert follow_up.status_code == 200 and follow_up.json()["reply"].startswith("[2]")


@pytest.mark.settings(resume_grace_seconds=0.5)
async def test_a_resume_within_the_grace_keeps_the_turn(server: Any) -> None:
    client, app, fake = server
    fake.tokens, fake.delay = 60, 0.02  # about 1.2 s
    dropped = await chat(client, "back", limit=3)
    await asyncio.sleep(0.3)
    status, rest, _ = await resume(client, "back", dropped[-1][0])
    assert status == 200 and rest[-1][2] == "[DONE]"
    assert [f[1] for f in rest if f[1] in ("error", "done")] == ["done"]


@pytest.mark.settings(resume_buffer_chars=2_000)
async def test_a_long_answer_keeps_only_its_newest_frames(server: Any) -> None:
    client, app, fake = server
    fake.tokens, fake.delay = 3000, 0.0
    whole = await chat(client, "long")
    logs = app.state.services.broadcaster.logs
    assert logs.kept_chars <= 2_000 + len(whole[-2][2]) + 64  # the newest entry stays whole
    status, _, body = await resume(client, "long", whole[2][0])
    assert status == 410 and body["error"]["code"] == "stream_position_gone"
    status, rest, _ = await resume(client, "long", whole[-3][0])  # it has every delta
    assert (status, rest) == (200, whole[-2:])


async def test_500_idle_turns_are_kept_small(server: Any) -> None:
    client, app, fake = server
    fake.tokens, fake.delay = 30, 0.0
    logs = app.state.services.broadcaster.logs
    gate = asyncio.Semaphore(25)

    async def one(n: int) -> int:
        async with gate:
            response = await client.post(
                "/chat", json={"message": "lockers at Ginza", "session_id": f"idle-{n}"}
            )
            return len(response.content)

    sizes = await asyncio.gather(*(one(n) for n in range(500)))
    assert len(logs.logs) == 500
    # What is kept is about the answer itself (each frame's text plus a little), not more.
    assert logs.kept_chars < 2 * sum(sizes)
    # ... and a kept log keeps nothing of its run (which is ~100 KiB: responses, agents, context).
    gc.collect()
    assert sum(isinstance(o, RunResultStreaming) for o in gc.get_objects()) < 5


@pytest.mark.settings(resume_retention_seconds=0.5)
async def test_nothing_is_kept_once_the_retention_has_passed(server: Any) -> None:
    client, app, fake = server
    fake.delay = 0.0
    whole = await chat(client, "brief")
    logs = app.state.services.broadcaster.logs
    assert "brief" in logs.logs
    await wait_for(lambda: not logs.logs, limit=5)
    assert (await resume(client, "brief", whole[2][0]))[0] == 204


@pytest.mark.settings(resume_streams=False)
async def test_with_resume_off_leaving_cancels_at_once_and_nothing_is_kept(server: Any) -> None:
    client, app, fake = server
    fake.tokens, fake.delay = 2000, 0.01
    frames = await chat(client, "off", limit=3)
    assert [f[0] for f in frames] == ["", "", ""]  # no ids: there is nothing to resume
    await wait_for(lambda: not app.state.services.registry.get("off").busy, limit=3)
    assert (await resume(client, "off"))[0] == 204


@pytest.mark.settings(stream_read_ahead_chars=2_000, stream_send_buffer_bytes=4096)
async def test_a_reader_that_stopped_reading_holds_up_no_other(server: Any) -> None:
    """The phone's old connection, half-open and read no more, while the client resumes on a
    new one: the resume reads the answer to its end; the old one is left behind."""
    client, app, fake = server
    fake.tokens, fake.delay = 20_000, 0.0  # ~100 KB: far past the window and the buffers
    host, port = client.base_url.host, client.base_url.port
    stalled = socket.create_connection((host, port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"message": "a long story", "session_id": "phone"}).encode()
    stalled.sendall(
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    try:
        registry = app.state.services.registry
        await wait_for(lambda: "phone" in [c.session_id for c in registry.list()], limit=5)
        async with asyncio.timeout(30):
            status, frames, _ = await resume(client, "phone")
        assert status == 200 and frames[-1][2] == "[DONE]"
        assert len(json.loads(frames[-2][2])["reply"].split()) == 20_000
    finally:
        stalled.close()
