"""A protocol-level ChatKit client for tests: builds requests from chatkit.types and validates
every SSE frame and JSON reply against the package's own models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from chatkit.types import (
    InferenceOptions,
    Page,
    Thread,
    ThreadItem,
    ThreadStreamEvent,
    UserMessageInput,
    UserMessageTextContent,
)
from pydantic import TypeAdapter

EVENT = TypeAdapter[ThreadStreamEvent](ThreadStreamEvent)
ITEMS = TypeAdapter[Page[ThreadItem]](Page[ThreadItem])
THREADS = TypeAdapter[Page[Thread]](Page[Thread])
THREAD = TypeAdapter[Thread](Thread)


def user_input(text: str) -> dict[str, Any]:
    message = UserMessageInput(
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )
    return message.model_dump(mode="json", exclude_none=True)


@dataclass
class ChatKitClient:
    http: httpx.AsyncClient
    path: str = "/chatkit"

    async def stream(self, op: str, params: dict[str, Any]) -> list[ThreadStreamEvent]:
        """A streaming op; every `data:` frame must parse as a ThreadStreamEvent."""
        response = await self.http.post(self.path, json={"type": op, "params": params})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for frame in response.text.split("\n\n"):
            if not frame.strip():
                continue
            assert frame.startswith("data: "), frame
            events.append(EVENT.validate_json(frame.removeprefix("data: ")))
        return events

    async def call(self, op: str, params: dict[str, Any]) -> httpx.Response:
        return await self.http.post(self.path, json={"type": op, "params": params})

    async def create_thread(self, text: str) -> list[ThreadStreamEvent]:
        return await self.stream("threads.create", {"input": user_input(text)})

    async def send(self, thread_id: str, text: str) -> list[ThreadStreamEvent]:
        return await self.stream(
            "threads.add_user_message", {"thread_id": thread_id, "input": user_input(text)}
        )

    async def items(self, thread_id: str, **params: Any) -> Page[ThreadItem]:
        response = await self.call("items.list", {"thread_id": thread_id, **params})
        assert response.status_code == 200, response.text
        return ITEMS.validate_json(response.content)

    async def threads(self, **params: Any) -> Page[Thread]:
        response = await self.call("threads.list", params)
        assert response.status_code == 200, response.text
        return THREADS.validate_json(response.content)

    async def thread(self, thread_id: str) -> Thread:
        response = await self.call("threads.get_by_id", {"thread_id": thread_id})
        assert response.status_code == 200, response.text
        return THREAD.validate_json(response.content)


def of_type(events: list[ThreadStreamEvent], type_: str) -> list[Any]:
    return [event for event in events if getattr(event, "type", None) == type_]


def thread_id_from(events: list[ThreadStreamEvent]) -> str:
    created = of_type(events, "thread.created")
    assert created, events
    return str(created[0].thread.id)


def assistant_text(events: list[ThreadStreamEvent]) -> str:
    done = [
        e.item for e in of_type(events, "thread.item.done") if e.item.type == "assistant_message"
    ]
    return "".join(part.text for item in done for part in item.content)
