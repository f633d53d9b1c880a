"""The two comparison servers of the benchmark, each an ASGI app behind uvicorn in its own
process, streaming the same fake upstream answer as plain `data:` text frames:

- `bench.variants:relay` - the direct relay: the openai client's stream, straight to SSE.
- `bench.variants:plain_sdk` - the Agents SDK as its documentation streams it: an Agent on the
  Responses model, `Runner.run_streamed`, text deltas from `stream_events()`.

Written for comparison only; the product is api.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

client = AsyncOpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
    api_key="sk-bench",
    max_retries=0,
)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

relay = FastAPI()


@relay.get("/health")
async def relay_health() -> dict[str, str]:
    return {"status": "healthy"}


@relay.post("/chat")
async def relay_chat(request: Request) -> StreamingResponse:
    message = (await request.json())["message"]

    async def frames() -> AsyncIterator[str]:
        stream = await client.responses.create(model="fake", input=message, stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                yield f"data: {event.delta}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


set_tracing_disabled(True)
agent = Agent(
    name="Town Hall Assistant",
    instructions="You help residents.",
    model=OpenAIResponsesModel(model="fake", openai_client=client),
)
plain_sdk = FastAPI()


@plain_sdk.get("/health")
async def sdk_health() -> dict[str, str]:
    return {"status": "healthy"}


@plain_sdk.post("/chat")
async def sdk_chat(request: Request) -> StreamingResponse:
    message = (await request.json())["message"]

    async def frames() -> AsyncIterator[str]:
        result = Runner.run_streamed(agent, input=message)
        async for event in result.stream_events():
            if event.type == "raw_response_event" and isinstance(
                event.data, ResponseTextDeltaEvent
            ):
                yield f"data: {event.data.delta}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)
