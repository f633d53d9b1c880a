"""Who may do what: bearer API keys, per-key ownership of conversations, an admin key.

API_KEYS set (comma-separated): every endpoint needs `Authorization: Bearer <key>` except `/`,
`/health` and the static pages (`/demo`, `/docs`, `/openapi.json` and the docs' assets: they
hold no data). A key sees and continues only the conversations it created; ADMIN_KEY sees all.
Keys are compared in constant time, and a conversation records a key's id (a hash), never the
key.
No keys set: the server is open, and says so at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from townhall.errors import error_body

OPEN_PATHS = frozenset({"/", "/health", "/demo", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
OPEN_PREFIXES = ("/docs-assets/",)  # the documentation pages' scripts and styles


@dataclass(frozen=True)
class Principal:
    """The caller. `owner` scopes what it may see: None means everything (admin, or no auth)."""

    key_id: str | None
    admin: bool

    @property
    def owner(self) -> str | None:
        return None if self.admin else self.key_id

    @property
    def identity(self) -> str:
        """Who files a record: the key's id, or "anonymous" when the server runs without keys."""
        return self.key_id or ANONYMOUS

    @property
    def admin_key(self) -> bool:
        """The ADMIN_KEY itself: sees every record. (An open server is not an admin.)"""
        return self.admin and self.key_id is not None


ANONYMOUS = "anonymous"
OPEN = Principal(key_id=None, admin=True)


def key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class KeyRing:
    def __init__(self, api_keys: list[str], admin_key: str | None) -> None:
        self._keys = [k.encode() for k in api_keys]
        self._admin = admin_key.encode() if admin_key else None

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._admin)

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal for an Authorization header, or None if it is not a valid key."""
        if not self.enabled:
            return OPEN
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        # Compare against every key, so the time taken says nothing about which one matched.
        admin = self._admin is not None and hmac.compare_digest(presented, self._admin)
        matched = [hmac.compare_digest(presented, key) for key in self._keys]
        if admin:
            return Principal(key_id=key_id(presented.decode()), admin=True)
        if any(matched):
            return Principal(key_id=key_id(presented.decode()), admin=False)
        return None


class AuthMiddleware:
    """Refuses requests without a valid key (401, JSON) and records the caller in the scope.

    Sits inside the CORS middleware: a browser's preflight carries no Authorization header.
    """

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal = self.keys.identify(Headers(scope=scope).get("authorization"))
        path = scope["path"]
        if principal is None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            await _unauthorized(send)
            return
        scope.setdefault("state", {})["principal"] = principal or OPEN_ANONYMOUS
        await self.app(scope, receive, send)


# A caller on an open path without a key: may see nothing that belongs to a key.
OPEN_ANONYMOUS = Principal(key_id="anonymous", admin=False)


async def _unauthorized(send: Send) -> None:
    message = "Send a valid API key as 'Authorization: Bearer <key>'."
    body = json.dumps(error_body("unauthorized", message), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="townhall"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
