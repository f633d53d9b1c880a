"""Scripted handoffs between the town hall's agents (agents_def.py), for ScriptedModel scripts.

The triage agent files nothing itself: a script that files a report first hands off to the desk
that owns the tool, as a real model would. Each helper is one model step."""

from __future__ import annotations

import itertools
from typing import Any

from agents.testing import function_call

TO_INCIDENT_DESK = "transfer_to_incident_desk"
TO_FEEDBACK_DESK = "transfer_to_feedback_desk"
BACK_TO_TRIAGE = "transfer_to_town_hall_assistant"

_ids = itertools.count(1)


def handoff(tool: str, call_id: str | None = None) -> list[Any]:
    """A model step that calls the handoff tool `tool`."""
    return [function_call(tool, {}, call_id=call_id or f"handoff-{next(_ids)}")]


def to_incident_desk() -> list[Any]:
    return handoff(TO_INCIDENT_DESK)


def to_feedback_desk() -> list[Any]:
    return handoff(TO_FEEDBACK_DESK)


def back_to_triage() -> list[Any]:
    return handoff(BACK_TO_TRIAGE)
