"""Admin-key routes: the dead letters an operator must look at."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from townhall.errors import AdminOnlyError, DeadLetterNotFoundError
from townhall.http.params import ReferencePath
from townhall.http.schemas import (
    DeadLetterInfo,
    DeadLetterList,
    DeadLetterRetried,
    error_responses,
    iso_time,
)
from townhall.http.services import CallerDep, ServicesDep


def router() -> APIRouter:
    # The admin check is a dependency, so it comes before the parameters are validated: a
    # resident's key gets 403 for every admin route, never 422 for a malformed reference.
    routes = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])
    routes.add_api_route(
        "/admin/dead-letters",
        list_dead_letters,
        methods=["GET"],
        response_model=DeadLetterList,
        responses=error_responses(401, 403, 503),
    )
    routes.add_api_route(
        "/admin/dead-letters/{reference}/retry",
        retry_dead_letter,
        methods=["POST"],
        status_code=202,
        response_model=DeadLetterRetried,
        responses=error_responses(
            401, 403, 404, 422, 503, s404="No dead letter with this reference."
        ),
    )
    return routes


async def require_admin(caller: CallerDep) -> None:
    # The admin key itself: a server without keys has no admin (dead letters hold personal data).
    if not caller.admin_key:
        raise AdminOnlyError()


async def list_dead_letters(services: ServicesDep) -> DeadLetterList:
    """Records the store refused for good (invalid data, a constraint), set aside after a few
    attempts. Admin key only."""
    letters = [
        DeadLetterInfo(
            reference=letter.record.reference,
            kind=letter.record.kind,
            attempts=letter.attempts,
            last_error=letter.last_error,
            queued_at=iso_time(letter.queued_at),
            dead_at=iso_time(letter.dead_at),
            record=letter.record.row(),
        )
        for letter in await services.desk.dead_letters()
    ]
    return DeadLetterList(dead_letters=letters, count=len(letters))


async def retry_dead_letter(
    reference: ReferencePath,
    services: ServicesDep,
) -> DeadLetterRetried:
    """Queue a dead letter again once its cause is fixed; the background sync tries it at once
    (and sets it aside again if the store still refuses it). Admin key only."""
    if not await services.desk.retry_dead_letter(reference):
        raise DeadLetterNotFoundError(reference)
    return DeadLetterRetried(reference=reference, queued=True)
