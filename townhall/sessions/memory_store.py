"""The default session store: this process's memory (registry.SessionRegistry)."""

from __future__ import annotations

from agents.items import TResponseInputItem

from townhall.sessions.registry import Conversation, SessionRegistry
from townhall.sessions.store import SessionMeta, TurnLease, check_owner


class MemorySessionStore:
    """This process's memory (sessions.SessionRegistry) behind the SessionStore interface."""

    backend = "memory"

    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry
        self.max_sessions = registry.max_sessions

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def begin_turn(
        self, session_id: str, owner: str | None, creator: str | None = None
    ) -> TurnLease:
        existing = self.registry.peek(session_id)
        if existing is not None:
            check_owner(session_id, existing.owner, owner)
        conversation = self.registry.begin_turn(session_id, creator or owner)
        lease = TurnLease(
            session_id, conversation.history, conversation.owner, conversation.conversation_id
        )
        conversation.cancel_turn = lease.cancel
        return lease

    async def end_turn(self, lease: TurnLease, *, completed: bool) -> None:
        conversation = self.registry.peek(lease.session_id)
        if conversation is not None and conversation.history is lease.history:
            self.registry.end_turn(conversation, completed=completed)

    async def get(self, session_id: str, owner: str | None) -> SessionMeta:
        conversation = self.registry.get(session_id)
        check_owner(session_id, conversation.owner, owner)
        return _meta(conversation)

    async def items(self, session_id: str) -> list[TResponseInputItem]:
        return await self.registry.get(session_id).history.get_items()

    async def list(self, owner: str | None) -> list[SessionMeta]:
        return [_meta(c) for c in self.registry.list() if owner is None or c.owner == owner]

    async def forget(self, session_id: str, owner: str | None) -> SessionMeta:
        conversation = self.registry.get(session_id)
        check_owner(session_id, conversation.owner, owner)
        return _meta(self.registry.forget(session_id))

    async def expire_idle(self) -> int:
        return self.registry.expire_idle()

    async def count(self) -> int:
        return len(self.registry)

    async def ping(self) -> None:
        return None


def _meta(conversation: Conversation) -> SessionMeta:
    return SessionMeta(
        session_id=conversation.session_id,
        owner=conversation.owner,
        created_at=conversation.created_at,
        last_active=conversation.last_active,
        turns=conversation.turns,
        busy=conversation.busy,
    )
