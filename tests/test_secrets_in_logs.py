"""No secret reaches a log line or a public page: a whole server process run with every kind of
secret set (API keys, the admin key, the model key, a database password), driven the way clients
and attackers would, then its captured log searched for each one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.app import live_server
from tests.support.backends import pg_schema
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import clean_env, server_processes
from townhall.logs import mask_url

API_KEY_A, API_KEY_B = "townhall-key-a-7f3k9q", "townhall-key-b-2m8x4w"
ADMIN_KEY = "townhall-admin-5r1t6y"
MODEL_KEY = "sk-test-model-key-9z8y7x"
DB_PASSWORD = "pg-password-4h5j6k"
SECRETS = (API_KEY_A, API_KEY_B, ADMIN_KEY, MODEL_KEY, DB_PASSWORD)


async def test_a_whole_run_logs_no_secret(tmp_path: Path) -> None:
    fake = FakeOpenAI(tokens=4)
    async with pg_schema() as dsn, live_server(fake) as upstream:  # type: ignore[arg-type]
        # Trust authentication ignores the password, so the URL can carry one for real.
        with_password = dsn.replace("://postgres@", f"://postgres:{DB_PASSWORD}@", 1)
        assert DB_PASSWORD in with_password
        env = clean_env(
            API_KEYS=f"{API_KEY_A},{API_KEY_B}",
            ADMIN_KEY=ADMIN_KEY,
            OPENAI_API_KEY=MODEL_KEY,
            OPENAI_BASE_URL=f"{upstream}/v1",
            OPENAI_API="responses",
            MODEL="fake",
            DATABASE_URL=with_password,
            OUTBOX_PATH=str(tmp_path / "outbox.db"),
            LOG_LEVEL="DEBUG",
        )
        async with server_processes([env], tmp_path) as (server,):
            pages = await _drive(server.base_url)
            log_path = server.log_path
        # The process has stopped: its whole log is written.
    log = log_path.read_text(errors="replace")
    assert "POST /chat" in log  # the access log ran
    assert f"postgresql://postgres:***@{with_password.split('@', 1)[1]}" in log
    assert "/chat?api_key=***" in log  # our access log, with the value masked
    for secret in SECRETS:
        assert secret not in log, f"a secret reached the log: {secret[:6]}..."
        for name, body in pages.items():
            assert secret not in body, f"a secret reached {name}"


async def _drive(base_url: str) -> dict[str, str]:
    """Everything a client or an attacker might send; returns the public pages' bodies."""
    a = {"Authorization": f"Bearer {API_KEY_A}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        pages = {path: (await client.get(path)).text for path in ("/", "/health", "/docs")}
        pages["/openapi.json"] = (await client.get("/openapi.json")).text
        chat = {"message": "REPORT: broken light at the corner", "session_id": "s1"}
        assert (await client.post("/chat", json=chat, headers=a)).status_code == 200
        answered = await client.post(
            "/chat", json={"message": "thanks", "stream": False}, headers=a
        )
        assert answered.status_code == 200, answered.text
        await client.post(f"/chat?api_key={API_KEY_B}", json=chat)  # a key in the query string
        await client.get("/sessions", headers={"Authorization": f"Bearer {API_KEY_A}x"})
        await client.get("/sessions", headers={"Authorization": f"Basic {API_KEY_B}"})
        await client.get(f"/sessions?token={ADMIN_KEY}")
        await client.post(
            "/chatkit",
            json={"type": "threads.list", "params": {}},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        await client.post("/chat", content=b"{not json", headers=a)
    return pages


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("postgresql://app:s3cret@db:5432/town", "postgresql://app:***@db:5432/town"),
        ("postgresql://app:pw/s3cret@db/town", "postgresql://app:***@db/town"),
        ("postgresql://app:pw?s3#cret@db/town", "postgresql://app:***@db/town"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://db/town?password=s3cret&sslmode=require", None),
        ("sqlite:///townhall.db", "sqlite:///townhall.db"),
        ("postgresql://app@db/town", "postgresql://app@db/town"),
    ],
)
def test_urls_are_logged_with_the_password_masked(url: str, logged: str | None) -> None:
    masked = mask_url(url)
    assert "s3cret" not in masked and "s3#cret" not in masked
    if logged is not None:
        assert masked == logged
