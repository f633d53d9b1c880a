"""What a run carries to its tools: the conversation it belongs to and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass

from townhall.records.filing import RecordDesk
from townhall.records.model import Filer, Viewer


@dataclass(frozen=True)
class AppContext:
    """The Agents SDK run context (`RunContextWrapper[AppContext].context` inside a tool).

    Tools get their dependencies from here rather than from module globals, so each test can
    build its own app with its own store.
    """

    session_id: str  # the client's label for the conversation
    request_id: str
    desk: RecordDesk
    owner: str  # the caller: an API key's id, or "anonymous" (auth.Principal.identity)
    conversation_id: str  # the server-minted id of this conversation instance
    admin: bool = False  # the ADMIN_KEY: may look up any record

    @property
    def filer(self) -> Filer:
        return Filer(self.owner, self.conversation_id, self.session_id)

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.owner, self.conversation_id, self.admin)
