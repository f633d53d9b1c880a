"""One contract for every session store: memory, Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import make_settings
from tests.support.session_backends import SESSION_BACKENDS, session_settings
from townhall.errors import (
    SessionBusyError,
    SessionCapacityError,
    SessionNotFoundError,
)
from townhall.sessions.factory import choose_session_store
from townhall.sessions.registry import SessionRegistry
from townhall.sessions.store import SessionStore


@pytest.fixture(params=SESSION_BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    opened: list[SessionStore] = []
    async with session_settings(request.param, tmp_path) as chosen:

        async def make(**overrides: Any) -> SessionStore:
            settings = make_settings(**chosen, session_lock_seconds=0.6, **overrides)
            registry = SessionRegistry(settings.max_sessions, settings.session_ttl_seconds)
            store = choose_session_store(settings, registry)
            await store.open()
            opened.append(store)
            return store

        try:
            yield make
        finally:
            for store in opened:
                await store.close()


async def test_a_turn_is_one_at_a_time_and_counted(make_store: Any) -> None:
    store = await make_store()
    lease = await store.begin_turn("s1", owner=None)
    assert (await store.get("s1", None)).busy
    with pytest.raises(SessionBusyError):
        await store.begin_turn("s1", owner=None)
    await store.end_turn(lease, completed=True)
    meta = await store.get("s1", None)
    assert (meta.busy, meta.turns) == (False, 1)
    again = await store.begin_turn("s1", owner=None)
    await store.end_turn(again, completed=False)
    assert (await store.get("s1", None)).turns == 1


async def test_history_round_trips_and_leaves_out_unanswered_tool_calls(make_store: Any) -> None:
    store = await make_store()
    lease = await store.begin_turn("h1", owner=None)
    await lease.history.add_items(
        [
            {"role": "user", "content": "file it"},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "report_incident",
                "arguments": "{}",
            },
        ]
    )
    await store.end_turn(lease, completed=False)
    items = await store.items("h1")
    assert items == [{"role": "user", "content": "file it"}]


async def test_owners_see_only_their_own_sessions(make_store: Any) -> None:
    store = await make_store()
    await store.end_turn(await store.begin_turn("mine", owner="key-a"), completed=True)
    await store.end_turn(await store.begin_turn("theirs", owner="key-b"), completed=True)
    assert [m.session_id for m in await store.list("key-a")] == ["mine"]
    assert {m.session_id for m in await store.list(None)} == {"mine", "theirs"}
    before = await store.get("theirs", None)
    for attempt in (
        store.get("theirs", "key-a"),
        store.begin_turn("theirs", owner="key-a"),
        store.forget("theirs", "key-a"),
    ):
        with pytest.raises(SessionNotFoundError) as refused:  # the same as for no such session
            await attempt
        assert refused.value.message == SessionNotFoundError("theirs").message
    after = await store.get("theirs", None)  # the admin view
    # The refused turn changed nothing: not touched, not left locked.
    assert (after.owner, after.busy, after.last_active) == ("key-b", False, before.last_active)
    await store.end_turn(await store.begin_turn("theirs", owner="key-b"), completed=True)


async def test_forget_stops_a_running_turn_and_removes_the_history(make_store: Any) -> None:
    store = await make_store()
    lease = await store.begin_turn("f1", owner=None)
    await lease.history.add_items([{"role": "user", "content": "hello"}])
    cancelled = asyncio.Event()
    lease.on_cancel(cancelled.set)
    meta = await store.forget("f1", None)
    assert meta.busy
    # In memory the turn is told at once; shared stores tell it at the next lock renewal.
    await asyncio.wait_for(cancelled.wait(), 2)
    await store.end_turn(lease, completed=False)
    with pytest.raises(SessionNotFoundError):
        await store.get("f1", None)
    fresh = await store.begin_turn("f1", owner=None)
    assert await fresh.history.get_items() == []
    await store.end_turn(fresh, completed=False)


async def test_least_recently_active_idle_session_makes_room(make_store: Any) -> None:
    store = await make_store(max_sessions=2)
    for session_id in ("a", "b"):
        await store.end_turn(await store.begin_turn(session_id, owner=None), completed=True)
        await asyncio.sleep(0.01)
    held = await store.begin_turn("a", owner=None)  # "a" is busy now, and the most recent
    await store.end_turn(await store.begin_turn("c", owner=None), completed=True)
    assert {m.session_id for m in await store.list(None)} == {"a", "c"}
    held_d = await store.begin_turn("d", owner=None)  # evicts "c", the only idle one
    assert {m.session_id for m in await store.list(None)} == {"a", "d"}
    with pytest.raises(SessionCapacityError):  # both busy: nothing may be evicted
        await store.begin_turn("e", owner=None)
    await store.end_turn(held_d, completed=False)
    await store.end_turn(held, completed=False)


@pytest.mark.parametrize("make_store", ["redis", "sqlite", "postgresql"], indirect=True)
async def test_a_crashed_holders_lock_lapses(make_store: Any) -> None:
    store = await make_store()
    lease = await store.begin_turn("crash", owner=None)
    store.renewals.stop(lease)  # the holder dies: nobody renews, nobody releases the lock
    with pytest.raises(SessionBusyError):
        await store.begin_turn("crash", owner=None)
    other = await make_store()  # another worker
    taken: list[Any] = []

    async def try_take() -> bool:
        try:
            taken.append(await other.begin_turn("crash", owner=None))
        except SessionBusyError:
            return False
        return True

    deadline = asyncio.get_running_loop().time() + 3
    while not await try_take():
        assert asyncio.get_running_loop().time() < deadline, "lock never lapsed"
        await asyncio.sleep(0.05)
    await other.end_turn(taken[0], completed=True)
    assert (await other.get("crash", None)).turns == 1


async def test_a_conversation_keeps_its_instance_id_until_it_is_forgotten(make_store: Any) -> None:
    store = await make_store()
    first = await store.begin_turn("inst", owner=None)
    await store.end_turn(first, completed=True)
    again = await store.begin_turn("inst", owner=None)
    await store.end_turn(again, completed=True)
    other = await store.begin_turn("inst-other", owner=None)
    await store.end_turn(other, completed=True)
    await store.forget("inst", None)
    reborn = await store.begin_turn("inst", owner=None)
    await store.end_turn(reborn, completed=True)
    assert first.conversation_id.startswith("conv_")
    assert again.conversation_id == first.conversation_id
    assert other.conversation_id != first.conversation_id
    assert reborn.conversation_id not in {first.conversation_id, other.conversation_id}


async def test_a_turn_longer_than_the_ttl_keeps_its_session_and_owner(make_store: Any) -> None:
    """The TTL counts from the end of the last turn: a session whose turn outlives it keeps its
    owner, meta and history (in Redis its keys would otherwise expire mid-turn)."""
    store = await make_store(session_ttl_seconds=1)
    lease = await store.begin_turn("long", owner="key-a")
    await lease.history.add_items([{"role": "user", "content": "a long question"}])
    for _ in range(5):  # 2.5 s of turn, with the sweeper running as it would
        await asyncio.sleep(0.5)
        await store.expire_idle()
    await lease.history.add_items([{"role": "assistant", "content": "a long answer"}])
    await store.end_turn(lease, completed=True)
    meta = await store.get("long", "key-a")
    items = await store.items("long")
    assert (meta.owner, meta.turns) == ("key-a", 1)
    assert [item["content"] for item in items] == ["a long question", "a long answer"]


@pytest.mark.parametrize("kind", ["redis", "sqlite", "postgresql"])  # memory keeps no old data
async def test_a_conversation_stored_without_an_instance_id_gets_one_and_keeps_it(
    kind: str, tmp_path: Path
) -> None:
    """Conversations saved before instances were recorded (an older server's data)."""
    async with session_settings(kind, tmp_path) as chosen:
        settings = make_settings(**chosen)
        store = choose_session_store(
            settings, SessionRegistry(settings.max_sessions, settings.session_ttl_seconds)
        )
        await store.open()
        try:
            await _an_old_conversation_gets_an_instance_id(store)
        finally:
            await store.close()


async def _an_old_conversation_gets_an_instance_id(store: Any) -> None:
    await store.end_turn(await store.begin_turn("old", owner="key-a"), completed=True)
    if store.backend == "redis":
        await store.redis.hdel(store._key("meta", "old"), "conversation_id")
    else:
        await store._run("UPDATE townhall_sessions SET conversation_id = NULL")
    first = await store.begin_turn("old", owner="key-a")
    await store.end_turn(first, completed=True)
    again = await store.begin_turn("old", owner="key-a")
    await store.end_turn(again, completed=True)
    assert first.conversation_id.startswith("conv_")
    assert again.conversation_id == first.conversation_id
    assert (first.owner, (await store.get("old", "key-a")).turns) == ("key-a", 3)
