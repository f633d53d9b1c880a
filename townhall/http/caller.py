"""Per-request facts the routes share: who is calling, where its conversations are kept, and
whom rate limits count against."""

from __future__ import annotations

from fastapi import Request

from townhall.http.auth import OPEN, Principal


async def principal(request: Request) -> Principal:
    """The caller AuthMiddleware identified (everything allowed when no keys are set). Async,
    like every dependency here: FastAPI runs a plain `def` dependency in its thread pool, a
    thread hop per request for a dictionary lookup."""
    found: Principal = request.scope.get("state", {}).get("principal", OPEN)
    return found


def rate_identity(request: Request, caller: Principal) -> str:
    """Rate limits count per API key, or per client address when keys are off."""
    if caller.key_id is not None:
        return caller.key_id
    return "ip:" + (request.client.host if request.client else "unknown")


# Labels never contain "/" (schemas.SESSION_ID_PATTERN), so a key id and a label joined by it
# cannot be mistaken for another pair.
_SCOPE = "/"


def session_key(caller: Principal, label: str, owner: str | None = None) -> str:
    """Where the conversation a caller names `label` is kept.

    Each API key has its own labels: the same `session_id` sent by two keys names two
    conversations, so one key can neither reach nor detect another's (nothing to forbid, so
    nothing to tell apart from "not found"). A server without keys has one caller and one
    namespace. Only the admin key may name another key's conversation, with `owner`.
    """
    scope = owner if owner is not None and caller.admin_key else caller.key_id
    return label if scope is None else f"{scope}{_SCOPE}{label}"


def session_label(key: str) -> str:
    """The label a client used for the conversation kept under `key`."""
    return key.rsplit(_SCOPE, 1)[-1]
