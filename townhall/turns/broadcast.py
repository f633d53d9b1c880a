"""Streamed turns that outlive their connection: a driver task per turn, and readers.

A streamed turn no longer runs inside its HTTP response. `Broadcaster.stream(turn)` starts a
driver task that takes the turn's events into the conversation's TurnLog (frame_log.py) and
returns the first reader of that log, which the response renders. A client that lost its
connection reads the same log again from where it stopped (GET /sessions/{id}/stream); with a
Redis session store the log is mirrored to Redis (sessions/redis_frames.py) and any worker can.

When the last reader leaves a running turn, the turn runs on for RESUME_GRACE_SECONDS waiting
for a resume (a reader on another worker counts), up to the read-ahead window past where the
client left; if none comes it is cancelled, as a turn whose client left always was (the history
stays valid: the SDK saves nothing of a cancelled run).
The driver paces the model to the slowest reader attached here (the read-ahead window), and ends
the turn, and gives it back, however the turn ends.

RESUME_STREAMS=false: the response reads the turn's events itself (DirectReader), nothing is
kept, and a client that leaves cancels the turn at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Protocol

from townhall.errors import StreamPositionGoneError
from townhall.turns.capacity import TurnSlots
from townhall.turns.events import Failed, Finished
from townhall.turns.frame_log import ENDED, Entry, LogReader, Position, Started, TurnLog, turn_clock
from townhall.turns.pipeline import OpenTurn
from townhall.turns.runner import (
    ABANDONED,
    CLIENT_STALL_SECONDS,
    CLIENT_STALLED,
    SERVER_RESTARTING,
)

logger = logging.getLogger(__name__)

# How often a turn in its grace checks whether a client came back, here or on another worker.
GRACE_CHECK_SECONDS = 1.0


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


class Reader(Protocol):
    """One client's view of a turn: (frame id, entry) to the end, then closed."""

    def entries(self) -> AsyncGenerator[tuple[str, Entry], None]: ...

    async def close(self) -> None: ...


class FrameLogs(Protocol):
    """Where the turns' logs are kept: this process (MemoryFrameLogs) or Redis too."""

    def open(self, key: str) -> TurnLog:
        """A new turn's log for conversation `key`; it replaces the conversation's last one."""
        ...

    async def ended(self, log: TurnLog) -> None:
        """The turn has ended (its last entry is in): keep the log for the retention."""
        ...

    async def reader(self, key: str, after: Position | None, *, running: bool) -> Reader | None:
        """A reader of `key`'s log after `after` (None: from its start); None when there is
        nothing to send (no log, or the client has it all; `running`: unless a turn runs).
        Raises StreamPositionGoneError for a position the log does not hold."""
        ...

    async def followed_elsewhere(self, key: str) -> bool:
        """Whether a reader on another worker follows `key`'s running turn."""
        ...

    async def forget(self, key: str) -> None: ...

    async def close(self) -> None: ...


def local_reader(log: TurnLog, after: Position | None, *, running: bool) -> LogReader | None:
    """A reader of a log kept here (see FrameLogs.reader)."""
    if running:
        return None if log.ended else LogReader(log, -1)
    if after is None:
        return LogReader(log, -1)
    if after.turn != log.turn or after.index >= log.next:
        raise StreamPositionGoneError(str(after))
    if log.ended and after.index >= log.next - 1:
        return None
    return LogReader(log, after.index)


class MemoryFrameLogs:
    """The logs of this process's turns, each kept `retention` seconds after its turn ended."""

    def __init__(self, *, retention_seconds: float, cap_chars: int) -> None:
        self.retention_seconds = retention_seconds
        self.cap_chars = cap_chars
        self.logs: dict[str, TurnLog] = {}
        self._expiries: dict[str, asyncio.TimerHandle] = {}

    def open(self, key: str) -> TurnLog:
        previous = self.logs.get(key)
        self._cancel_expiry(key)
        log = TurnLog(
            key, turn_clock(previous.turn if previous else None), new_message_id(), self.cap_chars
        )
        self.logs[key] = log
        return log

    async def ended(self, log: TurnLog) -> None:
        if self.logs.get(log.key) is not log:
            return
        self._cancel_expiry(log.key)
        self._expiries[log.key] = asyncio.get_running_loop().call_later(
            self.retention_seconds, self._expire, log
        )

    def _expire(self, log: TurnLog) -> None:
        self._expiries.pop(log.key, None)
        if self.logs.get(log.key) is log:
            del self.logs[log.key]

    def _cancel_expiry(self, key: str) -> None:
        expiry = self._expiries.pop(key, None)
        if expiry is not None:
            expiry.cancel()

    async def reader(self, key: str, after: Position | None, *, running: bool) -> Reader | None:
        log = self.logs.get(key)
        return None if log is None else local_reader(log, after, running=running)

    async def followed_elsewhere(self, key: str) -> bool:
        return False

    async def forget(self, key: str) -> None:
        self._cancel_expiry(key)
        self.logs.pop(key, None)

    async def close(self) -> None:
        for expiry in self._expiries.values():
            expiry.cancel()
        self._expiries.clear()
        self.logs.clear()

    @property
    def kept_chars(self) -> int:
        return sum(log.total - log.dropped for log in self.logs.values())


