"""The Redis frame mirror on its own (TEST_REDIS_URL): a reader on one worker asking for a
position its frames have not reached Redis with yet waits for them (they follow the live stream
by a round trip), then reads to the end; a reader of a finished turn gets the rest, then
nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.session_backends import redis_url
from townhall.sessions.redis_frames import RedisFrameLogs
from townhall.turns.broadcast import MemoryFrameLogs
from townhall.turns.events import Finished, TextDelta
from townhall.turns.frame_log import ENDED, Position


@pytest.fixture
async def two_workers() -> AsyncIterator[Any]:
    url = redis_url()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    clients = [Redis.from_url(url, decode_responses=True) for _ in range(2)]

    async def running(key: str) -> bool:
        return True

    logs = [
        RedisFrameLogs(
            client,
            MemoryFrameLogs(retention_seconds=60, cap_chars=100_000),
            prefix=prefix,
            running=running,
        )
        for client in clients
    ]
    try:
        yield logs
    finally:
        for each in logs:
            await each.close()
        keys = [key async for key in clients[0].scan_iter(match=f"{prefix}:*")]
        if keys:
            await clients[0].delete(*keys)
        for client in clients:
            await client.aclose()


async def read_all(reader: Any) -> list[tuple[str, Any]]:
    got = []
    async with asyncio.timeout(10):
        async for frame in reader.entries():
            got.append(frame)
    return got


async def test_a_position_not_mirrored_yet_is_waited_for(two_workers: Any) -> None:
    a, b = two_workers
    log = a.open("c1")
    for n in range(3):
        log.append(TextDelta(f"w{n} "))
    # The client read frame 3 from worker a; worker b is asked before any flush has landed.
    reader = await b.reader("c1", Position(log.turn, 3), running=False)
    assert reader is not None
    reading = asyncio.create_task(read_all(reader))
    await asyncio.sleep(0.2)
    for n in range(3, 6):
        log.append(TextDelta(f"w{n} "))
    log.append(Finished(reply="w0 w1 w2 w3 w4 w5 ", usage={}))
    log.append(ENDED)
    await a.ended(log)
    got = await reading
    assert [entry for _, entry in got] == [
        TextDelta("w3 "),
        TextDelta("w4 "),
        TextDelta("w5 "),
        Finished(reply="w0 w1 w2 w3 w4 w5 ", usage={}),
        ENDED,
    ]
    assert [frame_id for frame_id, _ in got] == [f"{log.turn}-{n}" for n in range(4, 9)]
    # After the end: from the `done` frame, the end only; from the end, nothing.
    rest = await b.reader("c1", Position(log.turn, 7), running=False)
    assert rest is not None and [e for _, e in await read_all(rest)] == [ENDED]
    assert await b.reader("c1", Position(log.turn, 8), running=False) is None
