"""Request and response bodies of the HTTP API (they also make the OpenAPI document)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

SESSION_ID_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"
SESSION_ID_RULE = "1-128 characters of A-Z a-z 0-9 _ - . :"


def matching(pattern: str, rule: str) -> Callable[[str | None], str | None]:
    """A check that a value (when given) matches `pattern`, refusing it with "must be <rule>"."""
    compiled = re.compile(pattern)

    def check(value: str | None) -> str | None:
        if value is not None and not compiled.fullmatch(value):
            raise PydanticCustomError("pattern_mismatch", f"must be {rule}")
        return value

    return check


_valid_session_id = matching(SESSION_ID_PATTERN, SESSION_ID_RULE)
valid_session_label = _valid_session_id  # for the front ends' bodies (field_validator)


def session_label_field(description: str, **extra: Any) -> Any:
    """A request body's optional conversation label, documented with its pattern (pair it with
    `field_validator(name)(valid_session_label)` for the plain error message)."""
    return Field(
        None,
        json_schema_extra={"pattern": SESSION_ID_PATTERN, "minLength": 1, "maxLength": 128},
        description=f"{description} ({SESSION_ID_RULE}); omitted: a new one.",
        **extra,
    )


def not_blank(value: str) -> str:
    """A check that a message is not only white space."""
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


class ChatRequest(BaseModel):
    """A resident's message. Unknown fields are ignored."""

    message: str = Field(
        min_length=1,
        description="What the resident wrote (not blank; at most MAX_MESSAGE_CHARS characters).",
        examples=["Hello from the backend"],
        # Documented for clients and schema-driven tests; the validator below gives the error.
        json_schema_extra={"pattern": r"\S"},
    )
    session_id: str | None = session_label_field("Conversation to continue", examples=["test123"])
    stream: bool = Field(True, description="false: one JSON reply instead of Server-Sent Events.")

    _message_not_blank = field_validator("message")(not_blank)

    @field_validator("session_id")
    @classmethod
    def _valid_session_id(cls, value: str | None) -> str | None:
        return _valid_session_id(value)


class Usage(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ToolCall(BaseModel):
    name: str | None
    arguments: Any
    call_id: str | None
    output: Any = None


class ChatReply(BaseModel):
    """The whole answer at once (`"stream": false`)."""

    session_id: str
    reply: Any
    tool_calls: list[ToolCall]
    usage: Usage


class SessionInfo(BaseModel):
    session_id: str
    created_at: str = Field(description="ISO 8601, UTC.")
    last_active: str = Field(description="ISO 8601, UTC.")
    turns: int = Field(description="Completed turns (messages answered).")
    busy: bool = Field(description="A turn is streaming right now.")
    owner: str | None = Field(
        None,
        description="The id of the API key the conversation belongs to (null on a server "
        "without keys). The admin key reaches another key's conversation with `?owner=`.",
    )


class SessionList(BaseModel):
    sessions: list[SessionInfo]
    count: int


class HistoryMessage(BaseModel):
    role: Literal["user", "assistant", "tool", "system"]
    content: str
    name: str | None = Field(None, description="Tool name, for tool calls and results.")
    call_id: str | None = None


class SessionHistory(SessionInfo):
    messages: list[HistoryMessage]


class SessionDeleted(BaseModel):
    session_id: str
    deleted: bool
    cancelled_turn: bool = Field(description="A running turn was stopped.")


class ServiceInfo(BaseModel):
    status: Literal["ok"]
    service: str
    version: str
    model: str
    model_mode: Literal["openai", "compatible", "echo", "custom"]
    records: Literal["sqlite", "postgresql", "supabase"] | str
    notice: str | None = None
    endpoints: dict[str, str]


class Check(BaseModel):
    status: Literal["ok", "degraded", "down"]
    required: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    checks: dict[str, Check]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# What each error status means wherever it is sent; a route names the ones it can send.
ERROR_MEANINGS: dict[int, str] = {
    400: "The body is not valid JSON, or not a request this endpoint takes.",
    401: "API keys are on and none, or a wrong one, came.",
    403: "Only the admin key may do this, or a web page on an origin not in CORS_ORIGINS sent it.",
    404: "Not found (another key's is not found either).",
    409: "The conversation is answering another message.",
    410: "That stream position is no longer kept; read the conversation instead.",
    413: "Body over 64 KiB.",
    415: "Content-Type is not application/json.",
    422: "A field, path or query parameter is missing or invalid; the message says which.",
    429: "Over the rate limit; see `Retry-After`.",
    502: "The upstream service failed.",
    503: "At capacity, shutting down, or a store it needs is unreachable; see `Retry-After`.",
}


def error_responses(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with our one error body. A meaning
    given as `s404="..."` replaces the general one for that route."""
    return {
        status: {
            "model": ErrorBody,
            "description": meanings.get(f"s{status}", ERROR_MEANINGS[status]),
        }
        for status in statuses
    }


class DeadLetterInfo(BaseModel):
    reference: str
    kind: str
    attempts: int = Field(description="Store writes tried before it was set aside.")
    last_error: str | None = Field(description="The store's refusal: error type and code.")
    queued_at: str = Field(description="ISO 8601, UTC: when it was filed.")
    dead_at: str = Field(description="ISO 8601, UTC: when it was set aside.")
    record: dict[str, Any] = Field(description="The record as filed (personal data: admin only).")


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterInfo]
    count: int


class DeadLetterRetried(BaseModel):
    reference: str
    queued: bool = Field(description="Back in the outbox; the background sync tries it now.")


def iso_time(timestamp: float) -> str:
    """A Unix time as the ISO 8601 text the responses carry (UTC, whole seconds)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
