"""Filing records so that none is lost and none is doubled.

`RecordDesk.file` writes a record to the configured store; when the store cannot take it (down,
timeout, 5xx, anything) the record goes to the durable outbox under the same reference, and a
background task retries with backoff until it lands, across restarts. Each filing runs in its own
task that a cancelled turn (a resident who disconnects) cannot interrupt, and shutdown waits a
little for those still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from outbox import Outbox
from record_store import RecordStore
from records import Record, Viewer, Visibility, visibility

logger = logging.getLogger(__name__)

IDLE_SYNC_SECONDS = 30.0


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
        # Since start-up: records stored directly, queued in the outbox, and synced from it.
        self.counters = {"stored": 0, "queued": 0, "synced": 0}
        self._clock = clock
        self._in_flight: set[asyncio.Task[Filing]] = set()
        self._same_report: dict[str, tuple[asyncio.Lock, int]] = {}
        self._wake = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.outbox.open()
        await self.store.open()

    def start_sync(self) -> None:
        self._syncer = asyncio.create_task(self._sync_forever(), name="outbox-sync")

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Wait up to `drain_timeout` for filings in flight, then stop syncing and close."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=drain_timeout)
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
        queued = await self.outbox.find(record.dedupe_key)
        if queued is not None:
            return Filing(queued, queued=True, duplicate=True)
        try:
            stored = await asyncio.wait_for(self.store.insert_once(record), self.write_timeout)
        except Exception as error:
            self._store_failed(error, f"could not store {record.reference}; queueing it")
            reference = await self.outbox.put(record, self._clock())
            self.counters["queued"] += 1
            self._wake.set()
            return Filing(reference, queued=True, duplicate=reference != record.reference)
        self._store_ok()
        self.counters["stored"] += 1
        return Filing(stored, queued=False, duplicate=stored != record.reference)

    async def lookup(self, reference: str, viewer: Viewer) -> Found | None:
        """The record as far as `viewer` may see it, and whether it is still queued.

        None both when no record has this reference and when the viewer may not see it, and
        the same work is done in both cases (a queued record the viewer may not see still asks
        the store), so neither the answer nor an outage tells them apart.
        """
        queued = await self.outbox.get(reference)
        if queued is not None and (seen := visibility(queued, viewer)) is not None:
            return Found(queued, True, seen)
        try:
            stored = await asyncio.wait_for(self.store.get(reference), self.write_timeout)
        except Exception as error:
            self._store_failed(error, f"could not look up {reference}")
            raise RecordsUnavailableError(reference) from error
        self._store_ok()
        if stored is None or (seen := visibility(stored, viewer)) is None:
            return None
        return Found(stored, False, seen)

    async def sync_once(self) -> int:
        """Try every due queued record once; returns how many landed. Stops at the first failure
        (the store is down: the rest would fail too)."""
        landed = 0
        for entry in await self.outbox.due(self._clock()):
            record = entry.record
            try:
                await asyncio.wait_for(self.store.insert_once(record), self.write_timeout)
            except Exception as error:
                attempts = entry.attempts + 1
                retry_at = self._clock() + self._backoff(attempts)
                await self.outbox.reschedule(record.reference, attempts, retry_at, _kind(error))
                self._store_failed(error, f"retry {attempts} of {record.reference} failed")
                break
            await self.outbox.remove(record.reference)
            self._store_ok()
            self.counters["synced"] += 1
            landed += 1
            logger.info("queued record %s reached the store", record.reference)
        return landed

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self.sync_once()
                next_due = await self.outbox.next_due_at()
            except Exception:
                logger.exception("outbox sync failed; trying again later")
                next_due = None
            wait = IDLE_SYNC_SECONDS if next_due is None else max(0.0, next_due - self._clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, IDLE_SYNC_SECONDS))

    def _backoff(self, attempts: int) -> float:
        delay = min(self.retry_max, self.retry_base * 2 ** (attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.store.ping(), self.write_timeout)
        except Exception as error:
            self._store_failed(error, "health check could not reach the store")
        else:
            self._store_ok()
        return {
            "backend": self.store.backend,
            "store": self.state.status,
            "last_error": self.state.last_error,
            "outbox_depth": await self.outbox.depth(),
            "counters": dict(self.counters),
        }

    def _store_failed(self, error: BaseException, what: str) -> None:
        if self.state.status != "down":
            # The first failure gets the traceback; repeats while down get one line each.
            logger.error("record store %s: %s", self.store.backend, what, exc_info=error)
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
