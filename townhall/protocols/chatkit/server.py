"""The ChatKit protocol (`POST /chatkit`): the same town-hall agent and tools as /chat.

Threads and items live in store.ChatKitStore; a thread id plays the part of a /chat session id,
so a reference can be looked up only from the thread that filed it. The turn itself is the turn
pipeline's, as for /chat; render.py shows its events in the thread (a progress line while a tool
runs, a card with the reference for a filed report).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatkit.server import ChatKitServer
from chatkit.types import (
    ChatKitReq,
    FeedbackKind,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTextContent,
)
from pydantic import TypeAdapter

from townhall.context import AppContext
from townhall.errors import ThreadBusyError
from townhall.protocols.chatkit.history import HistoryConverter
from townhall.protocols.chatkit.render import ProgressLine, ThreadRenderer
from townhall.protocols.chatkit.store import ChatKitStore
from townhall.sessions.local_leases import LocalLeases
from townhall.sessions.store import TurnLease
from townhall.turns.events import AgentChanged, Failed
from townhall.turns.pipeline import TurnPipeline

logger = logging.getLogger(__name__)

HISTORY_ITEMS = 40
CHATKIT_CONVERSATION_PREFIX = "chatkit:"
TITLE_CHARS = 60
# The thread's metadata key for the agent that answers its next message (the last handoff's).
ANSWERING_AGENT = "agent"
CHATKIT_REQUEST = TypeAdapter[ChatKitReq](ChatKitReq)


@dataclass(frozen=True)
class ChatKitRequestContext:
    request_id: str
    owner: str | None = None  # what the caller may see (None: everything)
    creator: str | None = None  # the key id recorded on threads this request creates
    principal: str = "anonymous"  # who files records (auth.Principal.identity)
    admin: bool = False  # the admin key: may look up any record
    lease: TurnLease | None = None  # the thread's, taken by the route for a turn on it


class TownHallChatKitServer(ChatKitServer[ChatKitRequestContext]):
    """ChatKit's protocol over the turn pipeline: the thread's items are the agent's input, the
    pipeline's events are rendered as thread events (render.py), and ChatKitServer saves the
    items from those events. One answer at a time per thread: the route takes the thread's
    lease before the response starts (409 `thread_busy`), the turn gives it back."""

    def __init__(
        self,
        store: ChatKitStore,
        pipeline: TurnPipeline,
        progress_line: ProgressLine,
    ) -> None:
        super().__init__(store)
        self.threads = store
        self.pipeline = pipeline
        self.progress_line = progress_line
        self.leases = LocalLeases(ThreadBusyError, prefix=CHATKIT_CONVERSATION_PREFIX)
        self.converter = HistoryConverter()

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: ChatKitRequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        if thread.title is None and input_user_message is not None:
            thread.title = _title_from(input_user_message)
        history = await self.store.load_thread_items(
            thread.id, None, HISTORY_ITEMS, "desc", context
        )
        agent_input = await self.converter.to_agent_input(list(reversed(history.data)))
        # A new thread has no lease yet (its id was minted just now: nobody else can hold it).
        # Taken here, right before the turn that gives it back, so nothing can fail between.
        lease = context.lease or await self.leases.begin_turn(
            thread.id, context.owner, context.creator
        )
        app_context = AppContext(
            session_id=thread.id,
            request_id=context.request_id,
            desk=self.pipeline.desk,
            owner=context.principal,
            # Thread ids are minted by the server (never chosen by a client) and never reused,
            # so the thread is the conversation instance; the prefix keeps the namespace apart
            # from /chat's instances.
            conversation_id=lease.conversation_id,
            admin=context.admin,
        )
        turn = self.pipeline.start(
            self.leases,
            lease,
            agent_input,
            app_context,
            label=thread.id,
            answering=thread.metadata.get(ANSWERING_AGENT),
        )
        renderer = ThreadRenderer(
            thread.id,
            lambda: self.store.generate_item_id("message", thread, context),
            self.progress_line,
        )
        try:
            async for event in turn.events:
                turn.observe(event)
                if isinstance(event, AgentChanged):  # saved with the thread by ChatKitServer
                    thread.metadata[ANSWERING_AGENT] = event.name
                for rendered in renderer.render(event):
                    yield rendered
                if isinstance(event, Failed):
                    raise renderer.failure(event)
        finally:
            await turn.events.aclose()
            await turn.release()

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: ChatKitRequestContext,
    ) -> None:
        # Every item first (an unknown one is a 404 through the route), so feedback is kept on
        # the thread's real items or not at all.
        for item_id in dict.fromkeys(item_ids):
            await self.threads.load_item(thread_id, item_id, context)
        await self.threads.save_feedback(thread_id, item_ids, feedback)


def _title_from(message: UserMessageItem) -> str:
    text = " ".join(
        part.text for part in message.content if isinstance(part, UserMessageTextContent)
    ).strip()
    text = " ".join(text.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def thread_id_of(request: ChatKitReq) -> str | None:
    """The thread a request names, if any (threads.create names none)."""
    params = getattr(request, "params", None)
    thread_id = getattr(params, "thread_id", None)
    return thread_id if isinstance(thread_id, str) else None
