"""Conversations in Redis, shared by every worker and replica (SESSION_STORE=redis://...).

Keys (prefix REDIS_KEY_PREFIX, `townhall` by default):
- `meta:{id}`   hash: owner, conversation_id (minted at creation), created_at, last_active,
                turns (expires SESSION_TTL_SECONDS after the last turn ended)
- `index`       sorted set of ids by last activity: listing, eviction, expiry
- `lock:{id}`   the running turn's owner token, with an expiry renewed while the turn runs
- `history:{id}:*`  the Agents SDK RedisSession's keys (same expiry; redis_history.py)
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from agents.items import TResponseInputItem
from redis.asyncio import Redis

from townhall.errors import SessionBusyError, SessionCapacityError, SessionNotFoundError
from townhall.sessions.redis_history import LeasedRedisSession
from townhall.sessions.registry import new_conversation_id
from townhall.sessions.store import (
    LockRenewals,
    RepairedHistory,
    SessionMeta,
    TurnLease,
    check_owner,
)
from townhall.settings import Settings

logger = logging.getLogger(__name__)

# Renew the lock only if we still own it; release only our own lock. A renewal also keeps the
# conversation's other keys (KEYS[2..]: meta and history) from expiring while its turn runs, so
# the TTL counts from the end of the last turn, however long a turn takes (ARGV[3]: at least
# until the next renewal is due).
RENEW = (
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('pexpire', KEYS[1], ARGV[2]) "
    "for i = 2, #KEYS do redis.call('pexpire', KEYS[i], ARGV[3]) end "
    "return 1"
)
# Begin a turn: take the lock (ARGV[1], for ARGV[2] ms); then for a conversation that exists,
# check its owner (ARGV[3] "1": ARGV[4] must be it; else it reads as not found, and the lock
# goes), touch it (last active ARGV[5], meta expiring ARGV[6] s from now, the index), give one
# made before instances were recorded its instance id (ARGV[8]), and answer its owner,
# instance and history. A conversation nobody has made is made here, owned by ARGV[10], with
# instance ARGV[8], while fewer than ARGV[9] (MAX_SESSIONS) are kept; at the limit it answers
# "new" and the index's size, and the caller evicts before it makes it.
BEGIN = """
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
local raw = redis.call('hgetall', KEYS[2])
if #raw == 0 then
    local held = redis.call('zcard', KEYS[3])
    if held >= tonumber(ARGV[9]) then return {'new', held} end
    redis.call('hset', KEYS[2], 'owner', ARGV[10], 'created_at', ARGV[5], 'turns', '0',
        'conversation_id', ARGV[8], 'last_active', ARGV[5])
    redis.call('expire', KEYS[2], ARGV[6])
    redis.call('zadd', KEYS[3], ARGV[5], ARGV[7])
    return {'ok', ARGV[10], ARGV[8], redis.call('lrange', KEYS[4], 0, -1)}
end
local meta = {}
for i = 1, #raw, 2 do meta[raw[i]] = raw[i + 1] end
local owner = meta['owner'] or ''
if ARGV[3] == '1' and owner ~= ARGV[4] then
    redis.call('del', KEYS[1])
    return {'not_found'}
end
local conversation = meta['conversation_id']
if not conversation then
    conversation = ARGV[8]
    redis.call('hset', KEYS[2], 'conversation_id', conversation)
