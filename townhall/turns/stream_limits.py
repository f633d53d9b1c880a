"""Limits on one streamed answer: how long it may get, and how far it may run ahead of the reader.

Both are enforced inside our lean models' streams (lean_chat, lean_responses), the one place that
sits between the upstream socket and the Agents SDK:

- MAX_ANSWER_CHARS: the characters of all `*.delta` events of one model response (text, refusal,
  tool-call arguments, reasoning) may not exceed it; past it the stream raises AnswerTooLong,
  the SDK closes the upstream response, and the turn reports an `error` frame.
- StreamCredit: the Runner copies every model event into RunResultStreaming._event_queue with
  put_nowait (an unbounded asyncio.Queue, never awaited), so nothing in the SDK slows the model
  down when the reader is slow. Our model stream awaits credit before it hands an event on; the
  reader gives the credit back once it has passed the event on (TurnRunner, after its frame was
  taken by the SSE writer, which waits on the socket). So at most `window` characters (plus one
  network read) are pulled ahead of what the client has taken.

The credit reaches the model through a context variable: Runner.run_streamed creates the run-loop
task synchronously, and a task copies the context it was created in.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, TypeVar

MAX_ANSWER_CHARS = 1_000_000
YIELD_EVERY_CHARS = 32_000  # delta characters handed on between two turns of the event loop

E = TypeVar("E")


class AnswerTooLong(Exception):
    """The model's answer grew past the configured limit; the stream was stopped."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the model's answer exceeded {limit} characters")
        self.limit = limit


class ClientStalled(Exception):
    """The reader took no event for too long while the model waited for it."""


def event_cost(event: Any) -> int:
    """Credit an event takes: its delta's characters, at least 1 (so event counts are bounded)."""
    delta = getattr(event, "delta", None)
    return len(delta) + 1 if isinstance(delta, str) else 1


class StreamCredit:
    """How many characters one run's model streams may have handed on but not yet been read.

    Only streams running in `owner` (the run's run-loop task; by default the first task that asks)
    are paced, so a nested run started by a tool, whose events never reach our reader, cannot
    hold credit it will never get back.
    """

    def __init__(self, window: int = 64_000, stall_seconds: float | None = None) -> None:
        self.window = window
        self.stall_seconds = stall_seconds
        self.owner: asyncio.Task[Any] | None = None
        self.outstanding = 0
        self.peak = 0
        self.waits = 0
        self._held: dict[int, int] = {}  # id(event) -> cost, for events handed on, not yet read
        self._room = asyncio.Event()
        self._room.set()

    def _is_owner(self) -> bool:
        task = asyncio.current_task()
        if self.owner is None:
            self.owner = task
        return task is self.owner

    async def acquire(self, event: Any) -> None:
        """Wait until there is room, then count `event` as handed on (model side)."""
        if not self._is_owner():
            return
        while self.outstanding >= self.window:
            self.waits += 1
            self._room.clear()
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as
            # the wait ends (gh-86296), and the reader's last release comes just before the
            # turn cancels the run, so the run would go on waiting for a reader that is gone.
            try:
                async with asyncio.timeout(self.stall_seconds):
                    await self._room.wait()
            except TimeoutError:
                raise ClientStalled(f"the reader took nothing for {self.stall_seconds} s") from None
        cost = event_cost(event)
        self._held[id(event)] = cost
        self.outstanding += cost
        self.peak = max(self.peak, self.outstanding)

    def release(self, event: Any) -> None:
        """The reader has passed `event` on (reader side); unknown events are ignored."""
        cost = self._held.pop(id(event), 0)
        if cost:
            self.outstanding -= cost
            if self.outstanding < self.window:
                self._room.set()


CURRENT_CREDIT: contextvars.ContextVar[StreamCredit | None] = contextvars.ContextVar(
    "stream_credit", default=None
)


async def guarded(
    events: AsyncIterator[E], *, max_chars: int | None, credit: StreamCredit | None
) -> AsyncGenerator[E, None]:
    """`events`, stopped with AnswerTooLong past `max_chars` delta characters, and paced by
    `credit` (awaited before an event is handed on, so the upstream is not read meanwhile)."""
    total = 0
    next_yield = YIELD_EVERY_CHARS
    async with aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                total += len(delta)
                if max_chars is not None and total > max_chars:
                    raise AnswerTooLong(max_chars)
                if total >= next_yield:
                    # Buffered upstream data and a fast reader never make this task wait, so
                    # a long answer would run in few, long loop steps; let others in between.
                    next_yield = total + YIELD_EVERY_CHARS
                    await asyncio.sleep(0)
            if credit is not None:
                await credit.acquire(event)
            yield event
