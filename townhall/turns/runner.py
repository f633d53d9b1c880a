"""One turn of a conversation: run the agent on a message and turn SDK events into ours.

This is the only place that knows the Agents SDK's stream events; everything after it sees the
typed events of events.py and nothing else. A failure becomes a `Failed` event whose message is
fit for a resident; the traceback (for the unexpected) goes to the log with the session id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import openai
from agents import (
    AgentUpdatedStreamEvent,
    MaxTurnsExceeded,
    RawResponsesStreamEvent,
    RunConfig,
    RunItemStreamEvent,
    Runner,
    TResponseInputItem,
)
from agents.exceptions import ModelTimeoutError
from pydantic_core import to_jsonable_python

from townhall.context import AppContext
from townhall.errors import outage_errors
from townhall.sessions.registry import valid_text
from townhall.sessions.store import TurnLease
from townhall.turns.events import (
    AgentChanged,
    Failed,
    Finished,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEvent,
)
from townhall.turns.roster import AgentRoster
from townhall.turns.sse_decode import StreamDecodeError
from townhall.turns.stream_limits import CURRENT_CREDIT, AnswerTooLong, ClientStalled, StreamCredit

logger = logging.getLogger(__name__)

MAX_AGENT_TURNS = 10
# How far (in delta characters) the model may be read ahead of what the client has taken, by
# default, and how long the model may wait for a client that takes nothing before the turn is
# given up.
STREAM_READ_AHEAD_CHARS = 64_000
CLIENT_STALL_SECONDS = 120.0


CANCELLED = Failed("cancelled", "This conversation was closed while the answer was running.")
ABANDONED = Failed(
    "abandoned",
    "The connection closed and no client resumed the answer in time, so it was stopped.",
)
SERVER_RESTARTING = Failed(
    "server_restarting",
    "The server restarted before the answer finished. Please send your message again.",
)
CLIENT_STALLED = Failed("client_stalled", "The connection stopped reading the answer.")
# Why a cancelled turn stopped (TurnLease.stop_reason), when not a DELETE or a lost lock.
_STOPPED = {failure.code: failure for failure in (ABANDONED, SERVER_RESTARTING, CLIENT_STALLED)}


def describe_failure(error: BaseException) -> Failed:
    """What to tell the resident about a failed turn (never the exception text itself)."""
    if isinstance(error, AnswerTooLong):
        return Failed(
            "answer_too_long",
            "That answer grew too long to send. Please ask for something shorter.",
        )
    if isinstance(error, ClientStalled):
        return CLIENT_STALLED
    if isinstance(error, openai.RateLimitError):
        return Failed(
            "model_rate_limited", "The assistant is very busy right now. Please try again shortly."
        )
    # httpx2 errors reach us unwrapped when a stream breaks after it started (lean_responses reads
    # the raw response), so they count as the openai client's own errors do.
    if isinstance(
        error, openai.APITimeoutError | ModelTimeoutError | TimeoutError | httpx2.TimeoutException
    ):
        return Failed("model_timeout", "The assistant took too long to answer. Please try again.")
    if isinstance(
        error, openai.APIConnectionError | openai.InternalServerError | httpx2.TransportError
    ):
        return Failed(
            "model_unavailable", "The assistant is unavailable right now. Please try again soon."
        )
    if isinstance(error, MaxTurnsExceeded):
        return Failed(
            "max_turns", "That request needed too many steps. Please try again more simply."
        )
    if isinstance(error, outage_errors()):  # the conversation's store went away mid-turn
        return Failed(
            "service_unavailable", "The service is having trouble right now. Please try again."
        )
    return Failed("model_error", "Sorry, something went wrong while answering. Please try again.")


# Faults of the world outside, which the resident's message already explains: the upstream
# refused, failed, timed out or broke the stream, or the agent ran out of steps. One WARNING line
# each; a traceback only for what nobody expected (a bug is then easy to find).
_EXPECTED_FAULTS = (
    openai.APIError,
    AnswerTooLong,
    ClientStalled,
    StreamDecodeError,
    # The openai client's own stream parser (Chat Completions) raises this for a malformed event.
    json.JSONDecodeError,
    httpx2.HTTPError,
    TimeoutError,
    ModelTimeoutError,
    MaxTurnsExceeded,
)


def _log_failure(failure: Failed, error: Exception) -> None:
    if isinstance(error, _EXPECTED_FAULTS + outage_errors()):
        status = getattr(error, "status_code", None)
        logger.warning(
            "turn failed: %s (%s%s)",
            failure.code,
            type(error).__name__,
            f" {status}" if status else "",
        )
    else:
        logger.error("turn failed unexpectedly: %s", type(error).__name__, exc_info=error)


class QuietModelAttempts(logging.Filter):
    """The SDK logs every failed model attempt at ERROR ("Error streaming response"), retried
    ones included, with a traceback when model data logging is on. A turn that ends in failure
    is logged once, by _log_failure, with its code; these per-attempt lines go to DEBUG."""

    MESSAGES = ("Error streaming response", "Error getting response")

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if not (isinstance(first, str) and first.startswith(self.MESSAGES)):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and not isinstance(error, _EXPECTED_FAULTS):
            return True  # not a fault of the upstream: keep it as the SDK logged it
        record.levelno, record.levelname, record.exc_info = logging.DEBUG, "DEBUG", None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_model_attempts() -> None:
    """Install QuietModelAttempts on the SDK's logger (idempotent)."""
    sdk = logging.getLogger("openai.agents")
    if not any(isinstance(f, QuietModelAttempts) for f in sdk.filters):
        sdk.addFilter(QuietModelAttempts())


