"""Model requests sent as `client.responses.create()` / `client.chat.completions.create()` would
send them, without the client's request-parameter transform.

`create()` first walks the whole request (instructions, history, every tool's JSON schema)
against its TypedDict annotations to apply aliases and formats: about 1.8 ms a request here, a
third of a short turn's CPU in this server, and the largest single cost when many turns start
at once. The Responses and Chat Completions request types declare no alias and no format (only
union discriminators), so for them the walk changes nothing but dropping omitted arguments; the
client's JSON encoder already handles pydantic models and datetimes. What goes on the wire is
the same JSON (tests/test_response_request.py compares it with `create()`'s on both APIs), and
the rest is the client's own path: auth, retries, error mapping, the (raw) streaming response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, cast

from openai import AsyncOpenAI, AsyncStream, NotGiven, Omit, not_given
from openai._base_client import make_request_options
from openai._constants import RAW_RESPONSE_HEADER
from openai._response import AsyncAPIResponse, AsyncResponseContextManager
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

RawStream = AsyncResponseContextManager[AsyncAPIResponse[AsyncStream[ResponseStreamEvent]]]
ChatAnswer = ChatCompletion | AsyncStream[ChatCompletionChunk]


def _split(create_kwargs: Mapping[str, Any], raw: bool) -> tuple[dict[str, Any], Any]:
    """`create()`'s keyword arguments as the request body and the client's request options."""
    params = dict(create_kwargs)
    headers = dict(params.pop("extra_headers", None) or {})
    if raw:
        headers[RAW_RESPONSE_HEADER] = "stream"
    options = make_request_options(
        extra_headers=headers,
        extra_query=params.pop("extra_query", None),
        extra_body=params.pop("extra_body", None),
        timeout=params.pop("timeout", not_given),
        security={"bearer_auth": True},
    )
    return {k: v for k, v in params.items() if not isinstance(v, Omit | NotGiven)}, options


def open_response_stream(client: AsyncOpenAI, create_kwargs: Mapping[str, Any]) -> RawStream:
    """`client.responses.with_streaming_response.create(**create_kwargs)`, untransformed."""
    body, options = _split(create_kwargs, raw=True)
    request = client.post(
        "/responses",
        cast_to=Response,
        body=body,
        options=options,
        stream=True,
        stream_cls=AsyncStream[ResponseStreamEvent],
    )
    # With the raw-response header the client answers its AsyncAPIResponse (unread), not the
    # parsed stream its signature names: what `with_streaming_response` relies on too.
    return AsyncResponseContextManager(cast(Awaitable[AsyncAPIResponse[Any]], request))


async def create_chat_completion(
    client: AsyncOpenAI, create_kwargs: Mapping[str, Any]
) -> ChatAnswer:
    """`client.chat.completions.create(**create_kwargs)`, untransformed."""
    body, options = _split(create_kwargs, raw=False)
    return await client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        body=body,
        options=options,
        stream=bool(body.get("stream")),
        stream_cls=AsyncStream[ChatCompletionChunk],
    )


class _Completions:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def create(self, **create_kwargs: Any) -> ChatAnswer:
        return await create_chat_completion(self._client, create_kwargs)


class _Chat:
    def __init__(self, client: AsyncOpenAI) -> None:
        self.completions = _Completions(client)


class UntransformedChatClient:
    """An AsyncOpenAI whose `chat.completions.create()` is `create_chat_completion`; everything
    else (base_url, with_options, ...) is the client's own. For the Agents SDK's Chat Completions
    model, which calls exactly that method on its client."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self.chat = _Chat(client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
