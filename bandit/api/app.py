"""The HTTP API: Personalizer-compatible and native routes, auth, health and metrics.

Build the app with :func:`create_app` (or run ``uvicorn --factory
bandit.api.app:app_from_environment``). OpenAPI is served at ``/openapi.json``, the
interactive documentation at ``/docs``.

=========================================================  ================================
route                                                      does
=========================================================  ================================
``POST /personalizer/v1.0/rank``                           Personalizer rank (201)
``POST /personalizer/v1.0/events/{eventId}/reward``        Personalizer reward (204)
``POST /personalizer/v1.0/events/{eventId}/activate``      Personalizer activate (204)
``POST /v1/rank``                                          rank a :class:`NativeRankRequest`
``POST /v1/reward``                                        a ``RewardReported``
``POST /v1/activate``                                      an ``Activation``
``POST /v1/events``                                        a ``BehaviourEvent``
``GET /v1/policies``                                       served policies and their models
``GET /v1/policies/{name}/settings``                       a policy's settings (``PolicySettings``)
``PUT /v1/policies/{name}/settings``                       change them, live (admin keys)
``GET /healthz``                                           the process is alive
``GET /readyz``                                            broker, Redis, models, learning: else 503
``GET /metrics``                                           Prometheus
=========================================================  ================================

The Personalizer routes and how they differ from Personalizer are described in
:mod:`bandit.wire.personalizer`.

Auth
    Every ``/v1`` and ``/personalizer`` route needs a key from ``settings.api.keys``,
    sent as ``Ocp-Apim-Subscription-Key`` (what Personalizer clients send),
    ``X-API-Key`` or ``Authorization: Bearer``. No key or an unknown key: 401. A key
    may rank, reward, activate, send events and read settings for its own policies
    (``"*"``: all served); only ``admin`` keys may change settings. A key not allowed
    the policy or the action: 403, the body naming what is missing. Rewards and
    activations carry the key's policies (``scope``), and the join refuses them for
    another policy's decision (docs/live-loop.md, "Keys scoped to policies"). Health,
    readiness, metrics and the documentation are open: expose them on an internal
    network only (``settings.api.ops_port`` serves metrics and documentation on a port
    of their own: :mod:`bandit.api.exposure`).
Rank
    Validated with the configured limits (``RankRequest.model_validate(..., context=)``),
    decided by the :class:`~bandit.service.engine.DecisionEngine`, and the decision produced to
    the ``decisions`` topic (keyed by event id) *before* the answer: acknowledged
    within a short timeout, or buffered while the broker is away (see
    :mod:`bandit.service.producer`); with the buffer full the answer is 503 and nothing is
    served. Rewards, activations and events go to their topics the same way.
Errors
    Native routes answer FastAPI-style: ``{"detail": "message"}``, or for invalid
    input (422) ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``, one entry
    per broken rule, never echoing the input. Personalizer routes answer
    ``{"error": {"code", "message", "details": [{"code", "message", "target"}]}}``.
Logging
    One structlog line per request when it ends: ``decision.made``,
    ``reward.received``, ``activation.received``, ``event.received``,
    ``settings.changed``, ``request.rejected`` (4xx), ``request.failed`` (5xx) or
    ``request.handled``, with route, status and latency. By default
    (``settings.api.request_log = "errors"``) only refused and failed requests and
    settings changes write theirs: at thousands of decisions a second a line per
    decision would cost a tenth of the API's CPU and repeat the decision log; with
    ``"all"`` every request writes one. Health, readiness and metrics requests log at
    debug level. Every request is counted in the metrics either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, cast

import orjson
import pydantic
import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
)
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit.api.apidocs import add_docs
from bandit.api.exposure import PortSplit
from bandit.api.hot import HotRoute
from bandit.api.shedding import SHED_RESPONSES, SHED_SCOPE_KEY, Shedding
from bandit.errors import ConfigurationError, PolicyError
from bandit.privacy.consent import (
    ConsentKind,
    ConsentLookup,
    ConsentRecord,
    ConsentUpdate,
    ConsentView,
    EffectiveConsent,
    PageToken,
    RawUserId,
    effective_consent,
    find_logged,
    page_token,
    pseudonymise,
    read_page_token,
)
from bandit.privacy.dp import BudgetExhaustedError, PrivacyLedger, RandomisedResponse, laplace
from bandit.privacy.minimise import FeatureRefusedError
from bandit.privacy.page import PAGE, PAGE_SCRIPT_HASH, PAGE_STYLE_HASH
from bandit.service.engine import DecisionEngine, RankOutcome, UnknownServedPolicyError
from bandit.service.explain import Explanation
from bandit.service.explainer import Explainer, explain_limit_errors
from bandit.service.learning import LearningMonitor, LearningStatus
from bandit.service.logging import LineLimiter, configure_logging
from bandit.service.metrics import ApiMetrics, PolicyState
from bandit.service.process import tune_gc
from bandit.service.producer import BufferedProducer, ProducerUnavailableError, TopicName, topic
from bandit.service.recovery import watch_restarts
from bandit.service.state import StateStore, erasure_covers
from bandit.settings import ApiKey, Limits, Settings, get_settings
from bandit.wire.personalizer import (
    PersonalizerErrorResponse,
    PersonalizerRankRequest,
    PersonalizerRankResponse,
    PersonalizerRewardRequest,
    error_target,
    to_activation,
    to_rank_request,
    to_reward,
)
from bandit.wire.schemas import (
    Activation,
    BehaviourEvent,
    Decision,
    DeviceId,
    PolicyName,
    PolicySettings,
    RankedAction,
    RankRequest,
    RewardReported,
    SessionId,
    WireModel,
)
from policies import Action

__all__ = [
    "Accepted",
    "Caller",
    "ExplainedRankResponse",
    "NativeRankRequest",
    "PoliciesResponse",
    "PolicyInfo",
    "RankResponse",
    "app_from_environment",
    "create_app",
]

_STREAM_COUNTERS_SCOPE = "_streams"  # streams.deadletter.COUNTERS_NAME
_CONTROL_TIMEOUT = 2.0
_OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/assets/{name}"})
_ALWAYS_LOGGED = frozenset(
    {"settings.changed", "consent.changed", "person.exported", "person.erased", "report.released"}
)
"""Events logged whatever ``settings.api.request_log`` says (an audit trail)."""
_PERSONALIZER_PREFIX = "/personalizer/"
_log = structlog.get_logger("bandit.api.app")

M = TypeVar("M", bound=BaseModel)


# -- request and response models ---------------------------------------------------------


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


class RankResponse(BaseModel):
    """The answer to ``POST /v1/rank``: the chosen action first, with every probability."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    policy: str
    model_version: str
    chosen_action_id: str
    probability: float
    ranking: list[RankedAction]
    deferred: bool


class ExplainedRankResponse(RankResponse):
    """The rank answer; with ``explain``, also why the action was chosen."""

    explanation: Explanation | None = None


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


