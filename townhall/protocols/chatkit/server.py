"""The ChatKit protocol (`POST /chatkit`): the same town-hall agent and tools as /chat.

Threads and items live in chatkit_store.ChatKitStore; a thread id plays the part of a /chat
session id, so a reference can be looked up only from the thread that filed it. While a tool runs
the widget shows a progress line, and a filed report appears as a card with its reference.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import Runner
from agents.models.fake_id import FAKE_RESPONSES_ID
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer
from chatkit.types import (
    AssistantMessageItem,
    ChatKitReq,
    FeedbackKind,
    ProgressUpdateEvent,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTextContent,
)
from chatkit.widgets import (
    DynamicWidgetRoot,
    WidgetTemplate,
)
from pydantic import TypeAdapter

from townhall.context import AppContext
from townhall.errors import ThreadBusyError
from townhall.protocols.chatkit.history import HistoryConverter
from townhall.protocols.chatkit.store import ChatKitStore
from townhall.records.filing import RecordDesk
from townhall.records.receipts import FilingReceipt
from townhall.turns.drain import Drain
from townhall.turns.runner import MAX_AGENT_TURNS, SERVER_RESTARTING, TurnRunner

logger = logging.getLogger(__name__)

HISTORY_ITEMS = 40
CHATKIT_CONVERSATION_PREFIX = "chatkit:"
TITLE_CHARS = 60
CHATKIT_REQUEST = TypeAdapter[ChatKitReq](ChatKitReq)


@dataclass(frozen=True)
class ChatKitRequestContext:
    request_id: str
    owner: str | None = None  # what the caller may see (None: everything)
    creator: str | None = None  # the key id recorded on threads this request creates
    principal: str = "anonymous"  # who files records (auth.Principal.identity)
    admin: bool = False  # the admin key: may look up any record


class ChatKitActivity:
    """Shows tool work in the widget: a progress line, then a card for a filed report."""

    def __init__(self, agent_context: AgentContext[Any]) -> None:
        self.agent_context = agent_context

    async def working(self, text: str) -> None:
        await self.agent_context.stream(ProgressUpdateEvent(text=text, icon="write"))

    async def filed(self, receipt: FilingReceipt) -> None:
        await self.agent_context.stream_widget(receipt_card(receipt), copy_text=receipt.note)


RECEIPT_CARD = WidgetTemplate.from_file(str(Path(__file__).with_name("receipt_card.widget")))


def receipt_card(receipt: FilingReceipt) -> DynamicWidgetRoot:
    """The card shown in the thread after a report or feedback is filed."""
    stored = receipt.saved == "stored"
    return RECEIPT_CARD.build(
        {
            "title": "Incident reported" if receipt.kind == "incident" else "Feedback received",
            "badge": receipt.status.capitalize() if stored else "Saved, syncing",
            "badge_color": "success" if stored else "warning",
            "reference": receipt.reference,
            "note": receipt.note,
            "next_steps": receipt.next_steps,
        }
    )


class MessageIds:
    """A real id for each assistant message streamed under the SDK's placeholder id.

    ChatKit reuses the model's message id as the thread item id. Chat Completions has no item
    ids, so the SDK streams every message as `__fake_id__`: in a thread's store (keyed by thread
    and item id) each answer would overwrite the previous one.
    """

    def __init__(self, new_id: Callable[[], str]) -> None:
        self.new_id = new_id
        self.current: str | None = None

    def fix(self, event: ThreadStreamEvent) -> ThreadStreamEvent:
        if isinstance(event, ThreadItemAddedEvent | ThreadItemDoneEvent):
            if event.item.id != FAKE_RESPONSES_ID:
                return event
            if isinstance(event, ThreadItemAddedEvent) or self.current is None:
                self.current = self.new_id()
            return event.model_copy(
                update={"item": event.item.model_copy(update={"id": self.current})}
            )
        if isinstance(event, ThreadItemUpdatedEvent | ThreadItemRemovedEvent):
            if event.item_id == FAKE_RESPONSES_ID and self.current is not None:
                return event.model_copy(update={"item_id": self.current})
        return event


class TownHallChatKitServer(ChatKitServer[ChatKitRequestContext]):
    def __init__(
        self, store: ChatKitStore, turns: TurnRunner, desk: RecordDesk, drain: Drain
    ) -> None:
        super().__init__(store)
        self.drain = drain
        self.threads = store
        self.turns = turns
        self.desk = desk
        self.converter = HistoryConverter()
        self._busy: set[str] = set()

    def claim(self, thread_id: str) -> None:
        """One answer at a time per thread (as /chat does per session)."""
        if thread_id in self._busy:
            raise ThreadBusyError(thread_id)
        self._busy.add(thread_id)

    def release(self, thread_id: str) -> None:
        self._busy.discard(thread_id)

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
        agent_context = AgentContext[ChatKitRequestContext](
            thread=thread, store=self.store, request_context=context
        )
        app_context = AppContext(
            session_id=thread.id,
            request_id=context.request_id,
            desk=self.desk,
            owner=context.principal,
            # Thread ids are minted by the server (never chosen by a client) and never reused,
            # so the thread is the conversation instance; the prefix keeps the namespace apart
            # from /chat's instances.
            conversation_id=CHATKIT_CONVERSATION_PREFIX + thread.id,
            admin=context.admin,
            activity=ChatKitActivity(agent_context),
        )
        result = Runner.run_streamed(
            self.turns.agent,
            agent_input,
            context=app_context,
            max_turns=MAX_AGENT_TURNS,
            run_config=self.turns.run_config(thread.id),
        )
        ids = MessageIds(lambda: self.store.generate_item_id("message", thread, context))
        stopped = False

        def stop() -> None:  # the shutdown grace ran out
            nonlocal stopped
            stopped = True
            result.cancel()

        untrack = self.drain.track(stop)
        # Assistant messages still streaming: on a stop they are finished as they stand, so
        # ChatKitServer saves them (it saves an item on its done event) and the widget shows them.
        pending: dict[str, ThreadItem] = {}
        try:
            async for raw in stream_agent_response(agent_context, result):
                event = ids.fix(raw)
                if isinstance(event, ThreadItemAddedEvent):
                    if isinstance(event.item, AssistantMessageItem):
                        pending[event.item.id] = event.item.model_copy(deep=True)
                elif isinstance(event, ThreadItemUpdatedEvent):
                    self._update_pending_items(pending, event)  # ChatKitServer's own bookkeeping
                elif isinstance(event, ThreadItemDoneEvent):
                    pending.pop(event.item.id, None)
                yield event
            if stopped:
                for item in pending.values():
                    if isinstance(item, AssistantMessageItem) and any(
                        part.text.strip() for part in item.content
                    ):
                        yield ThreadItemDoneEvent(item=item)
                raise CustomStreamError(SERVER_RESTARTING.message, allow_retry=True)
        finally:
            untrack()
            if not result.is_complete:
                result.cancel()

    async def add_feedback(
        self,
        thread_id: str,
        item_ids: list[str],
        feedback: FeedbackKind,
        context: ChatKitRequestContext,
    ) -> None:
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
