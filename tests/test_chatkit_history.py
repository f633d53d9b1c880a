"""ChatKit thread items as agent input both wire APIs accept, and history repaired after a turn
cancelled mid-tool-call.

ChatKit's own converter replays an assistant message as an easy input message with output_text
parts, which the Agents SDK's Chat Completions converter refuses (`UserError: Unknown content`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from agents import TResponseInputItem, UserError
from agents.models.chatcmpl_converter import Converter
from chatkit.agents import ThreadItemConverter
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ClientToolCallItem,
    EndOfTurnItem,
    HiddenContextItem,
    InferenceOptions,
    ThreadItem,
    UserMessageItem,
    UserMessageTextContent,
)
from openai.types.responses import ResponseInputItemParam
from pydantic import TypeAdapter

from townhall.protocols.chatkit.history import HistoryConverter
from townhall.sessions.registry import drop_unanswered_tool_calls

THREAD = "thr_1"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RESPONSES_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseInputItemParam)


def user(item_id: str, text: str) -> UserMessageItem:
    return UserMessageItem(
        id=item_id,
        thread_id=THREAD,
        created_at=NOW,
        content=[UserMessageTextContent(text=text)],
        inference_options=InferenceOptions(),
    )


def assistant(item_id: str, *texts: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=THREAD,
        created_at=NOW,
        content=[AssistantMessageContent(text=text) for text in texts],
    )


def three_messages() -> list[ThreadItem]:
    return [
        user("msg_1", "There is a pothole on Main Street"),
        assistant("msg_2", "I filed it as INC-7K2QF9."),
        user("msg_3", "Thanks, what is its status?"),
    ]


def roles_and_texts(messages: list[Any]) -> list[tuple[str, str]]:
    out = []
    for message in messages:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p["text"] for p in content)
        out.append((message["role"], text))
    return out


async def test_a_three_message_thread_is_accepted_by_chat_completions() -> None:
    agent_input = await HistoryConverter().to_agent_input(three_messages())
    messages = Converter.items_to_messages(agent_input)
    assert roles_and_texts(messages) == [
        ("user", "There is a pothole on Main Street"),
        ("assistant", "I filed it as INC-7K2QF9."),
        ("user", "Thanks, what is its status?"),
    ]


async def test_chatkits_own_converter_is_refused_there() -> None:
    """The regression guarded above: without the override the SDK refuses the history."""
    agent_input = await ThreadItemConverter().to_agent_input(three_messages())
    with pytest.raises(UserError, match="Unknown content"):
        Converter.items_to_messages(agent_input)


async def test_the_assistant_message_is_plain_text_for_the_responses_api() -> None:
    agent_input = await HistoryConverter().to_agent_input(three_messages())
    assert agent_input[1] == {
        "type": "message",
        "role": "assistant",
        "content": "I filed it as INC-7K2QF9.",
    }
    assert agent_input[0] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "There is a pothole on Main Street"}],
    }
    for item in agent_input:  # each a valid Responses input item as it stands
        assert RESPONSES_ITEM.validate_python(item) == item


async def test_an_assistant_message_in_several_parts_keeps_every_part_in_order() -> None:
    [item] = await HistoryConverter().to_agent_input([assistant("msg_1", "First.", "Second.")])
    assert item == {"type": "message", "role": "assistant", "content": "First.\nSecond."}
    assert Converter.items_to_messages([item]) == [
        {"role": "assistant", "content": "First.\nSecond."}
    ]


async def test_tool_calls_hidden_context_and_turn_markers_convert_for_both_apis() -> None:
    items: list[ThreadItem] = [
        user("msg_1", "Report a streetlight out"),
        ClientToolCallItem(
            id="tc_1",
            thread_id=THREAD,
            created_at=NOW,
            status="completed",
            call_id="call_done",
            name="locate",
            arguments={"street": "Elm"},
            output={"lat": 1.5},
        ),
        ClientToolCallItem(  # still waiting for the client: not sent to the model
            id="tc_2",
            thread_id=THREAD,
            created_at=NOW,
            call_id="call_pending",
            name="locate",
            arguments={},
        ),
        HiddenContextItem(id="hc_1", thread_id=THREAD, created_at=NOW, content="zone 4"),
        assistant("msg_2", "Filed as INC-222222."),
        EndOfTurnItem(id="eot_1", thread_id=THREAD, created_at=NOW),
    ]
    agent_input = await HistoryConverter().to_agent_input(items)
    assert [(i.get("type"), i.get("role"), i.get("call_id")) for i in agent_input] == [
        ("message", "user", None),
        ("function_call", None, "call_done"),
        ("function_call_output", None, "call_done"),
        ("message", "user", None),
        ("message", "assistant", None),
    ]
    messages: list[Any] = Converter.items_to_messages(agent_input)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user", "assistant"]
    assert messages[1]["tool_calls"][0]["function"] == {
        "name": "locate",
        "arguments": '{"street": "Elm"}',
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "call_done", "content": '{"lat": 1.5}'}
    assert "zone 4" in roles_and_texts([messages[3]])[0][1]
    assert messages[4] == {"role": "assistant", "content": "Filed as INC-222222."}
    for item in agent_input:
        RESPONSES_ITEM.validate_python(item)


def _call(call_id: str) -> TResponseInputItem:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": "report_incident",
        "arguments": "{}",
    }


def _output(call_id: str) -> TResponseInputItem:
    return {"type": "function_call_output", "call_id": call_id, "output": '{"ok": true}'}


def _message(role: str, text: str) -> TResponseInputItem:
    return {"type": "message", "role": role, "content": text}  # type: ignore[return-value,misc]


def test_a_tool_call_without_its_output_is_dropped() -> None:
    items = [
        _message("user", "one"),
        _call("answered"),
        _output("answered"),
        _message("assistant", "two"),
        _message("user", "three"),
        _call("cut_off"),  # the turn was cancelled before the tool answered
    ]
    assert drop_unanswered_tool_calls(items) == items[:5]


def test_answered_calls_and_messages_keep_their_order() -> None:
    items = [
        _message("user", "first"),
        _call("a"),
        _call("lost"),
        _call("b"),
        _output("b"),
        _output("a"),
        _output("orphan"),  # an output whose call is gone goes too
        _message("assistant", "last"),
    ]
    kept = drop_unanswered_tool_calls(items)
    assert kept == [items[0], items[1], items[3], items[4], items[5], items[7]]
    Converter.items_to_messages(kept)  # what is left is a history the SDK accepts


def test_history_without_tool_calls_is_unchanged() -> None:
    items = [_message("user", "hi"), _message("assistant", "hello")]
    assert drop_unanswered_tool_calls(iter(items)) == items
    assert drop_unanswered_tool_calls([]) == []


def test_sdk_item_objects_are_read_as_well_as_dicts() -> None:
    """Stored sessions may hand back pydantic items rather than dicts."""
    from openai.types.responses import ResponseFunctionToolCall

    answered = ResponseFunctionToolCall(
        type="function_call", call_id="obj", name="report_incident", arguments="{}"
    )
    unanswered = ResponseFunctionToolCall(
        type="function_call", call_id="obj_lost", name="report_incident", arguments="{}"
    )
    items: list[Any] = [answered, _output("obj"), unanswered]
    assert drop_unanswered_tool_calls(items) == [answered, items[1]]
