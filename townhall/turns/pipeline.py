"""The one way a turn runs, whatever protocol asked for it.

admit (the server is not draining, the caller is within its rate limit, the message is not too
long, a turn slot is free, the conversation's lease is free) -> run the agent
(runner.TurnRunner) -> typed events (events.py), which a protocol adapter (protocols/) renders.
The adapter ends the turn with `OpenTurn.release()` however its response ends.

/chat keeps its conversations in the session store, whose lease carries their history: `open()`
does it all. ChatKit keeps its threads itself: it admits with `admit()` (and holds the slot it
gets for its whole response) and leases the thread from its own `Leases` before its response
starts (so a refusal is still a plain HTTP error), then `start()`s the turn with the thread's
items as input.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Protocol

import anyio
from agents import TResponseInputItem

from townhall.context import AppContext
from townhall.errors import MessageTooLongError
from townhall.records.filing import RecordDesk
from townhall.sessions.store import SessionStore, TurnLease
from townhall.turns.capacity import Slot, TurnSlots
from townhall.turns.drain import Drain
from townhall.turns.events import Finished, TurnEvent
from townhall.turns.rate_limit import RateLimiter, enforce
from townhall.turns.runner import SERVER_RESTARTING, TurnRunner

if TYPE_CHECKING:
    from townhall.http.auth import Principal

logger = logging.getLogger(__name__)


class Leases(Protocol):
    """Who hands out conversation leases: a session store, or sessions.local_leases."""

    async def begin_turn(
        self, session_id: str, owner: str | None, creator: str | None = None
    ) -> TurnLease: ...

    async def end_turn(self, lease: TurnLease, *, completed: bool) -> None: ...


class OpenTurn:
    """An admitted turn: its events, and its lease, which ends exactly once."""

    def __init__(
        self,
        store: Leases,
        lease: TurnLease,
        session_id: str,
        events: AsyncGenerator[TurnEvent, None],
        untrack: Callable[[], None],
        slot: Slot | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.session_id = session_id  # the client's label (the lease holds the store's key)
        self.events = events
        self.completed = False
        self._untrack = untrack
        self._slot = slot
        self._released = False

    def observe(self, event: TurnEvent) -> None:
        if isinstance(event, Finished):
            self.completed = True

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._untrack()
        if self._slot is not None:
            self._slot.release()
        # Shielded: this often runs in a response that is being cancelled (the client left),
        # and a lease that is not returned keeps the conversation busy until its lock lapses.
        with anyio.CancelScope(shield=True):
            try:
                await self.store.end_turn(self.lease, completed=self.completed)
            except Exception:
                logger.exception("could not end the turn cleanly")


class TurnPipeline:
    """Admits turns and starts them; shared by every protocol."""

    def __init__(
        self,
        *,
        runner: TurnRunner,
        sessions: SessionStore,
        desk: RecordDesk,
        drain: Drain,
        slots: TurnSlots,
        rate_limiter: RateLimiter | None,
        max_message_chars: int,
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.desk = desk
        self.drain = drain
        self.slots = slots
        self.rate_limiter = rate_limiter
        self.max_message_chars = max_message_chars

    async def admit(self, *, rate_identity: str | None, message: str) -> Slot:
        """The admitted turn's slot, or the AppError that says why a new turn is refused
        (`rate_identity` None: the protocol has already counted this request against the
        caller's rate limit). The caller releases the slot however the turn ends."""
        self.drain.admit()
        if rate_identity is not None:
            await enforce(self.rate_limiter, rate_identity)
        if len(message) > self.max_message_chars:
            raise MessageTooLongError(len(message), self.max_message_chars)
        return self.slots.take()  # last: a refusal above must not hold a slot

    async def open(
        self,
        caller: Principal,
        *,
        key: str,
        session_id: str,
        message: str,
        rate_identity: str,
        request_id: str,
    ) -> OpenTurn:
        """Admit a turn on the conversation kept under `key` (the client calls it `session_id`)
        and start it. Raises the AppError that says why a turn is refused."""
        slot = await self.admit(rate_identity=rate_identity, message=message)
        try:
            lease = await self.sessions.begin_turn(key, owner=caller.owner, creator=caller.key_id)
        except BaseException:
            slot.release()
            raise
        context = AppContext(
            session_id=session_id,
            request_id=request_id,
            desk=self.desk,
            owner=caller.identity,
            conversation_id=lease.conversation_id,
            admin=caller.admin_key,
        )
        return self.start(self.sessions, lease, message, context, label=session_id, slot=slot)

    def start(
        self,
        leases: Leases,
        lease: TurnLease,
        agent_input: str | list[TResponseInputItem],
        context: AppContext,
        *,
        label: str,
        slot: Slot | None = None,
        answering: str | None = None,
    ) -> OpenTurn:
        """Run an admitted turn on `lease` (which `leases` handed out and gets back); the turn
        gives back `slot` when it ends (ChatKit's route holds its own). `answering`: the agent
        that answers, for a protocol that keeps the conversation (runner.TurnRunner.stream)."""
        untrack = self.drain.track(lambda: lease.cancel(SERVER_RESTARTING.code))
        events = self.runner.stream(lease, agent_input, context, answering)
        return OpenTurn(leases, lease, label, events, untrack, slot)