end
redis.call('hset', KEYS[2], 'last_active', ARGV[5])
redis.call('expire', KEYS[2], ARGV[6])
redis.call('zadd', KEYS[3], ARGV[5], ARGV[7])
return {'ok', owner, conversation, redis.call('lrange', KEYS[4], 0, -1)}
"""
RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] "
    "then return redis.call('del', KEYS[1]) else return 0 end"
)


class RedisSessionStore:
    backend = "redis"

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.prefix = settings.redis_key_prefix
        self.max_sessions = settings.max_sessions
        self.ttl = int(settings.session_ttl_seconds)
        self.lock_ms = int(settings.session_lock_seconds * 1000)
        # decode_responses: every reply is str. (Typed Any: redis-py's stubs cannot know that.)
        self.redis: Any = Redis.from_url(url, decode_responses=True)
        self.renewals = LockRenewals(self.lock_ms / 3000, self._renew)
        self._begin = self.redis.register_script(BEGIN)

    def _key(self, kind: str, session_id: str) -> str:
        return f"{self.prefix}:{kind}:{session_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:index"

    def _history_of(self, session_id: str) -> LeasedRedisSession:
        return LeasedRedisSession(
            session_id, redis_client=self.redis, key_prefix=f"{self.prefix}:history", ttl=self.ttl
        )

    def _history(self, session_id: str) -> RepairedHistory:
        return RepairedHistory(self._history_of(session_id))

    async def open(self) -> None:
        try:
            await self.redis.ping()
        except Exception as error:  # the server still starts; turns fail until Redis is back
            logger.warning("Redis not reachable at start-up: %s", type(error).__name__)

    async def close(self) -> None:
        self.renewals.stop_all()
        await self.redis.aclose()

    async def begin_turn(
        self, session_id: str, owner: str | None, creator: str | None = None
    ) -> TurnLease:
        token = secrets.token_hex(16)
        lock = self._key("lock", session_id)
        history = self._history_of(session_id)
        # One round trip, for a conversation that exists (the lock, the owner check, the touch
        # and the history the turn reads first) and for a new one while there is room.
        reply = await self._begin(
            keys=[lock, self._key("meta", session_id), self._index, history._messages_key],
            args=[
                token,
                self.lock_ms,
                "1" if owner is not None else "0",
                owner or "",
                repr(time.time()),
                self.ttl,
                session_id,
                new_conversation_id(),
                self.max_sessions,
                creator or owner or "",
            ],
        )
        if reply[0] == "busy":
            raise SessionBusyError(session_id)
        if reply[0] == "not_found":
            raise SessionNotFoundError(session_id)
        if reply[0] == "ok":
            _, recorded_owner, conversation_id, messages = reply
            history.preload(messages)
        else:  # "new": we hold the lock of a conversation nobody has made yet
            try:
                meta = await self._create(session_id, int(reply[1]), creator or owner)
            except BaseException:
                await self.redis.eval(RELEASE, 1, lock, token)
                raise
            recorded_owner, conversation_id = meta["owner"], meta["conversation_id"]
        lease = TurnLease(
            session_id, RepairedHistory(history), recorded_owner or None, conversation_id, token
        )
        self.renewals.start(lease)
        return lease

    async def _create(self, session_id: str, held: int, creator: str | None) -> dict[str, str]:
        """A new conversation's meta, made while holding its lock (`held`: the index's size as
        read with the lock)."""
        await self._make_room(session_id, held)
        meta_key = self._key("meta", session_id)
        now = time.time()
        meta = {
            "owner": creator or "",
            "created_at": repr(now),
            "turns": "0",
            "conversation_id": new_conversation_id(),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta_key, mapping={**meta, "last_active": repr(now)})
            pipe.expire(meta_key, self.ttl)
            pipe.zadd(self._index, {session_id: now})
            await pipe.execute()
        return meta

    async def _make_room(self, session_id: str, held: int) -> None:
        """Evict the least recently active idle conversations past MAX_SESSIONS (`held` of
        them are kept now)."""
        index = self._index
        excess = held - self.max_sessions + 1
        if excess <= 0:
            return
        for candidate in await self.redis.zrange(index, 0, excess + 20):
            if excess <= 0:
                return
            if candidate != session_id and not await self.redis.exists(
                self._key("lock", candidate)
            ):
                await self._delete(candidate)
                excess -= 1
        if excess > 0:
            raise SessionCapacityError(self.max_sessions)

    def _kept_keys(self, session_id: str) -> list[str]:
        """The keys that must live as long as the conversation: its meta and its history."""
        history = f"{self.prefix}:history:{session_id}"
        return [self._key("meta", session_id), history, f"{history}:messages", f"{history}:counter"]

    async def _renew(self, lease: TurnLease) -> bool:
        keys = [self._key("lock", lease.session_id), *self._kept_keys(lease.session_id)]
        keep_ms = max(self.ttl * 1000, self.lock_ms)
        renewed = await self.redis.eval(RENEW, len(keys), *keys, lease.token, self.lock_ms, keep_ms)
        return bool(renewed)

    async def turn_running(self, session_id: str) -> bool:
        """Whether a turn holds the conversation (on any worker): its lock is there."""
        return bool(await self.redis.exists(self._key("lock", session_id)))

    async def end_turn(self, lease: TurnLease, *, completed: bool) -> None:
        self.renewals.stop(lease)
        if lease.lost:
            return
        meta_key = self._key("meta", lease.session_id)
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            if completed:
                pipe.hincrby(meta_key, "turns", 1)
            pipe.hset(meta_key, "last_active", repr(now))
            for key in self._kept_keys(lease.session_id):  # the TTL counts from here
                pipe.expire(key, self.ttl)
            pipe.zadd(self._index, {lease.session_id: now})
            pipe.eval(RELEASE, 1, self._key("lock", lease.session_id), lease.token)
            await pipe.execute()

    async def get(self, session_id: str, owner: str | None) -> SessionMeta:
        meta = await self._meta(session_id)
        check_owner(session_id, meta.owner, owner)
        return meta

    async def _meta(self, session_id: str) -> SessionMeta:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key("meta", session_id))
            pipe.exists(self._key("lock", session_id))
            raw, locked = await pipe.execute()
        if not raw:
            raise SessionNotFoundError(session_id)
        return _from_hash(session_id, raw, bool(locked))

    async def items(self, session_id: str) -> list[TResponseInputItem]:
        await self._meta(session_id)
        return await self._history(session_id).get_items()

    async def list(self, owner: str | None) -> list[SessionMeta]:
        ids = await self.redis.zrange(self._index, 0, self.max_sessions - 1)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(self._key("meta", session_id))
                pipe.exists(self._key("lock", session_id))
            replies = await pipe.execute()
        metas, gone = [], []
        for session_id, raw, locked in zip(ids, replies[::2], replies[1::2], strict=True):
            if raw:
                metas.append(_from_hash(session_id, raw, bool(locked)))
            else:
                gone.append(session_id)
        if gone:  # expired by Redis: tidy the index
            await self.redis.zrem(self._index, *gone)
        return [m for m in metas if owner is None or m.owner == owner]

    async def forget(self, session_id: str, owner: str | None) -> SessionMeta:
        meta = await self.get(session_id, owner)
        # Deleting the lock is how a turn running on any worker learns to stop.
        await self._delete(session_id)
        return meta

    async def _delete(self, session_id: str) -> None:
        await self._history(session_id).clear_session()
        await self.redis.delete(self._key("meta", session_id), self._key("lock", session_id))
        await self.redis.zrem(self._index, session_id)

    async def expire_idle(self) -> int:
        deadline = time.time() - self.ttl
        stale = await self.redis.zrangebyscore(self._index, "-inf", deadline)
        expired = 0
        for session_id in stale:
            if not await self.redis.exists(self._key("lock", session_id)):
                await self._delete(session_id)
                expired += 1
        return expired

    async def count(self) -> int:
        return int(await self.redis.zcard(self._index))

    async def ping(self) -> None:
        await self.redis.ping()


def _from_hash(session_id: str, raw: dict[str, Any], busy: bool) -> SessionMeta:
    return SessionMeta(
        session_id=session_id,
        owner=raw.get("owner") or None,
        created_at=float(raw.get("created_at", 0)),
        last_active=float(raw.get("last_active", 0)),
        turns=int(raw.get("turns", 0)),
        busy=busy,
    )
