"""HTTP routes for ChatKit: the self-hosted protocol at `POST /chatkit`, and the hosted-workflow
session endpoint `POST /api/chatkit/session`.

Protocol errors are answered before any streaming starts (400 for a request that does not
validate, 404 for an unknown thread, 409 for a thread that is still answering): once a 200
stream has begun, an error can only truncate it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any, Union

from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    ChatKitReq,
    ErrorCode,
    ErrorEvent,
    ItemsFeedbackReq,
    ItemsListReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsDeleteReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsRetryAfterItemReq,
    ThreadsUpdateReq,
    UserMessageTextContent,
    is_streaming_req,
)
from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from openai import AsyncOpenAI, OpenAIError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.background import BackgroundTask

from townhall.errors import (
    ChatKitItemNotFoundError,
    ChatKitRequestError,
    HostedChatKitUnavailableError,
    ThreadNotFoundError,
    UpstreamError,
    shown,
)
from townhall.http.caller import rate_identity
from townhall.http.schemas import error_responses
from townhall.http.services import CallerDep, ServicesDep
from townhall.logs import current_request
from townhall.protocols.chatkit.server import (
    CHATKIT_REQUEST,
    ChatKitRequestContext,
    TownHallChatKitServer,
    thread_id_of,
)
from townhall.protocols.chatkit.store import AttachmentsUnsupportedError
from townhall.sessions.store import TurnLease
from townhall.turns.capacity import Slot
from townhall.turns.rate_limit import enforce

logger = logging.getLogger(__name__)


# What this server answers. The rest of the protocol (attachments, transcription, widget actions,
# client tools, structured input) needs features the town hall does not offer: 400, clearly.
SUPPORTED_REQUESTS = (
    ThreadsCreateReq,
    ThreadsAddUserMessageReq,
    ThreadsRetryAfterItemReq,
    ThreadsGetByIdReq,
    ThreadsListReq,
    ThreadsUpdateReq,
    ThreadsDeleteReq,
    ItemsListReq,
    ItemsFeedbackReq,
)


def chatkit_request_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of the requests answered here, and the definitions it refers to."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[Union[SUPPORTED_REQUESTS], Field(discriminator="type")]  # type: ignore[valid-type,arg-type]  # noqa: UP007, E501
    )
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    # A `type` tag has a default in chatkit's models, but it is a union's discriminator: pydantic
    # refuses a request without it, so the published schema requires it too.
    for definition in definitions.values():
        tag = definition.get("properties", {}).get("type", {})
        if "const" in tag:
            definition["required"] = sorted({*definition.get("required", []), "type"})
    definitions["UserMessageInput"]["properties"]["attachments"]["maxItems"] = 0  # no uploads here
    # A message with no text is refused (400), as /chat refuses a blank one: at least one text
    # part, and a text part holds more than white space.
    content = definitions["UserMessageInput"]["properties"]["content"]
    content["minItems"] = 1
    content["contains"] = {"$ref": "#/components/schemas/UserMessageTextContent"}
    definitions["UserMessageTextContent"]["properties"]["text"]["pattern"] = r"\S"
    definitions["ThreadUpdateParams"]["properties"]["title"]["maxLength"] = MAX_TITLE_CHARS
    # A page of no items (or fewer) is refused with a 400, so the schema says so.
    for page in ("ItemsListParams", "ThreadListParams"):
        definitions[page]["properties"]["limit"]["anyOf"][0]["minimum"] = 1
    return schema, definitions


# A title a resident's client renames a thread to; long enough for any real one.
MAX_TITLE_CHARS = 200

STREAM_FAILED = ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True)


class HostedSessionRequest(BaseModel):
    user: str | None = Field(None, max_length=128, description="Your id for the end user.")


class HostedSession(BaseModel):
    client_secret: str
    expires_at: int | None = None


def chatkit_router() -> APIRouter:
    router = APIRouter(tags=["chatkit"])

    @router.post(
        "/chatkit",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatKitRequest"}}
                },
            }
        },
        responses={
            200: {
                "description": "ChatKit JSON, or for streaming ops a stream of ChatKit events, "
                "each a `data:` line of JSON (a ThreadStreamEvent).",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "properties": {"data": {"type": "string"}},
                            "required": ["data"],
                        }
                    },
                },
            },
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                413,
                422,
                429,
                503,
                s403="A web page on an origin not in CORS_ORIGINS sent it.",
                s404="No thread with this id (another key's is not found either).",
                s409="The thread is answering another message.",
                s422="The message is longer than MAX_MESSAGE_CHARS.",
            ),
        },
    )
    async def chatkit(request: Request, services: ServicesDep, caller: CallerDep) -> Response:
        """The ChatKit protocol, for a ChatKit widget pointed at this server."""
        server = services.chatkit
        await enforce(services.rate_limiter, rate_identity(request, caller))
        body = await request.body()
        try:
            parsed = CHATKIT_REQUEST.validate_json(body)
        except ValidationError as invalid:
            raise ChatKitRequestError(_describe(invalid)) from None
        _refuse_what_we_do_not_take(parsed)
        thread_id = thread_id_of(parsed)
        if thread_id is not None:
            exists, thread_owner = await server.threads.thread_owner(thread_id)
            # Another key's thread gets the same answer as a thread that does not exist.
            if not exists or (caller.owner is not None and thread_owner != caller.owner):
                raise ThreadNotFoundError(thread_id)
        tags = current_request.get()
        context = ChatKitRequestContext(
            request_id=tags.request_id if tags else "-",
            owner=caller.owner,
            creator=caller.key_id,
            principal=caller.identity,
            admin=caller.admin_key,
        )
        if not is_streaming_req(parsed):
            return await _answer(server, body, context)
        if isinstance(parsed, ThreadsRetryAfterItemReq):
            # ChatKitServer answers an unknown item with an empty stream; a client should know.
            try:
                await server.threads.load_item(thread_id or "", parsed.params.item_id, context)
            except NotFoundError:
                raise ChatKitItemNotFoundError(
                    f"No item {shown(parsed.params.item_id)} in this thread."
                ) from None
        # A new answer: admitted as /chat admits a turn (503 shutting_down while draining,
        # 422 for a message over the limit; the rate limit counted this request above), and the
        # thread's lease taken now, so a busy thread is a 409 and not a broken stream.
        slot = await services.pipeline.admit(rate_identity=None, message=_message_text(parsed))
        lease = None
        try:
            if thread_id is not None:
                lease = await server.leases.begin_turn(thread_id, caller.owner, caller.key_id)
            result = await server.process(body, replace(context, lease=lease))
        except BaseException:
            await _let_go(server, lease, slot)
            raise
        assert isinstance(result, StreamingResult)
        return StreamingResponse(
            _stream(result, server, lease, slot),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            # Also runs when the client left before the body started (the generator never ran).
            background=BackgroundTask(_let_go, server, lease, slot),
        )

    @router.post(
        "/api/chatkit/session",
        response_model=HostedSession,
        responses=error_responses(
            401,
            413,
            415,
            422,
            429,
            502,
            503,
            s502="OpenAI refused or failed to create the session.",
            s503="Hosted ChatKit is not configured (CHATKIT_WORKFLOW_ID, OPENAI_API_KEY).",
        ),
    )
    async def hosted_session(
        http: Request,
        services: ServicesDep,
        caller: CallerDep,
        request: Annotated[HostedSessionRequest | None, Body()] = None,
    ) -> HostedSession:
        """A client secret for a ChatKit widget running an OpenAI-hosted Agent Builder workflow."""
        settings = services.settings
        if not settings.chatkit_workflow_id or not settings.openai_api_key:
            raise HostedChatKitUnavailableError(
                "Hosted ChatKit is not configured: set CHATKIT_WORKFLOW_ID and OPENAI_API_KEY, or "
                "point the widget at the self-hosted endpoint POST /chatkit instead."
            )
        # Each secret is a call to OpenAI on the city's key: counted like a message.
        await enforce(services.rate_limiter, rate_identity(http, caller))
        user = (request.user if request else None) or f"resident-{uuid.uuid4().hex[:12]}"
        return await create_hosted_session(
            AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value()),
            settings.chatkit_workflow_id,
            user,
        )

    return router


async def create_hosted_session(client: AsyncOpenAI, workflow_id: str, user: str) -> HostedSession:
    try:
        async with client:
            session = await client.beta.chatkit.sessions.create(
                user=user, workflow={"id": workflow_id}
            )
    except OpenAIError as error:
        logger.error("creating a hosted ChatKit session failed: %s", type(error).__name__)
        raise UpstreamError("OpenAI did not create a ChatKit session; try again shortly.") from None
    return HostedSession(client_secret=session.client_secret, expires_at=session.expires_at)


async def _answer(
    server: TownHallChatKitServer, body: bytes, context: ChatKitRequestContext
) -> Response:
    try:
        result = await server.process(body, context)
    except NotFoundError as missing:
        raise ChatKitItemNotFoundError(str(missing)) from None
    except (AttachmentsUnsupportedError, RuntimeError) as unsupported:
        # RuntimeError: ChatKitServer's "no AttachmentStore configured".
        raise ChatKitRequestError("This server does not accept attachments.") from unsupported
    return Response(result.json, media_type="application/json")  # type: ignore[union-attr]


async def _stream(
    result: StreamingResult, server: TownHallChatKitServer, lease: TurnLease | None, slot: Slot
) -> AsyncIterator[bytes]:
    try:
        async for chunk in result:
            yield chunk
    except Exception:
        # The status is already 200: end the stream with a protocol error event rather than
        # cutting it off (ChatKitServer has logged the traceback).
        yield b"data: " + STREAM_FAILED.model_dump_json().encode() + b"\n\n"
    finally:
        await _let_go(server, lease, slot)


async def _let_go(server: TownHallChatKitServer, lease: TurnLease | None, slot: Slot) -> None:
    """The turn's slot, and the thread's lease if the turn did not end it (it never started, or
    broke early). Both are idempotent: the stream's end and the background task both call it."""
    slot.release()
    if lease is not None:
        await server.leases.end_turn(lease, completed=False)


