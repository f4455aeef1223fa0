"""The Personalizer routes (``/personalizer/v1.0``): rank, reward and activate.

How they differ from Azure Personalizer is described in :mod:`bandit.wire.personalizer`;
they decide and produce as the native routes do (:mod:`bandit.api.native`).
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from bandit.api.deps import CallerDep, PolicyQuery, ServiceDep, read_body, resolve_policy
from bandit.api.errors import PERSONALIZER_ERRORS, invalid, model_response
from bandit.api.native import check_may_send, decide, feedback
from bandit.api.openapi import reads_body
from bandit.wire.personalizer import (
    PersonalizerRankRequest,
    PersonalizerRankResponse,
    PersonalizerRewardRequest,
    to_activation,
    to_rank_request,
    to_reward,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/personalizer/v1.0", tags=["personalizer"], responses=PERSONALIZER_ERRORS
)

# -- Personalizer routes -----------------------------------------------------------------

EventIdPath = Annotated[str, Path(alias="eventId", description="The event id of the decision.")]


@router.post(
    "/rank",
    status_code=201,
    response_model=PersonalizerRankResponse,
    openapi_extra=reads_body(PersonalizerRankRequest),
)
async def personalizer_rank(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's Rank: the ranking, the event id and the action to reward (201)."""
    served_by = resolve_policy(service, caller, policy)
    raw = await read_body(request)
    try:
        rank_request = to_rank_request(raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the rank request") from None
    outcome = await decide(request, service, rank_request, served_by)
    decision = outcome.decision
    headers = {
        "X-Streambandit-Policy": decision.policy,
        "X-Streambandit-Model-Version": decision.model_version,
    }
    return model_response(PersonalizerRankResponse.from_decision(decision), 201, headers)


@router.post(
    "/events/{eventId}/reward",
    status_code=204,
    openapi_extra=reads_body(PersonalizerRewardRequest),
)
async def personalizer_reward(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's Reward for the event's chosen action (204)."""
    check_may_send(service, caller, policy)
    raw = await read_body(request)
    try:
        record = to_reward(event_id, raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the reward") from None
    await feedback(request, service, caller, "reward", record)
    return Response(status_code=204)


@router.post("/events/{eventId}/activate", status_code=204)
async def personalizer_activate(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's Activate for an event ranked with ``deferActivation`` (204)."""
    check_may_send(service, caller, policy)
    try:
        record = to_activation(event_id, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the activation") from None
    await feedback(request, service, caller, "activation", record)
    return Response(status_code=204)
