"""What a turn produces, as typed events: the one vocabulary every wire protocol renders.

The turn runner (runner.py) turns the Agents SDK's stream into these; each protocol adapter
(protocols/) writes them in its own format. `wire` is the event's name on /chat's SSE stream,
and the OpenAPI description of that stream is generated from these classes (http/openapi.py),
so the documents and the wire cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's reply, as it arrives."""

    wire: ClassVar[str] = "message"
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The assistant calls a tool."""

    wire: ClassVar[str] = "tool_call"
    name: str | None
    arguments: Any
    call_id: str | None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The tool answered (a tool that returns JSON text is sent as the object it encodes)."""

    wire: ClassVar[str] = "tool_result"
    call_id: str | None
    output: Any


@dataclass(frozen=True, slots=True)
class AgentChanged:
    """A handoff: another agent answers from here on."""

    wire: ClassVar[str] = "agent"
    name: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The turn failed; the message is fit for a resident (never an exception's text)."""

    wire: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The turn finished: the whole reply and what it cost."""

    wire: ClassVar[str] = "done"
    reply: Any
    usage: dict[str, int]


TurnEvent = TextDelta | ToolCall | ToolResult | AgentChanged | Failed | Finished

# Every event class, in the order a client meets them.
EVENT_TYPES: tuple[type[TurnEvent], ...] = (
    TextDelta,
    ToolCall,
    ToolResult,
    AgentChanged,
    Failed,
    Finished,
)
