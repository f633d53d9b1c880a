"""ChatKit threads, items and feedback, kept in the records' SQL database.

Rows hold the ChatKit models as JSON, so the store follows the protocol's types without a column
per field. The same statements run on SQLite and PostgreSQL (see postgres_db.PostgresDatabase).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, FeedbackKind, Page, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter

CHATKIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS chatkit_threads (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chatkit_items (
    id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (thread_id, id)
);
CREATE INDEX IF NOT EXISTS chatkit_items_order_idx ON chatkit_items (thread_id, seq);
CREATE TABLE IF NOT EXISTS chatkit_feedback (
    thread_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (thread_id, item_id)
);
"""

_ITEM = TypeAdapter[ThreadItem](ThreadItem)


class SQLDatabase(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def fetchone(self, sql: str, params: Any = ()) -> Any: ...
    async def fetchall(self, sql: str, params: Any = ()) -> list[Any]: ...
    async def execute(self, sql: str, params: Any = ()) -> None: ...


class ChatKitStore(Store[Any]):
    """chatkit.store.Store over SQL. Attachments are not supported (the widget has no uploads)."""

    def __init__(self, db: SQLDatabase) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.open()

    def generate_thread_id(self, context: Any) -> str:
        """128 random bits. chatkit's default has 32 (`thr_` and 8 hex digits): with many
        threads a new one would land on an existing id, another resident's."""
        return "thr_" + secrets.token_hex(16)

    async def close(self) -> None:
        await self.db.close()

    # --- threads ---------------------------------------------------------------------------

    async def load_thread(self, thread_id: str, context: Any) -> ThreadMetadata:
        row = await self.db.fetchone("SELECT data FROM chatkit_threads WHERE id = ?", (thread_id,))
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(row[0])

    async def thread_owner(self, thread_id: str) -> tuple[bool, str | None]:
        """Whether the thread exists, and the key id that created it."""
        row = await self.db.fetchone("SELECT owner FROM chatkit_threads WHERE id = ?", (thread_id,))
        return (row is not None, row[0] if row is not None else None)

    async def save_thread(self, thread: ThreadMetadata, context: Any) -> None:
        data = ThreadMetadata.model_validate(thread.model_dump()).model_dump_json()
        # The owner is set when the thread is created and never changed by an update, and only
        # the owner's own request may update it (an id that somehow collided with another key's
        # thread changes nothing of it).
        await self.db.execute(
            "INSERT INTO chatkit_threads (id, owner, created_at, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data "
            "WHERE COALESCE(chatkit_threads.owner, '') = COALESCE(excluded.owner, '')",
            (thread.id, getattr(context, "creator", None), _sortable(thread.created_at), data),
        )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Any
    ) -> Page[ThreadMetadata]:
        limit = _page_size(limit)
        descending = order == "desc"
        conditions: list[str] = []
        params: list[Any] = []
        owner = getattr(context, "owner", None)
        if owner is not None:
            conditions.append("owner = ?")
            params.append(owner)
        if after is not None:
            # The anchor must be one of the caller's own threads: another key's id as `after`
            # must not change the page (that would tell the caller it exists).
            owned = "" if owner is None else " AND owner = ?"
            anchor = await self.db.fetchone(
                f"SELECT created_at FROM chatkit_threads WHERE id = ?{owned}",
                (after,) if owner is None else (after, owner),
            )
            if anchor is not None:
                conditions.append(f"(created_at, id) {'<' if descending else '>'} (?, ?)")
                params += [anchor[0], after]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        direction = "DESC" if descending else "ASC"
        rows = await self.db.fetchall(
            f"SELECT id, data FROM chatkit_threads {where} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT ?",
            (*params, limit + 1),
        )
        threads = [ThreadMetadata.model_validate_json(row[1]) for row in rows[:limit]]
        return Page(
            data=threads,
            has_more=len(rows) > limit,
            after=threads[-1].id if threads else None,
        )

    async def delete_thread(self, thread_id: str, context: Any) -> None:
        await self.db.execute("DELETE FROM chatkit_items WHERE thread_id = ?", (thread_id,))
        await self.db.execute("DELETE FROM chatkit_feedback WHERE thread_id = ?", (thread_id,))
        await self.db.execute("DELETE FROM chatkit_threads WHERE id = ?", (thread_id,))

    # --- items -----------------------------------------------------------------------------

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Any
    ) -> Page[ThreadItem]:
        limit = _page_size(limit)
        descending = order == "desc"
        cursor = ""
        params: list[Any] = [thread_id]
        if after is not None:
            anchor = await self.db.fetchone(
                "SELECT seq FROM chatkit_items WHERE thread_id = ? AND id = ?", (thread_id, after)
            )
            if anchor is not None:
                cursor = f"AND seq {'<' if descending else '>'} ?"
                params.append(anchor[0])
        rows = await self.db.fetchall(
            f"SELECT data FROM chatkit_items WHERE thread_id = ? {cursor} "
            f"ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?",
            (*params, limit + 1),
        )
        items = [_ITEM.validate_json(row[0]) for row in rows[:limit]]
        return Page(data=items, has_more=len(rows) > limit, after=items[-1].id if items else None)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Any) -> None:
        await self.save_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Any) -> None:
        # seq orders items within a thread; an update keeps the item's first position.
        await self.db.execute(
            "INSERT INTO chatkit_items (id, thread_id, seq, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (thread_id, id) DO UPDATE SET data = excluded.data",
            (item.id, thread_id, time.time_ns(), _ITEM.dump_json(item).decode()),
        )

    async def load_item(self, thread_id: str, item_id: str, context: Any) -> ThreadItem:
        row = await self.db.fetchone(
            "SELECT data FROM chatkit_items WHERE thread_id = ? AND id = ?", (thread_id, item_id)
        )
        if row is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        return _ITEM.validate_json(row[0])

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Any) -> None:
        await self.db.execute(
            "DELETE FROM chatkit_items WHERE thread_id = ? AND id = ?", (thread_id, item_id)
        )

    # --- feedback --------------------------------------------------------------------------

    async def save_feedback(self, thread_id: str, item_ids: list[str], kind: FeedbackKind) -> None:
        now = datetime.now(UTC).isoformat()
        for item_id in item_ids:
            await self.db.execute(
                "INSERT INTO chatkit_feedback (thread_id, item_id, kind, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (thread_id, item_id) "
                "DO UPDATE SET kind = excluded.kind, created_at = excluded.created_at",
                (thread_id, item_id, str(kind), now),
            )

    async def load_feedback(self, thread_id: str) -> dict[str, str]:
        rows = await self.db.fetchall(
            "SELECT item_id, kind FROM chatkit_feedback WHERE thread_id = ?", (thread_id,)
        )
        return {row[0]: row[1] for row in rows}

    # --- attachments: not offered ----------------------------------------------------------

    async def save_attachment(self, attachment: Attachment, context: Any) -> None:
        raise AttachmentsUnsupportedError()

    async def load_attachment(self, attachment_id: str, context: Any) -> Attachment:
        raise AttachmentsUnsupportedError()

    async def delete_attachment(self, attachment_id: str, context: Any) -> None:
        raise AttachmentsUnsupportedError()


class AttachmentsUnsupportedError(Exception):
    def __init__(self) -> None:
        super().__init__("This server does not accept attachments.")


def _sortable(moment: datetime) -> str:
    """ISO text that sorts in time order (ChatKit makes naive local datetimes; keep them as is)."""
    return moment.isoformat()


# A page is at most this long, whatever a client asks (an integer past SQLite's 64 bits made it
# a 500); `has_more` and the cursor still lead to the rest.
MAX_PAGE_SIZE = 1000


def _page_size(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))
