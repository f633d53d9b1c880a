"""Path and query parameters: documented with their pattern, and refused with the same plain
message a body field gets ("session_id: must be 1-128 characters of ..."), not pydantic's
"String should match pattern '^...$'"."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator

from townhall.http.schemas import SESSION_ID_PATTERN, SESSION_ID_RULE, matching

OWNER_PATTERN = r"^key-[0-9a-f]{16}$"
OWNER_RULE = "key- and 16 hex digits, as GET /sessions lists it in `owner`"
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
