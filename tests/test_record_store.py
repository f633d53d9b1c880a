"""One contract, three stores: SQLite, a real PostgreSQL, and the Supabase client against a
PostgREST double."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import BACKENDS, SERVICE_KEY, Backend, backend
from tests.support.records import pothole
from townhall.records.filing import RecordDesk
from townhall.records.model import Feedback, Filer
from townhall.records.outbox import Outbox
from townhall.records.store import RecordStore, ReferenceTakenError, SQLiteRecordStore


@pytest.fixture(params=BACKENDS)
async def store_and_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[RecordStore, Backend]]:
    async with backend(request.param, tmp_path) as chosen:
        store = chosen.make_store()
        await store.open()
        try:
            yield store, chosen
        finally:
            await store.close()


async def test_insert_then_get_round_trips_every_field(
    store_and_backend: tuple[RecordStore, Backend],
) -> None:
    store, chosen = store_and_backend
    record = pothole()
    assert await store.insert_once(record) == record.reference
    assert await store.get(record.reference) == record
    assert await chosen.count("incidents") == 1


async def test_feedback_round_trips(store_and_backend: tuple[RecordStore, Backend]) -> None:
    store, chosen = store_and_backend
    record = Feedback.create(
        Filer("anonymous", "conv_s1", "s1"),
        topic="lockers at Ginza station",
        summary="Please add lockers",
        sentiment="neutral",
        location="Ginza station",
        name="jao garcia",
    )
    await store.insert_once(record)
    fetched = await store.get(record.reference)
    assert fetched == record
    assert fetched is not None and fetched.row()["summary"] == "Please add lockers"
    assert await chosen.count("feedback") == 1


async def test_retrying_the_same_record_writes_one_row(
    store_and_backend: tuple[RecordStore, Backend],
) -> None:
    store, chosen = store_and_backend
    record = pothole()
    assert await store.insert_once(record) == record.reference
    assert await store.insert_once(record) == record.reference
    assert await chosen.count("incidents") == 1


async def test_same_content_under_a_new_reference_returns_the_first(
    store_and_backend: tuple[RecordStore, Backend],
) -> None:
    store, chosen = store_and_backend
    first, second = pothole(), pothole()
    assert first.reference != second.reference and first.dedupe_key == second.dedupe_key
    await store.insert_once(first)
    assert await store.insert_once(second) == first.reference
    assert await store.get(second.reference) is None
    assert await chosen.count("incidents") == 1


async def test_other_sessions_and_contents_are_separate_rows(
    store_and_backend: tuple[RecordStore, Backend],
) -> None:
    store, chosen = store_and_backend
    for record in (pothole(), pothole(session_id="s2"), pothole(severity=4)):
        assert await store.insert_once(record) == record.reference
    assert await chosen.count("incidents") == 3


async def test_unknown_references(store_and_backend: tuple[RecordStore, Backend]) -> None:
    store, _ = store_and_backend
    assert await store.get("INC-ZZZZZZ") is None
    assert await store.get("XYZ-123456") is None
    await store.ping()


async def test_a_restarted_store_sees_earlier_records(
    store_and_backend: tuple[RecordStore, Backend],
) -> None:
    store, chosen = store_and_backend
    record = pothole()
    await store.insert_once(record)
    again = chosen.make_store()
    await again.open()
    try:
        assert await again.get(record.reference) == record
    finally:
        await again.close()


async def test_supabase_client_sends_what_postgrest_expects(tmp_path: Path) -> None:
    async with backend("supabase", tmp_path) as chosen:
        store = chosen.make_store()
        await store.open()
        try:
            record = pothole()
            await store.insert_once(record)
            await store.get(record.reference)
        finally:
            await store.close()
        assert chosen.double is not None
        upsert, lookup, fetch = chosen.double.requests
    assert (upsert["method"], upsert["table"]) == ("POST", "incidents")
    assert upsert["params"]["on_conflict"] == "dedupe_key"
    assert {"resolution=ignore-duplicates", "return=minimal"} <= set(upsert["prefer"].split(","))
    assert upsert["body"]["reference"] == record.reference
    assert lookup["params"] == {
        "select": "reference",
        "dedupe_key": f"eq.{record.dedupe_key}",
        "limit": "1",
    }
    assert fetch["params"]["reference"] == f"eq.{record.reference}"


async def test_supabase_with_a_wrong_key_fails_loudly(tmp_path: Path) -> None:
    from townhall.records.store import SupabaseRecordStore

    async with backend("supabase", tmp_path) as chosen:
        good = chosen.make_store()
        assert isinstance(good, SupabaseRecordStore)
        store = SupabaseRecordStore(good.url, SERVICE_KEY + "-wrong", timeout=1)
        await store.open()
        try:
            with pytest.raises(Exception, match="API key|JWT"):
                await store.insert_once(pothole())
        finally:
            await store.close()
        assert chosen.double is not None and chosen.double.count("incidents") == 0


async def test_a_reference_held_by_another_record_is_refused_as_taken(
    store_and_backend: tuple[RecordStore, Backend],
) -> None:
    store, chosen = store_and_backend
    first = pothole()
    await store.insert_once(first)
    clash = pothole(location="Elm Road 2").model_copy(update={"reference": first.reference})
    with pytest.raises(ReferenceTakenError):
        await store.insert_once(clash)
    assert await chosen.count("incidents") == 1
    assert await store.get(first.reference) == first


async def test_the_desk_mints_a_new_reference_when_one_is_taken(tmp_path: Path) -> None:
    store = SQLiteRecordStore(tmp_path / "records.db")
    desk = RecordDesk(store, Outbox(tmp_path / "outbox.db"), retry_base=0.01, retry_max=0.01)
    await desk.open()
    try:
        first = pothole()
        await desk.file(first)
        clash = pothole(location="Elm Road 2").model_copy(update={"reference": first.reference})
        filing = await desk.file(clash)
        # Queued earlier under a reference that turns out to be taken: the resident holds that
        # reference already, so it is set aside for an admin rather than renamed.
        stuck = pothole(location="Elm Road 3").model_copy(update={"reference": first.reference})
        await desk.outbox.put(stuck, 0.0)
        for _ in range(3):  # due again after each backoff of ~10 ms
            await asyncio.sleep(0.05)
            await desk.sync_once()
        letters = await desk.dead_letters()
        depth = await desk.outbox.depth()
        rows = await store.count("incidents")
    finally:
        await desk.close()
    assert filing.reference != first.reference and not filing.queued
    assert rows == 2
    assert depth == 0
    assert [letter.record.row()["location"] for letter in letters] == ["Elm Road 3"]
