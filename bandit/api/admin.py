"""The admin routes: a policy's live settings and kill switch, noisy privacy reports.

Changing settings, the kill switch, releasing a report and reading the privacy ledger
need an ``admin`` key; any key allowed the policy may read its settings.
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat
from redis.exceptions import RedisError

from bandit.api.deps import (
    CONTROL_TIMEOUT,
    Caller,
    CallerDep,
    Service,
    ServiceDep,
    redis_or_503,
    resolve_policy,
)
from bandit.api.errors import (
    ERROR_RESPONSES,
    POLICY_ERRORS,
    RefusedRequestError,
    error_responses,
    json_response,
    model_response,
)
from bandit.api.native import parse_body
from bandit.api.openapi import reads_body
from bandit.api.requestlog import note
from bandit.errors import ConfigurationError
from bandit.privacy.dp import BudgetExhaustedError, PrivacyLedger, laplace
from bandit.wire.schemas import PolicyName, PolicySettings, WireModel

__all__ = ["BaselineSwitch", "Ledger", "Release", "Report", "ReportRequest", "router"]

router = APIRouter(prefix="/v1", tags=["native"], responses=ERROR_RESPONSES)


class ReportRequest(WireModel):
    """A noisy aggregate to release (``POST /v1/privacy/reports``, admin keys).

    Attributes
    ----------
    metric
        ``reward_rate``: decisions joined with a reward over decisions joined;
        ``learning_consent_rate``: decisions with learning consent over decisions.
    policy
        Whose counters.
    epsilon
        The privacy budget this release spends (half on each count).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["reward_rate", "learning_consent_rate"]
    policy: PolicyName
    # from 0.01: a subnormal ε halved to 0.0 (a 500 once the budget was spent)
    epsilon: StrictFloat = Field(ge=0.01, le=10.0, allow_inf_nan=False)


class BaselineSwitch(BaseModel):
    """The kill switch of a policy: the baseline serves (``forced``), or its own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forced: StrictBool


class Report(BaseModel):
    """A released noisy rate and the budget left (``POST /v1/privacy/reports``)."""

    metric: str
    policy: str
    value: float = Field(ge=0.0, le=1.0)
    noisy_numerator: float
    noisy_denominator: float
    noise_scale: float
    epsilon: float
    budget_left: float


class Release(BaseModel):
    """One noisy release: what, the ε it spent, when (Unix time)."""

    what: str
    epsilon: float
    at: float


class Ledger(BaseModel):
    """Every noisy release so far and the budget (``GET /v1/privacy/ledger``)."""

    budget: float
    spent: float
    releases: list[Release]


def _check_admin(caller: Caller, what: str = "this") -> None:
    if caller.key.role != "admin":
        message = f"{what} needs an admin key; this key's role is {caller.key.role!r}"
        raise RefusedRequestError(403, "Forbidden", message)


@router.post(
    "/privacy/reports",
    response_model=Report,
    responses=error_responses(404, 409),
    openapi_extra=reads_body(ReportRequest),
    tags=["privacy"],
)
async def privacy_report(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Release a rate with Laplace noise on both counts, spending ε from the ledger."""
    _check_admin(caller, "releasing a report")
    body = await parse_body(request, ReportRequest, "the report request", service.settings.limits)
    resolve_policy(service, caller, body.policy)  # 404 when not served, 403 not the key's
    ledger = PrivacyLedger(
        service.control_redis,
        service.settings.redis.key_prefix,
        service.settings.privacy.report_budget,
    )
    try:
        counters = await service.store.counters(body.policy)
        left = await ledger.spend(body.epsilon, f"{body.metric} of {body.policy}")
    except BudgetExhaustedError as exc:
        raise RefusedRequestError(409, "Conflict", str(exc)) from None
    except (RedisError, OSError, TimeoutError) as exc:
        raise RefusedRequestError(
            503, "ServiceUnavailable", f"Redis is unavailable: {exc}"
        ) from None
    if body.metric == "reward_rate":
        joined = counters.get("joined", 0)
        numerator, denominator = joined - counters.get("default_rewards", 0), joined
    else:
        decisions = counters.get("decisions", 0)
        numerator, denominator = decisions - counters.get("not_learned", 0), decisions
    half = body.epsilon / 2
    noisy_numerator = laplace(numerator, sensitivity=1.0, epsilon=half)
    noisy_denominator = laplace(denominator, sensitivity=1.0, epsilon=half)
    value = min(max(noisy_numerator / max(noisy_denominator, 1.0), 0.0), 1.0)
    note(request, "report.released", metric=body.metric, policy=body.policy, epsilon=body.epsilon)
    return json_response(
        {
            "metric": body.metric,
            "policy": body.policy,
            "value": value,
            "noisy_numerator": noisy_numerator,
            "noisy_denominator": noisy_denominator,
            "noise_scale": 1.0 / half,
            "epsilon": body.epsilon,
            "budget_left": left,
        }
    )


