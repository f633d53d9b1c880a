"""One streamed turn's frames, kept so that a client that lost its connection can take up the
answer where it left off (resumable streams).

A turn's log holds its entries in order: `Started`, the turn's events (events.py), `Ended`.
Entry `n` of the turn that started at `turn` (ms since the epoch) has the id `<turn>-<n>`: the
SSE `id:` of its frame on /chat, unique within the conversation and ordered (a conversation runs
one turn at a time, and a later turn's log replaces the earlier one's).

Readers (`LogReader`) follow a log from a position to its end. The turn's driver
(broadcast.Broadcaster) waits while the most advanced reader attached here is more than the
read-ahead window behind it, so a slow client still paces the model, but a reader that stopped
reading (a half-open connection the client has since replaced with a resume) never holds up the
others: it falls behind, and once its next frames are dropped its stream ends with `resume_gap`.
When the last reader leaves, its position is parked for the grace and paces the turn the same
way. The log keeps at most `cap_chars` characters of entries: past it the oldest, already read by
the most advanced reader, are dropped (a resume from before them is answered 410); the newest two
always stay (a `done` repeats the whole reply, and a client that has every delta can still get
it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, fields

from townhall.errors import StreamPositionGoneError
from townhall.turns.events import EVENT_TYPES, Failed, Finished, TextDelta, TurnEvent


@dataclass(frozen=True, slots=True)
class Started:
    """A turn's first entry: the id its assistant message has in every format."""

    message_id: str


@dataclass(frozen=True, slots=True)
class Ended:
    """A turn's last entry: nothing follows (`data: [DONE]` on the wire)."""


ENDED = Ended()

# A reader's next frames are no longer kept (it fell behind a long answer, or a write was lost).
GAP = Failed(
    "resume_gap",
    "Part of this answer is no longer kept. Read the conversation with GET /sessions/{session_id}.",
)
Entry = Started | TurnEvent | Ended

PARKED = -1  # the reader id of the position the last client of a running turn left at
_EVENT_ID = re.compile(r"([0-9]{1,16})-([0-9]{1,10})")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader is: after entry `index` of the turn `turn` (index -1: before the first)."""

    turn: int
    index: int

    @classmethod
    def parse(cls, text: str) -> Position:
        """`<turn>-<n>` as a position (ValueError for anything else)."""
        match = _EVENT_ID.fullmatch(text)
        if match is None:
            raise ValueError(f"not an event id: {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.turn}-{self.index}"


def entry_chars(entry: Entry) -> int:
    """What an entry counts against the log's cap (its text, at least 1)."""
    if isinstance(entry, TextDelta):
        return len(entry.text) + 1
    if isinstance(entry, Finished) and isinstance(entry.reply, str):
        return len(entry.reply) + 64
    if isinstance(entry, Started | Ended | Failed):
        return 64
    return len(encode_entry(entry))


# --- entries as text (the Redis mirror keeps them so) -----------------------------------------

_BY_WIRE = {cls.wire: cls for cls in EVENT_TYPES}


def encode_entry(entry: Entry) -> str:
    if isinstance(entry, TextDelta):
        return "t" + entry.text
    if isinstance(entry, Started):
        return "s" + entry.message_id
    if isinstance(entry, Ended):
        return "e"
    data = {f.name: getattr(entry, f.name) for f in fields(entry)}
    return "j" + json.dumps([entry.wire, data], ensure_ascii=False, default=str)


def decode_entry(text: str) -> Entry:
    tag, rest = text[:1], text[1:]
    if tag == "t":
        return TextDelta(rest)
    if tag == "s":
        return Started(rest)
    if tag == "e":
        return ENDED
    wire, data = json.loads(rest)
    event: TurnEvent = _BY_WIRE[wire](**data)
    return event


