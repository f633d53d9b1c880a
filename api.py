"""HTTP and SSE: the app factory, its routes and its lifespan.

`api:app` is what uvicorn serves (`uv run uvicorn api:app --port 8000`); tests call
`create_app(settings, model=...)` to build their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import sys
import tomllib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from agents import Model, Tool
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from pydantic import SecretStr
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from agents_def import ModelChoice, build_town_hall_agent, choose_model, model_settings
from tools import TOWN_HALL_TOOLS
from townhall.context import AppContext
from townhall.db.postgres import PostgresDatabase
from townhall.db.sqlite import SQLiteFile
from townhall.errors import (
    AdminOnlyError,
    AppError,
    DeadLetterNotFoundError,
    MessageTooLongError,
    error_body,
    install_error_handlers,
)
from townhall.http.auth import AuthMiddleware, KeyRing, Principal
from townhall.http.caller import principal, rate_identity, session_key, session_label
from townhall.http.middleware import BodyLimitMiddleware, RequestLogMiddleware
from townhall.http.rate_limit import MemoryRateLimiter, RateLimiter, RedisRateLimiter, enforce
from townhall.http.schemas import (
    SESSION_ID_PATTERN,
    ChatReply,
    ChatRequest,
    Check,
    DeadLetterInfo,
    DeadLetterList,
    DeadLetterRetried,
    ErrorBody,
    Health,
    ServiceInfo,
    SessionDeleted,
    SessionHistory,
    SessionInfo,
    SessionList,
    ToolCall,
)
from townhall.logs import configure_logging, current_request, mask_url, silence_uvicorn_access_log
from townhall.protocols import sse as sse_frames
from townhall.protocols.chatkit.routes import chatkit_request_schema, chatkit_router
from townhall.protocols.chatkit.server import TownHallChatKitServer
from townhall.protocols.chatkit.store import CHATKIT_SCHEMA, ChatKitStore
from townhall.protocols.sse import Frame, NamedEvent, SSEResponse, TextDelta
from townhall.records.filing import RecordDesk
from townhall.records.outbox import Outbox
from townhall.records.store import RecordStore, choose_store
from townhall.sessions.factory import choose_session_store
from townhall.sessions.registry import Clock, SessionRegistry, history_messages
from townhall.sessions.store import SessionMeta, SessionStore, TurnLease
from townhall.settings import Settings, SettingsError, sqlite_path
from townhall.turns.drain import Drain
from townhall.turns.runner import SERVER_RESTARTING, TurnRunner, quiet_model_attempts

logger = logging.getLogger(__name__)

SERVICE_NAME = "Digital Town Hall API"
VERSION = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())["project"][
    "version"
]
MAX_BODY_BYTES = 64 * 1024
DEMO_PAGE = Path(__file__).with_name("demo.html")
ECHO_NOTICE = (
    "Echo mode: no model is configured, so replies repeat your message word by word. "
    "Set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL and MODEL (an OpenAI-compatible server) "
    "and restart to talk to a real model."
)
ENDPOINTS = {
    "chat": "POST /chat",
    "chatkit": "POST /chatkit",
    "chatkit_hosted_session": "POST /api/chatkit/session",
    "sessions": "GET /sessions",
    "session": "GET|DELETE /sessions/{session_id}",
    "dead_letters": "GET /admin/dead-letters (admin key)",
    "health": "GET /health",
    "demo": "GET /demo",
    "docs": "GET /docs",
}
SessionIdPath = Annotated[str, PathParam(pattern=SESSION_ID_PATTERN)]
OwnerQuery = Annotated[
    str | None,
    Query(
        pattern=r"^key-[0-9a-f]{16}$",
        description="Admin key only: the id of the API key whose conversation this is (as "
        "listed in `owner` by GET /sessions). Ignored for other keys.",
    ),
]


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
    keys: KeyRing
    rate_limiter: RateLimiter | None
    drain: Drain


def create_app(
    settings: Settings | None = None,
    *,
    model: Model | None = None,
    tools: Sequence[Tool] | None = None,
    store: RecordStore | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the app. `model` overrides the choice from settings (tests pass a ScriptedModel),
    `tools` the town-hall tools, `store` the record store the settings name."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    quiet_model_attempts()
    choice = ModelChoice(model, "custom", type(model).__name__) if model else choose_model(settings)
    agent = build_town_hall_agent(
        choice.model, model_settings(settings), TOWN_HALL_TOOLS if tools is None else tools
    )
    desk = RecordDesk(
        store or choose_store(settings),
        Outbox(settings.outbox_path),
        write_timeout=settings.store_timeout_seconds,
        retry_base=settings.outbox_retry_seconds,
        retry_max=settings.outbox_retry_max_seconds,
    )
    turns = TurnRunner(
        agent,
        tracing=settings.tracing_enabled,
        workflow_name=SERVICE_NAME,
        read_ahead_chars=settings.stream_read_ahead_chars,
    )
    registry = SessionRegistry(
        settings.max_sessions, settings.session_ttl_seconds, **({"clock": clock} if clock else {})
    )
    sessions = choose_session_store(settings, registry)
    drain = Drain(settings.shutdown_grace_seconds)
    services = Services(
        settings=settings,
        model=choice,
        desk=desk,
        chatkit=TownHallChatKitServer(
            ChatKitStore(_chatkit_database(settings)), turns, desk, drain
        ),
        registry=registry,
        sessions=sessions,
        turns=turns,
        keys=KeyRing(settings.api_key_list, _secret(settings.admin_key)),
        rate_limiter=_rate_limiter(settings, sessions),
        drain=drain,
    )
    app = FastAPI(
        title=SERVICE_NAME,
        version=VERSION,
        description="Streams the city's town-hall assistant to chat clients as Server-Sent Events.",
        lifespan=_lifespan,
    )
    app.state.services = services
    app.openapi = _openapi_with_limits(app, settings)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.include_router(_routes())
    app.include_router(chatkit_router())
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(AuthMiddleware, keys=services.keys)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        # Browsers refuse a wildcard origin with credentials; never offer both.
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["X-Session-Id", "X-Request-Id", "Retry-After"],
    )
    app.add_middleware(RequestLogMiddleware)
    return app


def _openapi_with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with the limits this app was configured with filled in."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema["components"]["schemas"]
            components["ChatRequest"]["properties"]["message"]["maxLength"] = (
                settings.max_message_chars
            )
            # The JSON reply of `"stream": false`, referenced from POST /chat's 200 response.
            reply = ChatReply.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(reply.pop("$defs", {}))
            components["ChatReply"] = reply
            chatkit_request, definitions = chatkit_request_schema()
            components.update(definitions)
            components["ChatKitRequest"] = chatkit_request
        return app.openapi_schema or {}

    return openapi


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _rate_limiter(settings: Settings, sessions: SessionStore) -> RateLimiter | None:
    if settings.rate_limit_per_minute == 0:
        return None
    redis = getattr(sessions, "redis", None)
    if redis is not None:  # shared by every worker using the same Redis
        return RedisRateLimiter(redis, settings.redis_key_prefix, settings.rate_limit_per_minute)
    return MemoryRateLimiter(settings.rate_limit_per_minute)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Principal, Depends(principal)]


def _chatkit_database(settings: Settings) -> SQLiteFile | PostgresDatabase:
    """ChatKit threads live in the DATABASE_URL database (with the Supabase API store too)."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        return SQLiteFile(path, CHATKIT_SCHEMA)
    return PostgresDatabase(
        settings.database_url, CHATKIT_SCHEMA, timeout=settings.store_timeout_seconds
    )


