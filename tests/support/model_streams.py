"""Model streams for ScriptedModel: a text delta, and a paced stream that records what it sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agents.items import TResponseStreamEvent
from agents.testing import ModelCall
from openai.types.responses import ResponseTextDeltaEvent

from townhall.turns.echo_model import message_events


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


class Gate:
    """A model stream that sends its first word, then waits until the test opens the gate."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.opened = asyncio.Event()
        self.first_sent = asyncio.Event()

    async def __call__(self, call: ModelCall) -> AsyncIterator[Any]:
        first_delta_seen = False
        for event in message_events("msg-gate", self.text):
            yield event
            if event.type == "response.output_text.delta" and not first_delta_seen:
                first_delta_seen = True
                self.first_sent.set()
                await asyncio.wait_for(self.opened.wait(), 15)
