"""kill -9 while a report is being written: after a restart it is delivered, exactly once.

A real server process files a report (the fake upstream calls report_incident) into the Supabase
client, which talks to a PostgREST double in this process. The double holds the write: either
before it lands (the row is not there) or after (the row is there, the answer never comes). The
server is killed with SIGKILL in that moment, then started again on the same outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.support.app import live_server, wait_for
from tests.support.backends import SERVICE_KEY
from tests.support.fake_openai import FakeOpenAI
from tests.support.postgrest_double import PostgRESTDouble
from tests.support.processes import clean_env, server_processes


def outbox_depth(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


@pytest.mark.parametrize("hold", ["before_insert", "after_insert"])
async def test_a_report_survives_kill_9_mid_write_and_lands_once(tmp_path: Path, hold: str) -> None:
    double = PostgRESTDouble(SERVICE_KEY)
    fake = FakeOpenAI(tokens=3)
    outbox = tmp_path / "outbox.db"
    async with (
        live_server(double.app()) as store_url,  # type: ignore[arg-type]
        live_server(fake) as upstream,  # type: ignore[arg-type]
    ):
        env = clean_env(
            OPENAI_API_KEY="sk-fake",
            OPENAI_BASE_URL=f"{upstream}/v1",
            OPENAI_API="responses",
            MODEL="fake",
            SUPABASE_URL=store_url,
            SUPABASE_SERVICE_KEY=SERVICE_KEY,
            STORE_TIMEOUT_SECONDS="30",
            OUTBOX_PATH=str(outbox),
            OUTBOX_RETRY_SECONDS="0.1",
            DATABASE_URL=f"sqlite:///{tmp_path}/threads.db",
        )
        double.hang = hold == "before_insert"
        double.hang_after_insert = hold == "after_insert"
        async with server_processes([env], tmp_path) as (server,):
            turn = asyncio.create_task(_report(server.base_url))
            await _wait_until(lambda: _inserts(double) >= 1)
            server.kill_hard()
            turn.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await turn
        queued_after_crash = outbox_depth(outbox)
        double.hang = double.hang_after_insert = False
        double.release()
        async with server_processes([env], tmp_path) as (restarted,):
            await _wait_until(lambda: outbox_depth(outbox) == 0, limit=30)
            async with httpx.AsyncClient(base_url=restarted.base_url) as client:
                health = (await client.get("/health")).json()
        rows = double.rows["incidents"]
    assert queued_after_crash == 1  # written ahead, before the store write began
    assert len(rows) == 1
    assert rows[0]["description"] == "Pothole reported: broken pavement by the school"
    assert health["checks"]["outbox"]["detail"]["depth"] == 0


async def _report(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        payload = {"message": "REPORT: broken pavement by the school", "session_id": "k9"}
        await client.post("/chat", json=payload)


def _inserts(double: PostgRESTDouble) -> int:
    return sum(1 for r in double.requests if r["method"] == "POST" and r["table"] == "incidents")


async def _wait_until(condition: object, limit: float = 30) -> None:
    await wait_for(condition, limit=limit)  # type: ignore[arg-type]
