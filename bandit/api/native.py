"""The native routes (``/v1``): rank, reward, activate, behaviour events, the policies.

The rank path (:func:`rank`, :func:`parse_body`, :func:`decide`) is shared with the
Personalizer routes (:mod:`bandit.api.personalizer`), as are the rewards and
activations (:func:`feedback`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast

import orjson
import pydantic
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StrictBool
from redis.exceptions import RedisError

from bandit.api.deps import (
    SECURITY,
    Caller,
    CallerDep,
    PolicyQuery,
    Service,
    ServiceDep,
    allowed_policies,
    authenticate,
    pseudonym,
    read_body,
    resolve_policy,
)
from bandit.api.errors import (
    ERROR_RESPONSES,
    POLICY_ERRORS,
    RefusedRequestError,
    invalid,
    json_response,
    model_response,
)
from bandit.api.openapi import reads_body
from bandit.api.requestlog import note
from bandit.errors import PolicyError
from bandit.privacy.consent import RawUserId
from bandit.privacy.dp import RandomisedResponse
from bandit.privacy.minimise import FeatureRefusedError
from bandit.service.engine import RankOutcome, UnknownServedPolicyError
from bandit.service.explainer import explain_limit_errors
from bandit.service.producer import ProducerUnavailableError, TopicName, topic
from bandit.settings import Limits
from bandit.wire.answers import (
    Accepted,
    ExplainedRankResponse,
    Explanation,
    PoliciesResponse,
    PolicyInfo,
    RankResponse,
)
from bandit.wire.schemas import (
    Activation,
    BehaviourEvent,
    DeviceId,
    PolicyName,
    RankRequest,
    RewardReported,
    SessionId,
)

__all__ = [
    "Accepted",
    "ExplainedRankResponse",
    "NativeRankRequest",
    "PoliciesResponse",
    "PolicyInfo",
    "RankResponse",
    "check_may_send",
    "decide",
    "feedback",
    "parse_body",
    "router",
]

_log = structlog.get_logger("bandit.api.native")
router = APIRouter(prefix="/v1", tags=["native"], responses=ERROR_RESPONSES)

M = TypeVar("M", bound=BaseModel)


class NativeRankRequest(RankRequest):
    """A :class:`~bandit.wire.schemas.RankRequest`, plus who serves it and what joins it.

    Attributes
    ----------
    policy
        The served policy to decide with; the key's first policy when absent.
    session_id, device_id
        Entities whose features, kept in Redis by the context agent, join the context
        under the namespaces ``session`` and ``device`` (the request's own features of
        the same name win). Identifiers are never features themselves.
    user_id
        The person the decision is for, as the app knows them: replaced on arrival by
        its pseudonym (:func:`bandit.privacy.consent.pseudonymise`), whose consent decides how
        the request is served. Never stored, logged or echoed.
    explain
        Answer with an explanation of the decision (:mod:`bandit.service.explain`): the
        features that made the chosen action more and less likely, or that it was
        exploration, or the baseline. Costs one policy prediction per feature, so it is
        bounded: ``settings.explain`` (docs/privacy.md, "Explanation limits").
    """

    policy: PolicyName | None = None
    session_id: SessionId | None = None
    device_id: DeviceId | None = None
    user_id: RawUserId | None = Field(default=None, repr=False)
    explain: StrictBool = False


async def parse_body(request: Request, model: type[M], what: str, limits: Limits) -> M:
    """Return the request body as `model`, validated with `limits`; 422 naming every rule."""
    raw = await read_body(request)
    try:
        if model is NativeRankRequest:  # the hot path: repeated catalog actions reused
            return cast(M, NativeRankRequest.from_json(raw, limits))
        return model.model_validate_json(raw, context={"limits": limits})
    except pydantic.ValidationError as exc:
        raise invalid(exc, what) from None


async def _produce(
    service: Service, name: TopicName, key: str, value: bytes, *, resend: bool = True
) -> str:
    """Produce a record; `resend`: keep a copy in case the broker loses its log."""
    try:
        return await service.producer.send(
            topic(service.settings, name), key.encode(), value, resend=resend
        )
    except ProducerUnavailableError as exc:
        service.metrics.producer_rejected.inc()
        raise RefusedRequestError(
            503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}
        ) from None


async def decide(
    request: Request,
    service: Service,
    rank_request: RankRequest,
    policy: str,
    *,
    session_id: str | None = None,
    device_id: str | None = None,
    user_id: str | None = None,
    identifiers: Literal["refuse", "drop"] = "refuse",
) -> RankOutcome:
    """Decide, log the decision to Kafka, count it; the answer is the caller's to give."""
    started = time.perf_counter()
    user = None if user_id is None else pseudonym(service, user_id)
    try:
        outcome = await service.engine.rank(
            rank_request,
            policy,
            session_id=session_id,
            device_id=device_id,
            user=user,
            identifiers=identifiers,
        )
    except UnknownServedPolicyError as exc:
        raise RefusedRequestError(404, "ResourceNotFound", str(exc)) from None
    except FeatureRefusedError as exc:
        service.metrics.features_refused.labels(policy, exc.kind).inc()
        detail = {"loc": ["body", *exc.location], "msg": exc.rule, "type": f"feature_{exc.kind}"}
        message = f"the rank request breaks 1 rule: {exc}"
        raise RefusedRequestError(422, "BadRequest", message, details=[detail]) from None
    except PolicyError as exc:  # a policy bug, not the caller's: say which policy failed
        _log.exception("decision.failed", policy=policy, event_id=rank_request.event_id)
        message = f"policy {policy!r} could not decide: {exc}"
        raise RefusedRequestError(500, "InternalServerError", message) from None
    decided = time.perf_counter()
    decision = outcome.decision
    delivery = await _produce(  # without learning consent, no copy is kept
        service,
        "decisions",
        decision.event_id,
        decision.to_json(),
        resend=decision.learn,
    )
    consent = outcome.consent
    dropped = outcome.dropped
    if dropped:
        for reason in ("undeclared", "identifier", "invalid"):
            count = getattr(dropped, reason)
            if count:
                service.metrics.features_dropped.labels(policy, reason).inc(count)
    service.metrics.observe_decision(
        policy,
        explored=decision.explored,
        degraded=outcome.degraded,
        path=consent.path,
        learn=consent.learn,
    )
    if user is not None:
        service.metrics.observe_named_decision(
            personalised=consent.personalise, learned=consent.learn
        )
    if not service.log_all:
        return outcome
    note(
        request,
        "decision.made",
        event_id=decision.event_id,
        policy=policy,
        model_version=decision.model_version,
        actions=len(decision.actions),
        chosen_action_id=decision.chosen_action_id,
        probability=decision.probability,
        explored=decision.explored,
        deferred=decision.deferred,
        consent=consent.path,
        learn=consent.learn,
        stored_features=outcome.stored_features,
        degraded=outcome.degraded,
        delivery=delivery,
        decide_ms=round((decided - started) * 1000, 3),
    )
    return outcome