def _routes() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/", service_info, methods=["GET"], response_model=ServiceInfo)
    router.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=Health,
        responses={503: {"model": Health}},
    )
    router.add_api_route("/chat", chat, methods=["POST"], **_CHAT_DOCS)
    router.add_api_route("/demo", demo_page, methods=["GET"], response_class=FileResponse)
    router.add_api_route("/sessions", list_sessions, methods=["GET"], response_model=SessionList)
    router.add_api_route(
        "/sessions/{session_id}",
        get_session,
        methods=["GET"],
        response_model=SessionHistory,
        responses={404: {"model": ErrorBody}},
    )
    router.add_api_route(
        "/admin/dead-letters",
        list_dead_letters,
        methods=["GET"],
        response_model=DeadLetterList,
        responses={403: {"model": ErrorBody}},
        tags=["admin"],
    )
    router.add_api_route(
        "/admin/dead-letters/{reference}/retry",
        retry_dead_letter,
        methods=["POST"],
        status_code=202,
        response_model=DeadLetterRetried,
        responses={403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
        tags=["admin"],
    )
    router.add_api_route(
        "/sessions/{session_id}",
        delete_session,
        methods=["DELETE"],
        response_model=SessionDeleted,
        responses={404: {"model": ErrorBody}},
    )
    return router


async def service_info(services: ServicesDep) -> ServiceInfo:
    """What this service is, which model it runs, and where its endpoints are."""
    return ServiceInfo(
        status="ok",
        service=SERVICE_NAME,
        version=VERSION,
        model=services.model.name,
        model_mode=services.model.mode,
        records=services.desk.store.backend,
        notice=ECHO_NOTICE if services.model.mode == "echo" else None,
        endpoints=ENDPOINTS,
    )


async def health(services: ServicesDep) -> JSONResponse:
    """Liveness and the state of each part; 503 when a required part is down."""
    sessions, records = await asyncio.gather(
        _session_check(services.sessions), _record_checks(services.desk)
    )
    checks = {
        "model": Check(
            status="ok",
            detail={"mode": services.model.mode, "name": services.model.name}
            | ({"notice": ECHO_NOTICE} if services.model.mode == "echo" else {}),
        ),
        "sessions": sessions,
        **_drain_check(services.drain),
        **records,
    }
    status = _overall(checks)
    body = Health(status=status, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unhealthy" else 200)


def _drain_check(drain: Drain) -> dict[str, Check]:
    """Draining for a restart, the server takes no new turns: unhealthy, so balancers move on."""
    if not drain.draining:
        return {}
    return {
        "server": Check(status="down", detail={"shutting_down": True, "live_turns": drain.live})
    }


async def _session_check(store: SessionStore) -> Check:
    """Without its session store no conversation can run: required."""
    try:
        active = await asyncio.wait_for(store.count(), 2.0)
    except Exception as error:
        logger.warning("session store %s unreachable: %s", store.backend, type(error).__name__)
        return Check(status="down", detail={"backend": store.backend})
    return Check(
        status="ok", detail={"backend": store.backend, "active": active, "max": store.max_sessions}
    )


async def _record_checks(desk: RecordDesk) -> dict[str, Check]:
    """The store may be down without losing reports (they queue), so it is not required; the
    outbox is what guarantees that, so it is."""
    try:
        state = await desk.health()
    except Exception:
        logger.exception("outbox health check failed")
        return {"outbox": Check(status="down", detail={"error": "outbox unreadable"})}
    store_status: Literal["ok", "down"] = "down" if state["store"] == "down" else "ok"
    return {
        "records": Check(
            status=store_status,
            required=False,
            detail={"backend": state["backend"], "last_error": state["last_error"]},
        ),
        "outbox": Check(status="ok", detail={"depth": state["outbox_depth"], **state["counters"]}),
        # Set aside for an operator: nothing is lost, but someone must look (degraded).
        "dead_letters": Check(
            status="down" if state["dead_letters"] else "ok",
            required=False,
            detail={"count": state["dead_letters"], "list": "GET /admin/dead-letters"},
        ),
    }


def _overall(checks: dict[str, Check]) -> Literal["healthy", "degraded", "unhealthy"]:
    if any(c.status == "down" for c in checks.values() if c.required):
        return "unhealthy"
    if any(c.status == "down" for c in checks.values()):
        return "degraded"
    return "healthy"


async def chat(
    body: ChatRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Any:
    """Send a message; the reply streams back as Server-Sent Events (see the 200 response)."""
    services.drain.admit()
    await enforce(services.rate_limiter, rate_identity(request, caller))
    limit = services.settings.max_message_chars
    if len(body.message) > limit:
        raise MessageTooLongError(len(body.message), limit)
    session_id = body.session_id or secrets.token_urlsafe(18)
    lease = await services.sessions.begin_turn(
        session_key(caller, session_id), owner=caller.owner, creator=caller.key_id
    )
    tags = current_request.get()
    if tags is not None:
        tags.session_id = session_id
    context = AppContext(
        session_id=session_id,
        request_id=tags.request_id if tags else "-",
        desk=services.desk,
        owner=caller.identity,
        conversation_id=lease.conversation_id,
        admin=caller.admin_key,
    )
    turn = _Turn(services.sessions, lease, session_id)
    turn.untrack = services.drain.track(lambda: lease.cancel(SERVER_RESTARTING.code))
    frames = services.turns.stream(lease, body.message, context)
    if not body.stream:
        return await _collect(frames, turn, session_id)
    return SSEResponse(
        _sse_body(frames, turn),
        headers={"Cache-Control": "no-cache", "X-Session-Id": session_id},
        sep="\n",
        ping=services.settings.sse_ping_seconds,
        # Also runs when the client left before the body started (the generator never ran).
        background=BackgroundTask(turn.release),
    )


class _Turn:
    """Ends a turn's lease exactly once, however the response ends."""

    def __init__(self, store: SessionStore, lease: TurnLease, session_id: str) -> None:
        self.store = store
        self.lease = lease
        self.session_id = session_id  # the client's label (the lease holds the store's key)
        self.completed = False
        self._released = False
        self.untrack: Callable[[], None] = lambda: None

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.untrack()
        # Shielded: this often runs in a response that is being cancelled (the client left),
        # and a lease that is not returned keeps the conversation busy until its lock lapses.
        with anyio.CancelScope(shield=True):
            try:
                await self.store.end_turn(self.lease, completed=self.completed)
            except Exception:
                logger.exception("could not end the turn cleanly")

    def observe(self, frame: Frame) -> None:
        if isinstance(frame, NamedEvent) and frame.name == sse_frames.DONE:
            self.completed = True


# Bytes written between two turns of the event loop. Once the client has gone, uvicorn's send
# returns at once and sends nothing, and with a fast model nothing else makes this task wait: the
# turn would run to its end (pulling the whole answer) before sse-starlette's disconnect watcher
# gets to cancel it. A long frame is also let out in pieces with other requests in between.
YIELD_EVERY_BYTES = 64 * 1024


async def _sse_body(frames: AsyncGenerator[Frame, None], turn: _Turn) -> AsyncIterator[bytes]:
    # aclosing: when this body is cancelled or closed (the client left) while `frames` waits
    # at a yield, the turn's generator must be closed too, so its run is cancelled now; left to
    # the garbage collector, the model would wait for a reader that is gone.
    try:
        yield sse_frames.encode_event(sse_frames.SESSION, {"session_id": turn.session_id})
        unyielded = 0
        async with aclosing(frames):
            async for frame in frames:
                turn.observe(frame)
                for chunk in sse_frames.encode_pieces(frame):
                    if chunk:
                        yield chunk
                    unyielded += len(chunk)
                    if unyielded >= YIELD_EVERY_BYTES:
                        unyielded = 0
                        await asyncio.sleep(0)
        yield sse_frames.DONE_FRAME
    finally:
        await turn.release()


async def _collect(
    frames: AsyncGenerator[Frame, None], turn: _Turn, session_id: str
) -> JSONResponse:
    calls: dict[str | None, ToolCall] = {}
    try:
        async with aclosing(frames):
            async for frame in frames:
                turn.observe(frame)
                if isinstance(frame, TextDelta):
                    continue
                if frame.name == sse_frames.TOOL_CALL:
                    calls[frame.data["call_id"]] = ToolCall(**frame.data)
                elif frame.name == sse_frames.TOOL_RESULT and frame.data["call_id"] in calls:
                    calls[frame.data["call_id"]].output = frame.data["output"]
                elif frame.name == sse_frames.ERROR:
                    status = {"cancelled": 409, SERVER_RESTARTING.code: 503}.get(
                        frame.data["code"], 502
                    )
                    body = error_body(frame.data["code"], frame.data["message"])
                    return JSONResponse(body | {"session_id": session_id}, status)
                elif frame.name == sse_frames.DONE:
                    reply = ChatReply(
                        session_id=session_id,
                        reply=frame.data["reply"],
                        tool_calls=list(calls.values()),
                        usage=frame.data["usage"],
                    )
                    return JSONResponse(reply.model_dump(), headers={"X-Session-Id": session_id})
    finally:
        await turn.release()
    raise AppError("The turn ended without a reply.")


async def demo_page() -> FileResponse:
    """A small chat page (plain HTML and JavaScript) that talks to /chat."""
    return FileResponse(DEMO_PAGE, media_type="text/html")


async def list_sessions(services: ServicesDep, caller: CallerDep) -> SessionList:
    """Active conversations (across all workers with a shared store), least recent first."""
    sessions = [_session_info(m) for m in await services.sessions.list(owner=caller.owner)]
    return SessionList(sessions=sessions, count=len(sessions))


async def get_session(
    session_id: SessionIdPath, services: ServicesDep, caller: CallerDep, owner: OwnerQuery = None
) -> SessionHistory:
    """One conversation and its history as role/content messages."""
    key = session_key(caller, session_id, owner)
    meta = await services.sessions.get(key, owner=caller.owner)
    items = await services.sessions.items(key)
    info = _session_info(meta).model_dump()
    return SessionHistory.model_validate(info | {"messages": history_messages(items)})


async def delete_session(
    session_id: SessionIdPath, services: ServicesDep, caller: CallerDep, owner: OwnerQuery = None
) -> SessionDeleted:
    """Stop the conversation's running turn, if any, then forget the conversation."""
    meta = await services.sessions.forget(session_key(caller, session_id, owner), caller.owner)
    return SessionDeleted(session_id=session_id, deleted=True, cancelled_turn=meta.busy)


def _require_admin(caller: Principal) -> None:
    # The admin key itself: a server without keys has no admin (dead letters hold personal data).
    if not caller.admin_key:
        raise AdminOnlyError()


async def list_dead_letters(services: ServicesDep, caller: CallerDep) -> DeadLetterList:
    """Records the store refused for good (invalid data, a constraint), set aside after a few
    attempts. Admin key only."""
    _require_admin(caller)
    letters = [
        DeadLetterInfo(
            reference=letter.record.reference,
            kind=letter.record.kind,
            attempts=letter.attempts,
            last_error=letter.last_error,
            queued_at=_iso(letter.queued_at),
            dead_at=_iso(letter.dead_at),
            record=letter.record.row(),
        )
        for letter in await services.desk.dead_letters()
    ]
    return DeadLetterList(dead_letters=letters, count=len(letters))


async def retry_dead_letter(
    reference: Annotated[str, PathParam(pattern=r"^[A-Z]{2,3}-[0-9A-Z]{6}$")],
    services: ServicesDep,
    caller: CallerDep,
) -> DeadLetterRetried:
    """Queue a dead letter again once its cause is fixed; the background sync tries it at once
    (and sets it aside again if the store still refuses it). Admin key only."""
    _require_admin(caller)
    if not await services.desk.retry_dead_letter(reference):
        raise DeadLetterNotFoundError(reference)
    return DeadLetterRetried(reference=reference, queued=True)


def _session_info(meta: SessionMeta) -> SessionInfo:
    return SessionInfo(
        session_id=session_label(meta.session_id),
        created_at=_iso(meta.created_at),
        last_active=_iso(meta.last_active),
        turns=meta.turns,
        busy=meta.busy,
        owner=meta.owner,
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


SSE_DESCRIPTION = """\
A stream of Server-Sent Events (`text/event-stream`), lines ending in LF:

| event | data | when |
|---|---|---|
| `session` | `{"session_id"}` | first, always |
| *(none)* | reply text, one `data:` line per line of text | as the reply streams |
| `tool_call` | `{"name", "arguments", "call_id"}` | the assistant calls a tool |
| `tool_result` | `{"call_id", "output"}` | the tool answered |
| `agent` | `{"name"}` | a handoff to another agent |
| `error` | `{"code", "message"}` | the turn failed; the message is fit for a resident |
| `done` | `{"reply", "usage"}` | the turn finished |
| *(none)* | `[DONE]` | last, always, after `done` or `error` |

A comment line (`: ping ...`) is sent every 15 s while the stream is open.
With `"stream": false` the reply is one JSON object (`ChatReply`).
"""

SSE_EXAMPLE = (
    'event: session\ndata: {"session_id":"test123"}\n\n'
    "data: Hello\n\ndata: from\n\ndata: the\n\ndata: backend\n\n"
    'event: done\ndata: {"reply":"Hello from the backend","usage":{"requests":1,'
    '"input_tokens":4,"output_tokens":4,"total_tokens":8}}\n\n'
    "data: [DONE]\n\n"
)

SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One Server-Sent Event: a named event with JSON data, or reply text.",
    "properties": {
        "event": {
            "type": "string",
            "enum": [
                "message",
                sse_frames.SESSION,
                sse_frames.TOOL_CALL,
                sse_frames.TOOL_RESULT,
                sse_frames.AGENT,
                sse_frames.ERROR,
                sse_frames.DONE,
            ],
            "description": "Not sent for reply text and the final [DONE]: parsers read that as "
            "the SSE default, `message`.",
        },
        "data": {"type": "string"},
    },
    "required": ["data"],
}

_CHAT_DOCS: dict[str, Any] = {
    "response_class": EventSourceResponse,
    "responses": {
        200: {
            "description": SSE_DESCRIPTION,
            "content": {
                # Before OpenAPI 3.2, the schema of an event stream describes one event.
                "text/event-stream": {"schema": SSE_EVENT_SCHEMA, "example": SSE_EXAMPLE},
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatReply"}},
            },
        },
        409: {"model": ErrorBody, "description": "The session is answering another message."},
        413: {"model": ErrorBody, "description": "Body over 64 KiB."},
        415: {"model": ErrorBody, "description": "Content-Type is not application/json."},
        422: {"model": ErrorBody, "description": "A field is missing or invalid."},
    },
}


def _app_from_environment() -> FastAPI:
    """The app uvicorn serves. An invalid setting ends start-up with one line naming it (no
    traceback: nothing is wrong with the code), and exit status 1."""
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        sys.stderr.write(f"Digital Town Hall API cannot start: {error}\n")
        raise SystemExit(1) from None
    return create_app(settings)


app = _app_from_environment()
