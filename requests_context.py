"""Per-request facts the routes share: who is calling, and whom rate limits count against."""

from __future__ import annotations

from fastapi import Request

from auth import OPEN, Principal


def principal(request: Request) -> Principal:
    """The caller AuthMiddleware identified (everything allowed when no keys are set)."""
    found: Principal = request.scope.get("state", {}).get("principal", OPEN)
    return found


def rate_identity(request: Request, caller: Principal) -> str:
    """Rate limits count per API key, or per client address when keys are off."""
    if caller.key_id is not None:
        return caller.key_id
    return "ip:" + (request.client.host if request.client else "unknown")
