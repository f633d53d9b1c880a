"""Rate limits on the endpoints that run the model (/chat, /chatkit): per API key, or per client
address when no key is used. A fixed one-minute window; over the limit: 429 with Retry-After.

In memory per process by default; shared through Redis when Redis is the session store, so the
limit holds across workers and replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from townhall.errors import RateLimitedError

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int


class RateLimiter(Protocol):
    async def hit(self, identity: str) -> Verdict: ...


class MemoryRateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    async def hit(self, identity: str) -> Verdict:
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        if window != self._window:  # a new minute: forget the last one (bounds memory)
            self._window, self._counts = window, {}
        count = self._counts.get(identity, 0) + 1
        self._counts[identity] = count
        return _verdict(count, self.per_minute, now)


class RedisRateLimiter:
    def __init__(self, redis: Any, prefix: str, per_minute: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_minute = per_minute

    async def hit(self, identity: str) -> Verdict:
        now = time.time()
        key = f"{self.prefix}:rate:{identity}:{int(now // WINDOW_SECONDS)}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 5)
            count, _ = await pipe.execute()
        return _verdict(int(count), self.per_minute, now)


def _verdict(count: int, limit: int, now: float) -> Verdict:
    retry_after = WINDOW_SECONDS - int(now % WINDOW_SECONDS)
    return Verdict(allowed=count <= limit, retry_after=max(retry_after, 1))


async def enforce(limiter: RateLimiter | None, identity: str) -> None:
    if limiter is None:
        return
    verdict = await limiter.hit(identity)
    if not verdict.allowed:
        raise RateLimitedError(verdict.retry_after)