class TurnLog:
    """The entries of one turn of conversation `key`, in this process."""

    def __init__(self, key: str, turn: int, message_id: str, cap_chars: int) -> None:
        self.key = key
        self.turn = turn
        self.cap_chars = cap_chars
        self.first = 0  # index of the oldest entry kept
        self.next = 0  # index the next entry gets
        self.total = 0  # characters of every entry so far (dropped ones too)
        self.dropped = 0  # characters of the dropped entries
        self.ended = False
        self._entries: list[tuple[Entry, int]] = []  # (entry, total through it), from _offset
        self._offset = 0
        self._grew: asyncio.Future[None] | None = None
        self._progress: asyncio.Future[None] | None = None
        self.readers: dict[int, int] = {}  # reader -> index of the last entry it has taken
        self._reader_ids = iter(range(1 << 62))
        # Called when the last attached reader leaves a running turn (the grace starts).
        self.on_unwatched: Callable[[TurnLog], None] | None = None
        self.on_append: Callable[[], None] | None = None  # a mirror's wake-up (redis_frames)
        self.append(Started(message_id))

    # --- the driver's side -------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        self.total += entry_chars(entry)
        self._entries.append((entry, self.total))
        self.next += 1
        if isinstance(entry, Ended):
            self.ended = True
            self.readers.pop(PARKED, None)
        if self.total - self.dropped > self.cap_chars:
            self._trim()
        grew, self._grew = self._grew, None
        if grew is not None and not grew.done():
            grew.set_result(None)
        if self.on_append is not None:
            self.on_append()

    def _trim(self) -> None:
        # Never past what the most advanced reader has yet to take (the turn waits for that one).
        keep_from = max(self.readers.values(), default=self.next - 1) + 1
        while self.first < keep_from and self.total - self.dropped > self.cap_chars:
            if self.first >= self.next - 2:
                break  # the newest two stay, however long: the turn's `done` and its end
            _, through = self._entries[self._offset]
            self._offset += 1
            self.first += 1
            self.dropped = through
        if self._offset > 64 and self._offset * 2 > len(self._entries):
            del self._entries[: self._offset]
            self._offset = 0

    def lag(self) -> int:
        """Characters between the most advanced attached reader and the newest entry."""
        if not self.readers:
            return 0
        ahead = max(self.readers.values())
        if ahead < self.first:
            return self.total - self.dropped
        return self.total - self._entries[self._offset + ahead - self.first][1]

    async def readers_within(self, window: int) -> None:
        """Return once the most advanced reader is at most `window` characters behind."""
        while self.lag() > window:
            if self._progress is None or self._progress.done():
                self._progress = asyncio.get_running_loop().create_future()
            await self._progress

    # --- the readers' side -------------------------------------------------------------------

    def after(self, index: int) -> list[tuple[int, Entry]]:
        """The entries after `index` (raises if some of them were dropped)."""
        if index + 1 < self.first:
            raise StreamPositionGoneError(str(Position(self.turn, index)))
        start = self._offset + index + 1 - self.first
        return [
            (self.first - self._offset + i, e)
            for i, (e, _) in enumerate(self._entries[start:], start)
        ]

    async def grown(self, index: int) -> None:
        """Return once there is an entry after `index`."""
        while self.next <= index + 1 and not self.ended:
            if self._grew is None or self._grew.done():
                self._grew = asyncio.get_running_loop().create_future()
            await self._grew

    def attach(self, index: int) -> int:
        self.readers.pop(PARKED, None)  # a client is back: its pace is the one that counts
        reader = next(self._reader_ids)
        self.readers[reader] = index
        return reader

    @property
    def watched(self) -> bool:
        """Whether a client here reads the turn (a parked position is nobody's)."""
        return any(reader != PARKED for reader in self.readers)

    def unpark(self) -> None:
        """Let the turn run on past where its last client left (a reader elsewhere follows it,
        or it is being cancelled)."""
        if self.readers.pop(PARKED, None) is not None:
            self._wake_driver()

    def taken(self, reader: int, index: int) -> None:
        self.readers[reader] = index
        self._wake_driver()

    def detach(self, reader: int) -> None:
        index = self.readers.pop(reader, None)
        if index is None:
            return
        if not self.watched and not self.ended:
            # The last client left a running turn. Its position stays, parked: the turn runs on
            # to the read-ahead window past it and then waits, so a client that comes back finds
            # everything it missed, and nobody's turn pulls a long answer for no reader.
            self.readers[PARKED] = min(index, self.readers.get(PARKED, index))
            if self.on_unwatched is not None:
                self.on_unwatched(self)
        self._wake_driver()

    def _wake_driver(self) -> None:
        progress = self._progress
        if progress is not None and not progress.done():
            self._progress = None
            progress.set_result(None)


class LogReader:
    """A client's view of a log: its entries after a position, as (frame id, entry), to the
    end. Attached from creation (so the driver paces to it at once); detached when closed."""

    def __init__(self, log: TurnLog, after: int) -> None:
        if after + 1 < log.first:
            raise StreamPositionGoneError(str(Position(log.turn, after)))
        self.log = log
        self.at = after
        self._reader = log.attach(after)
        self._closed = False

    async def entries(self) -> AsyncGenerator[tuple[str, Entry], None]:
        log = self.log
        try:
            while True:
                try:
                    batch = log.after(self.at)
                except StreamPositionGoneError:  # left behind: its next frames were dropped
                    yield "", GAP
                    yield "", ENDED
                    return
                if not batch:
                    if log.ended:
                        return
                    await log.grown(self.at)
                    continue
                for index, entry in batch:
                    yield f"{log.turn}-{index}", entry
                    self.at = index  # the writer has sent the frames of `entry`
                    log.taken(self._reader, index)
                    if isinstance(entry, Ended):
                        return
        finally:
            self.detach()

    async def close(self) -> None:
        self.detach()

    def detach(self) -> None:
        if not self._closed:
            self._closed = True
            self.log.detach(self._reader)


def turn_clock(previous: int | None) -> int:
    """A new turn's id: now in ms, and after the conversation's previous turn."""
    now = time.time_ns() // 1_000_000
    return now if previous is None or now > previous else previous + 1
