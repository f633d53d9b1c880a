"""A durable local outbox: every record on its way to the store, and the ones it refused.

A SQLite file (synchronous=FULL: a committed entry survives a crash or a power cut). Filing is
write-ahead: a record is written here before the store write starts and removed once the store
has it, so a crash at any moment leaves it here to be delivered on restart. Each entry keeps the
whole record (reference included, so a retry is idempotent), how often it was tried, and when to
try next. Records the store refuses for good (invalid data, a constraint) move to `dead_letters`
after a few attempts, for an operator to look at and retry once the cause is fixed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from townhall.db.sqlite import SQLiteFile
from townhall.records.model import RECORD_TYPES, Record

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
CREATE TABLE IF NOT EXISTS dead_letters (
    reference TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    dead_at REAL NOT NULL
);
"""
ENTRY_COLUMNS = "reference, kind, dedupe_key, session_id, payload, queued_at"


@dataclass(frozen=True)
class QueuedRecord:
    record: Record
    attempts: int


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    attempts: int
    last_error: str | None
    queued_at: float
    dead_at: float


class Outbox:
    """Queued records in a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = SQLiteFile(path, OUTBOX_SCHEMA, durable=True)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def put(self, record: Record, now: float, first_attempt_at: float | None = None) -> str:
        """Queue the record; returns the reference queued for its dedupe key (maybe older).

        `first_attempt_at`: when the background sync may first try it (later than now while
        the filer itself is writing it to the store).
        """
        values = (
            record.reference,
            record.kind,
            record.dedupe_key,
            record.session_id,
            record.model_dump_json(by_alias=True),
            now,
            now if first_attempt_at is None else first_attempt_at,
        )

        def insert_then_find(conn: sqlite3.Connection) -> str:
            # The same report set aside earlier keeps its reference: the resident who repeats
            # it is given that one, which an admin's retry makes resolve, and no second entry
            # is queued that could not be set aside next to it (dead_letters.dedupe_key).
            dead = conn.execute(
                "SELECT reference FROM dead_letters WHERE dedupe_key = ?", (record.dedupe_key,)
            ).fetchone()
            if dead is not None:
                return str(dead[0])
            conn.execute(
                "INSERT INTO outbox (reference, kind, dedupe_key, session_id, payload, queued_at,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                values,
            )
            row = conn.execute(
                "SELECT reference FROM outbox WHERE dedupe_key = ?", (record.dedupe_key,)
            ).fetchone()
            return str(row[0])

        return await self._db.run(insert_then_find)

    async def find(self, dedupe_key: str) -> str | None:
        row = await self._db.fetchone(
            "SELECT reference FROM outbox WHERE dedupe_key = ?", (dedupe_key,)
        )
        return str(row[0]) if row else None

    async def get(self, reference: str) -> Record | None:
        """The queued record under `reference`."""
        row = await self._db.fetchone(
            "SELECT kind, payload FROM outbox WHERE reference = ?", (reference,)
        )
        return _decode(row[0], row[1]) if row else None

    async def held(self, reference: str) -> tuple[Record, bool] | None:
        """The record held here under `reference`, and whether it was set aside as a dead
        letter (not in the store either way, and still the resident's)."""
        row = await self._db.fetchone(
            "SELECT kind, payload, 0 FROM outbox WHERE reference = ?"
            " UNION ALL SELECT kind, payload, 1 FROM dead_letters WHERE reference = ?",
            (reference, reference),
        )
        return (_decode(row[0], row[1]), bool(row[2])) if row else None

    async def due(self, now: float, limit: int = 50) -> list[QueuedRecord]:
        rows = await self._db.fetchall(
            "SELECT kind, payload, attempts FROM outbox WHERE next_attempt_at <= ?"
            " ORDER BY next_attempt_at, queued_at LIMIT ?",
            (now, limit),
        )
        return [QueuedRecord(_decode(kind, payload), attempts) for kind, payload, attempts in rows]

    async def next_due_at(self) -> float | None:
        row = await self._db.fetchone("SELECT min(next_attempt_at) FROM outbox")
        return None if row is None or row[0] is None else float(row[0])

    async def depth(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM outbox")
        return int(row[0]) if row else 0

    async def remove(self, reference: str) -> None:
        await self._db.execute("DELETE FROM outbox WHERE reference = ?", (reference,))

    async def reschedule(self, reference: str, attempts: int, at: float, error: str) -> None:
        await self._db.execute(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE reference = ?",
            (attempts, at, error, reference),
        )

    async def bury(self, reference: str, attempts: int, error: str, now: float) -> None:
        """Move an entry the store refuses for good to the dead letters (one transaction)."""

        def move(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    f"INSERT INTO dead_letters ({ENTRY_COLUMNS}, attempts, last_error, dead_at)"
                    f" SELECT {ENTRY_COLUMNS}, ?, ?, ? FROM outbox WHERE reference = ?"
                    " ON CONFLICT DO NOTHING",
                    (attempts, error, now, reference),
                )
                conn.execute("DELETE FROM outbox WHERE reference = ?", (reference,))

        await self._db.run(move)

    async def revive(self, reference: str, now: float) -> bool:
        """Put a dead letter back in the outbox, due now; False if there is no such letter."""

        def move(conn: sqlite3.Connection) -> bool:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                moved = conn.execute(
                    f"INSERT INTO outbox ({ENTRY_COLUMNS}, attempts, next_attempt_at)"
                    f" SELECT {ENTRY_COLUMNS}, 0, ? FROM dead_letters WHERE reference = ?"
                    " ON CONFLICT DO NOTHING",
                    (now, reference),
                ).rowcount
                # A letter is only ever deleted once it is queued again, never lost to a clash.
                if moved:
                    conn.execute("DELETE FROM dead_letters WHERE reference = ?", (reference,))
            return bool(moved)

        return await self._db.run(move)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._db.fetchall(
            "SELECT kind, payload, attempts, last_error, queued_at, dead_at FROM dead_letters"
            " ORDER BY dead_at LIMIT ?",
            (limit,),
        )
        return [
            DeadLetter(_decode(kind, payload), attempts, error, queued_at, dead_at)
            for kind, payload, attempts, error, queued_at, dead_at in rows
        ]

    async def counts(self) -> tuple[int, int]:
        """Queued entries and dead letters, in one trip to the worker thread."""

        def count(conn: sqlite3.Connection) -> tuple[int, int]:
            queued = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            return int(queued), int(dead)

        return await self._db.run(count)


def _decode(kind: str, payload: str) -> Record:
    return RECORD_TYPES[kind].model_validate_json(payload)
