"""Filing records so that none is lost and none is doubled.

`RecordDesk.file` is write-ahead: the record goes to the durable outbox first, then to the
configured store, and leaves the outbox once the store has it. When the store cannot take it
(down, timeout, 5xx, anything) it stays in the outbox under the same reference, and a background
task retries with backoff until it lands, across restarts; a crash at any point leaves it there
to be delivered on restart, once (every store keeps the dedupe key unique). A record the store
refuses for good (invalid data, a constraint) is tried a few times, then moved to the dead
letters, where /health counts it and an admin can retry it after a fix. Each filing runs in its
own task that a cancelled turn (a resident who disconnects) cannot interrupt, and shutdown waits
a little for those still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from townhall.records.model import Record, Viewer, Visibility, new_reference, visibility
from townhall.records.outbox import DeadLetter, Outbox
from townhall.records.store import RecordStore, ReferenceTakenError

T = TypeVar("T")

logger = logging.getLogger(__name__)

IDLE_SYNC_SECONDS = 30.0
HEALTH_TIMEOUT = 1.0
# A record the store refuses for good is tried this often before it becomes a dead letter (a
# refusal can be a passing state, e.g. a migration half applied); store outages never count.
DEAD_LETTER_ATTEMPTS = 3
# A fresh reference is minted when one is found taken; a second clash in a row is vanishingly
# rare, a third would mean the store is answering wrongly.
REFERENCE_ATTEMPTS = 3


class RecordsUnavailableError(Exception):
    """Neither the store nor the outbox could answer."""


@dataclass(frozen=True)
class Filing:
    reference: str
    queued: bool  # kept in the outbox until the store takes it
    duplicate: bool  # the same report was filed before; nothing new was written


@dataclass(frozen=True)
class Found:
    """A record a lookup may show, how much of it, and whether it is still in the outbox."""

    record: Record
    queued: bool
    visibility: Visibility
    set_aside: bool = False  # a dead letter: the store refused it, staff must look


@dataclass
class StoreState:
    status: Literal["ok", "down", "unknown"] = "unknown"
    last_error: str | None = None
    changed_at: float = 0.0


class RecordDesk:
    def __init__(
        self,
        store: RecordStore,
        outbox: Outbox,
        *,
        write_timeout: float = 5.0,
        retry_base: float = 2.0,
        retry_max: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.write_timeout = write_timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.state = StoreState()
        # Since start-up: records stored directly, left queued in the outbox, synced from it,
        # and moved to the dead letters.
        self.counters = {"stored": 0, "queued": 0, "synced": 0, "dead": 0}
        self._clock = clock
        self._in_flight: set[asyncio.Task[Filing]] = set()
        self._same_report: dict[str, tuple[asyncio.Lock, int]] = {}
        self._wake = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        await self.outbox.open()
        await self.store.open()

    def start_sync(self) -> None:
        self._syncer = asyncio.create_task(self._sync_forever(), name="outbox-sync")

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Wait up to `drain_timeout` for filings in flight, then stop syncing and close."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=drain_timeout)
        self._closing = True  # the loop ends even if a cancel below were lost
        self._wake.set()
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        await self.store.close()
        await self.outbox.close()

    async def file(self, record: Record) -> Filing:
        """Store the record, or queue it; survives the caller being cancelled."""
        task = asyncio.create_task(self._file(record), name=f"file-{record.reference}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def _file(self, record: Record) -> Filing:
        # Identical reports in flight at once (parallel tool calls) go one after the other, so
        # the second finds the first wherever it landed.
        key = record.dedupe_key
        lock, users = self._same_report.get(key, (asyncio.Lock(), 0))
        self._same_report[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._file_once(record)
        finally:
            lock, users = self._same_report[key]
            if users == 1:
                del self._same_report[key]
            else:
                self._same_report[key] = (lock, users - 1)

    async def _file_once(self, record: Record) -> Filing:
        for _ in range(REFERENCE_ATTEMPTS):
            try:
                return await self._file_under(record)
            except ReferenceTakenError:
                # Nobody was given this reference for this record yet: mint another.
                with contextlib.suppress(Exception):  # best effort: an unwritable outbox
                    await self.outbox.remove(record.reference)
                taken = record.reference
                record = record.model_copy(update={"reference": new_reference(record.prefix)})
                logger.warning("reference %s was taken; filing as %s", taken, record.reference)
        raise RecordsUnavailableError(record.reference)

    async def _file_under(self, record: Record) -> Filing:
        now = self._clock()
        try:
            # The background sync leaves it alone while this filing writes it itself.
            queued = await self.outbox.put(record, now, now + self.write_timeout + 1.0)
        except Exception:
            logger.exception("outbox unwritable; writing %s to the store only", record.reference)
            return await self._store_only(record)
        if queued != record.reference:  # the same report is already on its way
            return Filing(queued, queued=True, duplicate=True)
        try:
            stored = await _within(self.write_timeout, self.store.insert_once(record))
        except ReferenceTakenError:
            raise
        except Exception as error:
            await self._failed(record, 1, error)
            self.counters["queued"] += 1
            self._wake.set()
            return Filing(record.reference, queued=True, duplicate=False)
        await self.outbox.remove(record.reference)
        self._store_ok()
        self.counters["stored"] += 1
        return Filing(stored, queued=False, duplicate=stored != record.reference)

    async def _store_only(self, record: Record) -> Filing:
        try:
            stored = await _within(self.write_timeout, self.store.insert_once(record))
        except ReferenceTakenError:
            raise
        except Exception as error:
            self._store_failed(error, f"could not store {record.reference} either")
            raise RecordsUnavailableError(record.reference) from error
        self._store_ok()
        self.counters["stored"] += 1
        return Filing(stored, queued=False, duplicate=stored != record.reference)

    async def _failed(self, record: Record, attempts: int, error: Exception) -> None:
        """After a failed store write: retry later, or bury a record refused for good."""
        kind = describe_store_error(error)
        if is_permanent(error):
            logger.warning(
                "record store %s refused %s (attempt %d): %s",
                self.store.backend,
                record.reference,
                attempts,
                kind,
            )
            if attempts >= DEAD_LETTER_ATTEMPTS:
                await self.outbox.bury(record.reference, attempts, kind, self._clock())
                self.counters["dead"] += 1
                logger.error(
                    "record %s moved to the dead letters after %d refusals (%s): an admin can "
                    "retry it at POST /admin/dead-letters/%s/retry once the cause is fixed",
                    record.reference,
                    attempts,
                    kind,
                    record.reference,
                )
                return
        else:
            self._store_failed(error, f"could not store {record.reference}; it stays queued")
        retry_at = self._clock() + self._backoff(attempts)
        await self.outbox.reschedule(record.reference, attempts, retry_at, kind)

    async def lookup(self, reference: str, viewer: Viewer) -> Found | None:
        """The record as far as `viewer` may see it, and whether it is still queued.

        None both when no record has this reference and when the viewer may not see it, and
        the same work is done in both cases (a queued record the viewer may not see still asks
        the store), so neither the answer nor an outage tells them apart.
        """
        held = await self.outbox.held(reference)
        if held is not None and (seen := visibility(held[0], viewer)) is not None:
            return Found(held[0], True, seen, set_aside=held[1])
        try:
            stored = await _within(self.write_timeout, self.store.get(reference))
        except Exception as error:
            self._store_failed(error, f"could not look up {reference}")
            raise RecordsUnavailableError(reference) from error
        self._store_ok()
        if stored is None or (seen := visibility(stored, viewer)) is None:
            return None
        return Found(stored, False, seen)

    async def sync_once(self) -> int:
        """Try every due queued record once; returns how many landed. Stops at the first
        outage (the rest would fail too); a record refused for its content does not stop it."""
        landed = 0
        for entry in await self.outbox.due(self._clock()):
            record = entry.record
            try:
                await _within(self.write_timeout, self.store.insert_once(record))
            except Exception as error:
                await self._failed(record, entry.attempts + 1, error)
                if is_permanent(error):
                    continue
                break
            await self.outbox.remove(record.reference)
            self._store_ok()
            self.counters["synced"] += 1
            landed += 1
            logger.info("queued record %s reached the store", record.reference)
        return landed

    async def dead_letters(self) -> list[DeadLetter]:
        return await self.outbox.dead_letters()

    async def retry_dead_letter(self, reference: str) -> bool:
        """Queue a dead letter again, due now; False if there is none with this reference."""
        revived = await self.outbox.revive(reference, self._clock())
        if revived:
            logger.info("dead letter %s queued again by an admin", reference)
            self._wake.set()
        return revived

    async def _sync_forever(self) -> None:
        while not self._closing:
            try:
                await self.sync_once()
                next_due = await self.outbox.next_due_at()
            except Exception:
                logger.exception("outbox sync failed; trying again later")
                next_due = None
            wait = IDLE_SYNC_SECONDS if next_due is None else max(0.0, next_due - self._clock())
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as
            # its inner wait completes (a filing woke us as close() cancelled), and the loop
            # would run on with close() waiting for it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, IDLE_SYNC_SECONDS)):
                    await self._wake.wait()

    def _backoff(self, attempts: int) -> float:
        delay = min(self.retry_max, self.retry_base * 2 ** (attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    async def health(self) -> dict[str, Any]:
        # The store and the outbox are asked at once: on a busy loop every await costs a turn
        # of it, and /health is what a balancer times.
        (depth, dead), _ = await asyncio.gather(self.outbox.counts(), self._ping_store())
        return {
            "backend": self.store.backend,
            "store": self.state.status,
            "last_error": self.state.last_error,
            "outbox_depth": depth,
            "dead_letters": dead,
            "counters": dict(self.counters),
        }

    async def _ping_store(self) -> None:
        try:
            # Bounded on its own: a hanging store must not make /health hang with it.
            await _within(min(self.write_timeout, HEALTH_TIMEOUT), self.store.ping())
        except Exception as error:
            self._store_failed(error, "health check could not reach the store")
        else:
            self._store_ok()

    def _store_failed(self, error: BaseException, what: str) -> None:
        if self.state.status != "down":
            # An outage is an expected fault: one line (the error's type and code, never its
            # text, which may carry a DSN), then one line per retry while it lasts.
            logger.warning(
                "record store %s: %s (%s)", self.store.backend, what, describe_store_error(error)
            )
            self.state = StoreState("down", _kind(error), self._clock())
        else:
            logger.warning(
                "record store %s still down: %s (%s)", self.store.backend, what, _kind(error)
            )

    def _store_ok(self) -> None:
        if self.state.status != "ok":
            if self.state.status == "down":
                logger.info("record store %s is reachable again", self.store.backend)
            self.state = StoreState("ok", None, self._clock())


def _kind(error: BaseException) -> str:
    """A short, secret-free description of a failure (no message: it may carry a DSN)."""
    return type(error).__name__


def describe_store_error(error: BaseException) -> str:
    """The failure's type, and its SQLSTATE or HTTP status when it has one (never its text)."""
    code = getattr(error, "sqlstate", None) or getattr(error, "code", None)
    status = getattr(getattr(error, "response", None), "status_code", None)
    detail = code if isinstance(code, str) and code else status
    return f"{_kind(error)} ({detail})" if detail else _kind(error)


