"""What a run carries to its tools: the conversation it belongs to and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from filing import RecordDesk

if TYPE_CHECKING:
    from tools import FilingReceipt


class ToolActivity(Protocol):
    """How a client protocol shows tool work as it happens (ChatKit: progress and a card).

    /chat needs none: its `tool_call` and `tool_result` events already carry the same facts.
    """

    async def working(self, text: str) -> None: ...

    async def filed(self, receipt: FilingReceipt) -> None: ...


@dataclass(frozen=True)
class AppContext:
    """The Agents SDK run context (`RunContextWrapper[AppContext].context` inside a tool).

    Tools get their dependencies from here rather than from module globals, so each test can
    build its own app with its own store.
    """

    session_id: str
    request_id: str
    desk: RecordDesk
    activity: ToolActivity | None = None
