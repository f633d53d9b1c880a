from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import pg_schema
from tests.support.upstream import Upstream, serve_upstream


@pytest.fixture(autouse=True)
def _run_in_a_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default SQLite record store and outbox are relative paths: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A fake OpenAI-compatible upstream on 127.0.0.1 (4-word answers), stopped afterwards."""
    async with serve_upstream(tokens=4) as served:
        yield served


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A PostgreSQL DSN on a fresh schema of TEST_DATABASE_URL's database, dropped afterwards;
    without TEST_DATABASE_URL the test is skipped saying so."""
    async with pg_schema() as dsn:
        yield dsn