# SQLSTATE classes that no retry can fix: 22 data exception (e.g. a NUL byte in text, a value
# out of range), 23 integrity constraint violation.
_PERMANENT_SQLSTATE_CLASSES = ("22", "23")


def is_permanent(error: BaseException) -> bool:
    """A store refusing this record for what it holds, not a store that is unreachable."""
    # A queued record whose reference turned out to be taken: the resident already holds that
    # reference, so it cannot be changed silently; an admin must look (a dead letter).
    if isinstance(error, ReferenceTakenError | sqlite3.IntegrityError | sqlite3.DataError):
        return True
    code = getattr(error, "sqlstate", None) or getattr(error, "code", None)
    if isinstance(code, str) and code[:2] in _PERMANENT_SQLSTATE_CLASSES and len(code) == 5:
        return True
    # PostgREST answers a refused row with 400 (its own codes: PGRST...) or 409 (a conflict the
    # upsert did not absorb); 408 and 429 are passing states.
    status = getattr(getattr(error, "response", None), "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (401, 403, 408, 429)


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`awaitable`, bounded by `seconds` (TimeoutError). asyncio.timeout, not wait_for: on 3.11
    wait_for swallows a cancel that arrives as its inner await completes, and the outbox sync
    loop then ran on with close() waiting for it (a store refusing at once: seen in CI as a
    shutdown that never ended)."""
    async with asyncio.timeout(seconds):
        return await awaitable
