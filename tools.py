"""The town-hall agent's function tools: file incident reports and feedback, look up a report.

Their docstrings are the model's API: each argument's description is what the model reads.
Failure policy (decided on purpose, see tool_failure_message): invalid arguments go back to the
model as a message it can act on; any other failure is logged with its traceback and the model
is told plainly that nothing was filed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

from agents import RunContextWrapper, Tool, function_tool
from agents.exceptions import ModelBehaviorError
from agents.function_schema import function_schema
from pydantic import Field, ValidationError

from townhall.context import AppContext
from townhall.records.filing import Filing, Found, RecordsUnavailableError
from townhall.records.model import Feedback, Incident, IncidentCategory, Record, Sentiment
from townhall.records.receipts import FilingReceipt, StatusAnswer
from townhall.turns.events import ToolCall

logger = logging.getLogger(__name__)

INCIDENT_NEXT_STEPS = (
    "The city's operations team reviews new incident reports within 2 working days, and "
    "severity 4-5 reports the same day. The resident can ask for the status with the reference."
)
FEEDBACK_NEXT_STEPS = (
    "The feedback goes to the department responsible and is part of the city's monthly review. "
    "The resident can ask for its status with the reference."
)

ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=3, max_length=4000)]
OptionalText = Annotated[str | None, Field(max_length=500)]


def tool_failure_message(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """What the model hears when a tool fails (the SDK's default hides the cause)."""
    if isinstance(error, ModelBehaviorError) and str(error).startswith("Invalid JSON input"):
        return (
            f"The tool was not run: the arguments were invalid ({_problems(ctx)}). Correct "
            "them, asking the resident for anything missing, and call the tool again."
        )
    session = ctx.context.session_id if ctx.context else "-"
    logger.error("tool failed in session %s", session, exc_info=error)
    return (
        "The tool failed because of a technical problem and nothing was filed. Apologise to the "
        "resident and ask them to try again in a few minutes."
    )


def _problems(ctx: RunContextWrapper[Any]) -> str:
    model = _ARGUMENT_MODELS.get(getattr(ctx, "tool_name", ""))
    try:
        arguments = json.loads(getattr(ctx, "tool_arguments", "") or "{}")
        if model is not None:
            model.model_validate(arguments)
    except ValidationError as invalid:
        return "; ".join(
            f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
            for problem in invalid.errors(include_url=False, include_input=False)
        )
    except ValueError:
        pass
    return "they were not a valid JSON object"


def progress_line(call: ToolCall) -> str | None:
    """What a chat widget shows while a tool runs (ChatKit's progress line)."""
    if call.name == "report_incident":
        return "Filing your report with the city…"
    if call.name == "submit_feedback":
        return "Sending your feedback to the city…"
    if call.name == "check_report_status":
        reference = call.arguments.get("reference") if isinstance(call.arguments, dict) else None
        if isinstance(reference, str) and reference.strip():
            return f"Looking up {_normal_reference(reference)}…"
        return "Looking up your report…"
    # Another tool (an MCP server's): its name, so the widget shows that something runs.
    return f"Using {call.name}…" if call.name else None


def _normal_reference(reference: str) -> str:
    """A reference as residents type it ("inc 7k2qf9") in the form it is filed under."""
    return "".join(reference.split()).upper()


def _receipt(record: Record, filing: Filing, next_steps: str) -> FilingReceipt:
    if filing.duplicate:
        note = f"This was already filed as {filing.reference}; no second report was created."
    elif filing.queued:
        note = (
            f"Recorded as {filing.reference}. It is saved and will reach the city's system "
            "automatically within minutes; the reference is already valid."
        )
    else:
        note = f"Filed as {filing.reference}."
    return FilingReceipt(
        reference=filing.reference,
        kind=record.kind,  # type: ignore[arg-type]
        status=record.status,
        saved="queued" if filing.queued else "stored",
        duplicate=filing.duplicate,
        next_steps=next_steps,
        note=note,
    )


async def report_incident(
    ctx: RunContextWrapper[AppContext],
    category: IncidentCategory,
    description: LongText,
    location: ShortText,
    severity: Annotated[int, Field(ge=1, le=5)],
    occurred_at: OptionalText = None,
    people_involved: OptionalText = None,
    reporter_name: OptionalText = None,
    reporter_contact: OptionalText = None,
) -> str:
    """File an incident report with the city, after the resident has confirmed the details.

    Args:
        category: The kind of incident; use "other" when none fits.
        description: What happened, in the resident's words, with any detail that helps crews.
        location: Where exactly: street and number, crossing, landmark or station.
        severity: How serious, from 1 (minor nuisance) to 5 (danger to people).
        occurred_at: When it happened or was noticed, as the resident said it (null if unknown).
        people_involved: Who was involved or affected, if anyone (null if nobody or unknown).
        reporter_name: The resident's name, only if they gave it (null otherwise).
        reporter_contact: A phone number or email for follow-up, only if given (null otherwise).
    """
    record = Incident.create(
        ctx.context.filer,
        category=category,
        description=description,
        location=location,
        severity=severity,
        occurred_at=occurred_at,
        people_involved=people_involved,
        reporter_name=reporter_name,
        reporter_contact=reporter_contact,
    )
    filing = await ctx.context.desk.file(record)
    return _receipt(record, filing, INCIDENT_NEXT_STEPS).model_dump_json()


async def submit_feedback(
    ctx: RunContextWrapper[AppContext],
    topic: ShortText,
    summary: LongText,
    sentiment: Sentiment,
    location: OptionalText = None,
    name: OptionalText = None,
) -> str:
    """Submit a resident's feedback or suggestion to the city, after they confirmed it.

    Args:
        topic: A short subject, e.g. "lockers at Ginza station" or "park opening hours".
        summary: The feedback itself, faithful to what the resident said.
        sentiment: "positive" (praise), "neutral" (suggestion or remark) or "negative" (complaint).
        location: The place it is about, if any (null otherwise).
        name: The resident's name, only if they gave it (null otherwise).
    """
    record = Feedback.create(
        ctx.context.filer,
        topic=topic,
        summary=summary,
        sentiment=sentiment,
        location=location,
        name=name,
    )
    filing = await ctx.context.desk.file(record)
    return _receipt(record, filing, FEEDBACK_NEXT_STEPS).model_dump_json()


async def check_report_status(
    ctx: RunContextWrapper[AppContext],
    reference: Annotated[str, Field(min_length=3, max_length=32)],
) -> str:
    """Look up the status of a report or feedback the resident filed.

    Args:
        reference: The reference the resident was given, e.g. "INC-7K2QF9" or "FB-3MZP8Q".
    """
    reference = _normal_reference(reference)
    try:
        found = await ctx.context.desk.lookup(reference, ctx.context.viewer)
    except RecordsUnavailableError:
        return StatusAnswer(
            found=False,
            reference=reference,
            note="The records system cannot be reached right now; ask the resident to try later.",
        ).model_dump_json()
    if found is None:
        # Also the answer for another resident's report: it must not even learn that the
        # reference exists (see records.visibility).
        return StatusAnswer(found=False, reference=reference, note=NOT_FOUND_NOTE).model_dump_json()
    record = found.record
    full = found.visibility == "full"
    return StatusAnswer(
        found=True,
        reference=record.reference,
        kind=record.kind,
        status=record.status,
        category=record.category_label(),
        summary=record.summary() if full else None,
        created_at=record.created_at.isoformat(timespec="seconds"),
        note=_status_note(found, full),
    ).model_dump_json()


NOT_FOUND_NOTE = "No report with this reference was filed by this resident."


def _status_note(found: Found, full: bool) -> str:
    notes = []
    if found.set_aside:
        notes.append(
            "Saved, but the city's system could not take it yet; staff have been alerted to it."
        )
    elif found.queued:
        notes.append("Saved locally; it reaches the city's system within minutes.")
    if not full:
        notes.append(
            "Filed in another conversation: only its status and category can be shown here."
        )
    return " ".join(notes)


_TOOL_FUNCTIONS: list[Callable[..., Any]] = [report_incident, submit_feedback, check_report_status]
REPORT_INCIDENT, SUBMIT_FEEDBACK, CHECK_REPORT_STATUS = (
    function_tool(func, failure_error_function=tool_failure_message) for func in _TOOL_FUNCTIONS
)
TOWN_HALL_TOOLS: list[Tool] = [REPORT_INCIDENT, SUBMIT_FEEDBACK, CHECK_REPORT_STATUS]
# The same argument models the SDK validates with. By default the SDK keeps tool arguments out
# of its errors (they may be personal data), so tool_failure_message re-validates to tell the
# model what to fix.
_ARGUMENT_MODELS = {
    func.__name__: function_schema(func).params_pydantic_model for func in _TOOL_FUNCTIONS
}
