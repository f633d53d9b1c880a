"""The AI SDK's UI message stream (protocol v1), what `useChat` reads (`POST /api/chat`).

SSE, one JSON chunk per `data:` line, then `data: [DONE]`:
- `start` (the assistant message's id), `start-step` / `finish-step` around each model step
  (a step ends once the tools it called have answered);
- the reply: `text-start`, `text-delta`, `text-end` (one text part per stretch of text);
- tool calls: `tool-input-available` then `tool-output-available`, so useChat shows a
  `tool-<name>` part with its input and output;
- a handoff: a `data-agent` part (`{"name"}`, one part updated in place: the desk answering);
- last, `finish` (finishReason `stop`), or `error` (`errorText`: the resident-fit message)
  then `finish` (finishReason `error`), after a `tool-output-error` for any call left without
  its output.
The client refuses a text delta without its `text-start`, and a tool output without its call,
so the writer keeps the open text part and the calls it has sent.
"""

from __future__ import annotations

import json
from typing import Any

from townhall.protocols.sse import DONE_FRAME
from townhall.turns.events import (
    AgentChanged,
    Failed,
    Finished,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEvent,
)
from townhall.turns.frame_log import Started

HEADERS = {"x-vercel-ai-ui-message-stream": "v1", "X-Accel-Buffering": "no"}


def chunk(**fields: Any) -> bytes:
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"data: {body}\n\n".encode(errors="replace")


class MessageWriter:
    """One assistant message's chunks, from the turn's events."""

    def __init__(self) -> None:
        self.message_id = ""
        self._in_step = False
        self._text_id: str | None = None
        self._calls: set[str] = set()  # the step's tool calls sent
        self._answered: set[str] = set()
        self._parts = 0

    def start(self, opened: Started) -> list[bytes]:
        # The turn's own message id: a client resuming the stream gets the same one, and the
        # AI SDK then replaces the message it has instead of adding a second.
        self.message_id = opened.message_id
        return [chunk(type="start", messageId=self.message_id)]

    def end(self) -> list[bytes]:
        return [DONE_FRAME]

    def render(self, event: TurnEvent) -> list[bytes]:
        if isinstance(event, TextDelta):
            if not event.text:
                return []
            return (
                self._step()
                + self._text_start()
                + [chunk(type="text-delta", id=self._text_id, delta=event.text)]
            )
        if isinstance(event, ToolCall):
            call_id = event.call_id or self._new_id("call")
            self._calls.add(call_id)
            sent = chunk(
                type="tool-input-available",
                toolCallId=call_id,
                toolName=event.name,
                input=event.arguments,
            )
            return self._step() + self._text_end() + [sent]
        if isinstance(event, ToolResult):
            if event.call_id not in self._calls:
                return []  # the client would refuse an output without its call
            self._answered.add(event.call_id)
            sent = chunk(
                type="tool-output-available", toolCallId=event.call_id, output=event.output
            )
            step_over = self._answered >= self._calls
            return [sent] + (self._step_end() if step_over else [])
        if isinstance(event, AgentChanged):  # the desk's words are a text part of their own
            return self._text_end() + [
                chunk(type="data-agent", id="agent", data={"name": event.name})
            ]
        if isinstance(event, Finished):
            return self._text_end() + self._step_end() + [chunk(type="finish", finishReason="stop")]
        if isinstance(event, Failed):
            # A call left without its output would show as running forever.
            unanswered = [
                chunk(type="tool-output-error", toolCallId=call_id, errorText=event.message)
                for call_id in sorted(self._calls - self._answered)
            ]
            return (
                self._text_end()
                + unanswered
                + self._step_end()
                + [chunk(type="error", errorText=event.message)]
                + [chunk(type="finish", finishReason="error")]
            )
        return []

    def _new_id(self, kind: str) -> str:
        self._parts += 1
        return f"{kind}_{self.message_id}_{self._parts}"

    def _step(self) -> list[bytes]:
        if self._in_step:
            return []
        self._in_step = True
        return [chunk(type="start-step")]

    def _step_end(self) -> list[bytes]:
        if not self._in_step:
            return []
        self._in_step = False
        self._calls, self._answered = set(), set()
        return self._text_end() + [chunk(type="finish-step")]

    def _text_start(self) -> list[bytes]:
        if self._text_id is not None:
            return []
        self._text_id = self._new_id("text")
        return [chunk(type="text-start", id=self._text_id)]

    def _text_end(self) -> list[bytes]:
        if self._text_id is None:
            return []
        text_id, self._text_id = self._text_id, None
        return [chunk(type="text-end", id=text_id)]
