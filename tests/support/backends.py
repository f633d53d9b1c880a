"""The three record stores, real or against their local stand-in, for contract and outage tests.

PostgreSQL needs TEST_DATABASE_URL (CI sets it; the machine has one on 127.0.0.1:5432). Each test
gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse, urlunparse

import pytest

from tests.support.app import live_server
from tests.support.postgrest_double import PostgRESTDouble
from tests.support.tcp_proxy import CuttableProxy
from townhall.records.store import (
    PostgresRecordStore,
    RecordStore,
    SQLiteRecordStore,
    SupabaseRecordStore,
)

SERVICE_KEY = "sb_secret_test_only_0123456789"
BACKENDS = ["sqlite", "postgresql", "supabase"]


@dataclass
class Backend:
    name: str
    make_store: Callable[[], RecordStore]  # a fresh store on the same data (a "restart")
    count: Callable[[str], Awaitable[int]]
    settings: dict[str, Any]
    cut: Callable[[], None] | None = None  # a real outage: the store stops answering
    restore: Callable[[], None] | None = None
    double: PostgRESTDouble | None = None


def service_url(variable: str, service: str) -> str:
    """The URL of a real local service from `variable`, or the test is skipped saying so."""
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set ({service} tests need a real server)")
    return url


def pg_url() -> str:
    return service_url("TEST_DATABASE_URL", "PostgreSQL")


@contextlib.asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh schema; the schema is dropped afterwards."""
    import asyncpg

    base = pg_url()
    schema = f"townhall_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f"CREATE SCHEMA {schema}")
    parts = urlparse(base)
    query = "&".join(filter(None, [parts.query, urlencode({"search_path": schema})]))
    try:
        yield urlunparse(parts._replace(query=query))
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@contextlib.asynccontextmanager
async def backend(name: str, tmp_path: Path) -> AsyncIterator[Backend]:
    if name == "sqlite":
        path = tmp_path / "records.db"

        async def count_sqlite(table: str) -> int:
            store = SQLiteRecordStore(path)
            await store.open()
            try:
                return await store.count(table)
            finally:
                await store.close()

        yield Backend(
            name,
            lambda: SQLiteRecordStore(path),
            count_sqlite,
            settings={"database_url": f"sqlite:///{path}"},
        )
    elif name == "postgresql":
        async with pg_schema() as direct_dsn, _proxy_for(direct_dsn) as (proxy, dsn):
            import asyncpg

            async def count_pg(table: str) -> int:
                conn = await asyncpg.connect(dsn)
                try:
                    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
                finally:
                    await conn.close()

            yield Backend(
                name,
                lambda: PostgresRecordStore(dsn, timeout=2),
                count_pg,
                settings={"database_url": dsn, "store_timeout_seconds": 2},
                cut=proxy.cut,
                restore=proxy.restore,
            )
    else:
        double = PostgRESTDouble(SERVICE_KEY)
        async with live_server(double.app()) as url:  # type: ignore[arg-type]

            async def count_double(table: str) -> int:
                return double.count(table)

            def fail() -> None:
                double.fail_status = 503

            def recover() -> None:
                double.fail_status = None

            try:
                yield Backend(
                    name,
                    lambda: SupabaseRecordStore(url, SERVICE_KEY, timeout=1),
                    count_double,
                    settings={
                        "supabase_url": url,
                        "supabase_service_key": SERVICE_KEY,
                        "store_timeout_seconds": 1,
                    },
                    cut=fail,
                    restore=recover,
                    double=double,
                )
            finally:
                double.release()


@contextlib.asynccontextmanager
async def _proxy_for(dsn: str) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """The DSN rewritten to reach PostgreSQL through a CuttableProxy on 127.0.0.1."""
    parts = urlparse(dsn)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    try:
        yield proxy, urlunparse(parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}"))
    finally:
        await proxy.stop()
