"""Store outages: reports go to the outbox, streams still end well, and once the store is back
every report lands exactly once, also when the app restarts in between.

The outages are real: PostgreSQL is reached through a proxy whose connections are cut, and the
Supabase client talks to a PostgREST double told to answer 503 or to hang.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call

from api import create_app
from tests.support.app import asgi_client, make_settings
from tests.support.backends import Backend, backend
from tests.support.desks import back_to_triage, to_incident_desk
from tests.support.frames import without_ids

OUTAGE_BACKENDS = ["postgresql", "supabase"]


def report(n: int) -> dict[str, Any]:
    return {
        "category": "streetlight",
        "description": f"Streetlight number {n} is out",
        "location": f"Elm Street {n}",
        "severity": 2,
        "occurred_at": None,
        "people_involved": None,
        "reporter_name": None,
        "reporter_contact": None,
    }


def filing_model(count: int) -> ScriptedModel:
    steps: list[Any] = []
    for n in range(count):
        steps += [
            to_incident_desk(),
            [function_call("report_incident", report(n), call_id=f"c{n}")],
            back_to_triage(),  # the next filing, in this conversation or not, starts at triage
            [assistant_message(f"Report {n} is recorded.")],
        ]
    return ScriptedModel(steps)


def fast_retry_settings(chosen: Backend, **extra: Any) -> Any:
    return make_settings(
        **chosen.settings, outbox_retry_seconds=0.05, outbox_retry_max_seconds=0.2, **extra
    )


async def file_reports(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """One report per session through /chat; returns the receipts the tools gave."""
    receipts = []
    for n in range(count):
        response = await client.post("/chat", json={"message": f"light {n}", "session_id": f"r{n}"})
        assert response.status_code == 200
        assert f"data: Report {n} is recorded.\n\nevent: done\n" in without_ids(response.text)
        assert response.text.endswith("data: [DONE]\n\n")
        result = response.text.split("event: tool_result\ndata: ")[1].split("\n")[0]
        receipts.append(json.loads(result)["output"])
    return receipts


async def outbox_depth(client: httpx.AsyncClient) -> int:
    return int((await client.get("/health")).json()["checks"]["outbox"]["detail"]["depth"])


async def wait_until_outbox_empty(client: httpx.AsyncClient, limit: float = 15) -> None:
    """Poll /health (observable state) until the syncer has emptied the outbox."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while (depth := await outbox_depth(client)) != 0:
        if loop.time() > deadline:
            raise AssertionError(f"outbox still holds {depth} records after {limit}s")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("name", OUTAGE_BACKENDS)
async def test_outage_queues_reports_and_recovery_lands_each_exactly_once(
    name: str, tmp_path: Path
) -> None:
    async with backend(name, tmp_path) as chosen:
        assert chosen.cut and chosen.restore
        app = create_app(fast_retry_settings(chosen), model=filing_model(3))
        async with asgi_client(app) as client:
            chosen.cut()
            receipts = await file_reports(client, 3)
            during = (await client.get("/health")).json()
            chosen.restore()
            await wait_until_outbox_empty(client)
            after = (await client.get("/health")).json()
        assert [r["saved"] for r in receipts] == ["queued"] * 3
        assert all("will reach the city's system" in r["note"] for r in receipts)
        assert during["status"] == "degraded"
        assert during["checks"]["records"]["status"] == "down"
        assert during["checks"]["outbox"]["detail"]["depth"] == 3
        assert after["status"] == "healthy"
        assert await chosen.count("incidents") == 3
        store = chosen.make_store()
        await store.open()
        try:
            for receipt in receipts:
                assert await store.get(receipt["reference"]) is not None
        finally:
            await store.close()


@pytest.mark.parametrize("name", OUTAGE_BACKENDS)
async def test_reports_queued_before_a_restart_land_after_it(name: str, tmp_path: Path) -> None:
    async with backend(name, tmp_path) as chosen:
        assert chosen.cut and chosen.restore
        settings = fast_retry_settings(chosen, outbox_path=str(tmp_path / "outbox.db"))
        chosen.cut()
        first_life = create_app(settings, model=filing_model(2))
        async with asgi_client(first_life) as client:
            receipts = await file_reports(client, 2)
            assert await outbox_depth(client) == 2
        chosen.restore()
        second_life = create_app(settings, model=ScriptedModel([]))
        async with asgi_client(second_life) as client:
            await wait_until_outbox_empty(client)
        assert await chosen.count("incidents") == 2
        assert {r["saved"] for r in receipts} == {"queued"}


async def test_a_write_that_lands_but_times_out_is_not_doubled(tmp_path: Path) -> None:
    """The ambiguous case: the row was written, the answer never came. The retry from the
    outbox must find the row, not write a second one."""
    async with backend("supabase", tmp_path) as chosen:
        double = chosen.double
        assert double is not None
        app = create_app(fast_retry_settings(chosen), model=filing_model(1))
        async with asgi_client(app) as client:
            double.hang_after_insert = True
            receipts = await file_reports(client, 1)
            assert double.count("incidents") == 1  # it did land ...
            assert receipts[0]["saved"] == "queued"  # ... but the desk could not know
            double.hang_after_insert = False
            double.release()
            await wait_until_outbox_empty(client)
        assert double.count("incidents") == 1
        assert double.rows["incidents"][0]["reference"] == receipts[0]["reference"]


async def test_a_hanging_store_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    async with backend("supabase", tmp_path) as chosen:
        double = chosen.double
        assert double is not None
        app = create_app(fast_retry_settings(chosen), model=filing_model(1))
        async with asgi_client(app) as client:
            double.hang = True
            receipts = await file_reports(client, 1)
            double.hang = False
            double.release()
            await wait_until_outbox_empty(client)
        assert receipts[0]["saved"] == "queued"
        assert double.count("incidents") == 1


def test_backoff_grows_and_is_bounded() -> None:
    app = create_app(make_settings(outbox_retry_seconds=2, outbox_retry_max_seconds=60))
    desk = app.state.services.desk
    delays = [desk._backoff(attempt) for attempt in range(1, 10)]
    assert 1.6 <= delays[0] <= 2.4
    assert 3.2 <= delays[1] <= 4.8
    assert all(delay <= 72 for delay in delays)
    assert delays[-1] >= 48
