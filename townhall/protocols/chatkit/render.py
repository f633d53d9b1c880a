"""The turn pipeline's events as ChatKit thread events: the ChatKit adapter's renderer.

A reply streams as one assistant message item (added, text deltas, done); a tool call shows a
progress line while it runs; a filed report's receipt appears as a card, and a widget an (MCP)
tool returns as that widget; a handoff shows who answers now. A failure finishes the message as
it stands (ChatKitServer saves an item on its done event, so the thread keeps what the resident
saw) and ends the stream with ChatKit's error event, carrying the resident-fit message of the
`Failed` event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from chatkit.errors import CustomStreamError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
    WidgetItem,
)
from chatkit.widgets import DynamicWidgetRoot, WidgetRoot, WidgetTemplate
from pydantic import TypeAdapter, ValidationError

from townhall.records.receipts import FilingReceipt
from townhall.turns.events import (
    AgentChanged,
    Failed,
    Finished,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEvent,
)

# What the widget shows while a tool runs; the tools module says it (api.py passes it in).
ProgressLine = Callable[[ToolCall], str | None]

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


def receipt_of(result: ToolResult) -> FilingReceipt | None:
    """The filing receipt a tool returned, if it returned one."""
    if not isinstance(result.output, dict):
        return None
    try:
        return FilingReceipt.model_validate(result.output)
    except ValidationError:
        return None


WIDGET_ROOT = TypeAdapter[WidgetRoot](WidgetRoot)
WIDGET_ROOT_TYPES = ("Card", "ListView", "Basic")


def widget_of(result: ToolResult) -> WidgetRoot | None:
    """The ChatKit widget a tool returned (an MCP tool's `{"widget": ...}`, or a widget root
    itself), if it is one ChatKit can render; anything else stays a plain tool result."""
    output = result.output
    if not isinstance(output, dict):
        return None
    candidate = output.get("widget", output)
    if not isinstance(candidate, dict) or candidate.get("type") not in WIDGET_ROOT_TYPES:
        return None
    try:
        return WIDGET_ROOT.validate_python(candidate)
    except ValidationError:
        return None


class ThreadRenderer:
    """Renders one turn into one thread. `new_id` mints a store item id (ChatKit's ids)."""

    def __init__(
        self, thread_id: str, new_id: Callable[[], str], progress_line: ProgressLine
    ) -> None:
        self.thread_id = thread_id
        self.new_id = new_id
        self.progress_line = progress_line
        self._message: AssistantMessageItem | None = None  # the reply streaming now
        self._parts: list[str] = []

    def render(self, event: TurnEvent) -> list[ThreadStreamEvent]:
        """The thread events for one turn event. For `Failed` they finish what was streaming;
        the caller then ends the stream with `failure(event)`."""
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, ToolCall):
            line = self.progress_line(event)
            return self.finish() + ([ProgressUpdateEvent(text=line, icon="write")] if line else [])
        if isinstance(event, ToolResult):
            receipt = receipt_of(event)
            if receipt is not None:
                return [self._widget(receipt_card(receipt), receipt.note)]
            widget = widget_of(event)
            return [self._widget(widget, None)] if widget is not None else []
        if isinstance(event, AgentChanged):
            answering = ProgressUpdateEvent(text=f"{event.name} is answering", icon="user")
            return [*self.finish(), answering]
        if isinstance(event, Finished):
            # The model's own text of its last message (deltas need not join to it exactly:
            # the echo model streams bare words).
            return self.finish(event.reply if isinstance(event.reply, str) else None)
        if isinstance(event, Failed):
            return self.finish()
        return []

    @staticmethod
    def failure(event: Failed) -> CustomStreamError:
        """ChatKit's error event for a failed turn (ChatKitServer renders it)."""
        return CustomStreamError(event.message, allow_retry=True)

    def finish(self, text: str | None = None) -> list[ThreadStreamEvent]:
        """Close the reply that is streaming, if any, with `text` or the text streamed."""
        message, self._message = self._message, None
        streamed, self._parts = "".join(self._parts), []
        text = streamed if text is None else text
        if message is None:
            return []
        done = message.model_copy(update={"content": [AssistantMessageContent(text=text)]})
        return [ThreadItemDoneEvent(item=done)]

    def _text(self, delta: str) -> list[ThreadStreamEvent]:
        events: list[ThreadStreamEvent] = []
        if self._message is None:
            self._message = AssistantMessageItem(
                id=self.new_id(),
                thread_id=self.thread_id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text="")],
            )
            events.append(ThreadItemAddedEvent(item=self._message))
        self._parts.append(delta)
        update = AssistantMessageContentPartTextDelta(content_index=0, delta=delta)
        events.append(ThreadItemUpdatedEvent(item_id=self._message.id, update=update))
        return events

    def _widget(self, widget: WidgetRoot, copy_text: str | None) -> ThreadStreamEvent:
        return ThreadItemDoneEvent(
            item=WidgetItem(
                id=self.new_id(),
                thread_id=self.thread_id,
                created_at=datetime.now(),
                widget=widget,
                copy_text=copy_text,
            )
        )
