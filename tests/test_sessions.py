"""Session bounds with an injected clock (never slept), and the lean history store."""

from __future__ import annotations

import pytest

from api import create_app
from tests.support.app import asgi_client, make_settings
from townhall.errors import SessionBusyError, SessionCapacityError, SessionNotFoundError
from townhall.sessions.registry import MemorySession, SessionRegistry, drop_unanswered_tool_calls


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _idle(registry: SessionRegistry, session_id: str) -> None:
    registry.end_turn(registry.begin_turn(session_id), completed=True)


def test_least_recently_used_idle_session_is_evicted_when_full() -> None:
    clock = FakeClock()
    registry = SessionRegistry(max_sessions=3, ttl_seconds=3600, clock=clock)
    for session_id in ("a", "b", "c"):
        clock.now += 1
        _idle(registry, session_id)
    clock.now += 1
    _idle(registry, "a")  # "a" is now the most recent; "b" the least
    _idle(registry, "d")
    assert [c.session_id for c in registry.list()] == ["c", "a", "d"]


def test_busy_sessions_are_never_evicted() -> None:
    registry = SessionRegistry(max_sessions=2, ttl_seconds=3600, clock=FakeClock())
    busy = registry.begin_turn("busy")
    _idle(registry, "idle")
    _idle(registry, "new")
    assert {c.session_id for c in registry.list()} == {"busy", "new"}
    assert busy.busy


def test_capacity_error_when_every_session_is_busy() -> None:
    registry = SessionRegistry(max_sessions=2, ttl_seconds=3600, clock=FakeClock())
    registry.begin_turn("one")
    registry.begin_turn("two")
    with pytest.raises(SessionCapacityError):
        registry.begin_turn("three")
    assert len(registry) == 2


def test_idle_sessions_expire_after_the_ttl() -> None:
    clock = FakeClock()
    registry = SessionRegistry(max_sessions=10, ttl_seconds=60, clock=clock)
    _idle(registry, "old")
    clock.now += 30
    _idle(registry, "young")
    clock.now += 30  # "old" is exactly 60 s idle
    assert registry.expire_idle() == 1
    assert [c.session_id for c in registry.list()] == ["young"]
    with pytest.raises(SessionNotFoundError):
        registry.get("old")


def test_a_running_turn_does_not_expire() -> None:
    clock = FakeClock()
    registry = SessionRegistry(max_sessions=10, ttl_seconds=60, clock=clock)
    conversation = registry.begin_turn("long")
    clock.now += 600
    assert registry.expire_idle() == 0
    registry.end_turn(conversation, completed=True)
    clock.now += 59
    assert registry.expire_idle() == 0
    clock.now += 1
    assert registry.expire_idle() == 1


def test_one_turn_at_a_time() -> None:
    registry = SessionRegistry(max_sessions=10, ttl_seconds=60, clock=FakeClock())
    conversation = registry.begin_turn("s")
    with pytest.raises(SessionBusyError):
        registry.begin_turn("s")
    registry.end_turn(conversation, completed=False)
    assert registry.begin_turn("s") is conversation
    assert conversation.turns == 0


async def test_expiry_through_the_api_with_an_injected_clock() -> None:
    clock = FakeClock()
    app = create_app(make_settings(session_ttl_seconds=120, max_sessions=2), clock=clock)
    async with asgi_client(app) as client:
        for session_id in ("x", "y", "z"):
            await client.post("/chat", json={"message": "hi", "session_id": session_id})
        listed = [s["session_id"] for s in (await client.get("/sessions")).json()["sessions"]]
        clock.now += 121
        after = (await client.get("/sessions")).json()
        missing = await client.get("/sessions/z")
    assert listed == ["y", "z"]  # "x" was evicted to make room
    assert after == {"sessions": [], "count": 0}
    assert missing.status_code == 404


async def test_memory_session_protocol() -> None:
    session = MemorySession("s")
    await session.add_items([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    await session.add_items([{"role": "user", "content": "c"}])
    assert [i["content"] for i in await session.get_items(limit=2)] == ["b", "c"]
    assert (await session.pop_item()) == {"role": "user", "content": "c"}
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None


def test_unanswered_tool_calls_are_dropped_from_history() -> None:
    items = [
        {"role": "user", "content": "report it"},
        {"type": "function_call", "call_id": "done", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "done", "output": "ok"},
        {"type": "function_call", "call_id": "dangling", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "orphan", "output": "?"},
        {"role": "user", "content": "hello?"},
    ]
    kept = drop_unanswered_tool_calls(items)
    assert [i.get("call_id") for i in kept] == [None, "done", "done", None]
