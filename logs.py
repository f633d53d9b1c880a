"""Logging set-up: every line about a request carries its request id and session id."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass


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
