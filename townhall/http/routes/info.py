"""The service's own routes: what it is, how it is, and the demo page."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from townhall.http.about import ECHO_NOTICE, ENDPOINTS, PROJECT_ROOT, SERVICE_NAME, VERSION
from townhall.http.schemas import Check, Health, ServiceInfo
from townhall.http.services import ServicesDep
from townhall.mcp_links import MCPLinks
from townhall.records.filing import RecordDesk
from townhall.sessions.store import SessionStore
from townhall.turns.drain import Drain

logger = logging.getLogger(__name__)

DEMO_PAGE = PROJECT_ROOT / "demo.html"


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/", service_info, methods=["GET"], response_model=ServiceInfo)
    routes.add_api_route(
        "/health",
        health,
        methods=["GET"],
        response_model=Health,
        responses={503: {"model": Health}},
    )
    routes.add_api_route("/demo", demo_page, methods=["GET"], response_class=FileResponse)
    return routes


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
        # How full this worker is: a full one refuses new turns (503 at_capacity) but is well.
        "turns": Check(
            status="ok",
            detail={
                "answering": services.pipeline.slots.taken,
                "limit": services.pipeline.slots.limit,
                "refused": services.pipeline.slots.refused,
            },
        ),
        **_drain_check(services.drain),
        **records,
        **_mcp_check(services.mcp),
    }
    status = _overall(checks)
    body = Health(status=status, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if status == "unhealthy" else 200)


def _mcp_check(mcp: MCPLinks) -> dict[str, Check]:
    """MCP servers add tools; turns go on without a server that is down (degraded)."""
    if not mcp.links:
        return {}
    servers = mcp.status()
    return {
        "mcp": Check(
            status="ok" if all(s.state == "up" for s in servers) else "down",
            required=False,
            detail={
                "servers": [
                    {"name": s.name, "state": s.state, "tools": s.tools, "last_error": s.last_error}
                    for s in servers
                ]
            },
        )
    }


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


async def demo_page() -> FileResponse:
    """A small chat page (plain HTML and JavaScript) that talks to /chat."""
    return FileResponse(DEMO_PAGE, media_type="text/html")
