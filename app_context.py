"""What a run carries to its tools: the conversation it belongs to and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass

from filing import RecordDesk


@dataclass(frozen=True)
class AppContext:
    """The Agents SDK run context (`RunContextWrapper[AppContext].context` inside a tool).

    Tools get their dependencies from here rather than from module globals, so each test can
    build its own app with its own store.
    """

    session_id: str
    request_id: str
    desk: RecordDesk