class DirectReader:
    """RESUME_STREAMS=false: the response reads the turn itself; leaving cancels it."""

    def __init__(self, turn: OpenTurn) -> None:
        self.turn = turn

    async def entries(self) -> AsyncGenerator[tuple[str, Entry], None]:
        try:
            yield "", Started(new_message_id())
            async with aclosing(self.turn.events) as events:
                async for event in events:
                    self.turn.observe(event)
                    yield "", event
            await self.turn.release()  # before `[DONE]`, as in Broadcaster._drive
            yield "", ENDED
        finally:
            await self.turn.release()

    async def close(self) -> None:
        await self.turn.release()


class Broadcaster:
    """Runs streamed turns in driver tasks, into the logs of `logs`."""

    def __init__(
        self,
        logs: FrameLogs,
        *,
        grace_seconds: float,
        window_chars: int,
        enabled: bool = True,
        slots: TurnSlots | None = None,
        stall_seconds: float = CLIENT_STALL_SECONDS,
    ) -> None:
        self.logs = logs
        self.slots = slots  # a turn nobody reads gives its slot up when the worker is full
        self.stall_seconds = stall_seconds
        self.grace_seconds = grace_seconds
        self.window_chars = window_chars  # 0: the model is not paced to the readers
        self.enabled = enabled
        self._drivers: set[asyncio.Task[None]] = set()
        self._graces: dict[int, asyncio.Task[None]] = {}

    @property
    def running(self) -> int:
        return len(self._drivers)

    def stream(self, turn: OpenTurn) -> Reader:
        """Start `turn` in its driver; the first reader of its log (attached already)."""
        if not self.enabled:
            return DirectReader(turn)
        log = self.logs.open(turn.lease.session_id)
        reader = LogReader(log, -1)
        log.on_unwatched = lambda log: self._unwatched(turn, log)
        driver = asyncio.create_task(self._drive(turn, log))
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)
        return reader

    async def _drive(self, turn: OpenTurn, log: TurnLog) -> None:
        ended = False  # the turn's own last event (done or error) is in
        paced = bool(self.window_chars)
        try:
            async with aclosing(turn.events) as events:
                async for event in events:
                    turn.observe(event)
                    ended = isinstance(event, Finished | Failed)
                    log.append(event)
                    if paced and log.lag() > self.window_chars:
                        try:
                            async with asyncio.timeout(self.stall_seconds):
                                await log.readers_within(self.window_chars)
                        except TimeoutError:  # no reader took anything for that long
                            paced = False
                            turn.lease.cancel(CLIENT_STALLED.code)
        finally:
            if not ended:  # the driver was cancelled: the app is stopping
                log.append(SERVER_RESTARTING)
            grace = self._graces.pop(id(log), None)
            if grace is not None:
                grace.cancel()
            # The conversation first, then `[DONE]`: a client that has read the end may send
            # its next message at once, and must not find the conversation still busy.
            # A kept log must not keep the turn (its run, its model responses) alive with it.
            log.on_unwatched = None
            try:
                await turn.release()
            finally:
                log.append(ENDED)
                try:
                    await self.logs.ended(log)
                except Exception:
                    logger.exception("could not keep the turn's frames")

    def _unwatched(self, turn: OpenTurn, log: TurnLog) -> None:
        """The last reader of a running turn left."""
        if self.grace_seconds <= 0:
            log.unpark()
            turn.lease.cancel(ABANDONED.code)
            return
        previous = self._graces.pop(id(log), None)
        if previous is not None:
            previous.cancel()
        grace = asyncio.create_task(self._grace(turn, log))
        self._graces[id(log)] = grace
        grace.add_done_callback(lambda task: self._forget_grace(id(log), task))

    def _forget_grace(self, log_id: int, task: asyncio.Task[None]) -> None:
        if self._graces.get(log_id) is task:
            del self._graces[log_id]

    async def _grace(self, turn: OpenTurn, log: TurnLog) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        while True:
            await asyncio.sleep(min(GRACE_CHECK_SECONDS, max(0.0, deadline - loop.time())))
            if log.watched or log.ended:
                return
            if self._worker_full():
                logger.info("the worker is full: stopping an answer nobody reads")
                log.unpark()
                turn.lease.cancel(ABANDONED.code)
                return
            try:
                elsewhere = await self.logs.followed_elsewhere(log.key)
            except Exception as error:
                logger.warning("could not ask who follows the turn: %s", type(error).__name__)
                elsewhere = False
            if elsewhere:  # its reader paces itself from Redis; ours must not hold the turn
                log.unpark()
                deadline = loop.time() + self.grace_seconds
            elif loop.time() >= deadline:
                logger.info("nobody resumed the answer in %.0f s: stopping it", self.grace_seconds)
                log.unpark()
                turn.lease.cancel(ABANDONED.code)
                return

    def _worker_full(self) -> bool:
        slots = self.slots
        return slots is not None and bool(slots.limit) and slots.taken >= slots.limit

    async def close(self) -> None:
        """Stop every running turn (their logs end with `server_restarting`) and the logs."""
        for task in [*self._drivers, *self._graces.values()]:
            task.cancel()
        for task in [*self._drivers, *self._graces.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.logs.close()
