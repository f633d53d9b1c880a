"""One SQLite file behind one connection, used from worker threads one at a time.

SQLite calls block, so they run in threads (asyncio.to_thread); the lock keeps them from sharing
the connection at once. Autocommit mode: each statement commits on its own, and a `run` holds the
lock across several statements when they must not interleave with others.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
WAL_ATTEMPTS = 50


class SQLiteFile:
    def __init__(
        self,
        path: str | Path,
        schema: str,
        *,
        durable: bool = False,
        added_columns: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.path = str(path)
        self.schema = schema
        # table -> "name TYPE" column definitions added to tables made by an older schema
        self.added_columns = added_columns or {}
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
        # The busy timeout first: every statement after it (the schema, a migration) waits for
        # another process holding the file instead of failing with "database is locked".
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        use_wal(conn.execute)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.executescript(self.schema)
        for table, columns in self.added_columns.items():
            _add_missing_columns(conn, table, columns)
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


def use_wal(execute: Callable[[str], object]) -> None:
    """Switch to WAL, retrying while another process holds the file.

    `execute` runs one statement on the connection (sqlite3's, or the cursor of SQLAlchemy's
    aiosqlite adapter). Changing the journal mode needs a moment of exclusive access and does
    not always wait out the busy timeout, so workers starting at the same instant retry for up
    to ~5 s.
    """
    for attempt in range(WAL_ATTEMPTS):
        try:
            execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.02 + random.random() * 0.08)


def _add_missing_columns(conn: sqlite3.Connection, table: str, columns: Sequence[str]) -> None:
    """The migration for a table an older schema made: add each column it lacks (rows kept)."""
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for definition in columns:
        if definition.split()[0] not in present:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {definition}")
            except sqlite3.OperationalError as error:
                if "duplicate column" not in str(error):  # another process added it first
                    raise
