"""The errors this service models, and the one place that turns each kind into a response.

Every error body has the same shape: `{"error": {"code": "...", "message": "..."}}`, where `code`
is stable for programs and `message` is fit to show a person. Nothing from a traceback or a
secret ever goes into either.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

OUTAGE_RETRY_AFTER_SECONDS = 5


class AppError(Exception):
    """Base for errors that map to one HTTP status and a stable code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


def shown(value: str, limit: int = 80) -> str:
    """A client's value quoted in an error message: bounded, so a huge id is not sent back."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _label(key: str) -> str:
    # A conversation is kept under "<key id>/<label>" (http.caller.session_key); the caller
    # named only the label, and the key id is ours.
    return key.rsplit("/", 1)[-1]


class SessionNotFoundError(AppError):
    status_code = 404
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"No session with id {shown(_label(session_id))}.")


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many requests; try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )


class AdminOnlyError(AppError):
    status_code = 403
    code = "admin_only"

    def __init__(self) -> None:
        super().__init__("Only the admin key (ADMIN_KEY) may do this.")


class OriginNotAllowedError(AppError):
    status_code = 403
    code = "origin_not_allowed"

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"Requests from the web page at {shown(origin)} are not allowed here; "
            "the server's CORS_ORIGINS must list that origin."
        )


class DeadLetterNotFoundError(AppError):
    status_code = 404
    code = "dead_letter_not_found"

    def __init__(self, reference: str) -> None:
        super().__init__(f"No dead letter with reference {shown(reference)}.")


class SessionBusyError(AppError):
    status_code = 409
    code = "session_busy"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"Session {shown(_label(session_id))} is still answering a previous message; "
            "wait for that reply to finish, then send again."
        )


class SessionCapacityError(AppError):
    status_code = 503
    code = "session_capacity"

    def __init__(self, max_sessions: int) -> None:
        super().__init__(
            f"All {max_sessions} conversation slots are answering right now; try again shortly.",
            headers={"Retry-After": "5"},
        )


class AtCapacityError(AppError):
    status_code = 503
    code = "at_capacity"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"The town hall is answering as many residents as it can ({limit} at once); "
            "send your message again in a few seconds.",
            headers={"Retry-After": str(retry_after)},
        )


class ShuttingDownError(AppError):
    status_code = 503
    code = "shutting_down"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "The server is restarting; send your message again in a few seconds.",
            headers={"Retry-After": str(retry_after), "Connection": "close"},
        )


class StreamPositionGoneError(AppError):
    status_code = 410
    code = "stream_position_gone"

    def __init__(self, value: str) -> None:
        super().__init__(
            f"The frames after {shown(value)} are no longer kept (a newer turn replaced them, or "
            "the answer outgrew the resume buffer). Read the conversation with "
            "GET /sessions/{session_id}."
        )


class MessageTooLongError(AppError):
    status_code = 422
    code = "message_too_long"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"message is {length} characters long; the limit is {limit}.")


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than {limit} bytes.")


class ChatKitRequestError(AppError):
    status_code = 400
    code = "invalid_chatkit_request"


class ThreadNotFoundError(AppError):
    status_code = 404
    code = "thread_not_found"

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"No ChatKit thread with id {shown(thread_id)}.")


class ChatKitItemNotFoundError(AppError):
    status_code = 404
    code = "not_found"


class ThreadBusyError(AppError):
    status_code = 409
    code = "thread_busy"

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"Thread {shown(thread_id)} is still answering a previous message; wait for it to "
            "finish."
        )


class HostedChatKitUnavailableError(AppError):
    status_code = 503
    code = "chatkit_not_configured"


class UpstreamError(AppError):
    status_code = 502
    code = "upstream_error"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def outage_errors() -> tuple[type[Exception], ...]:
    """What a database, Redis or network outage raises from the stores we use (not a bug).

    Redis's and SQLAlchemy's errors only once their packages are loaded (the session store
    that uses them imports them when it is built, before the app installs its handlers): an
    error of a module never imported cannot have been raised, and importing both only to
    name their errors cost ~0.75 s of every start-up on the default, memory-backed server."""
    import asyncpg  # cheap, and the PostgreSQL pool imports it only when it opens

    errors: list[type[Exception]] = [
        OSError,  # refused, reset, unreachable; TimeoutError too
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        sqlite3.OperationalError,  # locked past the busy timeout, unopenable file
    ]
    if (redis_errors := sys.modules.get("redis.exceptions")) is not None:
        errors += [redis_errors.ConnectionError, redis_errors.TimeoutError]
    if (sqlalchemy_errors := sys.modules.get("sqlalchemy.exc")) is not None:
        errors += [sqlalchemy_errors.OperationalError, sqlalchemy_errors.InterfaceError]
    return tuple(errors)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    # Registered per class (not under Exception): Starlette answers these without re-raising
    # them to the server, so an outage is one WARNING line, not a traceback per request.
    for outage in outage_errors():
        app.add_exception_handler(outage, _outage_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _app_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AppError)
    return JSONResponse(
        error_body(error.code, error.message), error.status_code, headers=error.headers
    )


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    # Only a body that did not parse is blamed on its Content-Type: a bad path parameter of a
    # POST without a body is a 422 like any other.
    about_the_body = any(problem["loc"][:1] == ("body",) for problem in problems)
    if (
        about_the_body
        and request.method in {"POST", "PUT", "PATCH"}
        and not _is_json(request.headers.get("content-type"))
    ):
        return JSONResponse(
            error_body("unsupported_media_type", "Content-Type must be application/json."), 415
        )
    if any(problem.get("type") == "json_invalid" for problem in problems):
        reason = problems[0].get("ctx", {}).get("error", "not valid JSON")
        return JSONResponse(
            error_body("malformed_json", f"Request body is not valid JSON: {reason}."), 400
        )
    details = [
        {"field": _field_name(problem["loc"]), "problem": problem["msg"]} for problem in problems
    ]
    message = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return JSONResponse(error_body("invalid_request", message, details=details), 422)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in {"body", "query", "path"}]
    return ".".join(parts) or "body"


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        error.status_code, f"http_{error.status_code}"
    )
    return JSONResponse(
        error_body(code, str(error.detail)), error.status_code, headers=error.headers
    )


async def _outage_error(request: Request, error: Exception) -> JSONResponse:
    logger.warning(
        "%s %s: a store is unavailable (%s)", request.method, request.url.path, type(error).__name__
    )
    return JSONResponse(
        error_body(
            "service_unavailable",
            "A database this service needs is not answering; please try again shortly.",
        ),
        503,
        headers={"Retry-After": str(OUTAGE_RETRY_AFTER_SECONDS)},
    )


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse(
        error_body("internal_error", "Something went wrong on our side; please try again."), 500
    )
