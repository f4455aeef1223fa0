"""What the routes share: the service behind them, who is calling, and its policies.

:class:`Service` is built once by :func:`bandit.api.app.create_app`; routes receive it
(:data:`ServiceDep`) and the caller its key identifies (:data:`CallerDep`), or call
:func:`authenticate` themselves on the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect

from bandit.api.errors import RefusedRequestError
from bandit.api.requestlog import note
from bandit.privacy.consent import pseudonymise
from bandit.service.engine import DecisionEngine
from bandit.service.evaluations import EvaluationRunner
from bandit.service.explainer import Explainer
from bandit.service.metrics import ApiMetrics
from bandit.service.producer import BufferedProducer
from bandit.service.state import StateStore
from bandit.settings import ApiKey, Settings

__all__ = [
    "CONTROL_TIMEOUT",
    "SECURITY",
    "Caller",
    "CallerDep",
    "PolicyQuery",
    "Service",
    "ServiceDep",
    "allowed_policies",
    "authenticate",
    "fingerprint",
    "get_caller",
    "get_service",
    "pseudonym",
    "pseudonym_key",
    "read_body",
    "redis_or_503",
    "resolve_policy",
]

CONTROL_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: their key, and a short fingerprint of it for logs."""

    key: ApiKey
    fingerprint: str

    def may_use(self, policy: str) -> bool:
        """Whether this key may use `policy`."""
        return "*" in self.key.policies or policy in self.key.policies


@dataclass(frozen=True, slots=True)
class Service:
    """Everything the routes use, built once per app (:func:`bandit.api.app.create_app`)."""

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
    jobs: EvaluationRunner
    """Offline evaluations and feature importances (:mod:`bandit.service.evaluations`)."""
    callers: dict[str, Caller] = field(default_factory=dict)
    """Callers by the key they presented, once found (as many as there are keys)."""

    @property
    def log_all(self) -> bool:
        """Whether every request writes its log line (``settings.api.request_log``)."""
        return self.settings.api.request_log == "all"


async def get_service(request: Request) -> Service:
    """Return the app's :class:`Service` (the dependency behind :data:`ServiceDep`)."""
    # async: FastAPI runs a plain-def dependency in its thread pool, on every request
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

_subscription_key = APIKeyHeader(
    name="Ocp-Apim-Subscription-Key",
    auto_error=False,
    scheme_name="SubscriptionKey",
    description="The header Personalizer clients send.",
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


def fingerprint(key: str) -> str:
    """Return the SHA-256 of an API key (keys are held and logged by it)."""
    return hashlib.sha256(key.encode()).hexdigest()


async def get_caller(
    request: Request,
    service: ServiceDep,
    subscription_key: Annotated[str | None, Depends(_subscription_key)],
    api_key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Identify the caller by the key sent in any of the three headers (the dependency)."""
    presented = subscription_key or api_key or (bearer.credentials if bearer else None)
    return _identify(request, service, presented)


def authenticate(request: Request, service: Service) -> Caller:
    """:func:`get_caller` without dependency injection, for the hot routes.

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


SECURITY: list[dict[str, list[str]]] = [{"SubscriptionKey": []}, {"ApiKey": []}, {"Bearer": []}]
"""The OpenAPI security of a route taking :data:`CallerDep`, for those that call
:func:`authenticate` instead."""


def _identify(request: Request, service: Service, presented: str | None) -> Caller:
    if presented is None:
        authorization = request.headers.get("authorization")
        message = (
            "the Authorization header must be 'Bearer <key>'"
            if authorization
            else "an API key is required: send it as Ocp-Apim-Subscription-Key, X-API-Key "
            "or Authorization: Bearer"
        )
        raise RefusedRequestError(
            401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"}
        )
    # A key found before: a dict lookup, whose time depends on the presented key's
    # randomised hash, not on how much of a known key it matches.
    caller = service.callers.get(presented)
    if caller is not None:
        note(request, key=caller.fingerprint, role=caller.key.role)
        return caller
    digest = fingerprint(presented)
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
        raise RefusedRequestError(
            401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"}
        )
    caller = service.callers[presented] = Caller(found, digest[:12])
    note(request, key=caller.fingerprint, role=found.role)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
PolicyQuery = Annotated[
    str | None,
    Query(
        max_length=256,
        description="The served policy to use; the key's first policy when absent.",
    ),
]


def allowed_policies(service: Service, caller: Caller) -> list[str]:
    """Return the served policies `caller` may use."""
    return [name for name in service.engine.served if caller.may_use(name)]


def resolve_policy(service: Service, caller: Caller, requested: str | None) -> str:
    """Return the policy a request is for: the one named, else the key's first one."""
    served = service.engine.served
    if requested is not None:
        if requested not in served:
            message = f"no policy named {requested!r} is served; served: {served}"
            raise RefusedRequestError(404, "ResourceNotFound", message)
        if not caller.may_use(requested):
            allowed = allowed_policies(service, caller)
            message = f"this key may not use policy {requested!r}; it may use {allowed}"
            raise RefusedRequestError(403, "Forbidden", message)
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
    raise RefusedRequestError(403, "Forbidden", message)


async def read_body(request: Request) -> bytes:
    """Return the request body.

    Its size, read time and media type are bounded by :class:`~bandit.api.shedding.Shedding`,
    which refuses before the route reads it. Read straight from the ASGI messages (the
    request's own reader is an async generator, several times the cost for a body that
    comes in one message); a route reads its body once.
    """
    receive = request.receive
    message = await receive()
    chunks: list[bytes] = []
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)
        message = await receive()


@contextmanager
def redis_or_503() -> Iterator[None]:
    """Answer 503 when Redis fails inside the block (control path: no retry)."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        raise RefusedRequestError(
            503, "ServiceUnavailable", f"Redis is unavailable: {exc}"
        ) from None


def pseudonym_key(service: Service) -> bytes:
    """Return the pseudonym key; 503 when none is configured."""
    key = service.settings.privacy.pseudonym_key
    if key is None:
        message = (
            "requests naming a user need a pseudonym key: set "
            "STREAMBANDIT_PRIVACY__PSEUDONYM_KEY (at least 16 characters)"
        )
        raise RefusedRequestError(503, "ServiceUnavailable", message)
    return key.get_secret_value().encode()


def pseudonym(service: Service, user_id: str) -> str:
    """Return the pseudonym of a raw user id; 503 when no pseudonym key is configured."""
    return pseudonymise(user_id, pseudonym_key(service))
