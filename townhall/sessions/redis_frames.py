"""Streamed turns' frames in Redis, so that a client can resume a stream on any worker.

Keys (prefix REDIS_KEY_PREFIX):
- `frames:{id}`  a Redis stream: the conversation's last turn. An entry holds the frames written
  in one flush, as fields `<index> <entry as text>` (frame_log.encode_entry), under the id
  `<turn>-<last index>`; a reader after frame `<turn>-<n>` reads from that id on. It expires
  RESUME_RETENTION_SECONDS after its last write; a new turn deletes the last one's first.
- `following:{id}`  set, with a short expiry, by a worker whose client follows a turn that runs
  on another worker: the running worker's grace (broadcast.Broadcaster) waits while it is there.

The turn's own worker keeps the log in memory while the turn runs (its readers read that) and
mirrors it here behind the stream: one flush task per worker sends every log's new frames in one
script call per round trip, so a frame costs no round trip of its own. A frame reaches Redis a
round trip after it was sent to the turn's own client; the last one before the turn gives its
conversation back. If Redis refuses, the stream goes on; only a resume elsewhere is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from townhall.errors import StreamPositionGoneError
from townhall.turns.broadcast import MemoryFrameLogs, Reader, local_reader
from townhall.turns.events import Failed, Finished
from townhall.turns.frame_log import (
    ENDED,
    GAP,
    Ended,
    Entry,
    Position,
    TurnLog,
    decode_entry,
    encode_entry,
)

logger = logging.getLogger(__name__)

# ARGV: retention ms, then for each key (KEYS[i]): "1" to delete the key first (a new turn),
# the entry's id, the id below which entries go ("" for none), n, then n field/value pairs.
FLUSH = """
local a = 2
for i = 1, #KEYS do
    if ARGV[a] == '1' then redis.call('del', KEYS[i]) end
    local id, minid, n = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    a = a + 4
    local args = {'xadd', KEYS[i], id}
    for j = 0, 2 * n - 1 do args[#args + 1] = ARGV[a + j] end
    a = a + 2 * n
    redis.call(unpack(args))
    if minid ~= '' then redis.call('xtrim', KEYS[i], 'MINID', minid) end
    redis.call('pexpire', KEYS[i], ARGV[1])
end
return #KEYS
"""

ENDED_TEXT = encode_entry(ENDED)
MAX_FRAMES_PER_ENTRY = 500  # a script call's arguments stay well inside Lua's stack
FLUSH_TIMEOUT_SECONDS = 5.0
READ_BLOCK_MS = 2_000  # a remote reader checks that the turn still runs this often
FOLLOWING_MS = 3 * READ_BLOCK_MS

# A remote reader's turn whose worker went away (its lock lapsed) before it ended.
INTERRUPTED = Failed(
    "interrupted",
    "The server answering stopped before the answer finished. Please send your message again.",
)


@dataclass(eq=False)
class Mirror:
    """How far one log has been written to Redis."""

    log: TurnLog
    sent: int = -1  # index of the last entry sent
    trimmed_to: int = 0  # the log's `first` as last sent
    done: asyncio.Event = field(default_factory=asyncio.Event)  # Ended is in Redis (or given up)


class RedisFrameLogs:
    """FrameLogs kept in this process while their turn runs, and in Redis for every worker."""

    def __init__(
        self,
        redis: Any,
        memory: MemoryFrameLogs,
        *,
        prefix: str,
        running: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.redis = redis
        self.memory = memory
        self.prefix = prefix
        self.running = running  # whether a turn holds the conversation (its lock)
        self.retention_ms = int(memory.retention_seconds * 1000)
        self._flush = redis.register_script(FLUSH)
        self._mirrors: dict[str, Mirror] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._warned_at = 0.0

    def _frames_key(self, key: str) -> str:
        return f"{self.prefix}:frames:{key}"

    def following_key(self, key: str) -> str:
        return f"{self.prefix}:following:{key}"

    # --- the turn's own worker ---------------------------------------------------------------

    def open(self, key: str) -> TurnLog:
        log = self.memory.open(key)
        previous = self._mirrors.pop(key, None)
        if previous is not None:
            previous.done.set()
        self._mirrors[key] = Mirror(log)
        log.on_append = self._wake.set
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        self._wake.set()
        return log

    async def ended(self, log: TurnLog) -> None:
        mirror = self._mirrors.get(log.key)
        if mirror is not None and mirror.log is log:
            self._wake.set()
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT_SECONDS):
                    await mirror.done.wait()
            except TimeoutError:
                logger.warning("the turn's last frames did not reach Redis in time")
        # Redis holds the ended turn for every worker (this one too): a copy kept here could
        # outlive a newer turn another worker runs.
        await self.memory.forget(log.key)

    async def _flush_loop(self) -> None:
        while self._mirrors:
            await self._wake.wait()
            self._wake.clear()
            keys: list[str] = []
            args: list[Any] = [self.retention_ms]
            sent: list[tuple[Mirror, int, bool]] = []
            for mirror in list(self._mirrors.values()):
                log = mirror.log
                if log.next - 1 <= mirror.sent:
                    continue
                start = max(mirror.sent, log.first - 1)
                batch = log.after(start)[:MAX_FRAMES_PER_ENTRY]
                last = batch[-1][0]
                minid = f"{log.turn}-{log.first}" if log.first > mirror.trimmed_to else ""
                keys.append(self._frames_key(log.key))
                args += ["1" if mirror.sent < 0 else "0", f"{log.turn}-{last}", minid, len(batch)]
                for index, entry in batch:
                    args += [index, encode_entry(entry)]
                mirror.trimmed_to = log.first
                sent.append((mirror, last, isinstance(batch[-1][1], Ended)))
                mirror.sent = last
                if last < log.next - 1:
                    self._wake.set()  # more than one entry's worth: the rest next round
            if not keys:
                continue
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT_SECONDS):
                    await self._flush(keys=keys, args=args)
            except Exception as error:
                self._warn(error)
            for mirror, _, ended in sent:
                if ended:
                    mirror.log.on_append = None
                    mirror.done.set()
                    if self._mirrors.get(mirror.log.key) is mirror:
                        del self._mirrors[mirror.log.key]

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            logger.warning(
                "could not keep streamed frames in Redis (%s): a resume on another worker "
                "will miss them",
                type(error).__name__,
            )

    # --- any worker ----------------------------------------------------------------------------

    async def reader(self, key: str, after: Position | None, *, running: bool) -> Reader | None:
        log = self.memory.logs.get(key)
        if log is not None and not log.ended:
            return local_reader(log, after, running=running)
        newest = await self.redis.xrevrange(self._frames_key(key), count=1)
        if not newest:
            # A running turn whose first frames are not in Redis yet (they follow the live
            # stream by a round trip) is followed; else there is nothing.
            if after is not None and await self.running(key):
                return RemoteReader(self, key, after)
            return None
        entry_id, fields = newest[0]
        turn, last = (int(part) for part in entry_id.split("-"))
        newest_entry = decode_entry(list(fields.values())[-1])
        ended = isinstance(newest_entry, Ended | Finished | Failed)
        if isinstance(newest_entry, Finished | Failed):
            last += 1  # its end follows it (and may not be written yet): see RemoteReader
        if running:
            return None if ended else RemoteReader(self, key, None)
        if after is None:
            return RemoteReader(self, key, None)
        if after.turn == turn:
            if ended and after.index >= last:
                return None
            return RemoteReader(self, key, after)  # running: what is not here yet, it waits for
        if after.turn > turn and await self.running(key):
            return RemoteReader(self, key, after)  # a new turn not mirrored yet
        raise StreamPositionGoneError(str(after))

    async def followed_elsewhere(self, key: str) -> bool:
        return bool(await self.redis.exists(self.following_key(key)))

    async def forget(self, key: str) -> None:
        mirror = self._mirrors.pop(key, None)
        if mirror is not None:  # the rest of a deleted conversation's turn stays here
            mirror.done.set()
        await self.memory.forget(key)
        await self.redis.delete(self._frames_key(key))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.memory.close()


class RemoteReader:
    """Reads a turn's frames from Redis, following it live until its end. If the turn's worker
    goes away first (the conversation's lock lapses), the stream ends with `interrupted`."""

    def __init__(self, logs: RedisFrameLogs, key: str, after: Position | None) -> None:
        self.logs = logs
        self.key = key
        self.turn = after.turn if after else None
        self.at = after.index if after else -1
        self._beat_at = 0.0

    async def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._beat_at >= 1.0:
            self._beat_at = now
            await self.logs.redis.set(self.logs.following_key(self.key), "1", px=FOLLOWING_MS)

    async def entries(self) -> AsyncGenerator[tuple[str, Entry], None]:
        redis = self.logs.redis
        stream = self.logs._frames_key(self.key)
        cursor = f"{self.turn}-{self.at}" if self.turn is not None else "0-0"
        while True:
            await self._heartbeat()
            reply = await redis.xread({stream: cursor}, count=64, block=READ_BLOCK_MS)
            if not reply:
                if not await self.logs.running(self.key):
                    for ending in self._interrupted():
                        yield ending
                    return
                continue
            for entry_id, fields in reply[0][1]:
                cursor = entry_id
                turn = int(entry_id.split("-")[0])
                if self.turn is None:
                    self.turn = turn
                if turn < self.turn:  # the turn before ours, not yet replaced in Redis
                    continue
                if turn > self.turn:  # a newer turn began: ours ended without its last frames
                    for ending in self._interrupted():
                        yield ending
                    return
                for name, text in fields.items():
                    index = int(name)
                    if index <= self.at:
                        if text == ENDED_TEXT or (
                            index + 1 <= self.at
                            and isinstance(decode_entry(text), Finished | Failed)
                        ):
                            return  # the client has the end already
                        continue
                    if index != self.at + 1:  # frames dropped (the buffer cap, or a refused write)
                        yield "", GAP
                        yield "", ENDED
                        return
                    self.at = index
                    entry = decode_entry(text)
                    yield f"{turn}-{index}", entry
                    if isinstance(entry, Ended):
                        return
                    if isinstance(entry, Finished | Failed):
                        # The turn's last event: its end is the next entry, which the turn's
                        # worker writes once the conversation is given back (maybe after a new
                        # turn on another worker has replaced this log).
                        yield f"{turn}-{index + 1}", ENDED
                        return

    def _interrupted(self) -> list[tuple[str, Entry]]:
        return [("", INTERRUPTED), ("", ENDED)]

    async def close(self) -> None:
        return None
