"""Records a store refuses for good: text it cannot hold is cleaned before it gets there, and a
record refused for what it holds (a constraint) is set aside as a dead letter after a few
attempts, shown in /health, listed for the admin key and retried once the cause is fixed.
Real PostgreSQL throughout."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call

from api import create_app
from tests.support.app import asgi_client, make_settings
from tests.support.backends import backend
from tests.support.desks import to_incident_desk

ADMIN = {"Authorization": "Bearer admin-secret-dl"}
RESIDENT = {"Authorization": "Bearer resident-secret-dl"}
KEYS = {"api_keys": "resident-secret-dl", "admin_key": "admin-secret-dl"}


def incident(description: str, location: str) -> dict[str, Any]:
    return {
        "category": "flooding",
        "description": description,
        "location": location,
        "severity": 3,
        "occurred_at": None,
        "people_involved": None,
        "reporter_name": "Nul\x00 Byte",
        "reporter_contact": None,
    }


def files(arguments: dict[str, Any]) -> ScriptedModel:
    return ScriptedModel(
        [
            to_incident_desk(),
            [function_call("report_incident", arguments, call_id="c1")],
            [assistant_message("Recorded.")],
        ]
    )


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/health")).json()
    return body


async def wait_for_health(client: httpx.AsyncClient, check: Any, limit: float = 20) -> Any:
    """Poll /health (observable state) until `check(body)` holds."""
    deadline = asyncio.get_running_loop().time() + limit
    while not check(body := await health(client)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {limit}s: {body}")
        await asyncio.sleep(0.05)
    return body


async def test_a_nul_byte_is_cleaned_before_it_reaches_postgresql(tmp_path: Path) -> None:
    arguments = incident("Water\x00 everywhere\x1b[31m, knee\r\ndeep", "Canal Street\x00 4")
    async with backend("postgresql", tmp_path) as chosen:
        app = create_app(make_settings(**chosen.settings), model=files(arguments))
        async with asgi_client(app) as client:
            response = await client.post("/chat", json={"message": "flood", "session_id": "n1"})
            after = await health(client)
        conn = await asyncpg.connect(chosen.settings["database_url"])
        try:
            row = await conn.fetchrow("SELECT description, location, reporter_name FROM incidents")
        finally:
            await conn.close()
    assert '"saved":"stored"' in response.text
    assert tuple(row) == ("Water everywhere[31m, knee\ndeep", "Canal Street 4", "Nul Byte")
    assert after["checks"]["outbox"]["detail"]["depth"] == 0
    assert after["checks"]["dead_letters"]["detail"]["count"] == 0
    assert after["status"] == "healthy"


async def test_a_refused_record_becomes_a_dead_letter_and_is_retried_after_a_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    arguments = incident("The road is under water", "Closed Road 1")
    async with backend("postgresql", tmp_path) as chosen:
        settings = make_settings(
            **chosen.settings, **KEYS, outbox_retry_seconds=0.05, outbox_retry_max_seconds=0.1
        )
        app = create_app(settings, model=files(arguments))
        dsn = chosen.settings["database_url"]
        async with asgi_client(app) as client:
            conn = await asyncpg.connect(dsn)
            try:
                # A rule the database enforces and the server does not know about.
                await conn.execute(
                    "ALTER TABLE incidents ADD CONSTRAINT no_closed_roads"
                    " CHECK (location NOT LIKE 'Closed Road%')"
                )
                filed = await client.post(
                    "/chat", json={"message": "flood", "session_id": "d1"}, headers=RESIDENT
                )
                degraded = await wait_for_health(
                    client, lambda b: b["checks"]["dead_letters"]["detail"]["count"] == 1
                )
                listed = await client.get("/admin/dead-letters", headers=ADMIN)
                refused = await client.get("/admin/dead-letters", headers=RESIDENT)
                unknown = await client.post("/admin/dead-letters/INC-222222/retry", headers=ADMIN)
                # A resident's key is refused before its parameters are even looked at.
                probing = await client.post("/admin/dead-letters/not-a-ref/retry", headers=RESIDENT)
                await conn.execute("ALTER TABLE incidents DROP CONSTRAINT no_closed_roads")
                typed = listed.json()["dead_letters"][0][
                    "reference"
                ].lower()  # as a person types it
                retried = await client.post(f"/admin/dead-letters/{typed}/retry", headers=ADMIN)
                healed = await wait_for_health(
                    client,
                    lambda b: (
                        b["checks"]["dead_letters"]["detail"]["count"] == 0
                        and b["checks"]["outbox"]["detail"]["depth"] == 0
                    ),
                )
                rows = await conn.fetch("SELECT reference, location FROM incidents")
            finally:
                await conn.close()
    assert '"saved":"queued"' in filed.text  # the resident was told it is saved
    assert degraded["status"] == "degraded"
    assert degraded["checks"]["outbox"]["detail"]["depth"] == 0  # out of the retry loop
    letters = listed.json()
    assert listed.status_code == 200 and letters["count"] == 1
    letter = letters["dead_letters"][0]
    assert letter["attempts"] == 3
    assert letter["last_error"] == "CheckViolationError (23514)"
    assert letter["record"]["location"] == "Closed Road 1"
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only"
    assert unknown.status_code == 404
    assert probing.status_code == 403 and probing.json()["error"]["code"] == "admin_only"
    assert retried.status_code == 202 and retried.json()["reference"] == letter["reference"]
    assert [tuple(r) for r in rows] == [(letter["reference"], "Closed Road 1")]
    assert healed["status"] == "healthy"
    # Expected faults are one line each, no traceback; the dead letter is one ERROR line.
    assert "Traceback" not in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" moved")[0] for r in errors] == [f"record {letter['reference']}"]
