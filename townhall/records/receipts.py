"""What the filing tools tell the agent (and ChatKit's receipt card shows)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


# Tools return these as JSON text: the SDK would send a returned object as its Python repr, and
# declaring an output_type would make the failure messages below break the run.
class FilingReceipt(BaseModel):
    """What a filing tool returns."""

    reference: str
    kind: Literal["incident", "feedback"]
    status: str
    saved: Literal["stored", "queued"]
    duplicate: bool
    next_steps: str
    note: str


class StatusAnswer(BaseModel):
    found: bool
    reference: str
    kind: str | None = None
    status: str | None = None
    category: str | None = None
    summary: str | None = None
    created_at: str | None = None
    note: str
