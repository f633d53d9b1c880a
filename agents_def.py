"""The town-hall agent, its instructions, and how its model is chosen.

Model choice, from the settings:
- OPENAI_BASE_URL set: any OpenAI-compatible server (Ollama, vLLM, LM Studio) via Chat Completions;
- OPENAI_API_KEY set: the OpenAI Responses API;
- neither: echo mode (echo_model.EchoModel), no key and no network.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents import (
    Agent,
    Model,
    ModelRetrySettings,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Tool,
    retry_policies,
)
from openai import AsyncOpenAI, DefaultAioHttpClient

from tools import TOWN_HALL_TOOLS
from townhall.context import AppContext
from townhall.settings import Settings
from townhall.turns.echo_model import ECHO_MODEL_NAME, EchoModel
from townhall.turns.lean_chat import LeanChatCompletionsModel
from townhall.turns.lean_responses import LeanResponsesModel
from townhall.turns.model_choice import ModelChoice

AGENT_NAME = "Town Hall Assistant"

INSTRUCTIONS = """\
You are the digital town hall assistant of a city. You help residents with two things:

1. Reporting incidents (a pothole, a broken streetlight, graffiti, noise, theft, flooding, ...).
   Gather: what happened, where exactly, when it happened, who was involved (if anyone), and how
   serious it is on a scale of 1 (minor) to 5 (dangerous).
2. Giving feedback or suggestions about city services and places. Gather: the topic, a short
   summary, and whether it is positive, neutral or negative.

How you work:
- Ask only for what is missing, one or two questions at a time; never invent details.
- A name and contact are optional: ask once, and accept a refusal.
- Before filing, repeat the key details in one short sentence and ask the resident to confirm.
  If they have already given everything and clearly asked you to file it, file it directly.
- After filing, give the resident the reference exactly as the tool returned it and say what
  happens next.
- Always answer in the language the resident writes in. Be brief, warm and factual.
- For emergencies (fire, crime in progress, injuries) tell the resident to call the emergency
  number first.
"""

# Model calls are retried by the Runner only while nothing has been streamed to the resident
# yet (the SDK refuses to replay a stream that already emitted output), with backoff.
_RETRY_POLICY = retry_policies.any(
    retry_policies.provider_suggested(),
    retry_policies.network_error(),
    retry_policies.retry_after(),
    retry_policies.http_status([408, 409, 429, 500, 502, 503, 504]),
)


def choose_model(settings: Settings) -> ModelChoice:
    """Pick the model path the settings ask for (see the module docstring)."""
    if settings.model_mode == "echo":
        return ModelChoice(EchoModel(), "echo", ECHO_MODEL_NAME)
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    client = AsyncOpenAI(
        # aiohttp under the client: ~20% less CPU per streamed answer than its default transport.
        http_client=DefaultAioHttpClient(timeout=settings.model_timeout_seconds),
        # Local servers usually ignore the key, but the client insists on one.
        api_key=api_key or "not-needed",
        base_url=settings.openai_base_url,
        # The Runner is the one place that retries (see model_settings): only before anything
        # was streamed, with our backoff. Client retries on top would multiply attempts.
        max_retries=0,
        # How long the model may stay silent. A read timeout, not a limit on the whole answer:
        # long answers are fine, a stalled stream is not. (ModelSettings.timeout would bound the
        # whole call, and makes the Runner relay every event through an extra task and queue.)
        timeout=settings.model_timeout_seconds,
    )
    model: Model
    if settings.model_api == "responses":
        if settings.lean_stream:
            lean_model = LeanResponsesModel(model=settings.model, openai_client=client)
            lean_model.max_answer_chars = settings.max_answer_chars
            model = lean_model
        else:
            model = OpenAIResponsesModel(model=settings.model, openai_client=client)
    else:
        if settings.lean_stream:
            model = LeanChatCompletionsModel(
                model=settings.model,
                openai_client=client,
                max_answer_chars=settings.max_answer_chars,
            )
        else:
            model = OpenAIChatCompletionsModel(model=settings.model, openai_client=client)
    return ModelChoice(model, settings.model_mode, settings.model, client)


def model_settings(settings: Settings) -> ModelSettings:
    """The retry policy for every model call."""
    return ModelSettings(
        retry=ModelRetrySettings(
            max_retries=settings.model_max_retries,
            backoff={
                "initial_delay": settings.model_retry_backoff_seconds,
                "max_delay": 16 * settings.model_retry_backoff_seconds,
                "multiplier": 2.0,
                "jitter": True,
            },
            policy=_RETRY_POLICY,
        ),
    )


def build_town_hall_agent(
    model: Model,
    settings: ModelSettings | None = None,
    tools: Sequence[Tool] = TOWN_HALL_TOOLS,
) -> Agent[AppContext]:
    """The agent residents talk to; `tools` are the function tools of tools.py."""
    return Agent[AppContext](
        name=AGENT_NAME,
        instructions=INSTRUCTIONS,
        model=model,
        model_settings=settings or ModelSettings(),
        tools=list(tools),
    )
