"""Tables made before records had owners: the migration keeps every row, old rows are the admin's
alone, and Supabase's browser roles cannot read through row level security."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from townhall.records.filing import RecordDesk
from townhall.records.model import Viewer
from townhall.records.outbox import Outbox
from townhall.records.store import SCHEMA_SQL, PostgresRecordStore, RecordStore, SQLiteRecordStore

# The tables as the first release made them (no owner, no conversation_id).
OLD_INCIDENTS = """
CREATE TABLE incidents (
    reference TEXT PRIMARY KEY, session_id TEXT NOT NULL, dedupe_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'received',
    category TEXT NOT NULL, description TEXT NOT NULL, location TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 5),
    occurred_at TEXT, people_involved TEXT, reporter_name TEXT, reporter_contact TEXT
)
"""
OLD_ROW = (
    "INSERT INTO incidents (reference, session_id, dedupe_key, created_at, status, category,"
    " description, location, severity, reporter_name) VALUES ('INC-OLD234', 'legacy',"
    " 'k-old', '2026-01-02T03:04:05+00:00', 'received', 'pothole', 'Old hole', 'Elm Road 1',"
    " 2, 'Old Resident')"
)


async def _lookups(store: RecordStore, tmp_path: Path) -> tuple[object, object, object]:
    """What a key, the anonymous caller and the admin key learn of the old row."""
    desk = RecordDesk(store, Outbox(tmp_path / "outbox.db"))
    await desk.open()
    try:
        return (
            await desk.lookup("INC-OLD234", Viewer("key-0123456789abcdef", "conv_x")),
            await desk.lookup("INC-OLD234", Viewer("anonymous", "conv_x")),
            await desk.lookup("INC-OLD234", Viewer("key-fedcba9876543210", "conv_y", admin=True)),
        )
    finally:
        await desk.close()


async def test_sqlite_migration_keeps_old_rows_for_the_admin_only(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(OLD_INCIDENTS)
        conn.execute(OLD_ROW)
        conn.commit()
    key, anonymous, admin = await _lookups(SQLiteRecordStore(path), tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(incidents)")}
        rows = conn.execute("SELECT reference, owner FROM incidents").fetchall()
    assert {"owner", "conversation_id"} <= columns
    assert rows == [("INC-OLD234", None)]
    assert key is None and anonymous is None
    assert admin is not None and admin.visibility == "full"  # type: ignore[attr-defined]


async def test_sqlite_files_open_again_after_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    for _ in range(2):  # the second open finds the columns already there
        store = SQLiteRecordStore(path)
        await store.open()
        await store.close()


async def test_postgresql_migration_keeps_old_rows_for_the_admin_only(
    tmp_path: Path, pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(OLD_INCIDENTS.replace("created_at TEXT", "created_at timestamptz"))
        await conn.execute(OLD_ROW)
    finally:
        await conn.close()
    key, anonymous, admin = await _lookups(PostgresRecordStore(pg_dsn), tmp_path)
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT reference, owner, conversation_id FROM incidents")
        feedback = await conn.fetchval("SELECT count(*) FROM feedback")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [("INC-OLD234", None, None)]
    assert feedback == 0  # the table the old schema lacked was made
    assert key is None and anonymous is None
    assert admin is not None and admin.visibility == "full"  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def supabase_roles(dsn: str) -> AsyncIterator[None]:
    """Supabase's roles on the test server: anon and authenticated, and service_role, which
    bypasses row level security. Made if missing (they are cluster-wide), dropped if made here."""
    conn = await asyncpg.connect(dsn)
    made = []
    try:
        for role, extra in (("anon", ""), ("authenticated", ""), ("service_role", " BYPASSRLS")):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} NOLOGIN{extra}")
                made.append(role)
        yield
    finally:
        for role in made:
            await conn.execute(f"DROP OWNED BY {role} CASCADE")
            await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_row_level_security_refuses_the_anon_key_and_lets_the_service_key_in(
    pg_dsn: str,
) -> None:
    async with supabase_roles(pg_dsn):
        conn = await asyncpg.connect(pg_dsn)
        try:
            schema = await conn.fetchval("SELECT current_schema()")
            await conn.execute(SCHEMA_SQL.read_text())
            await conn.execute(SCHEMA_SQL.read_text())  # idempotent
            await conn.execute(OLD_ROW)
            # What Supabase grants its API roles by default: table privileges for all.
            for role in ("anon", "authenticated", "service_role"):
                await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
                await conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
            seen = {}
            for role in ("anon", "authenticated", "service_role"):
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL ROLE {role}")
                    seen[role] = await conn.fetchval("SELECT count(*) FROM incidents")
            refused_write = None
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL ROLE anon")
                    await conn.execute(OLD_ROW.replace("INC-OLD234", "INC-ANON22"))
            except asyncpg.InsufficientPrivilegeError as error:
                refused_write = error
            policies = await conn.fetchval(
                "SELECT count(*) FROM pg_policies WHERE schemaname = $1", schema
            )
        finally:
            await conn.close()
    assert seen == {"anon": 0, "authenticated": 0, "service_role": 1}
    assert refused_write is not None
    assert policies == 4  # deny anon and authenticated, on incidents and feedback, made once
