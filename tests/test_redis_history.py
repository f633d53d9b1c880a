"""LeasedRedisSession appends in one round trip and stores what the Agents SDK's RedisSession
stores: the same keys, hash fields, list entries and expiries, so either reads what the other
wrote (conversations saved before this change keep working). On a real Redis (TEST_REDIS_URL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents.extensions.memory.redis_session import RedisSession
from redis.asyncio import Redis

from tests.support.backends import service_url
from townhall.sessions.redis_history import LeasedRedisSession

ITEMS: list[Any] = [
    {"role": "user", "content": "Pothole on Main Street, ünïcode too"},
    {"type": "function_call", "call_id": "c1", "name": "report_incident", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "INC-1"},
]
TTL = 600


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    client = Redis.from_url(service_url("TEST_REDIS_URL", "Redis"), decode_responses=True)
    yield client
    await client.aclose()


async def stored(redis: Any, prefix: str, session_id: str) -> dict[str, Any]:
    base = f"{prefix}:{session_id}"
    meta = await redis.hgetall(base)
    return {
        "keys": sorted(await redis.keys(f"{base}*")),
        "fields": sorted(meta),
        "session_id": meta.get("session_id"),
        "messages": await redis.lrange(f"{base}:messages", 0, -1),
        "ttls": [await redis.ttl(key) for key in (base, f"{base}:messages")],
    }


async def test_the_same_data_as_the_sdks_session(redis: Any) -> None:
    prefix = f"test-history-{uuid.uuid4().hex}"
    sdk = RedisSession("s", redis_client=redis, key_prefix=f"{prefix}-sdk", ttl=TTL)
    ours = LeasedRedisSession("s", redis_client=redis, key_prefix=f"{prefix}-ours", ttl=TTL)
    try:
        for session in (sdk, ours):
            await session.add_items(ITEMS[:1])
            await session.add_items(ITEMS[1:])
        theirs, mine = (
            await stored(redis, f"{prefix}-sdk", "s"),
            await stored(redis, f"{prefix}-ours", "s"),
        )
        assert [k.removeprefix(f"{prefix}-sdk") for k in theirs.pop("keys")] == [
            k.removeprefix(f"{prefix}-ours") for k in mine.pop("keys")
        ]
        ttls = theirs.pop("ttls"), mine.pop("ttls")
        assert mine == theirs
        assert all(TTL - 5 <= t <= TTL for pair in ttls for t in pair)
        # Each reads what the other wrote.
        crossed = RedisSession("s", redis_client=redis, key_prefix=f"{prefix}-ours")
        assert await crossed.get_items() == ITEMS
        crossed_back = LeasedRedisSession("s", redis_client=redis, key_prefix=f"{prefix}-sdk")
        assert await crossed_back.get_items() == ITEMS
        # And the SDK's own mutations still work on our data.
        assert await crossed.pop_item() == ITEMS[-1]
        assert await ours.get_items() == ITEMS[:-1]
    finally:
        for key in await redis.keys(f"{prefix}*"):
            await redis.delete(key)


async def test_an_empty_append_writes_nothing(redis: Any) -> None:
    prefix = f"test-history-{uuid.uuid4().hex}"
    ours = LeasedRedisSession("s", redis_client=redis, key_prefix=prefix, ttl=TTL)
    await ours.add_items([])
    assert await redis.keys(f"{prefix}*") == []


async def test_a_preloaded_history_answers_one_read_and_an_append_drops_it(redis: Any) -> None:
    prefix = f"test-history-{uuid.uuid4().hex}"
    ours = LeasedRedisSession("s", redis_client=redis, key_prefix=prefix, ttl=TTL)
    try:
        await ours.add_items(ITEMS)
        ours.preload([*(await redis.lrange(f"{prefix}:s:messages", 0, -1)), "{not json"])
        await redis.rpush(f"{prefix}:s:messages", '{"role": "user", "content": "later"}')
        assert await ours.get_items() == ITEMS  # the snapshot, the corrupt entry skipped
        assert (await ours.get_items())[-1]["content"] == "later"  # then Redis again
        ours.preload([])
        await ours.add_items([{"role": "user", "content": "appended"}])
        assert len(await ours.get_items()) == len(ITEMS) + 2
    finally:
        for key in await redis.keys(f"{prefix}*"):
            await redis.delete(key)
