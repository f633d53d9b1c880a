"""Everything the routes use, built once per app, and the dependencies that hand it over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from townhall.db.postgres import PostgresDatabase
from townhall.db.sqlite import SQLiteFile
from townhall.http.about import SERVICE_NAME
from townhall.http.auth import KeyRing, Principal
from townhall.http.caller import principal
from townhall.mcp_links import MCPLinks
from townhall.protocols.chatkit.render import ProgressLine
from townhall.protocols.chatkit.server import TownHallChatKitServer
from townhall.protocols.chatkit.store import CHATKIT_SCHEMA, ChatKitStore
from townhall.records.filing import RecordDesk
from townhall.records.outbox import Outbox
from townhall.records.store import RecordStore, choose_store
from townhall.sessions.factory import choose_session_store
from townhall.sessions.redis_frames import RedisFrameLogs
from townhall.sessions.registry import Clock, SessionRegistry
from townhall.sessions.store import SessionStore
from townhall.settings import Settings, sqlite_path
from townhall.turns.broadcast import Broadcaster, FrameLogs, MemoryFrameLogs
from townhall.turns.capacity import TurnSlots
from townhall.turns.drain import Drain
from townhall.turns.model_choice import ModelChoice
from townhall.turns.pipeline import TurnPipeline
from townhall.turns.rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from townhall.turns.roster import AgentRoster
from townhall.turns.runner import TurnRunner


@dataclass
class Services:
    """Everything the routes use, built once per app."""

    settings: Settings
    model: ModelChoice
    desk: RecordDesk
    chatkit: TownHallChatKitServer
    registry: SessionRegistry  # the in-memory conversations (used when SESSION_STORE=memory)
    sessions: SessionStore
    turns: TurnRunner
    pipeline: TurnPipeline
    keys: KeyRing
    rate_limiter: RateLimiter | None
    drain: Drain
    mcp: MCPLinks
    broadcaster: Broadcaster


def build_services(
    settings: Settings,
    choice: ModelChoice,
    roster: AgentRoster,
    mcp: MCPLinks | None = None,
    *,
    progress_line: ProgressLine = lambda call: None,
    store: RecordStore | None = None,
    clock: Clock | None = None,
) -> Services:
    """The stores, the desk, the turn pipeline and the ChatKit server, for the agents of
    `roster` and the MCP servers they use (`progress_line`: what a chat widget shows while a
    tool runs)."""
    desk = RecordDesk(
        store or choose_store(settings),
        Outbox(settings.outbox_path),
        write_timeout=settings.store_timeout_seconds,
        retry_base=settings.outbox_retry_seconds,
        retry_max=settings.outbox_retry_max_seconds,
    )
    turns = TurnRunner(
        roster,
        tracing=settings.tracing_enabled,
        workflow_name=SERVICE_NAME,
        read_ahead_chars=settings.stream_read_ahead_chars,
    )
    registry = SessionRegistry(
        settings.max_sessions, settings.session_ttl_seconds, **({"clock": clock} if clock else {})
    )
    sessions = choose_session_store(settings, registry)
    drain = Drain(settings.shutdown_grace_seconds)
    rate_limiter = _rate_limiter(settings, sessions)
    pipeline = TurnPipeline(
        runner=turns,
        sessions=sessions,
        desk=desk,
        drain=drain,
        slots=TurnSlots(settings.max_concurrent_turns),
        rate_limiter=rate_limiter,
        max_message_chars=settings.max_message_chars,
    )
    return Services(
        settings=settings,
        model=choice,
        desk=desk,
        chatkit=TownHallChatKitServer(
            ChatKitStore(_chatkit_database(settings)), pipeline, progress_line
        ),
        registry=registry,
        sessions=sessions,
        turns=turns,
        pipeline=pipeline,
        keys=KeyRing(settings.api_key_list, _secret(settings.admin_key)),
        rate_limiter=rate_limiter,
        drain=drain,
        mcp=mcp or MCPLinks([]),
        broadcaster=Broadcaster(
            _frame_logs(settings, sessions),
            grace_seconds=settings.resume_grace_seconds,
            window_chars=settings.stream_read_ahead_chars,
            enabled=settings.resume_streams,
            slots=pipeline.slots,
        ),
    )


def _frame_logs(settings: Settings, sessions: SessionStore) -> FrameLogs:
    """Where streamed turns' frames are kept: with the conversations in Redis, so that any
    worker can resume a stream; else in this process."""
    memory = MemoryFrameLogs(
        retention_seconds=settings.resume_retention_seconds, cap_chars=settings.resume_buffer_chars
    )
    redis = getattr(sessions, "redis", None)
    if redis is None:
        return memory
    return RedisFrameLogs(
        redis,
        memory,
        prefix=settings.redis_key_prefix,
        running=sessions.turn_running,  # type: ignore[attr-defined]
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _rate_limiter(settings: Settings, sessions: SessionStore) -> RateLimiter | None:
    if settings.rate_limit_per_minute == 0:
        return None
    redis = getattr(sessions, "redis", None)
    if redis is not None:  # shared by every worker using the same Redis
        return RedisRateLimiter(redis, settings.redis_key_prefix, settings.rate_limit_per_minute)
    return MemoryRateLimiter(settings.rate_limit_per_minute)


def _chatkit_database(settings: Settings) -> SQLiteFile | PostgresDatabase:
    """ChatKit threads live in the DATABASE_URL database (with the Supabase API store too)."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        return SQLiteFile(path, CHATKIT_SCHEMA)
    return PostgresDatabase(
        settings.database_url, CHATKIT_SCHEMA, timeout=settings.store_timeout_seconds
    )


async def get_services(request: Request) -> Services:  # async: no thread hop (caller.py)
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Principal, Depends(principal)]
