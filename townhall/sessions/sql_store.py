"""Conversations in a SQL database, shared and durable (SESSION_STORE=sqlite:///... or
postgresql://...), through the Agents SDK's SQLAlchemySession.

The SDK keeps the history in `agent_sessions` / `agent_messages`; this module keeps one row per
conversation in `townhall_sessions` (owner, times, turns) with the turn lock in it: a token and
an expiry, taken with a conditional UPDATE, renewed while the turn runs.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from agents.items import TResponseInputItem
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from townhall.db.sqlite import use_wal
from townhall.errors import SessionBusyError, SessionCapacityError, SessionNotFoundError
from townhall.sessions.registry import new_conversation_id
from townhall.sessions.store import (
    LockRenewals,
    RepairedHistory,
    SessionMeta,
    TurnLease,
    check_owner,
)
from townhall.settings import Settings, sqlite_path

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS townhall_sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    last_active DOUBLE PRECISION NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT,
    lock_expires DOUBLE PRECISION,
    conversation_id TEXT
)
"""
INDEX = "CREATE INDEX IF NOT EXISTS townhall_sessions_active_idx ON townhall_sessions (last_active)"
SQLITE_BUSY_SECONDS = 30.0
COLUMNS = (
    "session_id, owner, created_at, last_active, turns, lock_token, lock_expires, conversation_id"
)


