"""The conversation routes: list, read and forget conversations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from townhall.http.caller import session_key, session_label
from townhall.http.schemas import (
    SESSION_ID_PATTERN,
    ErrorBody,
    SessionDeleted,
    SessionHistory,
    SessionInfo,
    SessionList,
    iso_time,
)
from townhall.http.services import CallerDep, ServicesDep
from townhall.sessions.registry import history_messages
from townhall.sessions.store import SessionMeta

SessionIdPath = Annotated[str, PathParam(pattern=SESSION_ID_PATTERN)]
OwnerQuery = Annotated[
    str | None,
    Query(
        pattern=r"^key-[0-9a-f]{16}$",
        description="Admin key only: the id of the API key whose conversation this is (as "
        "listed in `owner` by GET /sessions). Ignored for other keys.",
    ),
]


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/sessions", list_sessions, methods=["GET"], response_model=SessionList)
    routes.add_api_route(
        "/sessions/{session_id}",
        get_session,
        methods=["GET"],
        response_model=SessionHistory,
        responses={404: {"model": ErrorBody}},
    )
    routes.add_api_route(
        "/sessions/{session_id}",
        delete_session,
        methods=["DELETE"],
        response_model=SessionDeleted,
        responses={404: {"model": ErrorBody}},
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
    meta = await services.sessions.forget(session_key(caller, session_id, owner), caller.owner)
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
