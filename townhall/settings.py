"""Typed settings, read once from the environment and `.env`.

Every setting is an upper-case environment variable with the same name as its field. Invalid
values fail at start-up with a message that names the variable; secrets never appear in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


class Settings(BaseModel):
    """Everything the server reads from its environment."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    model: str = "gpt-4.1-mini"
    openai_api: Literal["auto", "responses", "chat_completions"] = "auto"
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    max_message_chars: int = Field(4000, ge=1, le=100_000)
    max_sessions: int = Field(10_000, ge=1)
    # Turns answering at once in this worker; past it new turns get 503 `at_capacity` before their
    # stream starts, so the admitted ones stay held. 0: no limit. The default: BENCHMARKS.md.
    max_concurrent_turns: int = Field(50, ge=0)
    session_ttl_seconds: float = Field(3600, gt=0)
    session_store: str = "memory"
    session_lock_seconds: float = Field(30, gt=0)
    api_keys: SecretStr | None = None
    admin_key: SecretStr | None = None
    rate_limit_per_minute: int = Field(60, ge=0)
    redis_key_prefix: str = Field("townhall", pattern=r"^[A-Za-z0-9_\-.:]{1,64}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    tracing: Literal["auto", "off"] = "auto"
    model_timeout_seconds: float = Field(60, gt=0)
    model_max_retries: int = Field(3, ge=0, le=10)
    model_retry_backoff_seconds: float = Field(0.5, gt=0, le=60)
    lean_stream: bool = True
    # Delta characters one model response may stream (text, tool arguments, ...); lean models only.
    max_answer_chars: int = Field(1_000_000, ge=1)
    # How far (delta characters) the model is read ahead of what the client has taken; 0 means
    # no bound (the upstream is read as fast as it sends, whatever the client reads).
    stream_read_ahead_chars: int = Field(64_000, ge=0)
    # Each connection's kernel send buffer (bytes; the kernel doubles it): how far the server can
    # write ahead of a slow reader. 0 leaves it to the kernel's autotuning (up to tcp_wmem's max).
    stream_send_buffer_bytes: int = Field(65_536, ge=0, le=64 * 1024 * 1024)
    gc_tuning: bool = True
    # Resumable streams (turns/broadcast.py): a streamed turn's frames are kept for a client that
    # reconnects (GET /sessions/{id}/stream); a turn whose client left runs on this long waiting
    # for one; the frames are kept this long after the turn ended; at most this many characters
    # of them per conversation (the oldest go first). RESUME_STREAMS=false: none of it, and a
    # client that leaves cancels its turn at once.
    resume_streams: bool = True
    resume_grace_seconds: float = Field(15, ge=0, le=3600)
    resume_retention_seconds: float = Field(300, gt=0, le=86_400)
    resume_buffer_chars: int = Field(256_000, ge=1_000)
    sse_ping_seconds: float = Field(15, gt=0)
    shutdown_grace_seconds: float = Field(20, ge=0)
    database_url: str = "sqlite:///townhall.db"
    supabase_url: str | None = None
    supabase_service_key: SecretStr | None = None
    outbox_path: str = "townhall-outbox.db"
    store_timeout_seconds: float = Field(5, gt=0)
    outbox_retry_seconds: float = Field(2, gt=0)
    outbox_retry_max_seconds: float = Field(300, gt=0)
    chatkit_workflow_id: str | None = None
    # MCP servers whose tools every agent is offered (streamable HTTP; comma-separated URLs),
    # the headers sent to them (a JSON object, e.g. {"Authorization": "Bearer ..."}), how long
    # any MCP call may take, and the longest wait between reconnect attempts.
    mcp_server_url: str | None = None
    mcp_headers: SecretStr | None = None
    mcp_timeout_seconds: float = Field(10, gt=0, le=600)
    mcp_retry_max_seconds: float = Field(30, gt=0)
    # The most characters one MCP tool result may hold (text, data, structured): a result is
    # kept in the conversation and sent to the model on every later turn.
    mcp_max_result_chars: int = Field(100_000, ge=1)

    @field_validator("openai_base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("mcp_server_url")
    @classmethod
    def _mcp_urls_are_http(cls, value: str | None) -> str | None:
        for url in _split(value or ""):
            if not url.startswith(("http://", "https://")):
                raise ValueError("each URL must start with http:// or https://")
            _well_formed_url(url)
        return value

    @field_validator("mcp_headers")
    @classmethod
    def _mcp_headers_are_a_json_object(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _header_map(value.get_secret_value())  # the message never quotes the value
        return value

    @property
    def mcp_server_urls(self) -> list[str]:
        return _split(self.mcp_server_url or "")

    @property
    def mcp_header_map(self) -> dict[str, str]:
        return _header_map(self.mcp_headers.get_secret_value()) if self.mcp_headers else {}

    @field_validator("session_store")
    @classmethod
    def _known_session_store(cls, value: str) -> str:
        shared = ("redis://", "rediss://", "unix://", "postgresql://", "postgres://")
        if value == "memory" or sqlite_path(value) is not None:
            return value
        if value.startswith(shared):
            return _well_formed_url(value)
        raise ValueError("must be memory, redis://..., sqlite:///<path> or postgresql://...")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if sqlite_path(value) is not None:
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return _well_formed_url(value)
        raise ValueError("must be sqlite:///<path> or postgresql://...")

    @model_validator(mode="after")
    def _supabase_needs_both(self) -> Settings:
        if bool(self.supabase_url) != bool(self.supabase_service_key):
            missing = "SUPABASE_SERVICE_KEY" if self.supabase_url else "SUPABASE_URL"
            raise ValueError(f"{missing} is required when the other Supabase setting is set")
        return self

    @property
    def api_key_list(self) -> list[str]:
        raw = self.api_keys.get_secret_value() if self.api_keys else ""
        return [key.strip() for key in raw.split(",") if key.strip()]

    @property
    def record_backend(self) -> Literal["supabase", "postgresql", "sqlite"]:
        """Where records go: Supabase's API, PostgreSQL, or a SQLite file (the default)."""
        if self.supabase_url:
            return "supabase"
        if self.database_url.startswith(("postgresql://", "postgres://")):
            return "postgresql"
        return "sqlite"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        return value

    @field_validator("log_level", "tracing", "openai_api", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if value.strip().upper() in _LOG_LEVELS else value.lower()

    @property
    def model_mode(self) -> Literal["openai", "compatible", "echo"]:
        """Which model path the settings select (see agents_def.choose_model)."""
        if self.openai_base_url:
            return "compatible"
        if self.openai_api_key:
            return "openai"
        return "echo"

    @property
    def model_api(self) -> Literal["responses", "chat_completions"]:
        """OPENAI_API=auto: the Responses API for OpenAI, Chat Completions for a base URL."""
        if self.openai_api != "auto":
            return self.openai_api
        return "chat_completions" if self.openai_base_url else "responses"

    @property
    def tracing_enabled(self) -> bool:
        """Traces go to OpenAI only with a real OpenAI key, and never when TRACING=off."""
        return self.tracing == "auto" and self.model_mode == "openai"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
    ) -> Settings:
        """Read settings: the process environment wins over the `.env` file."""
        values: dict[str, str | None] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update(dotenv_values(env_file))
        values.update(os.environ if environ is None else environ)
        # A variable set to nothing means its default (as an empty line in .env.example does).
        fields = {
            name: value
            for name in cls.model_fields
            if (value := values.get(name.upper())) is not None and value.strip()
        }
        try:
            return cls.model_validate(fields)
        except ValidationError as error:
            raise SettingsError(_describe(error)) from None


_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _header_map(raw: str) -> dict[str, str]:
    try:
        headers = json.loads(raw)
    except ValueError:
        raise ValueError("must be a JSON object of header names to values") from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("must be a JSON object of header names to string values")
    return headers


def _well_formed_url(url: str) -> str:
    """A database or Redis URL its client can parse. Checked here, where the error names the
    variable and not the value: the client's own error quotes the URL, password included."""
    scheme, _, rest = url.partition("://")
    userinfo, at, _ = rest.partition("@")
    if at and any(mark in userinfo for mark in "/?#"):
        raise ValueError(
            "the user name or password holds '/', '?' or '#': percent-encode it (%2F, %3F, %23)"
        )
    try:
        urlsplit(url).port  # noqa: B018  (parsing the port is the check)
    except ValueError:
        raise ValueError("has a port that is not a number") from None
    return url


def sqlite_path(database_url: str) -> str | None:
    """The file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URL, else None."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and len(database_url) > len(prefix):
        return database_url[len(prefix) :]
    return None


def _describe(error: ValidationError) -> str:
    """Name each bad variable and what is wrong, without echoing its value (it may be secret)."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        variable = str(detail["loc"][0]).upper() if detail["loc"] else "SUPABASE"
        problems.append(f"{variable}: {detail['msg'].removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(problems)
