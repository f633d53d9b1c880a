"""A conversation's history in Redis: the Agents SDK's RedisSession, appending in one round trip.

The SDK's append WATCHes the three keys, asks for each key's type in turn and for the server's
clock, then runs its transaction: six round trips, and the first append of a turn (the
resident's message) comes before the model is even called, so they all land in the time to
first token. They guard against two writers at once and against legacy keys of another
session overlapping ours; here one turn at a time holds the conversation's lease, and the keys
sit under our own prefix. The append is the SDK's transaction itself (the same commands, so the
stored layout is the SDK's: tests read what one wrote with the other), in one MULTI/EXEC, with
the expiry counted from this process's clock instead of the server's. Everything else (reads,
pop, clear) is the SDK's, except that the history read by the lock script (redis_store.BEGIN)
answers the turn's first read without another round trip.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agents.extensions.memory.redis_session import RedisSession
from agents.items import TResponseInputItem
from agents.memory.session_settings import resolve_session_limit


class LeasedRedisSession(RedisSession):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._preloaded: list[str] | None = None

    def preload(self, raw_messages: list[str]) -> None:
        """The stored messages as read with the turn's lock: the next whole-history read
        answers from them (nobody else writes while the lock is held; an append drops them)."""
        self._preloaded = raw_messages

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        raw, self._preloaded = self._preloaded, None
        if raw is None or resolve_session_limit(limit, self.session_settings) is not None:
            return await super().get_items(limit)
        items: list[TResponseInputItem] = []
        for message in raw:
            try:
                items.append(await self._deserialize_item(message))
            except json.JSONDecodeError:  # skipped, as the SDK's own read skips it
                continue
        return items

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        self._check_not_closed()
        if not items:
            return
        self._preloaded = None
        async with self._lock:
            self._check_not_closed()
            serialized = [await self._serialize_item(item) for item in items]
            now = time.time()
            stamp = str(int(now))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._session_key, "session_id", self.session_id)
                pipe.hsetnx(self._session_key, "created_at", stamp)
                pipe.rpush(self._messages_key, *serialized)
                pipe.hset(self._session_key, "updated_at", stamp)
                if self._ttl is not None:
                    expires_ms = int(now * 1000) + self._ttl * 1000
                    for key in (self._session_key, self._messages_key, self._counter_key):
                        pipe.pexpireat(key, expires_ms)
                await pipe.execute()