def _refuse_what_we_do_not_take(request: ChatKitReq) -> None:
    """ChatKitRequestError (400) for a valid ChatKit request this server does not answer; the
    published schema (chatkit_request_schema) says the same of each."""
    if not isinstance(request, SUPPORTED_REQUESTS):
        raise ChatKitRequestError(f"{request.type} is not supported by this server.")
    params = getattr(request, "params", None)
    limit = getattr(params, "limit", None)
    if isinstance(limit, int) and limit < 1:
        raise ChatKitRequestError("params.limit must be at least 1.")
    if isinstance(request, ThreadsUpdateReq) and len(request.params.title) > MAX_TITLE_CHARS:
        raise ChatKitRequestError(f"params.title: at most {MAX_TITLE_CHARS} characters.")
    message_input = getattr(params, "input", None)
    if message_input is None:
        return
    if message_input.attachments:
        raise ChatKitRequestError("This server does not accept attachments.")
    if not _message_text(request).strip():
        # As /chat refuses a blank message: there is nothing for the assistant to answer.
        raise ChatKitRequestError("params.input.content: the message has no text.")


def _message_text(request: ChatKitReq) -> str:
    """The text of the resident's new message ("" for a retry, which sends none)."""
    message_input = getattr(getattr(request, "params", None), "input", None)
    parts = getattr(message_input, "content", None) or []
    return "".join(part.text for part in parts if isinstance(part, UserMessageTextContent))


def _describe(invalid: ValidationError) -> str:
    problems = invalid.errors(include_url=False, include_input=False)
    first = problems[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    # Bounded: a tag error quotes the tag the client sent, whatever its length.
    problem = first["msg"] if len(first["msg"]) <= 200 else first["msg"][:200] + "..."
    return f"Not a valid ChatKit request: {where[:200]}: {problem}{more}"
