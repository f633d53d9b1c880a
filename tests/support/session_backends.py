"""Session stores for tests: memory, Redis (TEST_REDIS_URL), SQLite and PostgreSQL
(TEST_DATABASE_URL). Each test gets its own Redis key prefix or database schema, removed after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support.backends import pg_schema, service_url

SESSION_BACKENDS = ["memory", "redis", "sqlite", "postgresql"]
SHARED_BACKENDS = ["redis", "postgresql"]


def redis_url() -> str:
    return service_url("TEST_REDIS_URL", "Redis")


@contextlib.asynccontextmanager
async def session_settings(kind: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The settings that select `kind` as the session store, on fresh, private storage."""
    if kind == "memory":
        yield {"session_store": "memory"}
    elif kind == "sqlite":
        yield {"session_store": f"sqlite:///{tmp_path}/sessions.db"}
    elif kind == "postgresql":
        async with pg_schema() as dsn:
            yield {"session_store": dsn}
    else:
        from redis.asyncio import Redis

        url = redis_url()
        prefix = f"test-{uuid.uuid4().hex[:10]}"
        try:
            yield {"session_store": url, "redis_key_prefix": prefix}
        finally:
            client = Redis.from_url(url)
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
