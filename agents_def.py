"""Who does what: the town hall's agents, their instructions, their tools, who hands off to whom,
and how their model is chosen.

Residents meet the Town Hall Assistant (triage). It answers general questions and looks up
reports itself, and hands off, with the Agents SDK's handoffs, to a desk:
- the Incident desk files incident reports (report_incident);
- the Feedback desk files feedback and suggestions (submit_feedback).
Both desks look up reports too, and hand back to the assistant when the resident moves on. The
turn runner continues a conversation with the agent its last handoff went to (turns/roster.py).
Tools from MCP servers (MCP_SERVER_URL) are offered to every agent.

Model choice, from the settings:
- OPENAI_BASE_URL set: any OpenAI-compatible server (Ollama, vLLM, LM Studio) via Chat Completions;
- OPENAI_API_KEY set: the OpenAI Responses API;
- neither: echo mode (echo_model.EchoModel), no key and no network. The echo model never hands
  off: the assistant answers every message.
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
from agents.agent import MCPConfig
from agents.extensions.handoff_prompt import RECOMMENDED_PROMPT_PREFIX
from openai import AsyncOpenAI, DefaultAioHttpClient

from tools import CHECK_REPORT_STATUS, REPORT_INCIDENT, SUBMIT_FEEDBACK
from townhall.context import AppContext
from townhall.mcp_links import MCPLinks
from townhall.settings import Settings
from townhall.turns.echo_model import ECHO_MODEL_NAME, EchoModel
from townhall.turns.lean_chat import LeanChatCompletionsModel
from townhall.turns.lean_responses import LeanResponsesModel
from townhall.turns.model_choice import ModelChoice
from townhall.turns.roster import AgentRoster

# --- Instructions -------------------------------------------------------------------------------

TRIAGE_NAME = "Town Hall Assistant"
INCIDENT_DESK_NAME = "Incident desk"  # the SDK's handoff tool: transfer_to_incident_desk
FEEDBACK_DESK_NAME = "Feedback desk"  # transfer_to_feedback_desk

HOUSE_RULES = """How you work, whoever you are at the town hall:
- Always answer in the language the resident writes in. Be brief, warm and factual.
- Never invent details; ask only for what is missing, one or two questions at a time.
- For emergencies (fire, crime in progress, injuries) tell the resident to call the emergency
  number first.
- A resident may ask for the status of a report: look it up with check_report_status and the
  reference they give.
"""

TRIAGE_INSTRUCTIONS = f"""{RECOMMENDED_PROMPT_PREFIX}

You are the digital town hall assistant of a city, the first one residents talk to. Answer
general questions about the city's services yourself. Residents come mostly for two things,
and each has its own desk:
1. Reporting an incident (a pothole, a broken streetlight, graffiti, noise, theft, flooding, ...):
   hand off to the Incident desk.
2. Giving feedback or a suggestion about city services and places: hand off to the Feedback desk.
Hand off as soon as the resident's wish is clear; the desk gathers the details and files.

{HOUSE_RULES}"""

INCIDENT_DESK_INSTRUCTIONS = f"""{RECOMMENDED_PROMPT_PREFIX}

You are the town hall's Incident desk: you take the resident's incident report and file it.
Gather: what happened, where exactly, when it happened, who was involved (if anyone), and how
serious it is on a scale of 1 (minor) to 5 (dangerous).
- A name and contact are optional: ask once, and accept a refusal.
- Before filing, repeat the key details in one short sentence and ask the resident to confirm.
  If they have already given everything and clearly asked you to file it, file it directly.
- After filing with report_incident, give the resident the reference exactly as the tool
  returned it and say what happens next.
- When the resident wants something else (feedback, a general question), hand back to the
  Town Hall Assistant.

{HOUSE_RULES}"""

FEEDBACK_DESK_INSTRUCTIONS = f"""{RECOMMENDED_PROMPT_PREFIX}

You are the town hall's Feedback desk: you take a resident's feedback or suggestion about city
services and places and pass it on. Gather: the topic, a short summary in the resident's words,
and whether it is positive, neutral or negative.
- A name is optional: ask once, and accept a refusal.
- Before submitting, repeat it in one short sentence and ask the resident to confirm. If they
  have already given everything and clearly asked you to send it, send it directly.
- After submitting with submit_feedback, give the resident the reference exactly as the tool
  returned it and say what happens next.
- When the resident wants something else (an incident report, a general question), hand back
  to the Town Hall Assistant.

{HOUSE_RULES}"""

INCIDENT_DESK_HANDOFF = "Takes and files incident reports: potholes, lights, graffiti, noise, ..."
FEEDBACK_DESK_HANDOFF = "Takes and files residents' feedback and suggestions about city services."
TRIAGE_HANDOFF = "The town hall's first point of contact, for anything that is not this desk's."


# --- Desks --------------------------------------------------------------------------------------


def build_agents(
    model: Model,
    settings: ModelSettings | None = None,
    tools: Sequence[Tool] | None = None,
    mcp: MCPLinks | None = None,
) -> AgentRoster:
    """The town hall's agents, all on `model`. `tools`, when given, replaces the town-hall tools
    of every agent (tests bring their own); the tools of `mcp`'s servers are offered to every
    agent, and a failed MCP call is told to the model as `mcp.tool_failure` words it."""
    mcp_servers = list(mcp.servers) if mcp else []
    mcp_config: MCPConfig = {"failure_error_function": mcp.tool_failure} if mcp else {}

    def agent(name: str, instructions: str, own: list[Tool], handoff: str | None) -> Agent:
        return Agent[AppContext](
            name=name,
            instructions=instructions,
            handoff_description=handoff,
            model=model,
            model_settings=settings or ModelSettings(),
            tools=own if tools is None else list(tools),
            mcp_servers=list(mcp_servers),
            mcp_config=mcp_config,
        )

    triage = agent(TRIAGE_NAME, TRIAGE_INSTRUCTIONS, [CHECK_REPORT_STATUS], TRIAGE_HANDOFF)
    incident_desk = agent(
        INCIDENT_DESK_NAME,
        INCIDENT_DESK_INSTRUCTIONS,
        [REPORT_INCIDENT, CHECK_REPORT_STATUS],
        INCIDENT_DESK_HANDOFF,
    )
    feedback_desk = agent(
        FEEDBACK_DESK_NAME,
        FEEDBACK_DESK_INSTRUCTIONS,
        [SUBMIT_FEEDBACK, CHECK_REPORT_STATUS],
        FEEDBACK_DESK_HANDOFF,
    )

    # --- Handoffs -------------------------------------------------------------------------------
    triage.handoffs = [incident_desk, feedback_desk]
    incident_desk.handoffs = [triage]
    feedback_desk.handoffs = [triage]
    roster = AgentRoster.of(triage)
    if mcp is not None:  # no MCP tool may take the name of one of ours
        mcp.reserve(roster.tool_names())
    return roster


# --- Model choice -------------------------------------------------------------------------------

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
