"""The lean Chat Completions stream: the same events as the SDK's ChatCmplStreamHandler fed by the
openai client's parser, for text, refusals, tool calls, finish reasons, usage and the features it
hands to the SDK's handler; fewer text deltas when they arrive together; and the limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents.models.chatcmpl_stream_handler import ChatCmplStreamHandler
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response

from townhall.turns import chat_chunks
from townhall.turns.lean_chat import lean_chat_events
from townhall.turns.stream_limits import AnswerTooLong, StreamCredit, guarded


def response() -> Response:
    return Response(
        id="__fake_id__",
        created_at=1.0,
        model="m",
        object="response",
        output=[],
        tool_choice="auto",
        tools=[],
        parallel_tool_calls=False,
    )


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    if "logprobs" in extra:
        choice["logprobs"] = extra.pop("logprobs")
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": extra.pop("choices", [choice]),
        **extra,
    }


USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def tc(
    index: int,
    id: str | None = None,
    name: str | None = None,
    args: str | None = None,
    **extra: Any,
) -> dict:
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call: dict[str, Any] = {"index": index, "function": function, **extra}
    if id is not None:
        call["id"] = id
        call.setdefault("type", "function")
    return call


SCENARIOS: dict[str, list[dict]] = {
    "text": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": ""}),
        chunk({"content": " world"}),
        chunk({}, "stop"),
        chunk(None, None, choices=[], usage=USAGE),
    ],
    "text_no_usage": [chunk({"content": "a"}), chunk({"content": "b"}, "stop")],
    "tool_call": [
        chunk({"role": "assistant", "content": None, "tool_calls": [tc(0, "call_1", "f", "")]}),
        chunk({"tool_calls": [tc(0, args='{"a":')]}),
        chunk({"tool_calls": [tc(0, args=" 1}")]}),
        chunk({}, "tool_calls", usage=USAGE),
    ],
    "text_then_tools": [
        chunk({"content": "Let me"}),
        chunk({"content": " check"}),
        chunk({"tool_calls": [tc(0, "c0", "f", "{}")]}),
        chunk({"tool_calls": [tc(1, "c1", "g", "")]}),
        chunk({"tool_calls": [tc(1, args='{"x":2}')]}),
        chunk({}, "tool_calls", usage=USAGE),
    ],
    "tools_then_text": [
        chunk({"tool_calls": [tc(0, "c0", "f", "{}")]}),
        chunk({"content": "done"}),
        chunk({"tool_calls": [tc(1, "c1", "g", "{}")]}),
        chunk({}, "stop"),
    ],
    "interleaved_tools": [
        chunk({"tool_calls": [tc(0, "c0", "f", "{"), tc(1, "c1", "g", "[")]}),
        chunk({"tool_calls": [tc(1, args="]"), tc(0, args="}")]}),
        chunk({}, "tool_calls"),
    ],
    "tool_without_id": [
        chunk({"tool_calls": [tc(0, None, "f", "{}")]}),
        chunk({}, "tool_calls"),
    ],
    "refusal": [chunk({"refusal": "I can't"}), chunk({"refusal": " do that"}), chunk({}, "stop")],
    "refusal_then_text": [
        chunk({"refusal": "no"}),
        chunk({"content": "but"}),
        chunk({"content": " yes"}),
        chunk({}, "stop"),
    ],
    "text_then_refusal": [chunk({"content": "ok"}), chunk({"refusal": "no"}), chunk({}, "stop")],
    "content_filter": [chunk({"content": ""}), chunk({}, "content_filter")],
    "length_with_text": [chunk({"content": "cut"}), chunk({}, "length")],
    "multiple_choices": [
        chunk(
            None,
            choices=[
                {"index": 0, "delta": {"content": "a"}, "finish_reason": None},
                {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
            ],
        ),
        chunk({}, "stop"),
    ],
    "custom_tool_ignored": [
        chunk({"tool_calls": [{"index": 0, "id": "x", "type": "custom", "custom": {"name": "c"}}]}),
        chunk({"content": "hi"}),
        chunk({}, "stop"),
    ],
    "google_signature": [
        chunk(
            {
                "tool_calls": [
                    tc(0, "c0", "f", "{}", extra_content={"google": {"thought_signature": "sig"}})
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ],
    "reasoning_content_first": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "think"}),
        chunk({"reasoning_content": "ing"}),
        chunk({"content": "answer"}),
        chunk({"content": " here"}),
        chunk({}, "stop", usage=USAGE),
    ],
    "reasoning_field_then_tool": [
        chunk({"reasoning": "hmm"}),
        chunk({"content": "x"}),
        chunk({"tool_calls": [tc(0, "c0", "f", "{}")]}),
        chunk({}, "tool_calls"),
    ],
    "no_choices_usage_only": [
        chunk({"content": "x"}, "stop"),
        chunk(None, choices=[], usage=USAGE),
    ],
}

FAILING = {
    "length_empty": [chunk({"content": ""}), chunk({}, "length", usage=USAGE)],
    "no_finish_reason": [chunk({"content": "x"})],
}


def sse(chunks: list[dict]) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


async def items(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


def dump(events: list[Any]) -> list[Any]:
    return [e.model_dump(mode="json") for e in events]


async def reference(chunks: list[dict], **options: Any) -> tuple[list[Any], Any, Response]:
    """The stock path: the client's lenient chunk objects into the SDK's handler."""
    objects = [construct_type(type_=ChatCompletionChunk, value=c) for c in chunks]
    base = response()
    events: list[Any] = []
    error = None
    try:
        async for event in ChatCmplStreamHandler.handle_stream(
            base, items(objects), model="m", **options
        ):
            events.append(event)
    except Exception as exc:  # noqa: BLE001
        error = exc
    return events, error, base


async def lean(batches: list[list[dict]], **options: Any) -> tuple[list[Any], Any, Response]:
    base = response()
    events: list[Any] = []
    error = None
    try:
        async for event in lean_chat_events(base, items(batches), model="m", **options):
            events.append(event)
    except Exception as exc:  # noqa: BLE001
        error = exc
    return events, error, base


OPTIONS = {"raise_on_length_truncation": True, "require_finish_reason": True}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_one_chunk_per_read_gives_the_sdk_handlers_events(name: str) -> None:
    chunks = SCENARIOS[name]
    expected, expected_error, _ = await reference(chunks, **OPTIONS)
    got, error, _ = await lean([[c] for c in chunks], **OPTIONS)
    assert expected_error is None and error is None
    assert dump(got) == dump(expected)


@pytest.mark.parametrize("name", sorted(FAILING))
async def test_terminal_errors_and_usage_kept_on_the_response(name: str) -> None:
    chunks = FAILING[name]
    expected, expected_error, expected_base = await reference(chunks, **OPTIONS)
    got, error, base = await lean([[c] for c in chunks], **OPTIONS)
    assert type(error) is type(expected_error) and str(error) == str(expected_error)
    assert dump(got) == dump(expected)
    assert base.model_dump(mode="json") == expected_base.model_dump(mode="json")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_one_read_merges_text_deltas_and_nothing_else(name: str) -> None:
    chunks = SCENARIOS[name]
    expected, _, _ = await reference(chunks, **OPTIONS)
    got, error, _ = await lean([chunks], **OPTIONS)
    assert error is None

    def shape(events: list[Any]) -> list[Any]:
        out: list[Any] = []
        for event in dump(events):
            event.pop("sequence_number")
            if (
                event["type"] == "response.output_text.delta"
                and out
                and out[-1]["type"] == event["type"]
            ):
                out[-1]["delta"] += event["delta"]
            else:
                out.append(event)
        return out

    assert shape(got) == shape(expected)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_one_read_keeps_sequence_numbers_in_the_order_events_are_sent(name: str) -> None:
    # Text gathered in a read is sent before the event that ends it (a tool call, a refusal,
    # the end), and must be numbered before it too.
    got, error, _ = await lean([SCENARIOS[name]], **OPTIONS)
    assert error is None
    assert [event.sequence_number for event in got] == list(range(len(got)))


async def test_full_handler_path_keeps_logprobs_and_linear_text() -> None:
    logprob = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
    chunks = [
        chunk({"content": "a"}, logprobs={"content": [logprob]}),
        chunk({"content": "a"}, logprobs={"content": [logprob]}),
        chunk({}, "stop"),
    ]
    expected, _, _ = await reference(chunks, **OPTIONS)
    got, error, _ = await lean([[c] for c in chunks], full_handler=True, **OPTIONS)
    assert error is None
    assert dump(got) == dump(expected)


async def test_full_handler_with_buffered_tool_calls() -> None:
    chunks = SCENARIOS["interleaved_tools"]
    objects = [construct_type(type_=ChatCompletionChunk, value=c) for c in chunks]
    expected = [
        e
        async for e in ChatCmplStreamHandler.handle_stream(
            response(), ChatCmplStreamHandler.buffer_tool_call_stream(items(objects)), model="m"
        )
    ]
    got, error, _ = await lean([[c] for c in chunks], full_handler=True, buffer_tool_calls=True)
    assert error is None
    assert dump(got) == dump(expected)


class FakeHTTPResponse:
    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads
        self.request = None
        self.http_version = "HTTP/2"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            yield read


async def batches_of(reads: list[bytes]) -> list[list[dict]]:
    return [b async for b in chat_chunks.chunk_batches(FakeHTTPResponse(reads))]


async def test_sse_split_anywhere_crlf_comments_and_done() -> None:
    chunks = SCENARIOS["text_then_tools"]
    raw = (b": keep-alive\n\n" + b"".join(sse(chunks))).replace(b"\n", b"\r\n")
    for size in (1, 2, 3, 7, 64, len(raw)):
        reads = [raw[i : i + size] for i in range(0, len(raw), size)]
        got = [c for batch in await batches_of(reads) for c in batch]
        assert got == chunks, size


async def test_stream_errors_are_the_clients() -> None:
    import openai

    with pytest.raises(chat_chunks.StreamDecodeError):
        await batches_of([b"data: {not json\n\n"])
    with pytest.raises(openai.APIError, match="overloaded"):
        await batches_of([b'data: {"error": {"message": "overloaded"}}\n\n'])
    with pytest.raises(chat_chunks.StreamDecodeError):
        await batches_of([b"data: " + b"x" * 1000] * 10_000)  # an event that never ends


async def test_chunks_before_a_malformed_one_in_the_same_read_still_arrive() -> None:
    good = b"".join(sse(SCENARIOS["text"])[:3])
    seen: list[dict] = []
    with pytest.raises(chat_chunks.StreamDecodeError):
        async for batch in chat_chunks.chunk_batches(
            FakeHTTPResponse([good + b"data: {not json\n\n"])
        ):
            seen.extend(batch)
    assert seen == SCENARIOS["text"][:3]


async def test_answer_cap_stops_the_stream() -> None:
    chunks = [chunk({"content": "x" * 10}) for _ in range(100)] + [chunk({}, "stop")]
    events = lean_chat_events(response(), items([[c] for c in chunks]), model="m")
    seen = 0
    with pytest.raises(AnswerTooLong):
        async for event in guarded(events, max_chars=95, credit=None):
            seen += len(getattr(event, "delta", "") or "")
    assert seen == 90


async def test_credit_bounds_what_runs_ahead_of_the_reader() -> None:
    credit = StreamCredit(window=50)
    produced: list[int] = []

    async def model() -> AsyncIterator[Any]:
        async def source() -> AsyncIterator[Any]:
            for i in range(100):
                produced.append(i)
                yield type("E", (), {"delta": "x" * 9})()

        async for event in guarded(source(), max_chars=None, credit=credit):
            yield event

    queue: asyncio.Queue[Any] = asyncio.Queue()  # unbounded, as the Runner's

    async def pump() -> None:
        async for event in model():
            queue.put_nowait(event)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0.05)
    assert len(produced) <= 6  # 5 events of 10 fill the window, the 6th waits
    for _ in range(10):
        credit.release(await queue.get())
    await asyncio.sleep(0.05)
    assert len(produced) <= 16
    assert credit.outstanding <= 50
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- through the Runner and the app, against the fake upstream ----------------------------------

from agents import Agent, RawResponsesStreamEvent, RunConfig, Runner  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from api import create_app  # noqa: E402
from tests.support.app import asgi_client, live_server, make_settings, wait_for  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402
from townhall.turns.lean_chat import LeanChatCompletionsModel  # noqa: E402
from townhall.turns.stream_limits import CURRENT_CREDIT  # noqa: E402


async def test_a_reader_that_stops_stops_the_pull_and_cancel_closes_the_upstream() -> None:
    fake = FakeOpenAI(tokens=200_000, keep_requests=False)  # about 1.4 MB of text
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        client = AsyncOpenAI(api_key="x", base_url=f"{upstream}/v1", max_retries=0)
        model = LeanChatCompletionsModel(model="fake", openai_client=client, max_answer_chars=None)
        credit = StreamCredit(window=10_000)
        token = CURRENT_CREDIT.set(credit)
        try:
            result = Runner.run_streamed(
                Agent(name="a", model=model),
                "word",
                max_turns=1,
                run_config=RunConfig(tracing_disabled=True),
            )
        finally:
            CURRENT_CREDIT.reset(token)
        credit.owner = result.run_loop_task
        events = result.stream_events()
        taken = 0
        while taken < 20_000:  # read a little, giving the credit back
            event = await events.__anext__()
            if isinstance(event, RawResponsesStreamEvent):
                taken += len(getattr(event.data, "delta", "") or "")
                credit.release(event.data)
        await asyncio.sleep(0.5)  # then stop reading
        # What waits for the reader is the window, plus at most one merged network read ...
        assert credit.outstanding <= credit.window + 70_000
        queued = result._event_queue.qsize()
        await asyncio.sleep(0.5)
        assert result._event_queue.qsize() == queued  # ... and the pull has stopped
        result.cancel()
        await events.aclose()
        await wait_for(lambda: fake.open_streams == 0, limit=3)
        await client.close()


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_an_answer_past_the_cap_ends_the_turn_with_answer_too_long(api: str) -> None:
    fake = FakeOpenAI(tokens=400)
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        app = create_app(
            make_settings(
                openai_api_key="sk-fake",
                openai_base_url=f"{upstream}/v1",
                openai_api=api,
                model="fake",
                max_answer_chars=300,
            )
        )
        async with asgi_client(app) as client:
            response = await client.post("/chat", json={"message": "hello there"})
            again = await client.post("/chat", json={"message": "hi", "session_id": "s2"})
    assert "event: error" in response.text and '"code":"answer_too_long"' in response.text
    assert response.text.endswith("data: [DONE]\n\n")
    assert fake.served == 2  # not retried
    assert again.status_code == 200
    assert fake.open_streams == 0