class Accepted(BaseModel):
    """A reward, activation or event was accepted (produced, or buffered for the broker)."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    reward_id: str | None = None


class PolicyInfo(BaseModel):
    """One served policy: its spec, the model it serves and the settings applied."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec: str
    model_version: int = Field(description="Saved model version; 0 when built from its spec.")
    model_saved_at: datetime
    learned_examples: int
    settings_version: int


class PoliciesResponse(BaseModel):
    """The served policies the key may use."""

    model_config = ConfigDict(frozen=True)

    policies: list[PolicyInfo]


class ErrorDetail(BaseModel):
    """One broken rule: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """A native route's error: its message, or (422) every broken rule."""

    detail: str | list[ErrorDetail]


class Readiness(BaseModel):
    """``/readyz``: ready (200), or not ready (503) and why."""

    status: Literal["ready", "not ready"]
    reasons: list[str]


class Liveness(BaseModel):
    """``/healthz``: the process is alive."""

    status: Literal["alive"]


class BaselineSwitch(BaseModel):
    """The kill switch of a policy: the baseline serves (``forced``), or its own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forced: StrictBool


class PageLink(BaseModel):
    """A token that opens a person's privacy page until `expires_at`, and the page's path."""

    token: str
    expires_at: int = Field(description="Unix time.")
    path: str


class Erasure(BaseModel):
    """What an erasure removed (``POST /v1/privacy/erase``, ``/v1/me/erase``)."""

    erased: bool
    sessions: int
    pending_decisions: int
    keys_deleted: int


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


class Export(BaseModel):
    """Everything held about a person in Redis (``POST /v1/privacy/export``)."""

    pseudonym: str
    consent: dict[str, Any] | None
    has_secret: bool
    sessions: dict[str, Any] = Field(description="Session and device features, by session.")
    recent_decisions: list[str]
    pending_decisions: list[str]
    last_decisions: list[dict[str, Any]]
    logged_decisions: list[dict[str, Any]] | None = Field(
        default=None, description="Found in the decision log, when this API can read it."
    )


class PersonView(BaseModel):
    """A person's own view on the privacy page (``GET /v1/me``)."""

    consent: ConsentView
    held: dict[str, Any]
    decisions: list[dict[str, Any]] = Field(description="Recent decisions, each explained.")


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


# -- the service behind the routes -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: their key, and a short fingerprint of it for logs."""

    key: ApiKey
    fingerprint: str

    def may_use(self, policy: str) -> bool:
        """Whether this key may use `policy`."""
        return "*" in self.key.policies or policy in self.key.policies


@dataclass(frozen=True, slots=True)
class _Service:
    settings: Settings
    keys: Mapping[str, ApiKey]
    control_redis: Redis
    features_redis: Redis
    store: StateStore
    engine: DecisionEngine
    producer: BufferedProducer
    metrics: ApiMetrics
    shutdown_flush_seconds: float
    explainer: Explainer
    callers: dict[str, Caller] = field(default_factory=dict)
    """Callers by the key they presented, once found (as many as there are keys)."""

    @property
    def log_all(self) -> bool:
        """Whether every request writes its log line (``settings.api.request_log``)."""
        return self.settings.api.request_log == "all"


class _ApiError(Exception):
    """An answer other than success: status, code, message and per-field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


def _invalid(exc: pydantic.ValidationError, what: str) -> _ApiError:
    errors = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    count = len(errors)
    message = f"{what} breaks {count} rule{'s' if count != 1 else ''}"
    return _ApiError(422, "BadRequest", message, details=errors)


async def _service(request: Request) -> _Service:
    # async: FastAPI runs a plain-def dependency in its thread pool, on every request
    service: _Service = request.app.state.service
    return service


ServiceDep = Annotated[_Service, Depends(_service)]

_subscription_key = APIKeyHeader(
    name="Ocp-Apim-Subscription-Key",
    auto_error=False,
    scheme_name="SubscriptionKey",
    description="The header Personalizer clients send.",
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def _caller(
    request: Request,
    service: ServiceDep,
    subscription_key: Annotated[str | None, Depends(_subscription_key)],
    api_key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    presented = subscription_key or api_key or (bearer.credentials if bearer else None)
    return _identify(request, service, presented)


def _authenticate(request: Request, service: _Service) -> Caller:
    """:func:`_caller` without dependency injection, for the hot routes.

    Reads the same three headers the same way (``APIKeyHeader`` and ``HTTPBearer``
    with ``auto_error=False``); the route declares their security schemes itself.
    """
    headers = request.headers
    presented = headers.get("ocp-apim-subscription-key") or headers.get("x-api-key") or None
    if presented is None:
        authorization = headers.get("authorization")
        scheme, credentials = get_authorization_scheme_param(authorization)
        if authorization and scheme and credentials and scheme.lower() == "bearer":
            presented = credentials
    return _identify(request, service, presented)


_SECURITY: list[dict[str, list[str]]] = [{"SubscriptionKey": []}, {"ApiKey": []}, {"Bearer": []}]
"""The OpenAPI security of a route taking :data:`CallerDep`, for those that call
:func:`_authenticate` instead."""


def _identify(request: Request, service: _Service, presented: str | None) -> Caller:
    if presented is None:
        authorization = request.headers.get("authorization")
        message = (
            "the Authorization header must be 'Bearer <key>'"
            if authorization
            else "an API key is required: send it as Ocp-Apim-Subscription-Key, X-API-Key "
            "or Authorization: Bearer"
        )
        raise _ApiError(401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    # A key found before: a dict lookup, whose time depends on the presented key's
    # randomised hash, not on how much of a known key it matches.
    caller = service.callers.get(presented)
    if caller is not None:
        _note(request, key=caller.fingerprint, role=caller.key.role)
        return caller
    digest = _fingerprint(presented)
    found = None
    for known, key in service.keys.items():  # compare every key, in constant time each
        if hmac.compare_digest(known, digest):
            found = key
    if found is None:
        message = (
            "unknown API key"
            if service.keys
            else "unknown API key: no keys are configured (set STREAMBANDIT_API__KEYS)"
        )
        raise _ApiError(401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    caller = service.callers[presented] = Caller(found, digest[:12])
    _note(request, key=caller.fingerprint, role=found.role)
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
PolicyQuery = Annotated[
    str | None,
    Query(
        max_length=256,
        description="The served policy to use; the key's first policy when absent.",
    ),
]


def _allowed(service: _Service, caller: Caller) -> list[str]:
    return [name for name in service.engine.served if caller.may_use(name)]


def _resolve_policy(service: _Service, caller: Caller, requested: str | None) -> str:
    """Return the policy a request is for: the one named, else the key's first one."""
    served = service.engine.served
    if requested is not None:
        if requested not in served:
            message = f"no policy named {requested!r} is served; served: {served}"
            raise _ApiError(404, "ResourceNotFound", message)
        if not caller.may_use(requested):
            message = (
                f"this key may not use policy {requested!r}; it may use {_allowed(service, caller)}"
            )
            raise _ApiError(403, "Forbidden", message)
        return requested
    for name in caller.key.policies:
        if name == "*" and served:
            return served[0]
        if name in served:
            return name
    message = (
        f"this key may use none of the served policies {served} "
        f"(its policies: {list(caller.key.policies)})"
    )
    raise _ApiError(403, "Forbidden", message)


