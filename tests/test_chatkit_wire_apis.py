"""ChatKit threads against a fake OpenAI-compatible upstream on both wire APIs.

The history ChatKit replays each turn (user and assistant messages) must be accepted by the
Responses API path and by the Chat Completions path (OPENAI_BASE_URL, OpenAIChatCompletionsModel)
alike, and every answer must be kept as its own thread item."""

from __future__ import annotations

from typing import Any

import pytest

from api import create_app
from tests.support.app import asgi_client
from tests.support.chatkit_client import ChatKitClient, assistant_text, of_type, thread_id_from
from tests.support.upstream import Upstream

APIS = ["responses", "chat_completions"]


@pytest.mark.parametrize("api", APIS)
async def test_a_three_message_thread_is_answered_on_both_wire_apis(
    api: str, upstream: Upstream
) -> None:
    fake = upstream.fake
    app = create_app(upstream.settings(api, model_max_retries=0))
    async with asgi_client(app) as http:
        client = ChatKitClient(http)
        first = await client.create_thread("potholes on main street")
        thread_id = thread_id_from(first)
        second = await client.send(thread_id, "near the bus stop")
        third = await client.send(thread_id, "quite deep")
        items = await client.items(thread_id, order="asc", limit=10)
    assert [of_type(events, "error") for events in (first, second, third)] == [[], [], []]
    # The fake prefixes each answer with how many user messages it saw: the history was replayed.
    assert assistant_text(first) == "[1] potholes on main"
    assert assistant_text(second) == "[2] near the bus"
    assert assistant_text(third) == "[3] quite deep quite"
    # Each answer is its own thread item, even though Chat Completions gives messages no ids.
    assert [i.type for i in items.data] == ["user_message", "assistant_message"] * 3
    assert len({i.id for i in items.data}) == 6
    assert fake.served == 3
    # The last request carried both earlier answers as assistant turns, in order.
    last = fake.requests[-1]
    history = last["input"] if api == "responses" else last["messages"]
    assistant_turns = [m for m in history if m.get("role") == "assistant"]
    assert [_text_of(m["content"]) for m in assistant_turns] == [
        "[1] potholes on main",
        "[2] near the bus",
    ]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
