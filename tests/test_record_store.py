"""One contract, three stores: SQLite, a real PostgreSQL, and the Supabase client against a
PostgREST double."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backends import BACKENDS, SERVICE_KEY, Backend, backend

from record_store import RecordStore
from records import Feedback, Filer, Incident


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


def pothole(session_id: str = "s1", **changes: object) -> Incident:
    fields = {
        "category": "pothole",
        "description": "Deep pothole in the right lane",
        "location": "Main Street 12",
        "severity": 3,
        "occurred_at": "this morning",
        "reporter_name": "Ana",
    } | changes
    filer = Filer("key-0123456789abcdef", f"conv_{session_id}", session_id)
    return Incident.create(filer, **fields)  # type: ignore[return-value]


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
    from record_store import SupabaseRecordStore

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