def _note(request: Request, event: str | None = None, **fields: Any) -> None:
    """Add to the one log line of this request (and name its event)."""
    state: dict[str, Any] = request.scope.setdefault("streambandit.log", {})
    if event is not None:
        state["event"] = event
    state.update(fields)


async def _read_body(request: Request) -> bytes:
    """Return the request body.

    Its size, read time and media type are bounded by :class:`~bandit.api.shedding.Shedding`,
    which refuses before the route reads it.
    """
    return await request.body()


async def _body(request: Request, model: type[M], what: str, limits: Limits) -> M:
    raw = await _read_body(request)
    try:
        if model is NativeRankRequest:  # the hot path: repeated catalog actions reused
            return cast(M, NativeRankRequest.from_json(raw, limits))
        return model.model_validate_json(raw, context={"limits": limits})
    except pydantic.ValidationError as exc:
        raise _invalid(exc, what) from None


async def _produce(
    service: _Service, name: TopicName, key: str, value: bytes, *, resend: bool = True
) -> str:
    """Produce a record; `resend`: keep a copy in case the broker loses its log."""
    try:
        return await service.producer.send(
            topic(service.settings, name), key.encode(), value, resend=resend
        )
    except ProducerUnavailableError as exc:
        service.metrics.producer_rejected.inc()
        raise _ApiError(503, "ServiceUnavailable", str(exc), headers={"Retry-After": "1"}) from None