@router.post(
    "/rank",
    response_model=ExplainedRankResponse,
    responses=POLICY_ERRORS,
    openapi_extra={**reads_body(NativeRankRequest), "security": SECURITY},
)
async def rank(request: Request) -> Response:
    """Choose among the offered actions; the decision is logged before the answer."""
    # No dependency injection on this route: solving it cost more than the decision.
    service: Service = request.app.state.service
    caller = authenticate(request, service)
    body = await parse_body(request, NativeRankRequest, "the rank request", service.settings.limits)
    if body.explain:  # refused before deciding: nothing is logged
        broken = explain_limit_errors(
            body.context, [a.features for a in body.actions], service.settings.explain
        )
        if broken:
            message = f"the rank request breaks {len(broken)} rule{'s' if len(broken) > 1 else ''}"
            raise RefusedRequestError(422, "BadRequest", message, details=broken)
    policy = resolve_policy(service, caller, body.policy)
    outcome = await decide(
        request,
        service,
        body,
        policy,
        session_id=body.session_id,
        device_id=body.device_id,
        user_id=body.user_id,
    )
    answer = outcome.decision.answer_json()  # RankResponse's JSON (tests/bandit/test_schemas.py)
    if body.explain:  # the decision is logged already: a missing explanation is no error
        explained = await _explanation(service, outcome)
        found = None if explained is None else explained.model_dump(mode="json")
        return json_response({**orjson.loads(answer), "explanation": found})
    return Response(answer, media_type="application/json")


async def _explanation(service: Service, outcome: RankOutcome) -> Explanation | None:
    """Explain a decision off the event loop, by the deadline; None if it failed or was late."""
    decision = outcome.decision
    assert outcome.chooser is not None
    assert outcome.inputs is not None
    context, actions = outcome.inputs
    with structlog.contextvars.bound_contextvars(event_id=decision.event_id):
        explained = await service.explainer.run(
            outcome.chooser,
            service.explainer.deadline(),
            context,
            actions,
            decision.chosen_index,
            served=service.engine.loaded(decision.policy),
            explored=decision.explored,
            personalised=decision.consent == "personalise",  # not when the baseline is forced
            policy_name=decision.policy,
            model_version=decision.model_version,
        )
    if explained is not None:
        service.metrics.explanations.labels(explained.kind).inc()
    return explained


