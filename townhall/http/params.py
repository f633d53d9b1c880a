"""Path and query parameters: documented with their pattern, and refused with the same plain
message a body field gets ("session_id: must be 1-128 characters of ..."), not pydantic's
"String should match pattern '^...$'"."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Path, Query
from pydantic import AfterValidator, BeforeValidator

from townhall.http.schemas import SESSION_ID_PATTERN, SESSION_ID_RULE, matching

OWNER_PATTERN = r"^key-[0-9a-f]{16}$"
OWNER_RULE = "key- and 16 hex digits, as GET /sessions lists it in `owner`"
EVENT_ID_PATTERN = r"^[0-9]{1,16}-[0-9]{1,10}$"
EVENT_ID_RULE = "an `id:` of a /chat frame: <turn>-<n>, as in 1764860000000-12"
REFERENCE_PATTERN = r"^[A-Z]{2,3}-[0-9A-Z]{6}$"
REFERENCE_RULE = "2-3 capital letters, a dash and 6 of 0-9 A-Z, as in INC-7K2M9Q"

SessionIdPath = Annotated[
    str,
    Path(
        description=f"The conversation's `session_id` ({SESSION_ID_RULE}).",
        json_schema_extra={"pattern": SESSION_ID_PATTERN},
    ),
    AfterValidator(matching(SESSION_ID_PATTERN, SESSION_ID_RULE)),
]
OwnerQuery = Annotated[
    str | None,
    Query(
        description="Admin key only: the id of the API key whose conversation this is (as "
        "listed in `owner` by GET /sessions). Ignored for other keys.",
        json_schema_extra={"pattern": OWNER_PATTERN},
    ),
    AfterValidator(matching(OWNER_PATTERN, OWNER_RULE)),
]


def _as_filed(reference: str) -> str:
    """A reference as residents type it ("inc-7k2qf9") in the form it is filed under."""
    return "".join(reference.split()).upper()


ReferencePath = Annotated[
    str,
    Path(
        description=f"The record's reference ({REFERENCE_RULE}; lower case is taken too).",
        json_schema_extra={"pattern": REFERENCE_PATTERN},
    ),
    BeforeValidator(_as_filed),
    AfterValidator(matching(REFERENCE_PATTERN, REFERENCE_RULE)),
]


_EVENT_ID = "The `id:` of the last frame the client has; the frames after it are sent."
_valid_event_id = AfterValidator(matching(EVENT_ID_PATTERN, EVENT_ID_RULE))
LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description=_EVENT_ID + " A browser's EventSource sends it when it reconnects.",
        json_schema_extra={"pattern": EVENT_ID_PATTERN},
    ),
    _valid_event_id,
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        alias="last_event_id",
        description=_EVENT_ID + " (The header wins when both come.)",
        json_schema_extra={"pattern": EVENT_ID_PATTERN},
    ),
    _valid_event_id,
]
