"""The conversation routes: list, read and forget conversations."""

from __future__ import annotations

from fastapi import APIRouter

from townhall.http.caller import session_key, session_label
from townhall.http.params import OwnerQuery, SessionIdPath
from townhall.http.schemas import (
    SessionDeleted,
    SessionHistory,
    SessionInfo,
    SessionList,
    error_responses,
    iso_time,
)
from townhall.http.services import CallerDep, ServicesDep
from townhall.sessions.registry import history_messages
from townhall.sessions.store import SessionMeta

NO_SUCH_SESSION = "No conversation with this `session_id` (another key's is not found either)."


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route(
        "/sessions",
        list_sessions,
        methods=["GET"],
        response_model=SessionList,
        responses=error_responses(401, 503),
    )
    routes.add_api_route(
        "/sessions/{session_id}",
        get_session,
        methods=["GET"],
        response_model=SessionHistory,
        responses=error_responses(401, 404, 422, 503, s404=NO_SUCH_SESSION),
    )
    routes.add_api_route(
        "/sessions/{session_id}",
        delete_session,
        methods=["DELETE"],
        response_model=SessionDeleted,
        responses=error_responses(
            401,
            403,
            404,
            422,
            503,
            s403="A web page on an origin not in CORS_ORIGINS sent it.",
            s404=NO_SUCH_SESSION,
        ),
    )
    return routes


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
    key = session_key(caller, session_id, owner)
    meta = await services.sessions.forget(key, caller.owner)
    await services.broadcaster.logs.forget(key)  # a resume must not replay what was forgotten
    return SessionDeleted(session_id=session_id, deleted=True, cancelled_turn=meta.busy)


def _session_info(meta: SessionMeta) -> SessionInfo:
    return SessionInfo(
        session_id=session_label(meta.session_id),
        created_at=iso_time(meta.created_at),
        last_active=iso_time(meta.last_active),
        turns=meta.turns,
        busy=meta.busy,
        owner=meta.owner,
    )
