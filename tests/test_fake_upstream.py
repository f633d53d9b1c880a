"""The fake upstream the benchmarks and timing tests rely on keeps an absolute schedule: token i
is due at t0 + i * delay, so a stall on the machine delays tokens but never the whole answer."""

from __future__ import annotations

import time

import httpx

from tests.support.upstream import Upstream


async def test_a_stall_is_caught_up_not_added_to_the_answer(upstream: Upstream) -> None:
    upstream.fake.tokens, upstream.fake.delay = 20, 0.02  # the ideal answer: 19 gaps, 0.38 s
    body = {"model": "fake", "input": "one two three", "stream": True}
    arrivals: list[float] = []
    async with (
        httpx.AsyncClient(base_url=upstream.url) as client,
        client.stream("POST", "/responses", json=body) as response,
    ):
        started = time.perf_counter()
        async for line in response.aiter_lines():
            if '"response.output_text.delta"' in line:
                arrivals.append(time.perf_counter() - started)
                if len(arrivals) == 2:
                    time.sleep(0.25)  # noqa: ASYNC251 (the point: the whole loop stalls)
    assert len(arrivals) == 20
    # Paced by sleeping after each token, the stall would be added: about 0.63 s in all.
    assert arrivals[-1] < 0.38 + 0.12
    # The tokens that fell due during the stall went out at once when it ended.
    assert sum(1 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a < 0.005) >= 8
