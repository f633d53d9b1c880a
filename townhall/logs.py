"""Logging set-up: every line about a request carries its request id and session id, and no line
carries a secret (URLs and query strings are masked before they are logged)."""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

MASK = "***"
# Query parameters whose values are credentials more often than not.
_SECRET_PARAM = re.compile(
    r"key|token|secret|passw|pwd|pw$|auth|bearer|jwt|access|sig|credential|session", re.I
)
# scheme://userinfo@ : everything up to the first "@" after the scheme, so a password holding an
# unescaped "/", "?" or "#" (which a URL parser would read as path, query or fragment) is still
# recognised as the password.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^@]*)@")


@dataclass
class RequestTags:
    """Mutable on purpose: the route learns the session id after the middleware made this."""

    request_id: str = "-"
    session_id: str = "-"


current_request: ContextVar[RequestTags | None] = ContextVar("current_request", default=None)

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s session=%(session_id)s] %(message)s"
)


class RequestTagsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        tags = current_request.get() or RequestTags()
        record.request_id = tags.request_id
        record.session_id = tags.session_id
        return True


def configure_logging(level: str) -> None:
    """Install one stderr handler on the root logger (idempotent, so tests can call it)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_town_hall", False):
            return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestTagsFilter())
    handler._town_hall = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def mask_url(url: str) -> str:
    """A URL fit for a log line: the password in it (and secret-looking query values) masked.

    `postgresql://app:s3cret@db:5432/town` -> `postgresql://app:***@db:5432/town`.
    """
    found = _USERINFO.match(url)
    if found and ":" in found["userinfo"]:
        user = found["userinfo"].split(":", 1)[0]
        return f"{found['scheme']}{user}:{MASK}@" + _mask_url_query(url[found.end() :])
    return _mask_url_query(url)


def _mask_url_query(url: str) -> str:
    base, mark, query = url.partition("?")
    return f"{base}?{mask_query(query)}" if mark else url


def mask_query(query: str) -> str:
    """A query string with the values of secret-looking parameters masked."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [(name, MASK if _SECRET_PARAM.search(name) else value) for name, value in pairs],
        safe="*",
    )


def silence_uvicorn_access_log() -> None:
    """Our access log (middleware.RequestLogMiddleware) is the only one.

    uvicorn's prints each request's query string as sent, so a key passed as `?api_key=...`
    would be written to the log; ours masks it. Called once uvicorn has set up its loggers.
    """
    logging.getLogger("uvicorn.access").disabled = True