async def _decide(
    request: Request,
    service: _Service,
    rank_request: RankRequest,
    policy: str,
    *,
    session_id: str | None = None,
    device_id: str | None = None,
    user_id: str | None = None,
) -> RankOutcome:
    """Decide, log the decision to Kafka, count it; the answer is the caller's to give."""
    started = time.perf_counter()
    user = None if user_id is None else _pseudonym(service, user_id)
    try:
        outcome = await service.engine.rank(
            rank_request, policy, session_id=session_id, device_id=device_id, user=user
        )
    except UnknownServedPolicyError as exc:
        raise _ApiError(404, "ResourceNotFound", str(exc)) from None
    except FeatureRefusedError as exc:
        service.metrics.features_refused.labels(policy, exc.kind).inc()
        detail = {"loc": ["body", *exc.location], "msg": exc.rule, "type": f"feature_{exc.kind}"}
        message = f"the rank request breaks 1 rule: {exc}"
        raise _ApiError(422, "BadRequest", message, details=[detail]) from None
    except PolicyError as exc:  # a policy bug, not the caller's: say which policy failed
        _log.exception("decision.failed", policy=policy, event_id=rank_request.event_id)
        message = f"policy {policy!r} could not decide: {exc}"
        raise _ApiError(500, "InternalServerError", message) from None
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
    _note(
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


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def _model(
    model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _request_body(model: type[BaseModel], error: type[BaseModel] = ErrorResponse) -> dict[str, Any]:
    """OpenAPI for a body parsed by the route itself (to validate with the limits)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
        "responses": {
            "413": {
                "description": _ERROR_TEXT[413],
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{error.__name__}"}
                    }
                },
            }
        },
    }


_BODY_MODELS: tuple[type[BaseModel], ...] = (
    NativeRankRequest,
    ConsentUpdate,
    ConsentLookup,
    ReportRequest,
    RewardReported,
    Activation,
    BehaviourEvent,
    PolicySettings,
    BaselineSwitch,
    PersonalizerRankRequest,
    PersonalizerRewardRequest,
)
_ERROR_TEXT: dict[int, str] = {
    401: "No API key, or an unknown one (the privacy page: no valid page token).",
    403: "The key may not use this policy or do this.",
    404: "No such served policy.",
    409: "The privacy budget is spent.",
    422: "Invalid input: every broken rule, by field.",
    **{int(status): answer["description"] for status, answer in SHED_RESPONSES.items()},
    503: (
        "Not now: overloaded (settings.api.max_in_flight, max_queue_seconds), Redis or the "
        "broker unavailable, or no pseudonym key configured; retry later (after Retry-After "
        "seconds when given)."
    ),
}


def _errors(*statuses: int, model: type[BaseModel] = ErrorResponse) -> dict[int | str, Any]:
    """OpenAPI ``responses`` for error `statuses`, answered with `model`."""
    return {status: {"description": _ERROR_TEXT[status], "model": model} for status in statuses}


_ERROR_RESPONSES = _errors(401, 403, 408, 413, 415, 422, 503)
_PERSONALIZER_ERRORS = _errors(
    401, 403, 404, 408, 413, 415, 422, 503, model=PersonalizerErrorResponse
)
_POLICY_ERRORS = _errors(404)
"""Routes naming a policy (query, path or body) answer 404 when it is not served."""


# -- native routes -----------------------------------------------------------------------


async def rank(request: Request) -> Response:
    """Choose among the offered actions; the decision is logged before the answer."""
    # No dependency injection on this route: solving it cost more than the decision.
    service: _Service = request.app.state.service
    caller = _authenticate(request, service)
    body = await _body(request, NativeRankRequest, "the rank request", service.settings.limits)
    if body.explain:  # refused before deciding: nothing is logged
        broken = explain_limit_errors(
            body.context, [a.features for a in body.actions], service.settings.explain
        )
        if broken:
            message = f"the rank request breaks {len(broken)} rule{'s' if len(broken) > 1 else ''}"
            raise _ApiError(422, "BadRequest", message, details=broken)
    policy = _resolve_policy(service, caller, body.policy)
    outcome = await _decide(
        request,
        service,
        body,
        policy,
        session_id=body.session_id,
        device_id=body.device_id,
        user_id=body.user_id,
    )
    answer = _rank_answer(outcome.decision)
    if body.explain:  # the decision is logged already: a missing explanation is no error
        explained = await _explanation(service, outcome)
        found = None if explained is None else explained.model_dump(mode="json")
        return _json({**orjson.loads(answer), "explanation": found})
    return Response(answer, media_type="application/json")


def _rank_answer(decision: Decision) -> bytes:
    """Return the JSON of :class:`RankResponse` for `decision` (its fields hold its rules)."""
    return decision.answer_json()


async def _explanation(service: _Service, outcome: RankOutcome) -> Explanation | None:
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


async def reward(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Report a reward for a decision; several per decision are aggregated."""
    _check_may_send(service, caller, policy)
    body = await _body(request, RewardReported, "the reward", service.settings.limits)
    if body.ldp_epsilon is not None:  # a randomised-response bit: learn its debiased value
        if body.reward not in (0.0, 1.0):
            detail = {
                "loc": ["body", "reward"],
                "msg": "with ldp_epsilon the reward is a randomised-response bit: 0 or 1",
                "type": "ldp_bit",
            }
            raise _ApiError(422, "BadRequest", "the reward breaks 1 rule", details=[detail])
        debiased = RandomisedResponse(body.ldp_epsilon).debias(int(body.reward))
        body = body.model_copy(update={"reward": debiased})
        service.metrics.feedback.labels("ldp_reward").inc()
    await _feedback(request, service, caller, "reward", body)
    return _model(Accepted(event_id=body.event_id, reward_id=body.reward_id), 202)


async def activate(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Activate a decision ranked with ``defer_activation``: it may now be learned."""
    _check_may_send(service, caller, policy)
    body = await _body(request, Activation, "the activation", service.settings.limits)
    await _feedback(request, service, caller, "activation", body)
    return _model(Accepted(event_id=body.event_id), 202)


async def events(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Record a behaviour event (topic ``events``, keyed by session id)."""
    _check_may_send(service, caller, policy)
    body = await _body(request, BehaviourEvent, "the behaviour event", service.settings.limits)
    body = body.model_copy(update={"user_id": _pseudonym(service, body.user_id)})
    delivery = await _produce(service, "events", body.session_id, body.model_dump_json().encode())
    service.metrics.feedback.labels("event").inc()
    _note(request, "event.received", event_id=body.event_id, kind=body.kind, delivery=delivery)
    return _model(Accepted(event_id=body.event_id), 202)


def _check_may_send(service: _Service, caller: Caller, policy: str | None) -> None:
    """Rewards, activations and events name no policy: the key must be allowed one."""
    _resolve_policy(service, caller, policy)


async def _feedback(
    request: Request,
    service: _Service,
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
    _note(request, f"{kind}.received", **fields)


async def _scoped(
    service: _Service, caller: Caller, record: RewardReported | Activation
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
        raise _ApiError(422, "BadRequest", "the record breaks 1 rule", details=[detail])
    if "*" in caller.key.policies:
        return record
    allowed = _allowed(service, caller)
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
        raise _ApiError(403, "Forbidden", message)
    return record.model_copy(update={"scope": tuple(allowed)})


@contextmanager
def _redis_or_503() -> Iterator[None]:
    """Answer 503 when Redis fails inside the block (control path: no retry)."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise _ApiError(503, "ServiceUnavailable", f"Redis is unavailable: {exc}") from None


def _pseudonym_key(service: _Service) -> bytes:
    """Return the pseudonym key; 503 when none is configured."""
    key = service.settings.privacy.pseudonym_key
    if key is None:
        message = (
            "requests naming a user need a pseudonym key: set "
            "STREAMBANDIT_PRIVACY__PSEUDONYM_KEY (at least 16 characters)"
        )
        raise _ApiError(503, "ServiceUnavailable", message)
    return key.get_secret_value().encode()


def _pseudonym(service: _Service, user_id: str) -> str:
    """Return the pseudonym of a raw user id; 503 when no pseudonym key is configured."""
    return pseudonymise(user_id, _pseudonym_key(service))


def _consent_changes(
    personalisation: bool | None, learning: bool | None
) -> dict[ConsentKind, bool]:
    changes: dict[ConsentKind, bool] = {}
    if personalisation is not None:
        changes["personalisation"] = personalisation
    if learning is not None:
        changes["learning"] = learning
    return changes


async def _change_consent(
    request: Request,
    service: _Service,
    user: str,
    changes: dict[ConsentKind, bool],
    source: str,
    *,
    accepted_at: float,
    **noted: str,
) -> Response:
    """Record consent `changes` from `source`, count and log them; answer the new view.

    Refused (409) when the person was erased after `accepted_at`: an erasure is final.
    """
    with _redis_or_503():
        record = await service.store.update_consent(
            user,
            ConsentRecord().with_changes(changes, source),
            accepted_at=accepted_at,
            slack=service.settings.watermark_slack_seconds,
        )
    if record is None:
        message = "the person was erased while this request was handled: nothing was recorded"
        raise _ApiError(409, "Conflict", message)
    for kind, granted in changes.items():
        service.metrics.observe_consent_change(kind, granted=granted)
    _note(request, "consent.changed", **noted, **changes)
    return _model(_consent_view(service, record))


async def _erase(request: Request, service: _Service, user: str, **noted: str) -> dict[str, Any]:
    """Erase a person (see ``StateStore.erase``), count and log it; return the answer."""
    with _redis_or_503():
        erased = await service.store.erase(user, service.settings.privacy.erasure_memory_seconds)
    service.metrics.privacy_requests.labels("erasure").inc()
    _note(request, "person.erased", **noted, **erased)
    return {"erased": True, **erased}


def _consent_view(service: _Service, record: ConsentRecord | None) -> ConsentView:
    effective = effective_consent(record, service.settings.privacy)
    record = record or ConsentRecord()
    return ConsentView(
        personalisation=record.personalisation,
        learning=record.learning,
        effective=EffectiveConsent(personalisation=effective.personalise, learning=effective.learn),
    )


async def set_consent(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Give or withdraw a person's consents; answer with all of them and their effect.

    The person is named by their raw user id in the body (never in the URL, which
    proxies log); it is replaced by its pseudonym before anything is stored.
    """
    accepted_at = time.time()
    body = await _body(request, ConsentUpdate, "the consent", service.settings.limits)
    user = _pseudonym(service, body.user_id)
    changes = _consent_changes(body.personalisation, body.learning)
    return await _change_consent(
        request, service, user, changes, body.source, accepted_at=accepted_at
    )


async def lookup_consent(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Read a person's consents (named in the body) and what they allow now."""
    body = await _body(request, ConsentLookup, "the consent lookup", service.settings.limits)
    user = _pseudonym(service, body.user_id)
    with _redis_or_503():
        record = await service.store.consent(user)
    return _model(_consent_view(service, record))


async def export_person(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Return everything held about a person in Redis (named in the body, hashed)."""
    body = await _body(request, ConsentLookup, "the export request", service.settings.limits)
    user = _pseudonym(service, body.user_id)
    with _redis_or_503():
        record, secret = await service.store.consent_and_secret(user)
        held = await service.store.held(user, record, secret)
    directory = service.settings.decision_log.directory
    if secret is not None and directory.is_dir():  # a log this API can read
        held["logged_decisions"] = await asyncio.to_thread(find_logged, directory, secret)
    service.metrics.privacy_requests.labels("export").inc()
    _note(request, "person.exported")
    return _json({"pseudonym": user, **held})


async def erase_person(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Erase a person: consents, secret, features, pending decisions; logs unlinkable."""
    body = await _body(request, ConsentLookup, "the erasure request", service.settings.limits)
    return _json(await _erase(request, service, _pseudonym(service, body.user_id)))


_PAGE_TOKEN_SECONDS = 3600
"""How long a privacy page token opens the page."""


class PageConsent(BaseModel):
    """The consents a person changes on their privacy page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    personalisation: StrictBool | None = None
    learning: StrictBool | None = None


async def privacy_token(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Give the app a token that opens a person's privacy page for an hour."""
    body = await _body(request, ConsentLookup, "the token request", service.settings.limits)
    user = _pseudonym(service, body.user_id)
    key = _pseudonym_key(service)
    issued_at = time.time()
    expires_at = int(issued_at) + _PAGE_TOKEN_SECONDS
    token = page_token(key, user, expires_at, issued_at)
    return _json({"token": token, "expires_at": expires_at, "path": f"/privacy#token={token}"})


async def _page_person(request: Request, service: _Service) -> PageToken:
    """Return the page token's person, unless it is invalid or an erasure revoked it."""
    token = request.headers.get("x-privacy-token", "")
    read = read_page_token(_pseudonym_key(service), token, now=time.time()) if token else None
    if read is None:
        message = "this page needs a valid privacy token (ask the app for a new link)"
        raise _ApiError(401, "Unauthorized", message)
    with _redis_or_503():
        erased_at = await service.store.erased_at(read.pseudonym)
    if erasure_covers(read.issued_at, erased_at, service.settings.watermark_slack_seconds):
        message = "this privacy link was revoked by an erasure (ask the app for a new link)"
        raise _ApiError(401, "Unauthorized", message)
    return read


async def privacy_page() -> Response:
    """Serve the privacy page (its token is in the URL fragment, never sent here)."""
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


_PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src '{PAGE_SCRIPT_HASH}'; style-src '{PAGE_STYLE_HASH}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def me(request: Request, service: ServiceDep) -> Response:
    """Show a person their consents, what is held, and their recent decisions explained."""
    user = (await _page_person(request, service)).pseudonym
    with _redis_or_503():
        record, secret = await service.store.consent_and_secret(user)
        held = await service.store.held(user, record, secret)
    decisions = []
    deadline = service.explainer.deadline()  # one for the page
    for entry in held.pop("last_decisions"):
        explained = await _recent_explanation(service, entry, deadline)
        decisions.append({**_summary(entry), "explanation": explained})
    service.metrics.explanations.labels("page").inc(len(decisions))
    return _json(
        {
            "consent": _consent_view(service, record).model_dump(mode="json"),
            "held": held,
            "decisions": decisions,
        },
        headers={"Cache-Control": "no-store"},
    )


def _summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    names = ("event_id", "at", "policy", "model_version", "consent", "chosen_action_id")
    return {name: entry.get(name) for name in names}


async def _recent_explanation(
    service: _Service, entry: Mapping[str, Any], deadline: float
) -> dict[str, Any]:
    """Explain a recent decision with the model serving now (said so in the text).

    Within the same limits and off the event loop, as a rank's explanation.
    """
    loaded = service.engine.loaded(str(entry.get("policy")))
    personalised = entry.get("consent") == "personalise"
    actions = [Action(a["id"], a["features"]) for a in entry.get("actions", [])]
    context = entry.get("context", {})
    if explain_limit_errors(context, [a.features for a in actions], service.settings.explain):
        service.metrics.explanations_missed.labels("limits").inc()
        return {"kind": "unavailable", "text": "This decision used too many features to explain."}
    if loaded is None or not actions:
        chooser = service.engine.baseline
        personalised = False
    else:
        chooser = loaded.policy if personalised else service.engine.baseline
    explained = await service.explainer.run(
        chooser,
        deadline,
        context,
        actions,
        int(entry.get("chosen_index", 0)),
        served=loaded,
        explored=bool(entry.get("explored")),
        personalised=personalised,
        policy_name=str(entry.get("policy")),
        model_version=str(entry.get("model_version")),
    )
    if explained is None:
        return {"kind": "unavailable", "text": "This decision cannot be explained now."}
    if explained.kind == "personalised" and loaded is not None:
        now = loaded.model_version
        note = f" (Explained with the model serving now, version {now}.)"
        explained = explained.model_copy(update={"text": explained.text + note})
    return explained.model_dump()


async def me_consent(request: Request, service: ServiceDep) -> Response:
    """Change one's own consents from the privacy page (refused once erased since issued)."""
    token = await _page_person(request, service)
    body = await _body(request, PageConsent, "the consent", service.settings.limits)
    changes = _consent_changes(body.personalisation, body.learning)
    if not changes:
        raise _ApiError(422, "BadRequest", "give personalisation, learning or both")
    return await _change_consent(
        request,
        service,
        token.pseudonym,
        changes,
        "privacy-page",
        accepted_at=token.issued_at,
        via="privacy-page",
    )


async def me_erase(request: Request, service: ServiceDep) -> Response:
    """Erase oneself from the privacy page."""
    token = await _page_person(request, service)
    erased = await _erase(request, service, token.pseudonym, via="privacy-page")
    # what the page shows now: its token is revoked, so it cannot ask again
    consent = _consent_view(service, None).model_dump(mode="json")
    return _json({**erased, "consent": consent})


def _check_admin(caller: Caller, what: str = "this") -> None:
    if caller.key.role != "admin":
        message = f"{what} needs an admin key; this key's role is {caller.key.role!r}"
        raise _ApiError(403, "Forbidden", message)


async def privacy_report(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Release a rate with Laplace noise on both counts, spending ε from the ledger."""
    _check_admin(caller, "releasing a report")
    body = await _body(request, ReportRequest, "the report request", service.settings.limits)
    _resolve_policy(service, caller, body.policy)  # 404 when not served, 403 not the key's
    ledger = PrivacyLedger(
        service.control_redis,
        service.settings.redis.key_prefix,
        service.settings.privacy.report_budget,
    )
    try:
        counters = await service.store.counters(body.policy)
        left = await ledger.spend(body.epsilon, f"{body.metric} of {body.policy}")
    except BudgetExhaustedError as exc:
        raise _ApiError(409, "Conflict", str(exc)) from None
    except (RedisError, OSError, TimeoutError) as exc:
        raise _ApiError(503, "ServiceUnavailable", f"Redis is unavailable: {exc}") from None
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
    _note(request, "report.released", metric=body.metric, policy=body.policy, epsilon=body.epsilon)
    return _json(
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


async def privacy_ledger(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """List every noisy release so far and the budget left (admin keys)."""
    _check_admin(caller, "reading the privacy ledger")
    budget = service.settings.privacy.report_budget
    ledger = PrivacyLedger(service.control_redis, service.settings.redis.key_prefix, budget)
    entries = await ledger.entries()
    spent = math.fsum(float(e["epsilon"]) for e in entries)  # type: ignore[arg-type]
    return _json({"budget": budget, "spent": spent, "releases": entries})


async def list_policies(service: ServiceDep, caller: CallerDep) -> Response:
    """List the served policies this key may use, with the model each serves."""
    infos = []
    for name in _allowed(service, caller):
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
    return _model(PoliciesResponse(policies=infos))


async def get_settings_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Return a policy's live settings (their ``ETag`` is the settings version)."""
    _resolve_policy(service, caller, name)
    with _redis_or_503():
        async with asyncio.timeout(_CONTROL_TIMEOUT):
            settings, version = await _live_settings(service, name)
    _note(request, policy=name, settings_version=version)
    return _model(settings, headers={"ETag": f'"{version}"'})


async def _live_settings(service: _Service, name: str) -> tuple[PolicySettings, int]:
    """Return a served policy's settings and their version: stored, else those it runs."""
    found = await service.store.policy_settings(name)
    if found is None:
        loaded = service.engine.loaded(name)
        assert loaded is not None
        found = (loaded.settings, loaded.settings_version)
    return found


async def _store_settings(
    request: Request, service: _Service, name: str, settings: PolicySettings
) -> Response:
    """Store a policy's new settings, apply them here at once, and answer with them."""
    with _redis_or_503():
        async with asyncio.timeout(_CONTROL_TIMEOUT):
            version = await service.store.set_policy_settings(name, settings)
            await service.engine.refresh(name)
    _note(
        request,
        "settings.changed",
        policy=name,
        settings_version=version,
        exploration=settings.exploration,
        exploration_floor=settings.exploration_floor,
        baseline_forced=settings.baseline_forced,
    )
    return _model(settings, headers={"ETag": f'"{version}"'})


async def put_settings_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Change a policy's settings; exploration applies at once, the model is kept."""
    _resolve_policy(service, caller, name)
    _check_admin(caller, "changing settings")
    body = await _body(request, PolicySettings, "the policy settings", service.settings.limits)
    try:
        await service.engine.check_settings(name, body)
    except (ConfigurationError, TypeError, ValueError) as exc:
        field = "spec" if "`spec`" in str(exc) else "exploration"
        detail = {"loc": [field], "msg": str(exc), "type": "settings_not_applicable"}
        raise _ApiError(422, "BadRequest", str(exc), details=[detail]) from None
    return await _store_settings(request, service, name, body)


async def put_baseline_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Kill switch: serve the baseline now (``forced``) or the policy's model again.

    Only ``baseline_forced`` changes: the other stored settings are kept as they are,
    and not checked again, so rules changed since they were set (a narrower reward
    range, say) can never stand in the way of the switch.
    """
    _resolve_policy(service, caller, name)
    _check_admin(caller, "the kill switch")
    body = await _body(request, BaselineSwitch, "the kill switch", service.settings.limits)
    with _redis_or_503():
        async with asyncio.timeout(_CONTROL_TIMEOUT):
            current, _ = await _live_settings(service, name)
    switched = current.model_copy(update={"baseline_forced": body.forced})
    return await _store_settings(request, service, name, switched)


# -- Personalizer routes -----------------------------------------------------------------

EventIdPath = Annotated[str, Path(alias="eventId", description="The event id of the decision.")]


async def personalizer_rank(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's Rank: the ranking, the event id and the action to reward (201)."""
    served_by = _resolve_policy(service, caller, policy)
    raw = await _read_body(request)
    try:
        rank_request = to_rank_request(raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise _invalid(exc, "the rank request") from None
    outcome = await _decide(request, service, rank_request, served_by)
    decision = outcome.decision
    headers = {
        "X-Streambandit-Policy": decision.policy,
        "X-Streambandit-Model-Version": decision.model_version,
    }
    return _model(PersonalizerRankResponse.from_decision(decision), 201, headers)


async def personalizer_reward(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's Reward for the event's chosen action (204)."""
    _check_may_send(service, caller, policy)
    raw = await _read_body(request)
    try:
        record = to_reward(event_id, raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise _invalid(exc, "the reward") from None
    await _feedback(request, service, caller, "reward", record)
    return Response(status_code=204)


async def personalizer_activate(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's Activate for an event ranked with ``deferActivation`` (204)."""
    _check_may_send(service, caller, policy)
    try:
        record = to_activation(event_id, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise _invalid(exc, "the activation") from None
    await _feedback(request, service, caller, "activation", record)
    return Response(status_code=204)


# -- operations --------------------------------------------------------------------------


async def healthz() -> Response:
    """Say the process is alive (nothing else is checked)."""
    return _json({"status": "alive"})


async def _learning(service: _Service) -> list[LearningStatus] | None:
    """Whether each served policy's learning is stalled (bandit.service.learning); None: unknown."""
    monitor = LearningMonitor(service.store, service.settings.learner.stall_seconds)
    try:
        async with asyncio.timeout(1.0):
            return await monitor.status(service.engine.served)
    except (RedisError, OSError, TimeoutError):
        return None


async def readyz(service: ServiceDep) -> Response:
    """Ready when broker and Redis answer, every served policy has a model, and learning goes on.

    Learning goes on while a stream worker consumes and no released example waits too
    long to be learned (:mod:`bandit.service.learning`).
    """

    async def redis_ok() -> str | None:
        try:
            async with asyncio.timeout(1.0):
                await service.control_redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return f"redis unreachable at {_redacted(service.settings.redis.url)}: {exc}"
        return None

    async def broker_ok() -> str | None:
        if await service.producer.ping(1.0):
            return None
        return (
            f"broker unreachable at {service.settings.kafka.broker} "
            f"({service.producer.buffered} records buffered)"
        )

    reasons = [reason for reason in await asyncio.gather(redis_ok(), broker_ok()) if reason]
    if not reasons:
        reasons += [s.reason for s in await _learning(service) or () if s.stalled]
    reasons += [
        f"policy {name!r} has no model loaded"
        for name in service.engine.served
        if service.engine.loaded(name) is None
    ]
    if reasons:
        return _json({"status": "not ready", "reasons": reasons}, 503)
    return _json({"status": "ready", "reasons": []})


async def metrics_endpoint(service: ServiceDep) -> Response:
    """Prometheus metrics; the stream workers' Redis counters are read now."""
    engine = service.engine
    counters: dict[str, dict[str, int]] | None = None
    if not engine.degraded:
        scopes = [*engine.served, _STREAM_COUNTERS_SCOPE]
        try:
            async with asyncio.timeout(0.5):
                found = await asyncio.gather(*(service.store.counters(s) for s in scopes))
            counters = dict(zip(scopes, found, strict=True))
        except (RedisError, OSError, TimeoutError):
            counters = None
    now = time.time()
    states = [
        PolicyState(
            name=loaded.name,
            model_version=loaded.version,
            model_age_seconds=max(now - loaded.saved_at, 0.0),
            learned_examples=loaded.policy.n_learned,
            settings_version=loaded.settings_version,
            baseline_forced=loaded.settings.baseline_forced,
        )
        for loaded in (engine.loaded(name) for name in engine.served)
        if loaded is not None
    ]
    learning = await _learning(service) if counters is not None else None
    if learning is not None:
        service.metrics.observe_learning({s.policy: s.stalled for s in learning})
    service.metrics.observe_state(
        states,
        degraded=engine.degraded,
        buffered=service.producer.buffered,
        broker_available=service.producer.available,
        stream_counters=counters,
        model_rejections=engine.rejections,
    )
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _redacted(url: str) -> str:
    """Return a Redis URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


# -- errors and the request log ----------------------------------------------------------


def _error_response(request: Request, error: _ApiError) -> Response:
    _note(
        request,
        "request.rejected" if error.status < 500 else "request.failed",
        error=error.code,
        reason=error.message,
        invalid=[".".join(map(str, d.get("loc", []))) for d in error.details] or None,
    )
    if request.url.path.startswith(_PERSONALIZER_PREFIX):
        details = [
            {"code": d.get("type", error.code), "message": d.get("msg", ""), "target": _target(d)}
            for d in error.details
        ]
        body: Any = {"error": {"code": error.code, "message": error.message, "details": details}}
    elif error.details:
        body = {"detail": error.details}
    else:
        body = {"detail": error.message}
    return _json(body, error.status, error.headers)


def _target(detail: Mapping[str, Any]) -> str | None:
    loc = detail.get("loc")
    return error_target(loc) if loc else None


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _ApiError)
    return _error_response(request, exc)


async def _on_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    count = len(errors)
    message = f"the request breaks {count} rule{'s' if count != 1 else ''}"
    return _error_response(request, _ApiError(422, "BadRequest", message, details=errors))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        404: "ResourceNotFound",
        405: "MethodNotAllowed",
        408: "RequestTimeout",
        413: "PayloadTooLarge",
        415: "UnsupportedMediaType",
        503: "ServiceUnavailable",
    }
    error = _ApiError(
        exc.status_code,
        codes.get(exc.status_code, "BadRequest"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )
    return _error_response(request, error)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    error = _ApiError(500, "InternalServerError", "internal error; see the service log")
    return _error_response(request, error)


class _RequestLog:
    """ASGI middleware: one latency observation and one count per request, and its log line.

    With `log_all` false, only refused and failed requests (and the events of
    :data:`_ALWAYS_LOGGED`) write their line. Lines of refused and failed requests pass
    `limiter` (by event and status): beyond its rate they are counted, and the next line
    of the kind says how many in ``suppressed``.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ApiMetrics,
        *,
        log_all: bool = True,
        limiter: LineLimiter | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_all = log_all
        self.limiter = limiter
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # metrics by label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._record(scope, status, time.perf_counter() - started, failure)

    def _limited(self, event: str, status: int, line: dict[str, Any]) -> bool:
        """Whether the limiter drops this line; if not, add what it dropped before it."""
        if self.limiter is None:
            return False
        suppressed = self.limiter.admit((event, status))
        if suppressed is None:
            return True
        if suppressed:
            line["suppressed"] = suppressed
        return False

    def _record(
        self, scope: Scope, status: int, elapsed: float, failure: BaseException | None
    ) -> None:
        route = getattr(scope.get("route"), "path", None)
        if route is None:  # FastAPI serves its documentation routes outside the router
            route = scope["path"] if scope.get("path") in _DOCS_PATHS else "unmatched"
            if scope.get(SHED_SCOPE_KEY):  # refused before routing (bandit.api.shedding)
                route = "shed"
        method = str(scope.get("method", ""))
        children = self._children.get((route, method, status))
        if children is None:  # (routes, methods and statuses are few: kept for good)
            children = self._children[route, method, status] = (
                self.metrics.latency.labels(route, method),
                self.metrics.requests.labels(route, method, str(status)),
            )
        children[0].observe(elapsed)
        children[1].inc()
        noted: dict[str, Any] | None = scope.get("streambandit.log")
        if (
            not self.log_all
            and failure is None
            and status < 400
            and (noted is None or noted.get("event") not in _ALWAYS_LOGGED)
        ):
            return
        fields: dict[str, Any] = dict(noted or {})
        event = fields.pop("event", None)
        if event is None:
            event = "request.handled" if status < 400 else "request.rejected"
            if status >= 500:
                event = "request.failed"
        line = {
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
            **fields,
        }
        if (status >= 400 or failure is not None) and self._limited(event, status, line):
            return
        if failure is not None:
            _log.error(event, exc_info=failure, **line)
        elif route in _OPS_PATHS or route in _DOCS_PATHS:
            _log.debug(event, **line)
        elif status >= 500:
            _log.error(event, **line)
        elif status >= 400:
            _log.warning(event, **line)
        else:
            _log.info(event, **line)


# -- the app -----------------------------------------------------------------------------


def _redis(url: str, timeout: float) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


def create_app(
    settings: Settings | None = None,
    *,
    metrics: ApiMetrics | None = None,
    shutdown_flush_seconds: float = 5.0,
    tune: bool = False,
) -> FastAPI:
    """Build the API for `settings` (default: :func:`~bandit.settings.get_settings`).

    Connections are made when the app starts (its lifespan): the producer connects
    (or starts buffering), the engine loads every served policy and starts polling.

    Parameters
    ----------
    settings
        Service settings; the broker (``kafka.broker``) and Redis (``redis.url``)
        must be named: start the embedded ones with :class:`bandit.ops.runtime.LocalServices`.
    metrics
        Where to count; a fresh registry by default.
    shutdown_flush_seconds
        How long shutdown waits for buffered records to reach the broker.
    tune
        Tune the process's garbage collector once started (:func:`bandit.service.process.tune_gc`)
        and start the explanation helpers at once rather than with the first
        explanation (:class:`bandit.service.explainer.Explainer`): for a process that serves
        this app alone.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    bandit.errors.ConfigurationError
        If the broker or Redis is not named.
    """
    settings = settings or get_settings()
    if not settings.kafka.broker or not settings.redis.url:
        msg = (
            "the API needs a broker and Redis: set STREAMBANDIT_KAFKA__BROKER and "
            "STREAMBANDIT_REDIS__URL (or start local ones with bandit.ops.runtime.LocalServices)"
        )
        raise ConfigurationError(msg)
    metrics = metrics or ApiMetrics()
    control_redis = _redis(
        settings.redis.url, max(_CONTROL_TIMEOUT, settings.redis.socket_timeout_seconds)
    )
    features_redis = _redis(settings.redis.url, settings.redis.socket_timeout_seconds)
    store = StateStore(control_redis, settings.redis.key_prefix)
    features_store = StateStore(features_redis, settings.redis.key_prefix)
    service = _Service(
        settings=settings,
        keys={_fingerprint(key.key): key for key in settings.api.keys},
        control_redis=control_redis,
        features_redis=features_redis,
        store=store,
        engine=DecisionEngine(settings, store, features_store=features_store),
        producer=BufferedProducer(
            settings.kafka.broker,
            capacity=settings.kafka.producer_buffer,
            acknowledged=settings.kafka.await_acks,
            linger_ms=settings.kafka.linger_ms,
            on_drop=metrics.producer_dropped.inc,
            resend_seconds=settings.kafka.resend_window_seconds,
            resend_bytes=settings.kafka.resend_window_mb * 2**20,
        ),
        metrics=metrics,
        shutdown_flush_seconds=shutdown_flush_seconds,
        explainer=Explainer(settings.explain, metrics),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.producer.start()
        watcher = asyncio.create_task(
            watch_restarts(
                store,
                service.producer,
                settings.api.model_poll_seconds,
                metrics.producer_resent.inc,
            ),
            name="broker-restarts",
        )
        try:
            await service.engine.start()
            if tune:
                tune_gc()  # the app, its schemas and the policies live as long as the process
                service.explainer.start()  # importing while the first requests come
            _log.info(
                "api.started",
                policies=service.engine.served,
                broker_available=service.producer.available,
                degraded=service.engine.degraded,
            )
            try:
                yield
            finally:
                await service.engine.stop()
        finally:
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            await service.producer.stop(service.shutdown_flush_seconds)
            await control_redis.aclose()
            await features_redis.aclose()
            service.explainer.close()
            _log.info("api.stopped")

    app = FastAPI(
        title="streambandit",
        summary="Contextual bandits: rank, reward, learn online; Personalizer-compatible.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: bandit.api.apidocs
        redoc_url=None,
    )
    app.state.service = service
    _add_routes(app)
    add_docs(app)
    app.add_exception_handler(_ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(HotRoute, owner=app, path="/v1/rank")  # innermost (bandit.api.hot)
    api = settings.api
    if api.ops_port is not None:
        app.add_middleware(PortSplit, ops_port=api.ops_port, on_refused=_on_http_error)
    app.add_middleware(
        Shedding,
        on_refused=_on_http_error,
        max_in_flight=api.max_in_flight,
        max_queue_seconds=api.max_queue_seconds,
        max_body_bytes=api.max_body_bytes,
        body_timeout_seconds=api.body_timeout_seconds,
        exempt=_OPS_PATHS,
        shed=metrics.requests_shed,
    )
    app.add_middleware(
        _RequestLog,
        metrics=metrics,
        log_all=service.log_all,
        limiter=LineLimiter(api.log_lines_per_second),
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _add_routes(app: FastAPI) -> None:
    native = APIRouter(prefix="/v1", tags=["native"], responses=_ERROR_RESPONSES)
    native.add_api_route(
        "/rank",
        rank,
        methods=["POST"],
        response_model=ExplainedRankResponse,
        responses=_POLICY_ERRORS,
        openapi_extra={**_request_body(NativeRankRequest), "security": _SECURITY},
    )
    for path, endpoint, model in (
        ("/reward", reward, RewardReported),
        ("/activate", activate, Activation),
        ("/events", events, BehaviourEvent),
    ):
        native.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            responses=_POLICY_ERRORS,
            openapi_extra=_request_body(model),
        )
    native.add_api_route(
        "/consent",
        set_consent,
        methods=["POST"],
        response_model=ConsentView,
        openapi_extra=_request_body(ConsentUpdate),
        tags=["privacy"],
    )
    native.add_api_route(
        "/privacy/reports",
        privacy_report,
        methods=["POST"],
        response_model=Report,
        responses=_errors(404, 409),
        openapi_extra=_request_body(ReportRequest),
        tags=["privacy"],
    )
    native.add_api_route(
        "/privacy/ledger", privacy_ledger, methods=["GET"], response_model=Ledger, tags=["privacy"]
    )
    native.add_api_route(
        "/privacy/token",
        privacy_token,
        methods=["POST"],
        response_model=PageLink,
        openapi_extra=_request_body(ConsentLookup),
        tags=["privacy"],
    )
    page_security: dict[str, Any] = {"security": [{"PrivacyToken": []}]}
    native.add_api_route(
        "/me",
        me,
        methods=["GET"],
        response_model=PersonView,
        tags=["privacy page"],
        openapi_extra=page_security,
    )
    native.add_api_route(
        "/me/consent",
        me_consent,
        methods=["POST"],
        response_model=ConsentView,
        openapi_extra={**_request_body(PageConsent), **page_security},
        tags=["privacy page"],
    )
    native.add_api_route(
        "/me/erase",
        me_erase,
        methods=["POST"],
        response_model=Erasure,
        tags=["privacy page"],
        openapi_extra=page_security,
    )
    for path, handler, answer in (
        ("/privacy/export", export_person, Export),
        ("/privacy/erase", erase_person, Erasure),
    ):
        native.add_api_route(
            path,
            handler,
            methods=["POST"],
            response_model=answer,
            openapi_extra=_request_body(ConsentLookup),
            tags=["privacy"],
        )
    native.add_api_route(
        "/consent/lookup",
        lookup_consent,
        methods=["POST"],
        response_model=ConsentView,
        openapi_extra=_request_body(ConsentLookup),
        tags=["privacy"],
    )
    native.add_api_route(
        "/policies", list_policies, methods=["GET"], response_model=PoliciesResponse
    )
    native.add_api_route(
        "/policies/{name}/settings",
        get_settings_route,
        methods=["GET"],
        response_model=PolicySettings,
        responses=_POLICY_ERRORS,
        name="get_policy_settings",
    )
    native.add_api_route(
        "/policies/{name}/settings",
        put_settings_route,
        methods=["PUT"],
        response_model=PolicySettings,
        responses=_POLICY_ERRORS,
        name="put_policy_settings",
        openapi_extra=_request_body(PolicySettings),
    )
    native.add_api_route(
        "/policies/{name}/baseline",
        put_baseline_route,
        methods=["PUT"],
        response_model=PolicySettings,
        responses=_POLICY_ERRORS,
        name="put_policy_baseline",
        openapi_extra=_request_body(BaselineSwitch),
    )
    personalizer = APIRouter(
        prefix="/personalizer/v1.0", tags=["personalizer"], responses=_PERSONALIZER_ERRORS
    )
    personalizer.add_api_route(
        "/rank",
        personalizer_rank,
        methods=["POST"],
        status_code=201,
        response_model=PersonalizerRankResponse,
        openapi_extra=_request_body(PersonalizerRankRequest, PersonalizerErrorResponse),
    )
    personalizer.add_api_route(
        "/events/{eventId}/reward",
        personalizer_reward,
        methods=["POST"],
        status_code=204,
        openapi_extra=_request_body(PersonalizerRewardRequest, PersonalizerErrorResponse),
    )
    personalizer.add_api_route(
        "/events/{eventId}/activate", personalizer_activate, methods=["POST"], status_code=204
    )
    ops = APIRouter(tags=["operations"])
    ops.add_api_route("/privacy", privacy_page, methods=["GET"], include_in_schema=False)
    ops.add_api_route("/healthz", healthz, methods=["GET"], response_model=Liveness)
    ops.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        response_model=Readiness,
        responses={503: {"description": "Not ready, and why.", "model": Readiness}},
    )
    ops.add_api_route(
        "/metrics", metrics_endpoint, methods=["GET"], response_class=PlainTextResponse
    )
    for router in (native, personalizer, ops):
        app.include_router(router)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI, plus the schemas of the bodies the routes parse themselves."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=__doc__ or "",
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    models: tuple[type[BaseModel], ...] = (*_BODY_MODELS, PageConsent)  # (declared later)
    for model in models:
        model_schema = model.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    schema["components"].setdefault("securitySchemes", {})["PrivacyToken"] = {
        "type": "apiKey",
        "in": "header",
        "name": "X-Privacy-Token",
        "description": "The privacy page's token (POST /v1/privacy/token), for /v1/me routes.",
    }
    app.openapi_schema = schema
    return schema


def app_from_environment() -> FastAPI:
    """Build the API from ``STREAMBANDIT_*`` variables, with logging set up.

    For ``uvicorn --factory bandit.api.app:app_from_environment``.
    """
    configure_logging()
    return create_app(get_settings(), tune=True)
