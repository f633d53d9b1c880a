"""RecordDesk over the real SQLite store and outbox: a record lands once, waits in the outbox while
the store is away, and one the store refuses for good becomes a dead letter. The clock is injected
(never slept) so retries come due when a test says so."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.records import OWNER, pothole
from townhall.records.filing import Filing, RecordDesk, RecordsUnavailableError
from townhall.records.model import Incident, Viewer
from townhall.records.outbox import Outbox
from townhall.records.store import SQLiteRecordStore

FILER_VIEW = Viewer(OWNER, "conv_s1")
LATER = 10_000.0  # past any backoff the desk picks with its default retry settings


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Desk:
    desk: RecordDesk
    store: SQLiteRecordStore
    outbox: Outbox
    clock: FakeClock

    async def sync_later(self) -> int:
        """Move the clock past every retry due and sync once."""
        self.clock.now += LATER
        return await self.desk.sync_once()


def refuse_closed_roads(path: Path) -> None:
    """A rule the store's database enforces that the server knows nothing about."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TRIGGER no_closed_roads BEFORE INSERT ON incidents"
            " WHEN NEW.location LIKE 'Closed Road%'"
            " BEGIN SELECT RAISE(ABORT, 'closed roads are not filed'); END"
        )


def allow_closed_roads(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TRIGGER no_closed_roads")


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    store = SQLiteRecordStore(tmp_path / "records.db")
    outbox = Outbox(tmp_path / "outbox.db")
    clock = FakeClock()
    record_desk = RecordDesk(store, outbox, clock=clock)
    await record_desk.open()
    try:
        yield Desk(record_desk, store, outbox, clock)
    finally:
        await record_desk.close()


async def test_a_filing_lands_in_the_store_once(desk: Desk) -> None:
    record = pothole()
    filing = await desk.desk.file(record)
    assert filing == Filing(record.reference, queued=False, duplicate=False)
    assert await desk.store.get(record.reference) == record
    assert await desk.store.count("incidents") == 1
    assert await desk.outbox.depth() == 0
    assert desk.desk.counters == {"stored": 1, "queued": 0, "synced": 0, "dead": 0}
    found = await desk.desk.lookup(record.reference, FILER_VIEW)
    assert found is not None and (found.record, found.queued) == (record, False)
    health = await desk.desk.health()
    assert (health["store"], health["outbox_depth"], health["dead_letters"]) == ("ok", 0, 0)


async def test_the_same_report_twice_is_one_record_under_the_first_reference(desk: Desk) -> None:
    first, again = pothole(), pothole()
    assert first.reference != again.reference and first.dedupe_key == again.dedupe_key
    await desk.desk.file(first)
    filing = await desk.desk.file(again)
    assert filing == Filing(first.reference, queued=False, duplicate=True)
    assert await desk.store.count("incidents") == 1
    assert await desk.store.get(again.reference) is None
    assert await desk.outbox.depth() == 0


async def test_other_content_is_another_record(desk: Desk) -> None:
    one, other = pothole(), pothole(severity=5)
    assert (await desk.desk.file(one)).reference == one.reference
    assert (await desk.desk.file(other)).reference == other.reference
    assert await desk.store.count("incidents") == 2


async def test_identical_reports_filed_at_once_are_one_record(desk: Desk) -> None:
    reports = [pothole() for _ in range(4)]
    filings = await asyncio.gather(*(desk.desk.file(r) for r in reports))
    assert {f.reference for f in filings} == {reports[0].reference}
    assert [f.duplicate for f in filings] == [False, True, True, True]
    assert await desk.store.count("incidents") == 1


async def test_a_closed_store_queues_the_record_until_it_is_back(desk: Desk) -> None:
    record = pothole()
    await desk.store.close()  # the store is away: every call raises

    filing = await desk.desk.file(record)

    assert filing == Filing(record.reference, queued=True, duplicate=False)
    assert await desk.outbox.get(record.reference) == record
    assert desk.desk.counters == {"stored": 0, "queued": 1, "synced": 0, "dead": 0}
    assert desk.desk.state.status == "down"
    assert desk.desk.state.last_error == "RuntimeError"
    found = await desk.desk.lookup(record.reference, FILER_VIEW)  # answered from the outbox
    assert found is not None and (found.record, found.queued) == (record, True)

    assert await desk.desk.sync_once() == 0  # not due yet: the retry waits its backoff
    assert [e.attempts for e in await desk.outbox.due(desk.clock.now + LATER)] == [1]
    assert await desk.sync_later() == 0  # due, but the store is still away
    assert [e.attempts for e in await desk.outbox.due(desk.clock.now + LATER)] == [2]
    assert (await desk.desk.health())["store"] == "down"

    await desk.store.open()
    assert await desk.sync_later() == 1

    assert await desk.store.get(record.reference) == record
    assert await desk.store.count("incidents") == 1
    assert await desk.outbox.depth() == 0
    assert desk.desk.counters == {"stored": 0, "queued": 1, "synced": 1, "dead": 0}
    assert desk.desk.state.status == "ok"
    assert await desk.sync_later() == 0  # delivered once, not again


async def test_the_same_report_while_the_first_is_queued_gets_its_reference(desk: Desk) -> None:
    first, again = pothole(), pothole()
    await desk.store.close()
    await desk.desk.file(first)
    filing = await desk.desk.file(again)
    assert filing == Filing(first.reference, queued=True, duplicate=True)
    assert await desk.outbox.depth() == 1
    await desk.store.open()
    assert await desk.sync_later() == 1
    assert await desk.store.count("incidents") == 1
    assert await desk.store.get(first.reference) == first


async def test_an_outage_stops_the_sync_at_the_first_failure(desk: Desk) -> None:
    await desk.store.close()
    first, second = pothole(), pothole(severity=4)
    await desk.desk.file(first)
    desk.clock.now += 1  # the second is due after the first
    await desk.desk.file(second)
    assert await desk.sync_later() == 0
    attempts = {e.record.reference: e.attempts for e in await desk.outbox.due(1e12)}
    assert attempts == {first.reference: 2, second.reference: 1}


async def test_the_background_sync_delivers_once_the_store_is_back(tmp_path: Path) -> None:
    store = SQLiteRecordStore(tmp_path / "records.db")
    record_desk = RecordDesk(store, Outbox(tmp_path / "outbox.db"), retry_base=0.01, retry_max=0.02)
    await record_desk.open()
    record_desk.start_sync()
    try:
        await store.close()
        record = pothole()
        assert (await record_desk.file(record)).queued
        await asyncio.sleep(0.05)  # a few retries fail while the store is away
        await store.open()
        async with asyncio.timeout(5):
            while True:
                if record_desk.counters["synced"]:  # counted once it has left the outbox
                    break
                await asyncio.sleep(0.01)
        assert record_desk.counters["synced"] == 1
        assert await store.get(record.reference) == record
        assert await record_desk.outbox.depth() == 0
    finally:
        await record_desk.close()


class StubbornStore(SQLiteRecordStore):
    """A store whose every write fails at once, and turns a cancel into that failure: what
    asyncio.wait_for on 3.11 does when the cancel meets the inner await's end (the sync loop
    then never saw its cancel, and close() waited for it for ever)."""

    async def insert_once(self, record: Incident) -> bool:  # type: ignore[override]
        try:
            await asyncio.sleep(0.05)  # nearly all of the loop's time is spent here
        except asyncio.CancelledError:
            pass
        raise ConnectionResetError("the store hung up")


async def test_close_ends_the_sync_loop_even_when_its_cancel_is_lost(tmp_path: Path) -> None:
    store = StubbornStore(tmp_path / "records.db")
    outbox = Outbox(tmp_path / "outbox.db")
    record_desk = RecordDesk(store, outbox, retry_base=0.001, retry_max=0.001)
    await record_desk.open()
    record_desk.start_sync()
    assert (await record_desk.file(pothole())).queued
    await asyncio.sleep(0.05)  # the loop retries and fails, again and again
    began = time.monotonic()
    closing = asyncio.ensure_future(record_desk.close())
    done, _ = await asyncio.wait({closing}, timeout=5)
    assert done, "close() is still waiting for the sync loop"
    assert time.monotonic() - began < 2
    kept = Outbox(tmp_path / "outbox.db")
    await kept.open()
    try:
        assert await kept.depth() == 1  # and the report is still queued for the next start
    finally:
        await kept.close()


async def test_a_record_refused_for_good_becomes_a_dead_letter(desk: Desk, tmp_path: Path) -> None:
    refuse_closed_roads(tmp_path / "records.db")
    record = pothole(location="Closed Road 1")

    filing = await desk.desk.file(record)  # attempt 1
    assert filing == Filing(record.reference, queued=True, duplicate=False)
    assert await desk.sync_later() == 0  # attempt 2: still queued
    assert await desk.outbox.get(record.reference) == record
    assert await desk.desk.dead_letters() == []
    assert await desk.sync_later() == 0  # attempt 3: buried

    [letter] = await desk.desk.dead_letters()
    assert (letter.record, letter.attempts, letter.last_error) == (record, 3, "IntegrityError")
    assert letter.dead_at == desk.clock.now
    assert await desk.outbox.depth() == 0
    assert await desk.store.count("incidents") == 0
    assert desk.desk.counters == {"stored": 0, "queued": 1, "synced": 0, "dead": 1}
    # A refusal is not an outage: the store was answering all along.
    assert desk.desk.state.status != "down"
    health = await desk.desk.health()
    assert (health["store"], health["outbox_depth"], health["dead_letters"]) == ("ok", 0, 1)
    assert await desk.sync_later() == 0  # out of the retry loop

    allow_closed_roads(tmp_path / "records.db")
    assert await desk.desk.retry_dead_letter("INC-222222") is False
    assert await desk.desk.retry_dead_letter(record.reference) is True
    assert await desk.desk.sync_once() == 1  # due at once, no backoff
    assert await desk.store.get(record.reference) == record
    assert await desk.desk.dead_letters() == []
    assert desk.desk.counters == {"stored": 0, "queued": 1, "synced": 1, "dead": 1}


async def test_a_refused_record_does_not_hold_up_the_ones_behind_it(
    desk: Desk, tmp_path: Path
) -> None:
    await desk.store.close()
    refused, fine = pothole(location="Closed Road 2"), pothole()
    await desk.desk.file(refused)
    desk.clock.now += 1
    await desk.desk.file(fine)
    await desk.store.open()
    refuse_closed_roads(tmp_path / "records.db")

    assert await desk.sync_later() == 1

    assert await desk.store.get(fine.reference) == fine
    assert [e.record.reference for e in await desk.outbox.due(1e12)] == [refused.reference]


async def test_a_taken_reference_is_filed_under_a_fresh_one(desk: Desk) -> None:
    holder = pothole()
    await desk.desk.file(holder)
    clash = pothole(severity=5).model_copy(update={"reference": holder.reference})

    filing = await desk.desk.file(clash)

    assert filing.reference != holder.reference and filing.reference.startswith("INC-")
    assert (filing.queued, filing.duplicate) == (False, False)
    assert await desk.store.get(holder.reference) == holder
    stored = await desk.store.get(filing.reference)
    assert stored is not None and stored.dedupe_key == clash.dedupe_key
    assert await desk.store.count("incidents") == 2
    assert await desk.outbox.depth() == 0


async def test_an_unwritable_outbox_still_files_to_the_store(desk: Desk) -> None:
    await desk.outbox.close()
    record = pothole()
    assert await desk.desk.file(record) == Filing(record.reference, queued=False, duplicate=False)
    assert await desk.store.get(record.reference) == record
    assert desk.desk.counters["stored"] == 1


async def test_with_neither_store_nor_outbox_the_filing_fails_loudly(desk: Desk) -> None:
    await desk.outbox.close()
    await desk.store.close()
    with pytest.raises(RecordsUnavailableError):
        await desk.desk.file(pothole())
    assert desk.desk.counters == {"stored": 0, "queued": 0, "synced": 0, "dead": 0}
    assert desk.desk.state.status == "down"


async def test_a_cancelled_caller_does_not_stop_the_filing(tmp_path: Path) -> None:
    record_desk = RecordDesk(
        SQLiteRecordStore(tmp_path / "records.db"), Outbox(tmp_path / "outbox.db")
    )
    await record_desk.open()
    record = pothole()
    caller = asyncio.create_task(record_desk.file(record))
    await asyncio.sleep(0)  # the filing task has started
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await record_desk.close(drain_timeout=5)  # waits for the filing still in flight

    reopened = SQLiteRecordStore(tmp_path / "records.db")
    await reopened.open()
    try:
        assert await reopened.get(record.reference) == record
    finally:
        await reopened.close()


async def bury(desk: Desk, record: Incident) -> None:
    """File a record the store refuses and sync until it is a dead letter."""
    await desk.desk.file(record)
    await desk.sync_later()
    await desk.sync_later()
    assert [d.record.reference for d in await desk.desk.dead_letters()] == [record.reference]


async def test_a_repeat_of_a_dead_letter_keeps_a_reference_that_resolves(
    desk: Desk, tmp_path: Path
) -> None:
    refuse_closed_roads(tmp_path / "records.db")
    first, again = pothole(location="Closed Road 3"), pothole(location="Closed Road 3")
    await bury(desk, first)
    told = await desk.desk.file(again)  # the resident is told this reference is saved
    await desk.sync_later()
    await desk.sync_later()
    allow_closed_roads(tmp_path / "records.db")
    for letter in await desk.desk.dead_letters():
        await desk.desk.retry_dead_letter(letter.record.reference)
    await desk.sync_later()
    assert await desk.desk.lookup(told.reference, FILER_VIEW) is not None
    assert desk.desk.counters["dead"] == len(await desk.desk.dead_letters()) + 1  # one revived


async def test_retrying_a_dead_letter_while_its_repeat_is_queued_loses_nothing(
    desk: Desk, tmp_path: Path
) -> None:
    refuse_closed_roads(tmp_path / "records.db")
    first, again = pothole(location="Closed Road 4"), pothole(location="Closed Road 4")
    await bury(desk, first)
    await desk.desk.file(again)
    allow_closed_roads(tmp_path / "records.db")
    revived = await desk.desk.retry_dead_letter(first.reference)
    await desk.sync_later()
    assert revived or [d.record.reference for d in await desk.desk.dead_letters()] == [
        first.reference
    ]
    assert await desk.desk.lookup(first.reference, FILER_VIEW) is not None


async def test_close_during_an_outage_returns_while_a_queued_filing_finishes(
    tmp_path: Path,
) -> None:
    store = SQLiteRecordStore(tmp_path / "records.db")
    record_desk = RecordDesk(store, Outbox(tmp_path / "outbox.db"))
    await record_desk.open()
    record_desk.start_sync()
    await asyncio.sleep(0.1)  # the sync loop has found nothing to do and waits
    await store.close()  # an outage, as shutdown begins
    filing = asyncio.create_task(record_desk.file(pothole()))
    await asyncio.sleep(0)  # the filing is in flight
    closing = asyncio.create_task(record_desk.close(drain_timeout=5))
    done, _ = await asyncio.wait({closing}, timeout=2)
    try:
        assert (await filing).queued
        assert closing in done, "close() did not return"
    finally:
        for task in asyncio.all_tasks():
            if task.get_name() == "outbox-sync":
                task.cancel()
        await closing


async def test_a_dead_letter_still_resolves_for_its_filer(desk: Desk, tmp_path: Path) -> None:
    """Set aside for an admin, the report is not in the store, but it is still the resident's:
    their reference finds it (held, not stored), and a repeat is given that same reference."""
    refuse_closed_roads(tmp_path / "records.db")
    first = pothole(location="Closed Road 5")
    await bury(desk, first)
    found = await desk.desk.lookup(first.reference, FILER_VIEW)
    again = await desk.desk.file(pothole(location="Closed Road 5"))
    assert found is not None and found.queued and found.set_aside
    assert found.record.reference == first.reference
    assert again.reference == first.reference and again.duplicate
    assert await desk.desk.outbox.depth() == 0  # nothing second queued beside the letter
