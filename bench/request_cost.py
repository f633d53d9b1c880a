"""CPU to open one Responses request: the openai client's `responses.create()` against ours
without its parameter transform (townhall/turns/response_request.py), alternated in one run
against a recording server on 127.0.0.1 in this process (so both figures include that server's
share, which is the same for both)."""

from __future__ import annotations

import time
from typing import Any

from agents import ModelSettings
from openai import AsyncOpenAI

from tests.support.app import live_server
from tests.support.recording_upstream import Recorder, create_kwargs
from townhall.turns.response_request import open_response_stream


async def request_opening_ms(rounds: int = 6, per_round: int = 100) -> dict[str, float]:
    recorder = Recorder()
    async with live_server(recorder) as url:  # type: ignore[arg-type]
        async with AsyncOpenAI(api_key="sk-bench", base_url=f"{url}/v1", max_retries=0) as client:
            kwargs = create_kwargs(client, ModelSettings())
            paths: dict[str, Any] = {
                "sdk_create": lambda: client.responses.with_streaming_response.create(**kwargs),
                "untransformed": lambda: open_response_stream(client, kwargs),
            }
            spent = dict.fromkeys(paths, 0.0)
            for round_ in range(rounds):
                for name, opening in paths.items():
                    started = time.process_time()
                    for _ in range(per_round):
                        async with opening() as response:
                            await response.http_response.aread()
                    if round_:  # the first round warms both up
                        spent[name] += time.process_time() - started
    measured = (rounds - 1) * per_round
    return {name: 1000 * seconds / measured for name, seconds in spent.items()}