def engine_for(url: str, timeout: float = 5.0) -> AsyncEngine:
    """An async engine for a sqlite:/// or postgresql:// URL.

    For PostgreSQL, query parameters (`?search_path=...`) become server settings, as asyncpg
    itself treats them, and statements are not cached: poolers in transaction mode cannot keep
    prepared statements (see postgres_db).
    """
    if sqlite_path(url) is not None:
        return _sqlite_engine(url)
    parts = urlsplit(url)
    server_settings = dict(parse_qsl(parts.query))
    bare = urlunsplit(parts._replace(scheme="postgresql+asyncpg", query=""))
    return create_async_engine(
        bare,
        pool_pre_ping=True,
        connect_args={
            # An unreachable database fails a request in seconds (503), not after asyncpg's
            # default minute.
            "timeout": timeout,
            "command_timeout": timeout,
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "server_settings": server_settings,
        },
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    """SQLite in WAL mode with a long busy timeout: the pool holds several connections, and in
    the default rollback journal a reader blocks a writer's commit, so a turn's renewals and
    history writes under load failed with "database is locked" after sqlite3's 5 s."""
    engine = create_async_engine(
        "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///"),
        connect_args={"timeout": SQLITE_BUSY_SECONDS},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            use_wal(cursor.execute)
        finally:
            cursor.close()

    return engine


async def _add_conversation_column(conn: AsyncConnection) -> None:
    """The migration for a table made before conversation instances were recorded."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("ALTER TABLE townhall_sessions ADD COLUMN IF NOT EXISTS conversation_id TEXT")
        )
        return
    columns = (await conn.execute(text("PRAGMA table_info(townhall_sessions)"))).all()
    if "conversation_id" not in {column[1] for column in columns}:
        await conn.execute(text("ALTER TABLE townhall_sessions ADD COLUMN conversation_id TEXT"))


class SQLSessionStore:
    backend = "sql"

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.max_sessions = settings.max_sessions
        self.ttl = settings.session_ttl_seconds
        self.lock_seconds = settings.session_lock_seconds
        self.engine = engine_for(url, settings.store_timeout_seconds)
        self.renewals = LockRenewals(self.lock_seconds / 3, self._renew)
        self._ready = False

    def _history(self, session_id: str) -> RepairedHistory:
        return RepairedHistory(
            SQLAlchemySession(session_id, engine=self.engine, create_tables=True)
        )

    async def open(self) -> None:
        try:
            await self._ensure_schema()
        except Exception as error:  # the server still starts; turns fail until the DB is back
            logger.warning("session database not reachable at start-up: %s", type(error).__name__)

    async def _ensure_schema(self) -> None:
        if not self._ready:
            async with self.engine.begin() as conn:
                await conn.execute(text(SCHEMA))
                await conn.execute(text(INDEX))
                await _add_conversation_column(conn)
            self._ready = True

    async def close(self) -> None:
        self.renewals.stop_all()
        await self.engine.dispose()

    async def _run(self, sql: str, **params: Any) -> Any:
        await self._ensure_schema()
        async with self.engine.begin() as conn:
            return await conn.execute(text(sql), params)

    async def begin_turn(
        self, session_id: str, owner: str | None, creator: str | None = None
    ) -> TurnLease:
        now = time.time()
        row = (
            await self._run(
                f"SELECT {COLUMNS} FROM townhall_sessions WHERE session_id = :id", id=session_id
            )
        ).first()
        if row is not None:
            check_owner(session_id, row.owner, owner)
        else:
            await self._make_room()
            await self._run(
                "INSERT INTO townhall_sessions"
                " (session_id, owner, created_at, last_active, turns, conversation_id)"
                " VALUES (:id, :owner, :now, :now, 0, :conversation)"
                " ON CONFLICT (session_id) DO NOTHING",
                id=session_id,
                owner=creator or owner,
                now=now,
                conversation=new_conversation_id(),
            )
        token = secrets.token_hex(16)
        # Taking the lock also reads back the row as it stands (another worker may have made
        # it between our SELECT and INSERT), and gives a conversation made before instances
        # were recorded its instance id.
        taken = (
            await self._run(
                "UPDATE townhall_sessions SET lock_token = :token, lock_expires = :expires,"
                " last_active = :now,"
                " conversation_id = COALESCE(conversation_id, :conversation)"
                " WHERE session_id = :id AND (lock_token IS NULL OR lock_expires < :now)"
                " RETURNING owner, conversation_id",
                token=token,
                expires=now + self.lock_seconds,
                now=now,
                id=session_id,
                conversation=new_conversation_id(),
            )
        ).first()
        if taken is None:
            raise SessionBusyError(session_id)
        lease = TurnLease(
            session_id, self._history(session_id), taken.owner, taken.conversation_id, token
        )
        self.renewals.start(lease)
        return lease

    async def _make_room(self) -> None:
        count = (await self._run("SELECT count(*) FROM townhall_sessions")).scalar_one()
        excess = count - self.max_sessions + 1
        if excess <= 0:
            return
        idle = (
            (
                await self._run(
                    "SELECT session_id FROM townhall_sessions"
                    " WHERE lock_token IS NULL OR lock_expires < :now"
                    " ORDER BY last_active LIMIT :n",
                    now=time.time(),
                    n=excess,
                )
            )
            .scalars()
            .all()
        )
        for session_id in idle:
            await self._delete(session_id)
        if len(idle) < excess:
            raise SessionCapacityError(self.max_sessions)

    async def _renew(self, lease: TurnLease) -> bool:
        renewed = await self._run(
            "UPDATE townhall_sessions SET lock_expires = :expires"
            " WHERE session_id = :id AND lock_token = :token",
            expires=time.time() + self.lock_seconds,
            id=lease.session_id,
            token=lease.token,
        )
        return bool(renewed.rowcount == 1)

    async def end_turn(self, lease: TurnLease, *, completed: bool) -> None:
        self.renewals.stop(lease)
        if lease.lost:
            return
        await self._run(
            "UPDATE townhall_sessions SET turns = turns + :add, last_active = :now,"
            " lock_token = NULL, lock_expires = NULL"
            " WHERE session_id = :id AND lock_token = :token",
            add=1 if completed else 0,
            now=time.time(),
            id=lease.session_id,
            token=lease.token,
        )

    async def get(self, session_id: str, owner: str | None) -> SessionMeta:
        row = (
            await self._run(
                f"SELECT {COLUMNS} FROM townhall_sessions WHERE session_id = :id", id=session_id
            )
        ).first()
        if row is None or self._expired(row):
            raise SessionNotFoundError(session_id)
        check_owner(session_id, row.owner, owner)
        return self._meta(row)

    async def items(self, session_id: str) -> list[TResponseInputItem]:
        await self.get(session_id, None)
        return await self._history(session_id).get_items()

    async def list(self, owner: str | None) -> list[SessionMeta]:
        rows = (
            await self._run(
                f"SELECT {COLUMNS} FROM townhall_sessions WHERE last_active > :since"
                " ORDER BY last_active LIMIT :n",
                since=time.time() - self.ttl,
                n=self.max_sessions,
            )
        ).all()
        return [self._meta(r) for r in rows if owner is None or r.owner == owner]

    async def forget(self, session_id: str, owner: str | None) -> SessionMeta:
        meta = await self.get(session_id, owner)
        # Deleting the row removes the lock: a turn running on any worker sees it at its next
        # renewal and stops.
        await self._delete(session_id)
        return meta

    async def _delete(self, session_id: str) -> None:
        await self._history(session_id).clear_session()
        await self._run("DELETE FROM townhall_sessions WHERE session_id = :id", id=session_id)

    async def expire_idle(self) -> int:
        stale = (
            (
                await self._run(
                    "SELECT session_id FROM townhall_sessions WHERE last_active <= :deadline"
                    " AND (lock_token IS NULL OR lock_expires < :now)",
                    deadline=time.time() - self.ttl,
                    now=time.time(),
                )
            )
            .scalars()
            .all()
        )
        for session_id in stale:
            await self._delete(session_id)
        return len(stale)

    async def count(self) -> int:
        return int((await self._run("SELECT count(*) FROM townhall_sessions")).scalar_one())

    async def ping(self) -> None:
        await self._run("SELECT 1")

    def _expired(self, row: Any) -> bool:
        return bool(row.last_active <= time.time() - self.ttl and not self._locked(row))

    @staticmethod
    def _locked(row: Any) -> bool:
        return row.lock_token is not None and (row.lock_expires or 0) >= time.time()

    def _meta(self, row: Any) -> SessionMeta:
        return SessionMeta(
            session_id=row.session_id,
            owner=row.owner,
            created_at=row.created_at,
            last_active=row.last_active,
            turns=row.turns,
            busy=self._locked(row),
        )
