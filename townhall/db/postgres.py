"""A PostgreSQL pool with the same small interface as sqlite_file.SQLiteFile.

SQL is written once with `?` placeholders and translated to `$1, $2, ...` here, so a module that
needs only plain statements (chatkit_store) runs on either database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\?")


def to_dollar_params(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresDatabase:
    """Statements are not cached, so transaction-mode poolers (Supavisor, PgBouncer) work.

    Opening does not connect: the server starts while the database is down, and the schema is
    applied on the first statement that reaches it.
    """

    def __init__(self, dsn: str, schema: str, *, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.schema = schema
        self.timeout = timeout
        self._pool: Any = None
        self._schema_ready = False

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,
            max_size=5,
            statement_cache_size=0,
            command_timeout=self.timeout,
            timeout=self.timeout,
        )
        try:
            await self._ensure_schema()
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            logger.warning("PostgreSQL not reachable at start-up: %s", type(error).__name__)

    async def _ensure_schema(self) -> None:
        if not self._schema_ready:
            async with self._pool.acquire() as conn:
                await conn.execute(self.schema)
            self._schema_ready = True

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        await self._ensure_schema()
        async with self._pool.acquire() as conn:
            return await conn.fetchrow(to_dollar_params(sql), *params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        await self._ensure_schema()
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(to_dollar_params(sql), *params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._ensure_schema()
        async with self._pool.acquire() as conn:
            await conn.execute(to_dollar_params(sql), *params)