@router.post(
    "/reward",
    status_code=202,
    response_model=Accepted,
    responses=POLICY_ERRORS,
    openapi_extra=reads_body(RewardReported),
)
async def reward(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Report a reward for a decision; several per decision are aggregated."""
    check_may_send(service, caller, policy)
    body = await parse_body(request, RewardReported, "the reward", service.settings.limits)
    if body.ldp_epsilon is not None:  # a randomised-response bit: learn its debiased value
        if body.reward not in (0.0, 1.0):
            detail = {
                "loc": ["body", "reward"],
                "msg": "with ldp_epsilon the reward is a randomised-response bit: 0 or 1",
                "type": "ldp_bit",
            }
            raise RefusedRequestError(
                422, "BadRequest", "the reward breaks 1 rule", details=[detail]
            )
        debiased = RandomisedResponse(body.ldp_epsilon).debias(int(body.reward))
        body = body.model_copy(update={"reward": debiased})
        service.metrics.feedback.labels("ldp_reward").inc()
    await feedback(request, service, caller, "reward", body)
    return model_response(Accepted(event_id=body.event_id, reward_id=body.reward_id), 202)


@router.post(
    "/activate",
    status_code=202,
    response_model=Accepted,
    responses=POLICY_ERRORS,
    openapi_extra=reads_body(Activation),
)
async def activate(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Activate a decision ranked with ``defer_activation``: it may now be learned."""
    check_may_send(service, caller, policy)
    body = await parse_body(request, Activation, "the activation", service.settings.limits)
    await feedback(request, service, caller, "activation", body)
    return model_response(Accepted(event_id=body.event_id), 202)


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses=POLICY_ERRORS,
    openapi_extra=reads_body(BehaviourEvent),
)
async def events(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Record a behaviour event (topic ``events``, keyed by session id)."""
    check_may_send(service, caller, policy)
    body = await parse_body(request, BehaviourEvent, "the behaviour event", service.settings.limits)
    body = body.model_copy(update={"user_id": pseudonym(service, body.user_id)})
    delivery = await _produce(service, "events", body.session_id, body.model_dump_json().encode())
    service.metrics.feedback.labels("event").inc()
    note(request, "event.received", event_id=body.event_id, kind=body.kind, delivery=delivery)
    return model_response(Accepted(event_id=body.event_id), 202)


def check_may_send(service: Service, caller: Caller, policy: str | None) -> None:
    """Rewards, activations and events name no policy: the key must be allowed one."""
    resolve_policy(service, caller, policy)


async def feedback(
    request: Request,
    service: Service,
    caller: Caller,
    kind: Literal["reward", "activation"],
    record: RewardReported | Activation,
) -> None:
    """Produce a reward or activation carrying the caller's scope (see :func:`_scoped`)."""
    record = await _scoped(service, caller, record)
    delivery = await _produce(
        service, "rewards", record.event_id, record.model_dump_json().encode()
    )
    service.metrics.feedback.labels(kind).inc()
    fields: dict[str, Any] = {"event_id": record.event_id, "delivery": delivery}
    if isinstance(record, RewardReported):
        fields.update(reward=record.reward, reward_id=record.reward_id)
    note(request, f"{kind}.received", **fields)


async def _scoped(
    service: Service, caller: Caller, record: RewardReported | Activation
) -> RewardReported | Activation:
    """Return `record` with the caller's scope; 403 when its decision is another policy's.

    A key allowed ``*`` acts on any decision (scope None). Any other key's records
    carry the served policies it may use, and the join refuses them for a decision of
    another policy, whenever the decision arrives (``streams.join``, "policy scope");
    when the join holds the decision already, the answer is 403 at once.
    """
    if record.scope is not None:
        detail = {
            "loc": ["body", "scope"],
            "msg": "the scope is set by the service from the API key: leave it out",
            "type": "scope_not_allowed",
        }
        raise RefusedRequestError(422, "BadRequest", "the record breaks 1 rule", details=[detail])
    if "*" in caller.key.policies:
        return record
    allowed = allowed_policies(service, caller)
    policy = None  # unknown: the join decides; so too while Redis is away, without waiting
    if not service.engine.degraded:
        try:
            async with asyncio.timeout(service.settings.redis.socket_timeout_seconds * 2):
                policy = await service.engine.features_store.decision_policy(record.event_id)
        except (RedisError, OSError, TimeoutError):
            pass
    if policy is not None and policy not in allowed:
        message = (
            f"this key may not use policy {policy!r}, whose decision event "
            f"{record.event_id!r} is; it may use {allowed}"
        )
        raise RefusedRequestError(403, "Forbidden", message)
    return record.model_copy(update={"scope": tuple(allowed)})


@router.get("/policies", response_model=PoliciesResponse)
async def list_policies(service: ServiceDep, caller: CallerDep) -> Response:
    """List the served policies this key may use, with the model each serves."""
    infos = []
    for name in allowed_policies(service, caller):
        loaded = service.engine.loaded(name)
        if loaded is None:
            continue
        infos.append(
            PolicyInfo(
                name=name,
                spec=loaded.settings.spec,
                model_version=loaded.version,
                model_saved_at=datetime.fromtimestamp(loaded.saved_at, UTC),
                learned_examples=loaded.policy.n_learned,
                settings_version=loaded.settings_version,
            )
        )
    return model_response(PoliciesResponse(policies=infos))