class TurnRunner:
    """Runs the town hall's agents for one message of one conversation: the agent the
    conversation's last handoff went to answers (roster.py)."""

    def __init__(
        self,
        roster: AgentRoster,
        *,
        tracing: bool,
        workflow_name: str,
        read_ahead_chars: int = STREAM_READ_AHEAD_CHARS,
    ) -> None:
        self.roster = roster
        self.tracing = tracing
        self.workflow_name = workflow_name
        self.read_ahead_chars = read_ahead_chars  # 0: unbounded

    def run_config(self, session_id: str) -> RunConfig:
        return RunConfig(
            tracing_disabled=not self.tracing,
            workflow_name=self.workflow_name,
            group_id=session_id,
            trace_metadata={"session_id": session_id},
        )

    async def stream(
        self,
        lease: TurnLease,
        agent_input: str | list[TResponseInputItem],
        context: AppContext,
        answering: str | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Frames for one turn: text, tool calls and results, handoffs, then `done` or `error`.

        `agent_input` is the new message, read with the lease's history; or, for a lease with no
        history (the protocol keeps the conversation), the whole conversation so far, and
        `answering` names the agent that answers it (the protocol keeps that too).
        The caller owns the lease; if the caller stops iterating (the client went away) the run
        is cancelled at once, so no more model tokens are pulled.
        """
        history = lease.history
        try:
            if history is not None:
                history = ReadOnce(history, await history.get_items())
                agent = self.roster.answering(history.items or ())
            else:
                agent = self.roster.by_name.get(answering or "", self.roster.first)
        except Exception as error:  # the store went away before the turn began
            failure = describe_failure(error)
            _log_failure(failure, error)
            yield failure
            return
        if agent is not self.roster.first:  # the front end learns who answers from here on
            yield AgentChanged(agent.name)
        # The model streams (lean_chat, lean_responses) wait for this credit, which we give back
        # once a frame was taken by the SSE writer: the SDK's own event queue is unbounded and
        # filled with put_nowait, so this is what keeps a slow client from pulling the upstream.
        # The run-loop task copies the context here, when run_streamed creates it.
        credit = None
        if self.read_ahead_chars:
            credit = StreamCredit(window=self.read_ahead_chars, stall_seconds=CLIENT_STALL_SECONDS)
        credit_token = CURRENT_CREDIT.set(credit)
        try:
            result = Runner.run_streamed(
                agent,
                agent_input,
                context=context,
                max_turns=MAX_AGENT_TURNS,
                run_config=self.run_config(lease.session_id),
                session=history,
            )
        finally:
            CURRENT_CREDIT.reset(credit_token)
        if credit is not None:
            credit.owner = result.run_loop_task
        cancelled = asyncio.Event()

        def cancel() -> None:
            cancelled.set()
            result.cancel()

        lease.on_cancel(cancel)
        agents_seen = 0
        calls: set[str | None] = set()  # tool calls announced: a result is sent only for those
        partial: list[str] = []  # the reply text streamed since the last completed message
        try:
            async for event in result.stream_events():
                if isinstance(event, RunItemStreamEvent) and event.name == "message_output_created":
                    partial.clear()  # that message is complete (the SDK saves it)
                if isinstance(event, AgentUpdatedStreamEvent):
                    agents_seen += 1
                    if agents_seen > 1:  # the first one is the starting agent, not a handoff
                        yield AgentChanged(event.new_agent.name)
                    continue
                try:
                    ours = _event_for(event)
                    if isinstance(ours, ToolCall):
                        calls.add(ours.call_id)
                    elif isinstance(ours, ToolResult) and ours.call_id not in calls:
                        ours = None  # a handoff's output (e.g. an ignored second handoff)
                    if ours is not None:
                        if isinstance(ours, TextDelta):
                            partial.append(ours.text)
                        yield ours  # returns once the protocol's writer has sent it
                finally:
                    if credit is not None and isinstance(event, RawResponsesStreamEvent):
                        credit.release(event.data)
        except Exception as error:
            failure = describe_failure(error)
            _log_failure(failure, error)
            yield failure
            return
        finally:
            if not result.is_complete:
                result.cancel()
        if cancelled.is_set():
            failure = _STOPPED.get(lease.stop_reason or "", CANCELLED)
            if failure is SERVER_RESTARTING:
                await _save_partial(lease, "".join(partial))
            yield failure
            return
        yield _finished(result.final_output, result)


class ReadOnce:
    """A conversation's history for one run, whose first whole read is the one the runner made
    to choose the answering agent: the SDK's own read then costs no second round trip. Nobody
    else writes while the turn holds the lease; a write drops the copy."""

    def __init__(self, inner: Any, items: list[TResponseInputItem]) -> None:
        self.inner = inner
        self.items: list[TResponseInputItem] | None = items
        self.session_id = inner.session_id
        self.session_settings = inner.session_settings

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        items, self.items = self.items, None
        if items is None or limit is not None:
            return list(await self.inner.get_items(limit))
        return list(items)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        self.items = None
        await self.inner.add_items(items)

    async def pop_item(self) -> TResponseInputItem | None:
        self.items = None
        item: TResponseInputItem | None = await self.inner.pop_item()
        return item

    async def clear_session(self) -> None:
        self.items = None
        await self.inner.clear_session()


async def _save_partial(lease: TurnLease, text: str) -> None:
    """Keep the unfinished reply in the conversation, so the next turn sees what was said.
    (A protocol that keeps the conversation itself saves its own, from the frames it sent.)"""
    if lease.history is None or not text.strip():
        return
    try:
        await lease.history.add_items(
            [{"role": "assistant", "content": text + " [interrupted: server restart]"}]
        )
    except Exception:
        logger.exception("could not save the interrupted reply")


def _event_for(event: Any) -> TurnEvent | None:
    if isinstance(event, RawResponsesStreamEvent):
        if event.data.type == "response.output_text.delta":
            return TextDelta(valid_text(event.data.delta))
        return None
    if not isinstance(event, RunItemStreamEvent):
        return None
    if event.name == "tool_called":
        raw = event.item.raw_item
        return ToolCall(
            name=getattr(raw, "name", None) or _get(raw, "name"),
            arguments=_parse_arguments(getattr(raw, "arguments", None) or _get(raw, "arguments")),
            call_id=getattr(event.item, "call_id", None),
        )
    if event.name == "tool_output":
        return ToolResult(
            call_id=getattr(event.item, "call_id", None), output=_tool_output(event.item.output)
        )
    return None


def _get(raw: Any, key: str) -> Any:
    return raw.get(key) if isinstance(raw, dict) else None


def _parse_arguments(arguments: str | None) -> Any:
    if not arguments:
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _tool_output(value: Any) -> Any:
    """A tool's output for the client: JSON text is sent as the object it encodes, and an MCP
    tool's text content (`{"type": "text", "text": ...}`, as the SDK passes it on) as its text."""
    if isinstance(value, list):
        return [_tool_output(part) for part in value]
    if (
        isinstance(value, dict)
        and value.get("type") == "text"
        and isinstance(value.get("text"), str)
    ):
        value = value["text"]
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    try:
        return to_jsonable_python(value)
    except Exception:  # an odd tool return type must not break the stream
        return str(value)


def _finished(final_output: Any, result: Any) -> Finished:
    usage = result.context_wrapper.usage
    return Finished(
        reply=valid_text(final_output)
        if isinstance(final_output, str)
        else _jsonable(final_output),
        usage={
            "requests": usage.requests,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
    )
