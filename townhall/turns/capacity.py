"""Admission by capacity: at most `limit` turns answer at once in this worker.

Past what a worker can hold every stream degrades together (first words later, answers
slower, for everyone); refusing the turns past the limit before their streams start keeps the
admitted ones held, and the refused get a 503 with Retry-After that a client can act on. The
limit is `MAX_CONCURRENT_TURNS`; BENCHMARKS.md has the ladder its default comes from.

A slot is taken at admission, before any await that starts the turn, so a burst cannot all be
admitted in the gap between checking and starting.
"""

from __future__ import annotations

from townhall.errors import AtCapacityError


class Slot:
    """One admitted turn's place; `release()` gives it back, once, however the turn ends."""

    def __init__(self, slots: TurnSlots) -> None:
        self._slots: TurnSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.taken -= 1
            self._slots = None


class TurnSlots:
    def __init__(self, limit: int, *, retry_after: int = 2) -> None:
        self.limit = limit  # 0: no limit
        self.retry_after = retry_after
        self.taken = 0
        self.refused = 0  # since start-up, for /health

    def take(self) -> Slot:
        """A slot for a new turn; raises AtCapacityError (503) when all are taken."""
        if self.limit and self.taken >= self.limit:
            self.refused += 1
            raise AtCapacityError(self.limit, self.retry_after)
        self.taken += 1
        return Slot(self)
