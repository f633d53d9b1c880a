"""describe_failure: every failure a turn can meet becomes a stable code and a message fit for a
resident, never the exception's text. The openai errors are the ones the real client raises for
an upstream answer (served by an in-process transport: no network)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx2
import openai
import pytest
import redis.exceptions  # noqa: F401  (loaded, as a Redis session store loads it)
from agents import (
    GuardrailFunctionOutput,
    InputGuardrail,
    InputGuardrailResult,
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
    UserError,
)
from agents.exceptions import ModelTimeoutError

from townhall.errors import (
    SessionBusyError,
    SessionNotFoundError,
    UpstreamError,
    outage_errors,
)
from townhall.turns.events import Failed
from townhall.turns.runner import describe_failure
from townhall.turns.sse_decode import StreamDecodeError
from townhall.turns.stream_limits import AnswerTooLong, ClientStalled

SECRET = "sk-secret-123"


def _upstream(request: httpx2.Request) -> httpx2.Response:
    case = request.headers["x-case"]
    if case == "timeout":
        raise httpx2.ReadTimeout(f"read timed out, key {SECRET}", request=request)
    if case == "refused":
        raise httpx2.ConnectError(f"refused at http://{SECRET}@model.test", request=request)
    error = {"message": f"Incorrect API key provided: {SECRET}", "code": "invalid_api_key"}
    return httpx2.Response(int(case), json={"error": error})


async def raised_by_the_client(case: str) -> openai.OpenAIError:
    """What the openai client raises when the upstream answers `case` (a status, or a fault)."""
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(_upstream))
    client = openai.AsyncOpenAI(
        api_key=SECRET, base_url="http://model.test/v1", max_retries=0, http_client=http
    )
    try:
        await client.responses.create(model="m", input="hi", extra_headers={"x-case": case})
    except openai.OpenAIError as error:
        return error
    finally:
        await client.close()
    raise AssertionError(f"the client did not raise for {case}")


def assert_safe(failure: Failed, error: BaseException) -> None:
    """The message is for a resident: none of the error's text, type or secrets."""
    assert isinstance(failure, Failed)
    assert failure.message and failure.message.endswith(".")
    for leak in (SECRET, str(error), type(error).__name__, "Traceback", "model.test"):
        assert leak not in failure.message, leak


@pytest.mark.parametrize(
    ("case", "error_type", "code"),
    [
        ("429", openai.RateLimitError, "model_rate_limited"),
        ("500", openai.InternalServerError, "model_unavailable"),
        ("503", openai.InternalServerError, "model_unavailable"),
        ("401", openai.AuthenticationError, "model_error"),
        ("400", openai.BadRequestError, "model_error"),
        ("timeout", openai.APITimeoutError, "model_timeout"),
        ("refused", openai.APIConnectionError, "model_unavailable"),
    ],
)
async def test_openai_client_errors(case: str, error_type: type[Exception], code: str) -> None:
    error = await raised_by_the_client(case)
    assert type(error) is error_type
    failure = describe_failure(error)
    assert failure.code == code
    assert_safe(failure, error)


async def test_the_status_errors_carry_the_secret_that_must_not_leak() -> None:
    error = await raised_by_the_client("401")
    assert SECRET in str(error)  # so the check above is not vacuous
    assert describe_failure(error) == Failed(
        "model_error", "Sorry, something went wrong while answering. Please try again."
    )


def _tripwire() -> InputGuardrailTripwireTriggered:
    def check(context: Any, agent: Any, text: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=SECRET, tripwire_triggered=True)

    guardrail: InputGuardrail[Any] = InputGuardrail(guardrail_function=check, name="screen")
    output = GuardrailFunctionOutput(output_info={"why": SECRET}, tripwire_triggered=True)
    return InputGuardrailTripwireTriggered(InputGuardrailResult(guardrail, output))


def redis_error(name: str) -> type[Exception]:
    """The Redis client's error of this name, as the service counts it among outages."""
    return next(
        e for e in outage_errors() if e.__module__.startswith("redis") and e.__name__ == name
    )


