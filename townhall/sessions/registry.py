"""Conversations kept in memory: a lean Agents SDK session per conversation, in a bounded registry.

Bounds: at most `max_sessions` conversations (the least recently used idle one is evicted to make
room) and idle conversations expire after `ttl_seconds`. A conversation answers one message at a
time: `begin_turn` refuses a second while a turn is running.

The registry is owned by the event loop: its methods never await, so each runs atomically with
respect to other requests, and no thread touches it (tools get their data through the run context).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agents.items import TResponseInputItem
from agents.memory import SessionSettings

from townhall.errors import SessionBusyError, SessionCapacityError, SessionNotFoundError

Clock = Callable[[], float]


def new_conversation_id() -> str:
    """The id of a conversation instance, minted when it is created: a label deleted and used
    again names a new instance, and records filed in the old one stay with the old one."""
    return "conv_" + secrets.token_urlsafe(16)


def drop_unanswered_tool_calls(items: Iterable[TResponseInputItem]) -> list[TResponseInputItem]:
    """History without tool calls that never got an output, and outputs with no call.

    A turn cancelled between a tool call and its result would otherwise leave a call that the
    OpenAI API rejects on every later turn ("No tool output found for function call").
    """
    items = list(items)
    calls = {_get(item, "call_id") for item in items if _get(item, "type") == "function_call"}
    outputs = {
        _get(item, "call_id") for item in items if _get(item, "type") == "function_call_output"
    }
    answered = calls & outputs
    return [
        item
        for item in items
        if _get(item, "type") not in {"function_call", "function_call_output"}
        or _get(item, "call_id") in answered
    ]


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


class MemorySession:
    """The SDK's `Session` protocol over a plain list: ~1 KiB per conversation, not ~80 KiB."""

    __slots__ = ("_items", "session_id", "session_settings")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.session_settings: SessionSettings | None = None
        self._items: list[TResponseInputItem] = []

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        items = drop_unanswered_tool_calls(self._items)
        return items[-limit:] if limit else items

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        self._items.extend(items)

    async def pop_item(self) -> TResponseInputItem | None:
        return self._items.pop() if self._items else None

    async def clear_session(self) -> None:
        self._items.clear()


@dataclass(eq=False, slots=True)
class Conversation:
    """One conversation: its history and what the registry needs to bound and serialise it."""

    session_id: str
    history: MemorySession
    conversation_id: str  # minted at creation (new_conversation_id)
    created_at: float
    last_active: float
    turns: int = 0
    busy: bool = False
    owner: str | None = None
    # Set while a turn runs; DELETE /sessions/{id} calls it to stop the turn.
    cancel_turn: Callable[[], None] | None = field(default=None, repr=False)


class SessionRegistry:
    """Bounded, expiring map of session id to conversation."""

    def __init__(self, max_sessions: int, ttl_seconds: float, clock: Clock = time.time) -> None:
        self.max_sessions = max_sessions
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._conversations)

    def begin_turn(self, session_id: str, owner: str | None = None) -> Conversation:
        """Get or create the conversation and mark it busy; 409 if it already is."""
        self.expire_idle()
        conversation = self._conversations.get(session_id) or self._create(session_id, owner)
        if conversation.busy:
            raise SessionBusyError(session_id)
        conversation.busy = True
        conversation.last_active = self._clock()
        self._conversations.move_to_end(session_id)
        return conversation

    def end_turn(self, conversation: Conversation, *, completed: bool) -> None:
        conversation.busy = False
        conversation.cancel_turn = None
        conversation.last_active = self._clock()
        if completed:
            conversation.turns += 1
        if self._conversations.get(conversation.session_id) is conversation:
            self._conversations.move_to_end(conversation.session_id)

    def peek(self, session_id: str) -> Conversation | None:
        self.expire_idle()
        return self._conversations.get(session_id)

    def get(self, session_id: str) -> Conversation:
        self.expire_idle()
        conversation = self._conversations.get(session_id)
        if conversation is None:
            raise SessionNotFoundError(session_id)
        return conversation

    def list(self) -> list[Conversation]:
        self.expire_idle()
        return list(self._conversations.values())

    def forget(self, session_id: str) -> Conversation:
        """Stop the conversation's running turn, if any, and drop it."""
        conversation = self.get(session_id)
        if conversation.cancel_turn is not None:
            conversation.cancel_turn()
        del self._conversations[session_id]
        return conversation

    def expire_idle(self) -> int:
        """Drop idle conversations older than the TTL; returns how many went.

        Runs on every access, so it must not scan every conversation: the map is kept in order
        of last activity, so the scan stops at the first idle conversation still fresh. (Busy
        ones are skipped, not stopped at: a long turn keeps its place until it ends.)
        """
        deadline = self._clock() - self.ttl_seconds
        expired = []
        for session_id, conversation in self._conversations.items():
            if conversation.busy:
                continue
            if conversation.last_active > deadline:
                break
            expired.append(session_id)
        for session_id in expired:
            del self._conversations[session_id]
        return len(expired)

    def _create(self, session_id: str, owner: str | None) -> Conversation:
        if len(self._conversations) >= self.max_sessions:
            self._evict_least_recent_idle()
        now = self._clock()
        conversation = Conversation(
            session_id, MemorySession(session_id), new_conversation_id(), now, now, owner=owner
        )
        self._conversations[session_id] = conversation
        return conversation

    def _evict_least_recent_idle(self) -> None:
        # The OrderedDict is kept in recency order, oldest first.
        for session_id, conversation in self._conversations.items():
            if not conversation.busy:
                del self._conversations[session_id]
                return
        raise SessionCapacityError(self.max_sessions)


def history_messages(items: Iterable[TResponseInputItem]) -> list[dict[str, Any]]:
    """Stored SDK items as plain `role`/`content` messages (tool calls and results as `tool`)."""
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for item in items:
        kind, role = _get(item, "type"), _get(item, "role")
        if kind == "function_call":
            names[_get(item, "call_id")] = _get(item, "name")
            messages.append(
                {
                    "role": "tool",
                    "content": valid_text(_get(item, "arguments") or ""),
                    "name": _get(item, "name"),
                    "call_id": _get(item, "call_id"),
                }
            )
        elif kind == "function_call_output":
            call_id = _get(item, "call_id")
            messages.append(
                {
                    "role": "tool",
                    "content": _text(_get(item, "output")),
                    "name": names.get(call_id),
                    "call_id": call_id,
                }
            )
        elif role in {"user", "assistant", "system"}:
            messages.append({"role": role, "content": _text(_get(item, "content"))})
    return messages


def _text(content: Any) -> str:
    if isinstance(content, str):
        return valid_text(content)
    if isinstance(content, list):
        return valid_text(
            "".join(str(_get(part, "text") or _get(part, "refusal") or "") for part in content)
        )
    return "" if content is None else valid_text(str(content))


def valid_text(text: str) -> str:
    """`text` with any lone surrogate as "?": a model may send one as a JSON escape, and it
    cannot be written as UTF-8 (a JSON response holding it fails)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="replace").decode()
    return text
