"""A real HTTP server on 127.0.0.1 that records the requests it gets and answers a Responses
stream (or an error status), and the Agents SDK's request arguments for a town-hall turn with a
history, tools and model settings: for comparing two ways of sending the same request."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from agents import ModelSettings
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI
from starlette.types import Receive, Scope, Send

from agents_def import build_agents
from tools import TOWN_HALL_TOOLS

SSE = b'data: {"type":"response.created"}\n\n'
CHAT_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Filed."},
        }
    ],
}
# Differ by nature between two requests (or set by the client per attempt), not by the path.
VARYING_HEADERS = {"x-stainless-retry-count", "x-stainless-read-timeout", "content-length"}


class Recorder:
    """Answers every request with `statuses` in turn (then 200) and records what it got."""

    def __init__(self, chat: bool = False) -> None:
        self.chat = chat  # answer as Chat Completions (a whole completion, or a chunk stream)
        self.requests: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(
            {
                "path": scope["path"],
                "query": scope["query_string"],
                "headers": headers,
                "body": body,
            }
        )
        status = self.statuses.popleft() if self.statuses else 200
        if status != 200:
            error = {"error": {"message": "no", "type": "invalid_request_error", "code": None}}
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": json.dumps(error).encode()})
            return
        content_type, answer = b"text/event-stream", SSE
        if self.chat and not json.loads(body).get("stream"):
            content_type, answer = b"application/json", json.dumps(CHAT_COMPLETION).encode()
        elif self.chat:
            answer = b"data: [DONE]\n\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type), (b"x-request-id", b"req_1")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


HISTORY: list[Any] = [
    {"role": "user", "content": "There is a pothole on Main Street"},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "report_incident",
        "arguments": json.dumps({"category": "pothole", "description": "Main St", "location": "x"}),
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "Filed as INC-1A2B3C4D"},
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Filed.", "annotations": []}],
    },
    {"role": "user", "content": "Thanks! And lockers at Ginza station, please."},
]

SETTINGS = [
    ModelSettings(),
    ModelSettings(
        temperature=0.3,
        top_p=0.9,
        max_tokens=500,
        parallel_tool_calls=False,
        tool_choice="auto",
        metadata={"session": "abc"},
        extra_body={"custom": {"nested": [1, 2]}},
        extra_headers={"X-Custom": "yes"},
        extra_query={"q": "1"},
        store=False,
    ),
]


def create_kwargs(client: AsyncOpenAI, settings: ModelSettings) -> dict[str, Any]:
    model = OpenAIResponsesModel("gpt-test", client)
    agent = build_agents(model, settings, TOWN_HALL_TOOLS).first
    return model._build_response_create_kwargs(
        system_instructions="You are the town hall's assistant.",
        input=HISTORY,
        model_settings=settings,
        tools=list(agent.tools),
        output_schema=None,
        handoffs=[],
        previous_response_id=None,
        conversation_id=None,
        stream=True,
        prompt=None,
    )