def _request() -> httpx2.Request:
    return httpx2.Request("POST", f"http://{SECRET}@model.test/v1/responses")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AnswerTooLong(64_000), "answer_too_long"),
        (ClientStalled(f"client stalled ({SECRET})"), "client_stalled"),
        (ModelTimeoutError(30.0), "model_timeout"),
        (TimeoutError(f"timed out {SECRET}"), "model_timeout"),
        (httpx2.ReadTimeout(f"read {SECRET}", request=_request()), "model_timeout"),
        (
            httpx2.RemoteProtocolError(f"peer closed {SECRET}", request=_request()),
            "model_unavailable",
        ),
        (httpx2.ConnectError(f"refused {SECRET}", request=_request()), "model_unavailable"),
        (MaxTurnsExceeded(f"Max turns (10) exceeded {SECRET}"), "max_turns"),
        (ModelBehaviorError(f"model called a missing tool {SECRET}"), "model_error"),
        (UserError(f"bad config {SECRET}"), "model_error"),
        (_tripwire(), "model_error"),
        (StreamDecodeError(f"not JSON: {SECRET}"), "model_error"),
        (json.JSONDecodeError(f"Expecting value {SECRET}", "{", 0), "model_error"),
        (sqlite3.OperationalError(f"unable to open {SECRET}.db"), "service_unavailable"),
        (ConnectionRefusedError(111, f"refused {SECRET}"), "service_unavailable"),
        (redis_error("ConnectionError")(f"redis://:{SECRET}@cache"), "service_unavailable"),
        # Redis's own timeout is not the builtin TimeoutError: a store fault, not the model's.
        (redis_error("TimeoutError")(f"redis://:{SECRET}@cache"), "service_unavailable"),
        (SessionNotFoundError(SECRET), "model_error"),
        (SessionBusyError(SECRET), "model_error"),
        (UpstreamError(f"upstream said {SECRET}"), "model_error"),
        (RuntimeError(f"api_key={SECRET}"), "model_error"),
        (KeyError(SECRET), "model_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_each_failure_has_its_code_and_a_safe_message(error: BaseException, code: str) -> None:
    failure = describe_failure(error)
    assert failure.code == code
    assert_safe(failure, error)


def test_an_error_raised_with_a_traceback_does_not_leak_it() -> None:
    try:
        raise RuntimeError(f"Authorization: Bearer {SECRET}")
    except RuntimeError as error:
        raised = error
    assert raised.__traceback__ is not None
    failure = describe_failure(raised)
    assert failure.code == "model_error"
    assert_safe(failure, raised)
    assert "line" not in failure.message and "File" not in failure.message


@pytest.mark.parametrize(
    "make",
    [
        lambda text: RuntimeError(text),
        lambda text: MaxTurnsExceeded(text),
        lambda text: TimeoutError(text),
        lambda text: sqlite3.OperationalError(text),
        lambda text: openai.APIConnectionError(message=text, request=_request()),
    ],
)
def test_the_message_does_not_depend_on_the_error_text(make: Any) -> None:
    assert describe_failure(make("harmless")) == describe_failure(make(f"key {SECRET}"))


def test_every_code_has_its_own_message() -> None:
    errors: list[BaseException] = [
        AnswerTooLong(1),
        ClientStalled(),
        ModelTimeoutError(1.0),
        httpx2.ConnectError("x", request=_request()),
        MaxTurnsExceeded("x"),
        sqlite3.OperationalError("x"),
        RuntimeError("x"),
    ]
    failures = [describe_failure(e) for e in errors]
    assert [f.code for f in failures] == [
        "answer_too_long",
        "client_stalled",
        "model_timeout",
        "model_unavailable",
        "max_turns",
        "service_unavailable",
        "model_error",
    ]
    assert len({f.message for f in failures}) == len(failures)
    assert failures[0] == Failed(
        "answer_too_long", "That answer grew too long to send. Please ask for something shorter."
    )
    assert failures[4] == Failed(
        "max_turns", "That request needed too many steps. Please try again more simply."
    )
