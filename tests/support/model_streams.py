"""Model streams for ScriptedModel: a text delta, and a paced stream that records what it sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agents.items import TResponseStreamEvent
from agents.testing import ModelCall
from openai.types.responses import ResponseTextDeltaEvent


def delta(text: str, sequence: int = 0) -> TResponseStreamEvent:
    return ResponseTextDeltaEvent(
        type="response.output_text.delta",
        item_id="msg-1",
        output_index=0,
        content_index=0,
        delta=text,
        logprobs=[],
        sequence_number=sequence,
    )


class SlowStream:
    """A scripted model stream that sends `count` deltas, `gap` seconds apart, and records how many
    it sent and whether it was closed early (the run was cancelled)."""

    def __init__(self, count: int = 500, gap: float = 0.02, fail_after: int | None = None) -> None:
        self.count = count
        self.gap = gap
        self.fail_after = fail_after
        self.sent = 0
        self.closed = False
        self.first_sent = asyncio.Event()

    async def __call__(self, call: ModelCall) -> AsyncIterator[TResponseStreamEvent]:
        try:
            for index in range(self.count):
                if self.fail_after is not None and index == self.fail_after:
                    raise RuntimeError("upstream exploded: secret sk-test-123 in /srv/app.py")
                yield delta(f"tok{index} ", index)
                self.sent += 1
                self.first_sent.set()
                await asyncio.sleep(self.gap)
        finally:
            self.closed = True
