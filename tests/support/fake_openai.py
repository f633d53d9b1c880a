"""A fake OpenAI-compatible server on 127.0.0.1: the Responses API and Chat Completions, streamed.

Shared by the fault suite and the benchmark. It answers with the last user message's words
(prefixed by how many user messages it saw, so memory across turns is observable), `tokens` long,
`delay` seconds apart, and can be told to fail the next requests in a given way:

    429        answer 429 with Retry-After: 0
    500        answer 500
    hang       accept, then send nothing (until the client gives up, or 60 s)
    cut        stream half the answer, then drop the connection
    malformed  stream half the answer, then an event that is not JSON

Control it in-process (`FakeOpenAI.faults.extend([...])`) or over HTTP (`POST /_control` with
{"faults": [...], "tokens": N, "delay": s}). Run it alone:
`python tests/support/fake_openai.py --port N`.
Events are pre-encoded byte templates, so it is cheap enough never to be a benchmark's bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

FAULTS = ("429", "500", "hang", "cut", "malformed")


@dataclass
class FakeOpenAI:
    tokens: int = 20
    delay: float = 0.0
    faults: deque[str] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    keep_requests: bool = True
    served: int = 0
    open_streams: int = 0
    sent_bytes: int = 0  # stream bytes handed to the server under it (what a client has pulled)
    faults_injected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    _ids: Any = field(default_factory=itertools.count)

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _read_body(receive)
        path = scope["path"]
        if path == "/_control":
            await self._control(json.loads(body or b"{}"), send)
        elif path == "/_stats":
            await _json(send, 200, self.stats())
        elif path.endswith("/responses"):
            await self._answer(json.loads(body), send, receive, responses=True)
        elif path.endswith("/chat/completions"):
            await self._answer(json.loads(body), send, receive, responses=False)
        else:
            await _json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def stats(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "open_streams": self.open_streams,
            "sent_bytes": self.sent_bytes,
            "faults_injected": self.faults_injected,
        }

    async def _control(self, command: dict[str, Any], send: Send) -> None:
        self.faults.extend(command.get("faults", []))
        self.tokens = int(command.get("tokens", self.tokens))
        self.delay = float(command.get("delay", self.delay))
        await _json(send, 200, self.stats())

    async def _answer(
        self, request: dict[str, Any], send: Send, receive: Receive, *, responses: bool
    ) -> None:
        self.served += 1
        if self.keep_requests:
            self.requests.append(request)
        fault = (self.faults.popleft() if self.faults else None) or None  # "" means: no fault
        if fault is not None:
            self.faults_injected[fault] += 1
        if fault == "429":
            await _json(send, 429, _error("rate_limit_exceeded", "slow down"), {"retry-after": "0"})
            return
        if fault == "500":
            await _json(send, 500, _error("server_error", "the fake broke"))
            return
        words = _answer_words(request, responses, self.tokens)
        stream: ResponsesStream | ChatStream
        tool = _report_step(request, responses)
        if tool is not None:
            arguments = _report_arguments(request, responses) if tool == "report_incident" else {}
            if responses:
                stream = ToolCallStream(words, next(self._ids), tool, arguments)
            else:
                stream = ChatToolCallStream(next(self._ids), tool, arguments)
        elif responses:
            stream = ResponsesStream(words, next(self._ids))
        else:
            stream = ChatStream(words)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        self.open_streams += 1
        gone = asyncio.Event()  # the client disconnected: stop, as a real upstream would
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            await self._stream(stream, fault, send, gone)
        finally:
            watcher.cancel()
            self.open_streams -= 1

    async def _stream(
        self,
        stream: ResponsesStream | ChatStream,
        fault: str | None,
        send: Send,
        gone: asyncio.Event,
    ) -> None:
        if fault == "hang":
            await send({"type": "http.response.body", "body": stream.head(), "more_body": True})
            # Silent until the client gives up, 60 s at most.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), 60)
            return
        chunks = stream.chunks()
        cut_at = len(chunks) // 2 if fault in {"cut", "malformed"} else None
        # Paced on an absolute schedule: token i is due at t0 + i * delay, and a late one goes
        # out at once. Sleeping `delay` after each token instead would slow the fake down with
        # the machine, and a server's overload would never show (coordinated omission).
        loop = asyncio.get_running_loop()
        started, tokens_sent = loop.time(), 0
        for index, chunk in enumerate(chunks):
            if gone.is_set():
                return
            if index == cut_at:
                if fault == "malformed":
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: {not json\n\n",
                            "more_body": True,
                        }
                    )
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                # An exception after the response started makes uvicorn drop the connection.
                raise ConnectionAbortedError("fake upstream cut the stream (injected)")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.sent_bytes += len(chunk)
            if self.delay and stream.is_token(index):
                tokens_sent += 1
                wait = started + tokens_sent * self.delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _answer_words(request: dict[str, Any], responses: bool, tokens: int) -> list[str]:
    users = _user_texts(request, responses)
    words = (users[-1].split() if users else []) or ["ok"]
    prefix = [f"[{len(users)}]"]
    body = [words[i % len(words)] for i in range(max(tokens - 1, 1))]
    return prefix + body


def _user_texts(request: dict[str, Any], responses: bool) -> list[str]:
    items = request.get("input") if responses else request.get("messages")
    if isinstance(items, str):
        return [items]
    texts = []
    for item in items or []:
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            texts.append(str(content))
    return texts


class ResponsesStream:
    """The Responses API event sequence for one text message, as pre-encoded bytes."""

    def __init__(self, words: list[str], n: int) -> None:
        self.words = words
        self.text = " ".join(words)
        self.response_id = f"resp_fake_{n}"
        self.item_id = f"msg_fake_{n}"
        self._seq = itertools.count()

    def _event(self, payload: dict[str, Any]) -> bytes:
        payload["sequence_number"] = next(self._seq)
        return (
            b"event: "
            + payload["type"].encode()
            + b"\ndata: "
            + json.dumps(payload, separators=(",", ":")).encode()
            + b"\n\n"
        )

    def _response(self, status: str, output: list[Any]) -> dict[str, Any]:
        usage = None
        if status == "completed":
            usage = {
                "input_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": len(self.words),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 10 + len(self.words),
            }
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": 0,
            "status": status,
            "model": "fake",
            "output": output,
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "top_p": None,
            "usage": usage,
        }

    def _message(self, status: str, text: str | None) -> dict[str, Any]:
        content = (
            []
            if text is None
            else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        )
        return {
            "id": self.item_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def head(self) -> bytes:
        return self._event(
            {"type": "response.created", "response": self._response("in_progress", [])}
        )

    def chunks(self) -> list[bytes]:
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        chunks = [
            self.head(),
            self._event(
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": self._message("in_progress", None),
                }
            ),
            self._event({"type": "response.content_part.added", "part": part, **where}),
        ]
        self._first_token = len(chunks)
        for i, word in enumerate(self.words):
            delta = word if i == 0 else " " + word
            chunks.append(
                self._event(
                    {"type": "response.output_text.delta", "delta": delta, "logprobs": [], **where}
                )
            )
        self._after_tokens = len(chunks)
        done_part = part | {"text": self.text}
        message = self._message("completed", self.text)
        chunks += [
            self._event(
                {"type": "response.output_text.done", "text": self.text, "logprobs": [], **where}
            ),
            self._event({"type": "response.content_part.done", "part": done_part, **where}),
            self._event({"type": "response.output_item.done", "output_index": 0, "item": message}),
            self._event(
                {"type": "response.completed", "response": self._response("completed", [message])}
            ),
        ]
        return chunks

    def is_token(self, index: int) -> bool:
        return self._first_token <= index < self._after_tokens


def _report_step(request: dict[str, Any], responses: bool = True) -> str | None:
    """The tool the fake calls for a last user message starting `REPORT:`: `report_incident`
    once it is offered (at the Incident desk), and before that the handoff to the desk; None
    when the message is no report or the tool has been called since it. (Responses `input`
    items or Chat Completions `messages`.)"""
    items = request.get("input") if responses else request.get("messages")
    if not isinstance(items, list):
        return None
    users = [
        i for i, item in enumerate(items) if isinstance(item, dict) and item.get("role") == "user"
    ]
    if not users or not str(_content_text(items[users[-1]].get("content"))).startswith("REPORT:"):
        return None
    called = set()
    for item in items[users[-1] :]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            called.add(item.get("name"))
        for call in item.get("tool_calls") or []:  # Chat Completions
            called.add((call.get("function") or {}).get("name"))
    offered = {
        tool.get("name") or (tool.get("function") or {}).get("name")
        for tool in request.get("tools") or []
        if isinstance(tool, dict)
    }
    if "report_incident" in offered:
        return None if "report_incident" in called else "report_incident"
    if "transfer_to_incident_desk" in offered and not called:
        return "transfer_to_incident_desk"
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def _report_arguments(request: dict[str, Any], responses: bool = True) -> dict[str, Any]:
    text = _user_texts(request, responses)[-1].removeprefix("REPORT:").strip() or "something"
    return {
        "category": "pothole",
        "description": f"Pothole reported: {text}",
        "location": f"Main Street {len(text)}",
        "severity": 3,
        "occurred_at": None,
        "people_involved": None,
        "reporter_name": None,
        "reporter_contact": None,
    }


class ToolCallStream(ResponsesStream):
    """A response that calls the tool `name` (for end-to-end runs that file records)."""

    def __init__(self, words: list[str], n: int, name: str, arguments: dict[str, Any]) -> None:
        super().__init__(words, n)
        self.arguments = json.dumps(arguments, separators=(",", ":"))
        self.call = {
            "id": f"fc_fake_{n}",
            "call_id": f"call_fake_{n}",
            "type": "function_call",
            "name": name,
            "arguments": "",
            "status": "in_progress",
        }

    def chunks(self) -> list[bytes]:
        done = self.call | {"arguments": self.arguments, "status": "completed"}
        where = {"item_id": self.call["id"], "output_index": 0}
        self._first_token = self._after_tokens = 0
        return [
            self.head(),
            self._event(
                {"type": "response.output_item.added", "output_index": 0, "item": self.call}
            ),
            self._event(
                {"type": "response.function_call_arguments.delta", "delta": self.arguments, **where}
            ),
            self._event(
                {
                    "type": "response.function_call_arguments.done",
                    "arguments": self.arguments,
                    **where,
                }
            ),
            self._event({"type": "response.output_item.done", "output_index": 0, "item": done}),
            self._event(
                {"type": "response.completed", "response": self._response("completed", [done])}
            ),
        ]


class ChatStream:
    """Chat Completions chunks for one answer, as pre-encoded bytes."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            payload["usage"] = usage
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def head(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def chunks(self) -> list[bytes]:
        chunks = [self.head()]
        chunks += [
            self._chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(self.words)
        ]
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": len(self.words),
            "total_tokens": 10 + len(self.words),
        }
        chunks += [self._chunk({}, "stop", usage), b"data: [DONE]\n\n"]
        return chunks

    def is_token(self, index: int) -> bool:
        return 1 <= index <= len(self.words)


class ChatToolCallStream(ChatStream):
    """Chat Completions chunks that call the tool `name` (the call, then its arguments)."""

    def __init__(self, n: int, name: str, arguments: dict[str, Any]) -> None:
        super().__init__([])
        self.call = {"index": 0, "id": f"call_fake_{n}", "type": "function"}
        self.name = name
        self.arguments = json.dumps(arguments, separators=(",", ":"))

    def chunks(self) -> list[bytes]:
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        return [
            self.head(),
            self._chunk(
                {"tool_calls": [self.call | {"function": {"name": self.name, "arguments": ""}}]}
            ),
            self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": self.arguments}}]}),
            self._chunk({}, "tool_calls", usage),
            b"data: [DONE]\n\n",
        ]

    def is_token(self, index: int) -> bool:
        return False


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _json(
    send: Send, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeOpenAI(tokens=args.tokens, delay=args.delay, keep_requests=False)
    uvicorn.run(fake, host="127.0.0.1", port=args.port, log_level="warning")
