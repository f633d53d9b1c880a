"""The app's lifespan: open the stores and background work at start-up, close them at the end."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from townhall.http.about import ECHO_NOTICE
from townhall.http.services import Services
from townhall.logs import mask_url, silence_uvicorn_access_log
from townhall.sessions.store import SessionStore
from townhall.settings import Settings

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    silence_uvicorn_access_log()
    if services.model.mode == "echo":
        logger.warning(ECHO_NOTICE)
    if not services.keys.enabled:
        logger.warning("no API_KEYS set: the API is open to anyone who can reach it")
    logger.info(
        "model: %s (%s); tracing %s",
        services.model.name,
        services.model.mode,
        "on" if services.settings.tracing_enabled else "off",
    )
    await services.desk.open()
    services.desk.start_sync()
    await services.chatkit.threads.open()
    logger.info(
        "records: %s (%s); outbox %s",
        services.desk.store.backend,
        _store_location(services.settings),
        services.settings.outbox_path,
    )
    await services.sessions.open()
    logger.info(
        "sessions: %s (%s)", services.sessions.backend, mask_url(services.settings.session_store)
    )
    await services.mcp.start()  # bounded: a server that is down keeps retrying in the background
    for link in services.mcp.status():
        logger.info("MCP server %s: %s, %d tools", link.name, link.state, len(link.tools))
    sweeper = asyncio.create_task(
        _expire_sessions(services.sessions, services.settings.session_ttl_seconds)
    )
    if services.settings.gc_tuning:
        _tune_garbage_collector()
    services.drain.install()  # SIGTERM: stop admitting turns, let them finish, then exit
    try:
        yield
    finally:
        services.drain.uninstall()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await services.broadcaster.close()  # turns still running end as server_restarting
        await services.mcp.stop()
        # Filings in flight get a few seconds to land (or reach the outbox) before we close.
        await services.desk.close(drain_timeout=5.0)
        await services.chatkit.threads.close()
        await services.sessions.close()
        if services.model.client is not None:
            await services.model.client.close()


def _store_location(settings: Settings) -> str:
    if settings.record_backend == "supabase":
        return mask_url(settings.supabase_url or "")
    return mask_url(settings.database_url)


def _tune_garbage_collector() -> None:
    """Keep the cyclic GC from pausing every stream at once.

    Measured with 1,000 streams at 20 ms token gaps: collections over the start-up heap (modules,
    schemas) and many live turns stalled the loop, token gap p99 ~250 ms. Freezing what start-up
    allocated (never collected, never traversed again): ~120 ms; collecting the youngest
    generation a third as often as Python's default too: ~45 ms, with resident memory still
    levelling off under repeated disconnect storms (a tenfold threshold kept growing).
    GC_TUNING=false leaves Python's defaults.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(2_000, 10, 10)


async def _expire_sessions(store: SessionStore, ttl_seconds: float) -> None:
    """Idle sessions also expire on access; this bounds memory when no requests come."""
    interval = min(60.0, max(1.0, ttl_seconds / 2))
    while True:
        await asyncio.sleep(interval)
        try:
            expired = await store.expire_idle()
        except Exception:  # a store outage must not end the sweeper
            logger.exception("expiring idle sessions failed")
            continue
        if expired:
            logger.info("expired %d idle sessions", expired)
