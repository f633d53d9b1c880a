"""The composition root: what goes together to make the server, and the app uvicorn serves.

`api:app` is what uvicorn serves (`uv run uvicorn api:app --port 8000`); tests call
`create_app(settings, model=...)` to build their own. The agent and its model come from
agents_def.py, the tools from tools.py, everything else from the `townhall` package:

- townhall/http/: services (built once), lifespan, OpenAPI, middleware, and the routes
- townhall/turns/: the turn pipeline (admit, run, typed events), the model decoders
- townhall/protocols/: one adapter per wire protocol (native SSE, JSON, ChatKit, and the front ends)
- townhall/records/, townhall/sessions/, townhall/db/: where reports and conversations live
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agents import Model, Tool
from fastapi.middleware.cors import CORSMiddleware

from agents_def import build_agents, choose_model, model_settings
from tools import progress_line
from townhall.errors import install_error_handlers
from townhall.http.about import SERVICE_NAME, VERSION
from townhall.http.auth import AuthMiddleware
from townhall.http.docs import install_docs
from townhall.http.lifespan import lifespan
from townhall.http.middleware import BodyLimitMiddleware, RequestLogMiddleware
from townhall.http.openapi import with_limits
from townhall.http.origin_check import OriginCheckMiddleware
from townhall.http.routes import (
    admin,
    assistant,
    chat,
    info,
    query,
    resume,
    sessions,
    ui_chat,
)
from townhall.http.send_buffer import TownHallApp
from townhall.http.services import build_services
from townhall.logs import configure_logging
from townhall.mcp_links import MCPLinks
from townhall.protocols.chatkit.routes import chatkit_router
from townhall.records.store import RecordStore
from townhall.sessions.registry import Clock
from townhall.settings import Settings, SettingsError
from townhall.turns.agent_graph import install_fast_identity_map
from townhall.turns.model_choice import ModelChoice
from townhall.turns.runner import quiet_model_attempts

MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    model: Model | None = None,
    tools: Sequence[Tool] | None = None,
    store: RecordStore | None = None,
    clock: Clock | None = None,
) -> TownHallApp:
    """Build the app. `model` overrides the choice from settings (tests pass a ScriptedModel),
    `tools` the town-hall tools of every agent, `store` the record store the settings name."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    quiet_model_attempts()
    install_fast_identity_map()
    choice = ModelChoice(model, "custom", type(model).__name__) if model else choose_model(settings)
    mcp = MCPLinks.from_settings(settings)
    roster = build_agents(choice.model, model_settings(settings), tools, mcp)
    services = build_services(
        settings, choice, roster, mcp, progress_line=progress_line, store=store, clock=clock
    )
    app = TownHallApp(
        title=SERVICE_NAME,
        version=VERSION,
        description="Streams the city's town-hall assistant to chat clients as Server-Sent Events.",
        lifespan=lifespan,
        docs_url=None,  # served offline by install_docs
        redoc_url=None,
    )
    app.state.services = services
    app.send_buffer_bytes = settings.stream_send_buffer_bytes
    app.openapi = with_limits(app, settings)  # type: ignore[method-assign]
    install_error_handlers(app)
    install_docs(app)
    for routes in (
        info.router(),
        chat.router(),
        sessions.router(),
        admin.router(),
        query.router(),
        assistant.router(),
        ui_chat.router(),
        resume.router(),
    ):
        app.include_router(routes)
    app.include_router(chatkit_router())
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(AuthMiddleware, keys=services.keys)
    app.add_middleware(OriginCheckMiddleware, allowed=settings.cors_origins)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        # Browsers refuse a wildcard origin with credentials; never offer both.
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["X-Session-Id", "X-Thread-Id", "X-Request-Id", "Retry-After"],
    )
    app.add_middleware(RequestLogMiddleware)
    return app


def _app_from_environment() -> TownHallApp:
    """The app uvicorn serves. An invalid setting ends start-up with one line naming it (no
    traceback: nothing is wrong with the code), and exit status 1."""
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        sys.stderr.write(f"Digital Town Hall API cannot start: {error}\n")
        raise SystemExit(1) from None
    return create_app(settings)


app = _app_from_environment()
