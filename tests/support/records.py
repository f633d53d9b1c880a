"""Records as a resident's tool call makes them, for tests of the stores and the desk."""

from __future__ import annotations

from townhall.records.model import Filer, Incident

OWNER = "key-0123456789abcdef"


def pothole(session_id: str = "s1", **changes: object) -> Incident:
    """A pothole report filed by OWNER in conversation `conv_<session_id>`; `changes` replace
    fields (the same fields make the same report: the same dedupe key)."""
    fields = {
        "category": "pothole",
        "description": "Deep pothole in the right lane",
        "location": "Main Street 12",
        "severity": 3,
        "occurred_at": "this morning",
        "reporter_name": "Ana",
    } | changes
    filer = Filer(OWNER, f"conv_{session_id}", session_id)
    return Incident.create(filer, **fields)  # type: ignore[return-value]
