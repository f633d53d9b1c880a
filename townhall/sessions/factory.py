"""SESSION_STORE picks the session store (see sessions.store for what each one is)."""

from __future__ import annotations

from townhall.sessions.memory_store import MemorySessionStore
from townhall.sessions.registry import SessionRegistry
from townhall.sessions.store import SessionStore
from townhall.settings import Settings


def choose_session_store(settings: Settings, registry: SessionRegistry) -> SessionStore:
    url = settings.session_store
    if url == "memory":
        return MemorySessionStore(registry)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from townhall.sessions.redis_store import RedisSessionStore

        return RedisSessionStore(url, settings)
    from townhall.sessions.sql_store import SQLSessionStore

    return SQLSessionStore(url, settings)
