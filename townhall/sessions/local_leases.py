"""One turn at a time per conversation, in this process, for conversations whose items are kept
elsewhere (ChatKit threads live in the ChatKit store, which saves each item itself).

It hands out the same `TurnLease` the session stores do, without history, so the turn pipeline
admits, runs, stops and releases a ChatKit turn exactly as it does a /chat turn.
"""

from __future__ import annotations

from collections.abc import Callable

from townhall.errors import AppError
from townhall.sessions.store import TurnLease


class LocalLeases:
    def __init__(self, busy: Callable[[str], AppError], *, prefix: str = "") -> None:
        self.busy = busy  # the error for a conversation that is still answering
        self.prefix = prefix  # conversation ids are prefix + key (kept apart from /chat's)
        self._held: dict[str, TurnLease] = {}

    async def begin_turn(
        self, session_id: str, owner: str | None, creator: str | None = None
    ) -> TurnLease:
        if session_id in self._held:
            raise self.busy(session_id)
        lease = TurnLease(session_id, None, owner, self.prefix + session_id)
        self._held[session_id] = lease
        return lease

    async def end_turn(self, lease: TurnLease, *, completed: bool) -> None:
        """Idempotent: the route and the turn may both end a lease (whichever ends first)."""
        if self._held.get(lease.session_id) is lease:
            del self._held[lease.session_id]
