"""A durable local outbox: records the configured store could not take yet.

A SQLite file, so a queued report survives a crash or restart. Each entry keeps the whole record
(reference included, so the retry is idempotent), how often it was tried, and when to try next.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from records import RECORD_TYPES, Record

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    reference TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due_idx ON outbox (next_attempt_at);
"""


@dataclass(frozen=True)
class QueuedRecord:
    record: Record
    attempts: int


class Outbox:
    """Queued records in a SQLite file; one connection, used from threads under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a queued report must survive a power cut
        conn.executescript(OUTBOX_SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None

    async def put(self, record: Record, now: float) -> str:
        """Queue the record; returns the reference queued for its dedupe key (maybe older)."""
        return await asyncio.to_thread(self._put, record, now)

    def _put(self, record: Record, now: float) -> str:
        with self._lock:
            conn = self._connection()
            conn.execute(
                "INSERT INTO outbox (reference, kind, dedupe_key, session_id, payload, queued_at,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    record.reference,
                    record.kind,
                    record.dedupe_key,
                    record.session_id,
                    record.model_dump_json(by_alias=True),
                    now,
                    now,
                ),
            )
            row = conn.execute(
                "SELECT reference FROM outbox WHERE dedupe_key = ?", (record.dedupe_key,)
            ).fetchone()
        return str(row[0])

    async def find(self, dedupe_key: str) -> str | None:
        return await asyncio.to_thread(self._find, dedupe_key)

    def _find(self, dedupe_key: str) -> str | None:
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT reference FROM outbox WHERE dedupe_key = ?", (dedupe_key,))
                .fetchone()
            )
        return str(row[0]) if row else None

    async def get(self, reference: str) -> Record | None:
        return await asyncio.to_thread(self._get, reference)

    def _get(self, reference: str) -> Record | None:
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT kind, payload FROM outbox WHERE reference = ?", (reference,))
                .fetchone()
            )
        return _decode(row[0], row[1]) if row else None

    async def due(self, now: float, limit: int = 50) -> list[QueuedRecord]:
        return await asyncio.to_thread(self._due, now, limit)

    def _due(self, now: float, limit: int) -> list[QueuedRecord]:
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT kind, payload, attempts FROM outbox WHERE next_attempt_at <= ?"
                    " ORDER BY next_attempt_at, queued_at LIMIT ?",
                    (now, limit),
                )
                .fetchall()
            )
        return [QueuedRecord(_decode(kind, payload), attempts) for kind, payload, attempts in rows]

    async def next_due_at(self) -> float | None:
        return await asyncio.to_thread(self._scalar, "SELECT min(next_attempt_at) FROM outbox")

    async def depth(self) -> int:
        return int(await asyncio.to_thread(self._scalar, "SELECT count(*) FROM outbox") or 0)

    def _scalar(self, sql: str) -> float | None:
        with self._lock:
            value = self._connection().execute(sql).fetchone()[0]
        return None if value is None else float(value)

    async def remove(self, reference: str) -> None:
        await asyncio.to_thread(self._execute, "DELETE FROM outbox WHERE reference = ?", reference)

    async def reschedule(self, reference: str, attempts: int, at: float, error: str) -> None:
        await asyncio.to_thread(
            self._execute,
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE reference = ?",
            attempts,
            at,
            error,
            reference,
        )

    def _execute(self, sql: str, *params: object) -> None:
        with self._lock:
            self._connection().execute(sql, params)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("Outbox is not open")
        return self._conn


def _decode(kind: str, payload: str) -> Record:
    return RECORD_TYPES[kind].model_validate_json(payload)
