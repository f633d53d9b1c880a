"""The records the town hall keeps: incident reports and feedback.

A record carries its reference (`INC-7K2QF9`, `FB-...`), who filed it (`owner`: the API key's id,
or "anonymous" on a server without keys) and in which conversation instance (`conversation_id`:
minted by the server when the conversation was created, never the client's label), the session
label it came from, when it was made, its status, and a dedupe key: the same report (same owner,
conversation, kind and fields) always gets the same key, and every store keeps the key unique, so
a retried or doubled tool call returns the first reference instead of writing a second row.
Rows from before owners were recorded have `owner` None: only the admin key sees them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# No 0/O, 1/I/L, so a reference read out over the phone is unambiguous; 31^6 ≈ 8.9e8 per prefix.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
REFERENCE_LENGTH = 6

IncidentCategory = Literal[
    "pothole",
    "streetlight",
    "graffiti",
    "noise",
    "theft",
    "flooding",
    "waste",
    "traffic",
    "vandalism",
    "other",
]
Sentiment = Literal["positive", "neutral", "negative"]
RECEIVED = "received"


# C0 control characters but tab and newline, DEL, and C1 controls: PostgreSQL refuses NUL in text
# outright (a report that could never land), and none of them belongs in a report.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Lone surrogates (from a JSON \ud800 escape) cannot be encoded as UTF-8 by any store.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text every store can hold: control characters dropped (CR LF becomes LF), lone
    surrogates replaced by U+FFFD."""
    text = text.replace("\r\n", "\n")
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def new_reference(prefix: str) -> str:
    suffix = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))
    return f"{prefix}-{suffix}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Filer:
    """Who files a record, and from which conversation."""

    owner: str  # the API key's id, or "anonymous"
    conversation_id: str  # the server-minted id of the conversation instance
    session_id: str  # the label the client used (kept for operators; grants nothing)


class Record(BaseModel):
    """Fields every record has; subclasses add their own and name their table."""

    model_config = ConfigDict(frozen=True)

    kind: ClassVar[str]
    table: ClassVar[str]
    prefix: ClassVar[str]

    reference: str
    session_id: str
    dedupe_key: str
    created_at: datetime = Field(default_factory=_utcnow)
    status: str = RECEIVED
    owner: str | None = None
    conversation_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any) -> Any:
        """Every text field cleaned on the way in, whoever builds the record (tools, sync)."""
        if isinstance(data, dict):
            return {k: clean_text(v) if isinstance(v, str) else v for k, v in data.items()}
        return data

    @classmethod
    def create(cls, filer: Filer, **fields: Any) -> Record:
        """A new record with a fresh reference and the dedupe key of its content."""
        return cls(
            reference=new_reference(cls.prefix),
            session_id=filer.session_id,
            owner=filer.owner,
            conversation_id=filer.conversation_id,
            dedupe_key=dedupe_key(cls.kind, filer, _cleaned(fields)),
            **fields,
        )

    @classmethod
    def columns(cls) -> list[str]:
        return list(cls.model_fields)

    def row(self) -> dict[str, Any]:
        """The record as a table row (JSON-safe values)."""
        return self.model_dump(mode="json")

    def summary(self) -> str:
        raise NotImplementedError

    def category_label(self) -> str:
        """What kind of report it is, from a fixed list (never the resident's own words)."""
        raise NotImplementedError


class Incident(Record):
    kind: ClassVar[str] = "incident"
    table: ClassVar[str] = "incidents"
    prefix: ClassVar[str] = "INC"

    category: IncidentCategory
    description: str
    location: str
    severity: int = Field(ge=1, le=5)
    occurred_at: str | None = None
    people_involved: str | None = None
    reporter_name: str | None = None
    reporter_contact: str | None = None

    def summary(self) -> str:
        return f"{self.category} at {self.location} (severity {self.severity}): {self.description}"

    def category_label(self) -> str:
        return self.category


class Feedback(Record):
    kind: ClassVar[str] = "feedback"
    table: ClassVar[str] = "feedback"
    prefix: ClassVar[str] = "FB"

    topic: str
    summary_text: str = Field(alias="summary")
    sentiment: Sentiment
    location: str | None = None
    name: str | None = None

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    @classmethod
    def columns(cls) -> list[str]:
        return [field.alias or name for name, field in cls.model_fields.items()]

    def row(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def summary(self) -> str:
        return f"{self.sentiment} feedback on {self.topic}: {self.summary_text}"

    def category_label(self) -> str:
        return f"{self.sentiment} feedback"


@dataclass(frozen=True)
class Viewer:
    """Who asks about a record, from which conversation instance."""

    owner: str
    conversation_id: str
    admin: bool = False  # the ADMIN_KEY: sees every record, older ones without an owner too


Visibility = Literal["full", "status"]


def visibility(record: Record, viewer: Viewer) -> Visibility | None:
    """What a viewer may learn of a record.

    - "full": the filer, in the conversation it was filed in (or the admin key): everything.
    - "status": the filer, from another of its conversations: status, kind and category (enums
      and dates only, never free text a resident typed: that is where names and numbers go).
    - None: anyone else. Callers must answer exactly as for a reference that does not exist.
    """
    if viewer.admin:
        return "full"
    if record.owner is None or record.owner != viewer.owner:
        return None
    return "full" if record.conversation_id == viewer.conversation_id else "status"


RECORD_TYPES: dict[str, type[Record]] = {"incident": Incident, "feedback": Feedback}
TABLES: dict[str, type[Record]] = {cls.table: cls for cls in RECORD_TYPES.values()}


def record_type_for(reference: str) -> type[Record] | None:
    prefix = reference.split("-", 1)[0].upper()
    return next((cls for cls in RECORD_TYPES.values() if cls.prefix == prefix), None)


def dedupe_key(kind: str, filer: Filer, fields: dict[str, Any]) -> str:
    """Same filer, conversation, kind and fields: same key. Whitespace at the ends does not count.

    The conversation instance, not the label, so a report filed after a label was deleted and
    re-created (or by another key under the same label) is never mistaken for an earlier one.
    """
    normalised = {k: v.strip() if isinstance(v, str) else v for k, v in sorted(fields.items())}
    identity = [filer.owner, filer.conversation_id]
    canonical = json.dumps([kind, identity, normalised], ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _cleaned(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: clean_text(v) if isinstance(v, str) else v for k, v in fields.items()}


def record_from_row(record_type: type[Record], row: dict[str, Any]) -> Record:
    return record_type.model_validate(dict(row))
