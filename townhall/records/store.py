"""Where records are kept: SQLite (the default), PostgreSQL, or Supabase's API.

Every store keeps the same contract, which tests/test_record_store.py runs against all three:
- `insert_once(record)` writes the record unless one with the same reference or dedupe key is
  already there, and returns the reference stored for that dedupe key. Retrying it after an
  ambiguous failure never doubles a row.
- `get(reference)` returns the record or None.
- A reference already held by another record (references are random: with 31^6 per prefix a
  city's hundred thousand reports hold a few such pairs) raises ReferenceTakenError.
- Any failure raises; the caller (filing.RecordDesk) decides what to do with the record.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from townhall.db.postgres import PostgresDatabase
from townhall.db.sqlite import SQLiteFile
from townhall.records.model import RECORD_TYPES, Record, record_from_row, record_type_for
from townhall.settings import Settings, sqlite_path

logger = logging.getLogger(__name__)

SCHEMA_SQL = Path(__file__).with_name("schema.sql")


class ReferenceTakenError(Exception):
    """Another record already holds this reference: this one was not written."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"reference {reference} is held by another record")
        self.reference = reference


class RecordStore(Protocol):
    backend: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def insert_once(self, record: Record) -> str: ...
    async def get(self, reference: str) -> Record | None: ...
    async def ping(self) -> None: ...


def _insert_sql(record_type: type[Record]) -> str:
    columns = record_type.columns()
    values = ", ".join("?" for _ in columns)
    # ON CONFLICT DO NOTHING covers the unique reference and dedupe_key only; a row that breaks
    # a CHECK or NOT NULL still fails loudly (unlike SQLite's INSERT OR IGNORE).
    return (
        f"INSERT INTO {record_type.table} ({', '.join(columns)}) VALUES ({values}) "
        "ON CONFLICT DO NOTHING"
    )


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    reference TEXT PRIMARY KEY, session_id TEXT NOT NULL, dedupe_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'received',
    owner TEXT, conversation_id TEXT,
    category TEXT NOT NULL, description TEXT NOT NULL, location TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 5),
    occurred_at TEXT, people_involved TEXT, reporter_name TEXT, reporter_contact TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    reference TEXT PRIMARY KEY, session_id TEXT NOT NULL, dedupe_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'received',
    owner TEXT, conversation_id TEXT,
    topic TEXT NOT NULL, summary TEXT NOT NULL,
    sentiment TEXT NOT NULL CHECK (sentiment IN ('positive', 'neutral', 'negative')),
    location TEXT, name TEXT
);
CREATE INDEX IF NOT EXISTS incidents_session_idx ON incidents (session_id);
CREATE INDEX IF NOT EXISTS feedback_session_idx ON feedback (session_id);
"""
# Columns added after the first release, for files made before them (SQLite has no
# ADD COLUMN IF NOT EXISTS; PostgreSQL's migration is in schema.sql). Old rows keep NULL: owner
# unknown, so only the admin key sees them.
SQLITE_ADDED_COLUMNS = {
    "incidents": ("owner TEXT", "conversation_id TEXT"),
    "feedback": ("owner TEXT", "conversation_id TEXT"),
}


class _SQLRecordStore:
    """The contract over plain SQL, the same statements on SQLite and PostgreSQL."""

    backend: str
    _db: SQLiteFile | PostgresDatabase

    def _values(self, record: Record) -> list[Any]:
        raise NotImplementedError

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def insert_once(self, record: Record) -> str:
        await self._db.execute(_insert_sql(type(record)), self._values(record))
        # Whichever insert won, this is the reference kept for the content.
        stored = await self._db.fetchone(
            f"SELECT reference FROM {record.table} WHERE dedupe_key = ?", (record.dedupe_key,)
        )
        if stored is None:  # nothing holds our content, so the conflict was on the reference
            raise ReferenceTakenError(record.reference)
        return str(stored[0])

    async def get(self, reference: str) -> Record | None:
        record_type = record_type_for(reference)
        if record_type is None:
            return None
        row = await self._db.fetchone(
            f"SELECT * FROM {record_type.table} WHERE reference = ?", (reference,)
        )
        return record_from_row(record_type, dict(row)) if row else None

    async def ping(self) -> None:
        await self._db.fetchone("SELECT 1")

    async def count(self, table: str) -> int:
        """Rows in a table (for tests and benchmarks)."""
        row = await self._db.fetchone(f"SELECT count(*) FROM {table}")
        return int(row[0]) if row else 0


class SQLiteRecordStore(_SQLRecordStore):
    """A SQLite file (the default store)."""

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = SQLiteFile(path, SQLITE_SCHEMA, added_columns=SQLITE_ADDED_COLUMNS)

    def _values(self, record: Record) -> list[Any]:
        return list(record.row().values())  # JSON values: SQLite keeps times as ISO text


class PostgresRecordStore(_SQLRecordStore):
    """PostgreSQL through asyncpg; also a Supabase project's connection string or pooler."""

    backend = "postgresql"

    def __init__(self, dsn: str, *, timeout: float = 5.0) -> None:
        self._db = PostgresDatabase(dsn, SCHEMA_SQL.read_text(), timeout=timeout)

    def _values(self, record: Record) -> list[Any]:
        return list(record.model_dump(by_alias=True).values())  # datetimes for timestamptz


