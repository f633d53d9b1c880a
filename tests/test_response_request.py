"""The Responses request opened without the client's transform (response_request.py) is the
request `client.responses.create(stream=True)` sends: the same JSON body and headers for the Agents
SDK's own request arguments (instructions, a history with a tool call and its output, the
town-hall tools' schemas, model settings with extra body, headers and query), and the same
client behaviour around it (an error status raises the same exception, a 500 is retried).
Checked against a real HTTP server on 127.0.0.1 that records what it gets."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from agents import ModelSettings, ModelTracing, generation_span
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from openai import AsyncOpenAI

from agents_def import build_agents
from tests.support.app import live_server
from tests.support.recording_upstream import (
    HISTORY,
    SETTINGS,
    VARYING_HEADERS,
    Recorder,
    create_kwargs,
)
from tools import TOWN_HALL_TOOLS
from townhall.turns.lean_chat import LeanChatCompletionsModel
from townhall.turns.response_request import open_response_stream


async def send_both(client: AsyncOpenAI, kwargs: dict[str, Any]) -> None:
    async with client.responses.with_streaming_response.create(**kwargs) as response:
        await response.http_response.aread()
    async with open_response_stream(client, kwargs) as response:
        await response.http_response.aread()


@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "every-setting"])
async def test_the_same_request_goes_on_the_wire(settings: ModelSettings) -> None:
    recorder = Recorder()
    async with live_server(recorder) as url:  # type: ignore[arg-type]
        async with AsyncOpenAI(
            api_key="sk-test-key", base_url=f"{url}/v1", max_retries=0
        ) as client:
            await send_both(client, create_kwargs(client, settings))
    sdk, ours = recorder.requests
    assert ours["path"] == sdk["path"] == "/v1/responses"
    assert ours["query"] == sdk["query"]
    assert json.loads(ours["body"]) == json.loads(sdk["body"])  # key order aside
    same = {k: v for k, v in sdk["headers"].items() if k not in VARYING_HEADERS}
    assert {k: v for k, v in ours["headers"].items() if k not in VARYING_HEADERS} == same
    assert same["authorization"] == "Bearer sk-test-key"
    body = json.loads(ours["body"])
    assert body["stream"] is True and len(body["tools"]) == len(TOWN_HALL_TOOLS)


async def test_errors_and_retries_are_the_clients() -> None:
    recorder = Recorder()
    async with live_server(recorder) as url:  # type: ignore[arg-type]
        async with AsyncOpenAI(
            api_key="sk-test-key", base_url=f"{url}/v1", max_retries=1
        ) as client:
            kwargs = create_kwargs(client, ModelSettings())
            raised = []
            for opening in (
                lambda: client.responses.with_streaming_response.create(**kwargs),
                lambda: open_response_stream(client, kwargs),
            ):
                recorder.statuses.extend([400])
                with pytest.raises(openai.APIStatusError) as error:
                    async with opening():
                        pass
                raised.append((type(error.value), error.value.status_code))
                recorder.statuses.extend([500])  # retried once, then answered
                async with opening() as response:
                    assert response.http_response.status_code == 200
    assert raised == [(openai.BadRequestError, 400)] * 2
    assert len(recorder.requests) == 6  # 400, then 500 + its retry, for each path


async def chat_request(
    model_class: type[OpenAIChatCompletionsModel],
    client: AsyncOpenAI,
    settings: ModelSettings,
    stream: bool,
) -> None:
    """One Chat Completions request the SDK's way (its `_fetch_response`), through `model_class`."""
    model = model_class("gpt-test", client)
    agent = build_agents(model, settings, TOWN_HALL_TOOLS).first
    with generation_span(disabled=True) as span:
        answer = await model._fetch_response(
            "You are the town hall's assistant.",
            # The assistant's reply as a plain message: the SDK's Chat Completions converter
            # refuses output_text parts without an id (what chat_compat is for).
            [*HISTORY[:3], {"role": "assistant", "content": "Filed."}, HISTORY[4]],
            settings,
            list(agent.tools),
            None,
            [],
            span,
            ModelTracing.DISABLED,
            stream=stream,  # type: ignore[call-overload]
        )
    if stream:
        await answer[1].close()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "every-setting"])
async def test_the_same_chat_completions_request_goes_on_the_wire(
    settings: ModelSettings, stream: bool
) -> None:
    recorder = Recorder(chat=True)
    async with live_server(recorder) as url:  # type: ignore[arg-type]
        async with AsyncOpenAI(
            api_key="sk-test-key", base_url=f"{url}/v1", max_retries=0
        ) as client:
            await chat_request(OpenAIChatCompletionsModel, client, settings, stream)
            await chat_request(LeanChatCompletionsModel, client, settings, stream)
    sdk, ours = recorder.requests
    assert ours["path"] == sdk["path"] == "/v1/chat/completions"
    assert ours["query"] == sdk["query"]
    assert json.loads(ours["body"]) == json.loads(sdk["body"])
    same = {k: v for k, v in sdk["headers"].items() if k not in VARYING_HEADERS}
    assert {k: v for k, v in ours["headers"].items() if k not in VARYING_HEADERS} == same
    body = json.loads(ours["body"])
    assert body.get("stream", False) is stream and len(body["tools"]) == len(TOWN_HALL_TOOLS)
