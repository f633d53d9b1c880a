"""Which model a turn runs on (agents_def.choose_model picks it from the settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agents import Model
from openai import AsyncOpenAI

ModelMode = Literal["openai", "compatible", "echo", "custom"]


@dataclass(frozen=True)
class ModelChoice:
    """The model the agent runs on, and the client to close at shutdown (if any)."""

    model: Model
    mode: ModelMode
    name: str
    client: AsyncOpenAI | None = None