class SupabaseRecordStore:
    """Supabase's PostgREST API through the `supabase` async client, with the service key."""

    backend = "supabase"

    def __init__(self, url: str, service_key: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._key = service_key
        self.timeout = timeout
        self._client: Any = None
        self._http: Any = None

    async def open(self) -> None:
        import httpx
        from supabase import AsyncClientOptions, acreate_client

        self._http = httpx.AsyncClient(timeout=self.timeout)
        options = AsyncClientOptions(
            httpx_client=self._http,
            # Our outbox retries with backoff; the client's own GET retries would only stall.
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = await acreate_client(self.url, self._key, options=options)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def insert_once(self, record: Record) -> str:
        from postgrest.exceptions import APIError

        table = self._client.table(record.table)
        try:
            await table.upsert(
                record.row(), on_conflict="dedupe_key", ignore_duplicates=True, returning="minimal"
            ).execute()
        except APIError as error:
            # 23505 past the dedupe_key upsert: the reference (the primary key) is taken, unless
            # our content landed meanwhile (found below).
            if error.code != "23505":
                raise
        found = (
            await self._client.table(record.table)
            .select("reference")
            .eq("dedupe_key", record.dedupe_key)
            .limit(1)
            .execute()
        )
        if not found.data:
            raise ReferenceTakenError(record.reference)
        return str(found.data[0]["reference"])

    async def get(self, reference: str) -> Record | None:
        record_type = record_type_for(reference)
        if record_type is None:
            return None
        found = (
            await self._client.table(record_type.table)
            .select("*")
            .eq("reference", reference)
            .limit(1)
            .execute()
        )
        return record_from_row(record_type, found.data[0]) if found.data else None

    async def ping(self) -> None:
        table = next(iter(RECORD_TYPES.values())).table
        await self._client.table(table).select("reference").limit(1).execute()


def choose_store(settings: Settings) -> RecordStore:
    """The store the settings name (see Settings.record_backend)."""
    timeout = settings.store_timeout_seconds
    if settings.record_backend == "supabase":
        assert settings.supabase_url and settings.supabase_service_key
        key = settings.supabase_service_key.get_secret_value()
        return SupabaseRecordStore(settings.supabase_url, key, timeout=timeout)
    if settings.record_backend == "postgresql":
        return PostgresRecordStore(settings.database_url, timeout=timeout)
    path = sqlite_path(settings.database_url)
    assert path is not None
    return SQLiteRecordStore(path)