@router.get("/privacy/ledger", response_model=Ledger, tags=["privacy"])
async def privacy_ledger(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """List every noisy release so far and the budget left (admin keys)."""
    _check_admin(caller, "reading the privacy ledger")
    budget = service.settings.privacy.report_budget
    ledger = PrivacyLedger(service.control_redis, service.settings.redis.key_prefix, budget)
    entries = await ledger.entries()
    spent = math.fsum(float(e["epsilon"]) for e in entries)  # type: ignore[arg-type]
    return json_response({"budget": budget, "spent": spent, "releases": entries})


@router.get(
    "/policies/{name}/settings",
    response_model=PolicySettings,
    responses=POLICY_ERRORS,
    name="get_policy_settings",
)
async def get_settings_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Return a policy's live settings (their ``ETag`` is the settings version)."""
    resolve_policy(service, caller, name)
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, version = await _live_settings(service, name)
    note(request, policy=name, settings_version=version)
    return model_response(settings, headers={"ETag": f'"{version}"'})


async def _live_settings(service: Service, name: str) -> tuple[PolicySettings, int]:
    """Return a served policy's settings and their version: stored, else those it runs."""
    found = await service.store.policy_settings(name)
    if found is None:
        loaded = service.engine.loaded(name)
        assert loaded is not None
        found = (loaded.settings, loaded.settings_version)
    return found


async def _store_settings(
    request: Request, service: Service, name: str, settings: PolicySettings
) -> Response:
    """Store a policy's new settings, apply them here at once, and answer with them."""
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            version = await service.store.set_policy_settings(name, settings)
            await service.engine.refresh(name)
    note(
        request,
        "settings.changed",
        policy=name,
        settings_version=version,
        exploration=settings.exploration,
        exploration_floor=settings.exploration_floor,
        baseline_forced=settings.baseline_forced,
    )
    return model_response(settings, headers={"ETag": f'"{version}"'})


@router.put(
    "/policies/{name}/settings",
    response_model=PolicySettings,
    responses=POLICY_ERRORS,
    name="put_policy_settings",
    openapi_extra=reads_body(PolicySettings),
)
async def put_settings_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Change a policy's settings; exploration applies at once, the model is kept."""
    resolve_policy(service, caller, name)
    _check_admin(caller, "changing settings")
    body = await parse_body(request, PolicySettings, "the policy settings", service.settings.limits)
    try:
        await service.engine.check_settings(name, body)
    except (ConfigurationError, TypeError, ValueError) as exc:
        field = "spec" if "`spec`" in str(exc) else "exploration"
        detail = {"loc": [field], "msg": str(exc), "type": "settings_not_applicable"}
        raise RefusedRequestError(422, "BadRequest", str(exc), details=[detail]) from None
    return await _store_settings(request, service, name, body)


@router.put(
    "/policies/{name}/baseline",
    response_model=PolicySettings,
    responses=POLICY_ERRORS,
    name="put_policy_baseline",
    openapi_extra=reads_body(BaselineSwitch),
)
async def put_baseline_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Kill switch: serve the baseline now (``forced``) or the policy's model again.

    Only ``baseline_forced`` changes: the other stored settings are kept as they are,
    and not checked again, so rules changed since they were set (a narrower reward
    range, say) can never stand in the way of the switch.
    """
    resolve_policy(service, caller, name)
    _check_admin(caller, "the kill switch")
    body = await parse_body(request, BaselineSwitch, "the kill switch", service.settings.limits)
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            current, _ = await _live_settings(service, name)
    switched = current.model_copy(update={"baseline_forced": body.forced})
    return await _store_settings(request, service, name, switched)
