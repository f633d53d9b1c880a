"""The Assistants API's run stream, for front ends built on openai-node's
`AssistantStream.fromReadableStream()` (`POST /chat/stream`).

That parser reads newline-delimited JSON, one `{"event", "data"}` object a line (not SSE), and
checks the order of what it reads, so exactly this is sent:

- `thread.run.created`, first;
- the reply: `thread.message.created`, `thread.message.delta` (text deltas),
  `thread.message.completed`;
- tool calls: `thread.run.step.created` (a `tool_calls` step), `thread.run.step.delta` with the
  call (name, arguments: the parser's `toolCallCreated`), another with its output
  (`toolCallDelta`), and `thread.run.step.completed` once every call of the step answered;
- last, `thread.run.completed` (with usage), or `thread.run.failed` with `last_error`
  `{code, message}` (the resident-fit message).

Tools run on the server, so a run never stops at `thread.run.requires_action`. A handoff between
desks has no Assistants event: the message before it is completed, and the desk's answer is a
new message. A step whose turn failed completes as `failed`. Keep-alives are empty lines, which
the parser skips.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from sse_starlette import ServerSentEvent

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


class BlankLine(ServerSentEvent):
    """The keep-alive of an NDJSON stream: an empty line."""

    def encode(self) -> bytes:
        return b"\n"


def _line(event: str, data: dict[str, Any]) -> bytes:
    return (
        json.dumps({"event": event, "data": data}, ensure_ascii=False, separators=(",", ":")) + "\n"
    ).encode(errors="replace")


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


class RunWriter:
    """One run's events, from the turn's: keeps the open message and step, and their ids.
    (`RunWriter(thread_id)` is the FrameWriter of protocols.sse.written.)"""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = "run_" + secrets.token_hex(12)
        self.created_at = int(time.time())
        self._message_id: str | None = None
        self._text: list[str] = []
        self._step_id: str | None = None
        self._calls: list[dict[str, Any]] = []  # the open step's calls, by index
        self._outputs: dict[int, str] = {}  # their outputs, as they came
        self._sent = 0  # calls whose creation and output have both been sent
        self._created = 0  # calls whose creation has been sent

    def _run(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "object": "thread.run",
            "created_at": self.created_at,
            "thread_id": self.thread_id,
            "assistant_id": "town-hall",
            "status": status,
            **extra,
        }

    def start(self, opened: Started) -> list[bytes]:
        return [_line("thread.run.created", self._run("queued"))]

    def end(self) -> list[bytes]:
        return []

    def render(self, event: TurnEvent) -> list[bytes]:
        if isinstance(event, TextDelta):
            if not event.text:
                return []
            return self._step_done() + self._text_delta(event.text)
        if isinstance(event, ToolCall):
            return self._message_done() + self._tool_call(event)
        if isinstance(event, ToolResult):
            return self._tool_result(event)
        if isinstance(event, AgentChanged):
            # Another agent answers from here: what was said before it is a message of its own.
            return self._message_done()
        if isinstance(event, Finished):
            final = event.reply if isinstance(event.reply, str) else None
            usage = {
                "prompt_tokens": event.usage.get("input_tokens", 0),
                "completion_tokens": event.usage.get("output_tokens", 0),
                "total_tokens": event.usage.get("total_tokens", 0),
            }
            completed = _line("thread.run.completed", self._run("completed", usage=usage))
            return self._message_done(final) + self._step_done() + [completed]
        if isinstance(event, Failed):
            last_error = {"code": event.code, "message": event.message}
            failed = _line("thread.run.failed", self._run("failed", last_error=last_error))
            return self._message_done() + self._step_done("failed") + [failed]
        return []

    def _message(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._message_id,
            "object": "thread.message",
            "created_at": int(time.time()),
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def _text_delta(self, text: str) -> list[bytes]:
        lines = []
        if self._message_id is None:
            self._message_id = "msg_" + secrets.token_hex(12)
            lines.append(_line("thread.message.created", self._message("in_progress", [])))
        self._text.append(text)
        delta = {"content": [{"index": 0, "type": "text", "text": {"value": text}}]}
        lines.append(
            _line(
                "thread.message.delta",
                {"id": self._message_id, "object": "thread.message.delta", "delta": delta},
            )
        )
        return lines

    def _message_done(self, final: str | None = None) -> list[bytes]:
        """Complete the open message, with `final` as its text when the model gave it whole
        (the deltas need not join to it exactly: the echo model streams bare words)."""
        if self._message_id is None:
            return []
        text = "".join(self._text) if final is None else final
        content = [{"type": "text", "text": {"value": text, "annotations": []}}]
        done = _line("thread.message.completed", self._message("completed", content))
        self._message_id, self._text = None, []
        return [done]

    def _step(self, status: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._step_id,
            "object": "thread.run.step",
            "created_at": int(time.time()),
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "type": "tool_calls",
            "status": status,
            "step_details": {"type": "tool_calls", "tool_calls": tool_calls},
        }

    def _step_delta(self, call: dict[str, Any]) -> bytes:
        delta = {"step_details": {"type": "tool_calls", "tool_calls": [call]}}
        return _line(
            "thread.run.step.delta",
            {"id": self._step_id, "object": "thread.run.step.delta", "delta": delta},
        )

    def _tool_call(self, event: ToolCall) -> list[bytes]:
        lines = []
        if self._step_id is None:
            self._step_id = "step_" + secrets.token_hex(12)
            lines.append(_line("thread.run.step.created", self._step("in_progress", [])))
        index = len(self._calls)
        self._calls.append(
            {
                "id": event.call_id or f"call_{index}",
                "type": "function",
                "function": {
                    "name": event.name,
                    "arguments": _json_text(event.arguments),
                    "output": None,
                },
            }
        )
        return lines + self._flush()

    def _tool_result(self, event: ToolResult) -> list[bytes]:
        index = next((i for i, call in enumerate(self._calls) if call["id"] == event.call_id), None)
        if index is None:
            return []
        self._outputs[index] = _json_text(event.output)
        self._calls[index]["function"]["output"] = self._outputs[index]
        lines = self._flush()
        if self._sent == len(self._calls):
            lines += self._step_done()
        return lines

    def _flush(self) -> list[bytes]:
        """The deltas that can go out now, call by call: the parser takes one call's deltas
        (its creation, then its output) before the next call's, and would announce a call again
        if they interleaved. Tools run at once, so a later call's output may wait here."""
        lines = []
        while self._sent < len(self._calls):
            index = self._sent
            if self._created == index:
                created = {"index": index, **self._calls[index]}
                created["function"] = created["function"] | {"output": None}
                lines.append(self._step_delta(created))
                self._created += 1
            if index not in self._outputs:
                break
            output = {"output": self._outputs[index]}
            lines.append(self._step_delta({"index": index, "type": "function", "function": output}))
            self._sent += 1
        return lines

    def _step_done(self, status: str = "completed") -> list[bytes]:
        if self._step_id is None:
            return []
        done = _line("thread.run.step.completed", self._step(status, self._calls))
        self._step_id, self._calls, self._outputs = None, [], {}
        self._sent = self._created = 0
        return [done]
