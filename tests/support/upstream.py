"""The fake OpenAI-compatible upstream served on 127.0.0.1, and settings that point a server
at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tests.support.app import live_server, make_settings
from tests.support.fake_openai import FakeOpenAI
from townhall.settings import Settings

# Never a real key: the fake accepts any, and the secrets tests look for this one in the logs.
FAKE_KEY = "sk-fake-key-never-sent-anywhere-else"


@dataclass
class Upstream:
    fake: FakeOpenAI  # change its `tokens`, `delay` or `faults` before a request to shape it
    url: str  # the base URL a client is given, ending in /v1

    def settings(self, api: str = "responses", **overrides: Any) -> Settings:
        """Settings for a server whose model is this upstream, on wire API `api`."""
        return make_settings(
            openai_api_key=FAKE_KEY,
            openai_base_url=self.url,
            openai_api=api,
            model="fake",
            **overrides,
        )


@contextlib.asynccontextmanager
async def serve_upstream(**fake_options: Any) -> AsyncIterator[Upstream]:
    fake = FakeOpenAI(**fake_options)
    async with live_server(fake) as base_url:  # type: ignore[arg-type]
        yield Upstream(fake, f"{base_url}/v1")
