"""One SQLite file behind one connection, used from worker threads one at a time.

SQLite calls block, so they run in threads (asyncio.to_thread); the lock keeps them from sharing
the connection at once. Autocommit mode: each statement commits on its own, and a `run` holds the
lock across several statements when they must not interleave with others.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SQLiteFile:
    def __init__(self, path: str | Path, schema: str, *, durable: bool = False) -> None:
        self.path = str(path)
        self.schema = schema
        # FULL: a committed row survives a power cut, not only a crash (for the outbox).
        self.synchronous = "FULL" if durable else "NORMAL"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(self.schema)
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(self._close, conn)

    def _close(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            conn.close()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` in a thread, holding the lock for all of it."""
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                raise RuntimeError(f"SQLite file {self.path} is not open")
            return work(self._conn)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = await self.run(lambda c: c.execute(sql, params).fetchone())
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda c: c.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.run(lambda c: c.execute(sql, params))
