"""Where conversations live, and the one-turn-at-a-time rule, behind one interface.

SESSION_STORE picks the store:
- `memory` (default): this process only (sessions.SessionRegistry);
- `redis://...`: shared by every worker and replica, through the Agents SDK's RedisSession;
- `sqlite:///...` or `postgresql://...`: shared and durable, through the SDK's SQLAlchemySession.

A turn holds a lease on its conversation. With a shared store the lease is a lock with an owner
token and an expiry that the holder renews while the turn runs: two workers never run one
conversation at once, and a crashed worker's lock lapses on its own. If a holder finds its lock
gone (the conversation was deleted elsewhere, or the lock lapsed) it cancels its turn.

Owners: with API keys on, each conversation records the key (by its id, never the key) that
created it (`creator`); `owner` is what the caller may reach: None means "no restriction" (auth
off, or the admin key), otherwise only conversations recorded with that key id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.items import TResponseInputItem
from agents.memory import Session

from townhall.errors import SessionNotFoundError
from townhall.sessions.registry import drop_unanswered_tool_calls

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionMeta:
    session_id: str
    owner: str | None
    created_at: float
    last_active: float
    turns: int
    busy: bool


@dataclass(eq=False)
class TurnLease:
    """A running turn's hold on its conversation.

    `history` is the conversation's stored items, which the run reads and extends; None for a
    conversation whose items a protocol keeps itself (ChatKit threads), which then passes the
    run its input in full.
    """

    session_id: str
    history: Session | None
    owner: str | None
    conversation_id: str
    token: str = ""
    _cancel: Callable[[], None] | None = field(default=None, repr=False)
    lost: bool = False
    stop_reason: str | None = None  # "server_restarting" when the shutdown grace ran out

    def on_cancel(self, cancel: Callable[[], None]) -> None:
        """What to call if the turn must stop (deleted, or its lock lost)."""
        self._cancel = cancel

    def cancel(self, reason: str | None = None) -> None:
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
        if self._cancel is not None:
            self._cancel()


class LockRenewals:
    """Keeps each running turn's lock alive in a shared store, and stops the turn if it is lost.

    `renew(lease)` asks the store to extend the lock and says whether the lease still owns it;
    a lock found gone (deleted by a DELETE on any worker, or lapsed) cancels the turn. A renewal
    that fails (store briefly unreachable) is tried again at the next tick.
    """

    def __init__(self, every_seconds: float, renew: Callable[[TurnLease], Awaitable[bool]]) -> None:
        self.every_seconds = every_seconds
        self.renew = renew
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, lease: TurnLease) -> None:
        self._tasks[lease.token] = asyncio.create_task(self._keep(lease))

    def stop(self, lease: TurnLease) -> None:
        task = self._tasks.pop(lease.token, None)
        if task is not None:
            task.cancel()

    def stop_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _keep(self, lease: TurnLease) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                still_ours = await self.renew(lease)
            except Exception as error:
                logger.warning("could not renew the turn lock: %s", type(error).__name__)
                continue
            if not still_ours:
                logger.warning("turn lock lost (deleted or expired); cancelling the turn")
                lease.lost = True
                lease.cancel()
                return


class SessionStore(Protocol):
    backend: str
    max_sessions: int

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def begin_turn(
        self, session_id: str, owner: str | None, creator: str | None = None
    ) -> TurnLease: ...
    async def end_turn(self, lease: TurnLease, *, completed: bool) -> None: ...
    async def get(self, session_id: str, owner: str | None) -> SessionMeta: ...
    async def items(self, session_id: str) -> list[TResponseInputItem]: ...
    async def list(self, owner: str | None) -> list[SessionMeta]: ...
    async def forget(self, session_id: str, owner: str | None) -> SessionMeta: ...
    async def expire_idle(self) -> int: ...
    async def count(self) -> int: ...
    async def ping(self) -> None: ...


def check_owner(session_id: str, recorded: str | None, owner: str | None) -> None:
    """A conversation another key created reads as one that does not exist (404, the same
    answer), so a key cannot even learn that it exists. Each key's labels are kept apart
    (requests_context.session_key), so this only guards against a mistake there."""
    if owner is not None and recorded != owner:
        raise SessionNotFoundError(session_id)


class RepairedHistory:
    """Wraps a stored SDK session so a turn cancelled mid-tool-call never poisons later turns:
    tool calls without an output (and outputs without a call) are left out of what is read."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_id = inner.session_id
        self.session_settings = inner.session_settings

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        items = drop_unanswered_tool_calls(await self.inner.get_items())
        return items[-limit:] if limit else items

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        await self.inner.add_items(items)

    async def pop_item(self) -> TResponseInputItem | None:
        item: TResponseInputItem | None = await self.inner.pop_item()
        return item

    async def clear_session(self) -> None:
        await self.inner.clear_session()
