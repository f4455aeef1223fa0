"""A Python client for streambandit's HTTP API, for apps and admins.

:class:`Client` (blocking) and :class:`AsyncClient` (asyncio) share one way of building
requests and reading answers; only sending differs. Both accept our pydantic models
(:class:`~bandit.wire.schemas.RankableAction`, :class:`~bandit.wire.schemas.BehaviourEvent`,
:class:`~bandit.wire.schemas.PolicySettings`) or plain dicts, validate arguments before
anything is sent, and raise the :class:`~bandit.errors.ClientError` branch of the one
exception tree (drawn in :mod:`bandit.errors`, re-exported here): an
:class:`~bandit.errors.InvalidArgumentError` before sending, a
:class:`~bandit.errors.TransportError` when no answer came, an
:class:`~bandit.errors.APIError` subclass per error status when one did.

Retries
-------
Every call this client makes is idempotent: a rank carries its event id (generated here
when not given), a reward carries a reward id generated here (the server counts a
reward id once), activations and behaviour events carry their event ids, and settings
are read with GET and replaced with PUT, and a model import, reset or rollback sent twice
serves the same model (as one more version). So a call whose connection failed (refused,
reset, closed before the answer, connect timeout) is sent again, at most `max_retries`
times, with the same ids. A call that got an answer, even an error status, or that timed
out waiting for one, is never retried.

Examples
--------
With a running API::

    from bandit.client import Client
    with Client("http://localhost:8000", api_key="app-key-0123456789") as client:
        result = client.rank(
            {"user": {"tier": "gold"}},
            [{"id": "article-1"}, {"id": "article-2"}],
        )
        reward_id = client.reward(result.event_id, 1.0)
    result.action_id, result.probability
    # ('article-2', 0.9)
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Generic, Literal, Self, TypeAlias, TypeVar

import httpx
import pydantic

from bandit.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ClientTimeoutError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnprocessableRequestError,
)
from bandit.privacy.dp import RandomisedResponse
from bandit.settings import Limits
from bandit.wire.answers import (
    Accepted,
    ExplainedRankResponse,
    Explanation,
    ModelProperties,
    ModelVersions,
    PoliciesResponse,
)
from bandit.wire.consent import ConsentUpdate, ConsentView, RawUserId
from bandit.wire.personalizer import MODEL_RESET_HEADER, PersonalizerServiceConfiguration
from bandit.wire.schemas import (
    BehaviourEvent,
    DeviceId,
    EventId,
    ModelRollback,
    PolicyName,
    PolicySettings,
    RankableAction,
    RankedAction,
    RankRequest,
    RewardReported,
    SessionId,
    WireModel,
    argument_model,
    new_event_id,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientError",
    "ClientTimeoutError",
    "InvalidArgumentError",
    "ModelFile",
    "ModelProperties",
    "ModelVersions",
    "NotFoundError",
    "PermissionDeniedError",
    "PolicyStatus",
    "RankResult",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "TransportError",
    "UnprocessableRequestError",
]

_T = TypeVar("_T")
_ModelT = TypeVar("_ModelT", bound=pydantic.BaseModel)

# Loose on purpose (so are `actions`): a dict literal mixing strings, numbers and booleans
# is inferred as dict[str, object]; values are checked at run time, before sending.
_ContextInput: TypeAlias = Mapping[str, Mapping[str, Any]]

_API_KEY_HEADER: Final = "X-API-Key"
_USER_AGENT: Final = "streambandit-client/0.1"
_MAX_RETRIES_LIMIT: Final = 10
_SHOW_AT_MOST: Final = 60
_MESSAGE_AT_MOST: Final = 2000
# Limits as wide as settings allow: the server's configured limits are the ones that
# count, so the client only rejects what no server could accept.
_WIDEST_LIMITS: Final = Limits(
    max_actions=10_000,
    max_namespaces=256,
    max_features_per_namespace=4096,
    max_features_per_rank=1_000_000,
    max_key_length=256,
    max_string_length=65_536,
    max_id_length=1024,
)
# The wire's declaration of each id argument, so the client and the server hold one rule.
_ARGUMENTS: Final[Mapping[str, type[WireModel]]] = {
    name: argument_model(name, declared)
    for name, declared in (
        ("event_id", EventId),
        ("policy", PolicyName),
        ("session_id", SessionId),
        ("device_id", DeviceId),
        ("user_id", RawUserId),
    )
}
# Failures after which the request certainly or possibly never reached the application,
# and no answer came: safe to send again when the call is idempotent.
_RETRYABLE: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


_ERRORS_BY_STATUS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableRequestError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankResult:
    """The answer to a rank: the chosen action and the distribution it was drawn from.

    Attributes
    ----------
    event_id
        Id of the decision: report its reward and activate it with this id.
    action_id
        The chosen action's id (show this one).
    probability
        The probability with which it was chosen.
    ranking
        Every action left to the policy once, with its probability, chosen action first.
    model_version
        Version of the model that decided.
    policy
        Name of the policy that decided.
    deferred
        Whether it is learned only once activated (``defer_activation``).
    explanation
        Why the action was chosen, when asked for (``explain=True``).
    """

    event_id: str
    action_id: str
    probability: float
    ranking: tuple[RankedAction, ...]
    model_version: str
    policy: str
    deferred: bool = False
    explanation: Explanation | None = None


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """A served policy, as :meth:`Client.list_policies` reports it.

    Attributes
    ----------
    name, spec
        The policy's name and the spec it was built from.
    model_version
        Version of the saved model it serves; 0 when built from its spec.
    model_saved_at
        When that model was saved (or the policy built).
    learned_examples
        How many examples the served model has learned.
    settings_version
        Version of the settings applied to it.
    """

    name: str
    spec: str
    model_version: int
    model_saved_at: datetime
    learned_examples: int
    settings_version: int


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A policy's model exported as the VW model file ``vw -i`` loads.

    Attributes
    ----------
    version
        The model version it is.
    data
        The file's bytes.
    """

    version: int
    data: bytes = field(repr=False)


# -- request building, shared by both clients ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call(Generic[_T]):
    """One HTTP call: what to send, whether it may be retried, how to read the answer."""

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    read: Callable[[httpx.Response], _T]
    body: Mapping[str, Any] | None = None
    content: bytes | None = None  # a body sent as is (application/octet-stream)
    idempotent: bool = True
    authenticated: bool = True
    raise_for_status: bool = True


@dataclass(frozen=True, slots=True)
class _Core:
    """Everything both clients share: configuration, request building, answer reading."""

    base_url: str
    api_key: str | None = field(repr=False)
    timeout: httpx.Timeout
    max_retries: int
    retry_backoff: float
    limits: Limits
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float | httpx.Timeout,
        max_retries: int,
        retry_backoff: float,
        limits: Limits | None,
    ) -> _Core:
        if not isinstance(base_url, str) or not base_url:
            msg = f"`base_url` must be an http(s) URL, got {_show(base_url)}"
            raise InvalidArgumentError(msg)
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            msg = f"`base_url` must be an http(s) URL, got {base_url!r}"
            raise InvalidArgumentError(msg)
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            msg = f"`api_key` must be a non-empty string or None, got {_show(api_key)}"
            raise InvalidArgumentError(msg)
        if isinstance(timeout, httpx.Timeout):
            timeouts = timeout
        elif _is_number(timeout) and timeout > 0 and math.isfinite(timeout):
            timeouts = httpx.Timeout(float(timeout))
        else:
            msg = (
                "`timeout` must be a finite number of seconds > 0 or an httpx.Timeout, "
                f"got {_show(timeout)}"
            )
            raise InvalidArgumentError(msg)
        if (
            isinstance(max_retries, bool)
            or not isinstance(max_retries, int)
            or not 0 <= max_retries <= _MAX_RETRIES_LIMIT
        ):
            msg = (
                f"`max_retries` must be an int in [0, {_MAX_RETRIES_LIMIT}], "
                f"got {_show(max_retries)}"
            )
            raise InvalidArgumentError(msg)
        if not _is_number(retry_backoff) or not 0 <= retry_backoff <= 60:
            msg = f"`retry_backoff` must be a number of seconds in [0, 60], got {retry_backoff!r}"
            raise InvalidArgumentError(msg)
        if limits is not None and not isinstance(limits, Limits):
            msg = f"`limits` must be a bandit.settings.Limits or None, got {type(limits).__name__}"
            raise InvalidArgumentError(msg)
        headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        if api_key is not None:
            headers[_API_KEY_HEADER] = api_key
        return cls(
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            timeout=timeouts,
            max_retries=max_retries,
            retry_backoff=float(retry_backoff),
            limits=_WIDEST_LIMITS if limits is None else limits,
            headers=headers,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based): doubling, capped."""
        return float(min(self.retry_backoff * 2**attempt, 2.0))

    # -- calls -------------------------------------------------------------------------

    def rank(
        self,
        context: _ContextInput | None,
        actions: Sequence[Any],
        *,
        excluded_actions: Sequence[str] | None,
        event_id: str | None,
        defer_activation: bool,
        policy: str | None,
        session_id: str | None,
        device_id: str | None,
        user_id: str | None = None,
        explain: bool = False,
    ) -> _Call[RankResult]:
        if isinstance(actions, str | bytes) or not isinstance(actions, Sequence):
            msg = (
                "`actions` must be a list of actions (ids, dicts or RankableAction), "
                f"got {_show(actions)}"
            )
            raise InvalidArgumentError(msg)
        if excluded_actions is not None and (
            isinstance(excluded_actions, str | bytes) or not isinstance(excluded_actions, Sequence)
        ):
            msg = f"`excluded_actions` must be a list of action ids, got {_show(excluded_actions)}"
            raise InvalidArgumentError(msg)
        if not isinstance(defer_activation, bool):
            msg = f"`defer_activation` must be a bool, got {_show(defer_activation)}"
            raise InvalidArgumentError(msg)
        data: dict[str, Any] = {
            "event_id": new_event_id() if event_id is None else event_id,
            "context": {} if context is None else context,
            "actions": [_action_data(action, index) for index, action in enumerate(actions)],
            "excluded_actions": [] if excluded_actions is None else list(excluded_actions),
            "defer_activation": defer_activation,
        }
        request = _validate(RankRequest, data, self.limits, "rank request")
        body = request.model_dump(mode="json")
        if policy is not None:
            body["policy"] = self.check(policy, "policy")
        if session_id is not None:
            body["session_id"] = self.check(session_id, "session_id")
        if device_id is not None:
            body["device_id"] = self.check(device_id, "device_id")
        if user_id is not None:
            body["user_id"] = self.check(user_id, "user_id")
        if explain:
            body["explain"] = True
        return _Call("POST", "/v1/rank", _read_rank, body)

    def reward(
        self,
        event_id: str,
        value: float,
        *,
        action_id: str | None,
        reward_id: str | None,
        occurred_at: datetime | None,
        epsilon: float | None = None,
    ) -> _Call[str]:
        if not _is_number(value) or not math.isfinite(value):
            msg = f"`value` must be a finite number (higher is better), got {_show(value)}"
            raise InvalidArgumentError(msg)
        if epsilon is not None:  # local DP: only a randomised bit leaves the app
            if value not in (0, 1):
                msg = f"with `epsilon` the reward must be 0 or 1, got {_show(value)}"
                raise InvalidArgumentError(msg)
            try:
                value = RandomisedResponse(epsilon).privatise(int(value))
            except ValueError as error:
                raise InvalidArgumentError(str(error)) from None
        data: dict[str, Any] = {
            "event_id": event_id,
            "reward": float(value),
            "reward_id": new_event_id() if reward_id is None else reward_id,
        }
        if action_id is not None:
            data["action_id"] = action_id
        if occurred_at is not None:
            data["occurred_at"] = occurred_at
        if epsilon is not None:
            data["ldp_epsilon"] = epsilon
        reward = _validate(RewardReported, data, self.limits, "reward")
        body = reward.model_dump(mode="json", exclude_unset=True)
        return _Call("POST", "/v1/reward", _read_reward_id(reward.reward_id), body)

    def activate(self, event_id: str) -> _Call[None]:
        body = {"event_id": self.check(event_id, "event_id")}
        return _Call("POST", "/v1/activate", _constant(None), body)

    def event(
        self, event: BehaviourEvent | Mapping[str, Any] | None, fields: Mapping[str, Any]
    ) -> _Call[str]:
        if isinstance(event, BehaviourEvent):
            if fields:
                msg = f"pass a BehaviourEvent or keyword fields, not both (got {sorted(fields)})"
                raise InvalidArgumentError(msg)
            checked = event
        elif event is None or isinstance(event, Mapping):
            data = {**(event or {}), **fields}
            if "event_id" not in data:  # fixed here, so a retry sends the same id
                data["event_id"] = new_event_id()
            checked = _validate(BehaviourEvent, data, self.limits, "behaviour event")
        else:
            msg = f"`event` must be a BehaviourEvent or a dict, got {type(event).__name__}"
            raise InvalidArgumentError(msg)
        body = checked.model_dump(mode="json")
        return _Call("POST", "/v1/events", _constant(checked.event_id), body)

    def set_consent(
        self,
        user_id: str,
        *,
        personalisation: bool | None,
        learning: bool | None,
        source: str,
    ) -> _Call[ConsentView]:
        data: dict[str, Any] = {"user_id": self.check(user_id, "user_id"), "source": source}
        if personalisation is not None:
            data["personalisation"] = personalisation
        if learning is not None:
            data["learning"] = learning
        checked = _validate(ConsentUpdate, data, self.limits, "consent")
        body = checked.model_dump(mode="json", exclude_none=True)
        return _Call("POST", "/v1/consent", _read_consent, body)

    def consent(self, user_id: str) -> _Call[ConsentView]:
        body = {"user_id": self.check(user_id, "user_id")}
        return _Call("POST", "/v1/consent/lookup", _read_consent, body)

    def person(self, path: str, user_id: str) -> _Call[dict[str, Any]]:
        body = {"user_id": self.check(user_id, "user_id")}
        return _Call("POST", path, _read_json, body, idempotent=True)

    def get_settings(self, policy: str) -> _Call[PolicySettings]:
        path = f"/v1/policies/{self.policy_segment(policy)}/settings"
        return _Call("GET", path, _read_settings)

    def set_settings(
        self, policy: str, settings: PolicySettings | Mapping[str, Any]
    ) -> _Call[PolicySettings]:
        path = f"/v1/policies/{self.policy_segment(policy)}/settings"
        if isinstance(settings, PolicySettings):
            checked = settings
        elif isinstance(settings, Mapping):
            checked = _validate(PolicySettings, settings, self.limits, "policy settings")
        else:
            msg = f"`settings` must be a PolicySettings or a dict, got {type(settings).__name__}"
            raise InvalidArgumentError(msg)
        return _Call("PUT", path, _read_settings, checked.model_dump(mode="json"))

    def set_baseline(self, policy: str, forced: bool) -> _Call[PolicySettings]:
        if not isinstance(forced, bool):
            msg = f"`forced` must be True or False, got {forced!r}"
            raise InvalidArgumentError(msg)
        path = f"/v1/policies/{self.policy_segment(policy)}/baseline"
        return _Call("PUT", path, _read_settings, {"forced": forced})

    def list_policies(self) -> _Call[list[PolicyStatus]]:
        return _Call("GET", "/v1/policies", _read_policies)

    def model_properties(self, policy: str) -> _Call[ModelProperties]:
        return _Call("GET", f"{self.model_path(policy)}/properties", _read_model)

    def model_versions(self, policy: str) -> _Call[ModelVersions]:
        return _Call("GET", f"{self.model_path(policy)}/versions", _read_versions)

    def export_model(self, policy: str, version: int | None) -> _Call[ModelFile]:
        path = self.model_path(policy)
        if version is not None:
            checked = _validate(ModelRollback, {"version": version}, self.limits, "version")
            path = f"{path}/versions/{checked.version}"
        return _Call("GET", path, _read_model_file)

    def import_model(self, policy: str, model: bytes) -> _Call[ModelProperties]:
        if not isinstance(model, bytes | bytearray | memoryview) or not model:
            msg = f"`model` must be the bytes of a VW model file, got {_show(model)}"
            raise InvalidArgumentError(msg)
        return _Call("PUT", self.model_path(policy), _read_model, content=bytes(model))

    def reset_model(self, policy: str) -> _Call[ModelProperties]:
        return _Call("DELETE", self.model_path(policy), _read_model)

    def rollback_model(self, policy: str, version: int) -> _Call[ModelProperties]:
        checked = _validate(ModelRollback, {"version": version}, self.limits, "rollback")
        body = checked.model_dump(mode="json")
        return _Call("POST", f"{self.model_path(policy)}/rollback", _read_model, body)

    def service_configuration(self, policy: str) -> _Call[PersonalizerServiceConfiguration]:
        path = self.personalizer_path("configurations/service", policy)
        return _Call("GET", path, _read_configuration)

    def set_service_configuration(
        self, policy: str, configuration: PersonalizerServiceConfiguration | Mapping[str, Any]
    ) -> _Call[PersonalizerServiceConfiguration]:
        if isinstance(configuration, PersonalizerServiceConfiguration):
            checked = configuration
        elif isinstance(configuration, Mapping):
            checked = _validate(
                PersonalizerServiceConfiguration, configuration, self.limits, "configuration"
            )
        else:
            msg = (
                "`configuration` must be a PersonalizerServiceConfiguration or a dict, "
                f"got {type(configuration).__name__}"
            )
            raise InvalidArgumentError(msg)
        body = checked.model_dump(mode="json", by_alias=True)
        path = self.personalizer_path("configurations/service", policy)
        return _Call("PUT", path, _read_configuration, body)

    def set_learning_policy(self, policy: str, arguments: str) -> _Call[bool]:
        if not isinstance(arguments, str) or not arguments.strip():
            msg = f"`arguments` must be a VW command line, got {_show(arguments)}"
            raise InvalidArgumentError(msg)
        body = {"name": policy, "arguments": arguments}
        path = self.personalizer_path("configurations/policy", policy)
        return _Call("PUT", path, _read_model_reset, body)

    def ready(self) -> _Call[bool]:
        return _Call("GET", "/readyz", _read_ready, authenticated=False, raise_for_status=False)

    # -- helpers -----------------------------------------------------------------------

    def check(self, value: object, name: str) -> str:
        """Return argument `name` if the wire's declaration of it takes `value`, else raise."""
        try:
            model = _ARGUMENTS[name].model_validate(
                {name: value}, strict=True, context={"limits": self.limits}
            )
        except pydantic.ValidationError as error:
            entries = error.errors(include_url=False, include_input=False)
            msg = f"`{name}`: " + "; ".join(entry["msg"] for entry in entries)
            raise InvalidArgumentError(msg, errors=entries) from None  # no input echoed
        found: str = getattr(model, name)
        return found

    def policy_segment(self, policy: str) -> str:
        """Return `policy` checked and quoted for use as a URL path segment."""
        return urllib.parse.quote(self.check(policy, "policy"), safe="")

    def model_path(self, policy: str) -> str:
        """Return the path of `policy`'s model routes."""
        return f"/v1/policies/{self.policy_segment(policy)}/model"

    def personalizer_path(self, route: str, policy: str) -> str:
        """Return the path of Personalizer's v1.0 `route` for `policy` (a query parameter)."""
        return f"/personalizer/v1.0/{route}?policy={self.policy_segment(policy)}"

    def request(self, call: _Call[Any]) -> dict[str, Any]:
        """Return the keyword arguments of ``httpx.Client.request`` for `call`."""
        headers = dict(self.headers)
        if not call.authenticated:
            headers.pop(_API_KEY_HEADER, None)
        arguments: dict[str, Any] = {
            "method": call.method,
            "url": call.path,
            "headers": headers,
        }
        if call.body is not None:
            arguments["content"] = json.dumps(call.body, separators=(",", ":"))
            headers["Content-Type"] = "application/json"
        elif call.content is not None:
            arguments["content"] = call.content
            headers["Content-Type"] = "application/octet-stream"
        return arguments

    def should_retry(self, call: _Call[Any], error: httpx.TransportError, attempt: int) -> bool:
        """Whether `call`, which failed with `error` on try `attempt` (0-based), is sent again."""
        return call.idempotent and attempt < self.max_retries and isinstance(error, _RETRYABLE)

    def finish(self, call: _Call[_T], response: httpx.Response) -> _T:
        """Read `response` to `call`, raising the APIError its status calls for."""
        if response.is_success or not call.raise_for_status:
            return call.read(response)
        raise _api_error(response)


# -- the clients ---------------------------------------------------------------------------


class Client:
    """A blocking client of the streambandit HTTP API.

    Parameters
    ----------
    base_url
        Where the API is, e.g. ``"http://localhost:8000"``.
    api_key
        Sent as ``X-API-Key``. An app key may rank, reward, activate and send events; an
        admin key may also read and change policy settings.
    timeout
        Seconds to wait for each call (connect, send and answer each), or an
        ``httpx.Timeout``.
    max_retries
        How many times a call whose connection failed is sent again (see the module's
        "Retries"); 0 turns retries off.
    retry_backoff
        Seconds before the first retry; it doubles with each retry, up to 2 s.
    limits
        Size limits to check requests against before sending. By default only what no
        server could accept is rejected here, and the server applies its own limits.
    transport
        An ``httpx`` transport to send through instead of the network (tests, proxies).

    Raises
    ------
    InvalidArgumentError
        If an argument breaks its rule.

    Examples
    --------
    >>> client = Client("http://localhost:8000", api_key="app-key-0123456789", timeout=2.0)
    >>> client.base_url
    'http://localhost:8000'
    >>> client.close()
    >>> Client("localhost:8000")
    Traceback (most recent call last):
    ...
    bandit.errors.InvalidArgumentError: `base_url` must be an http(s) URL, got 'localhost:8000'
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 5.0,
        max_retries: int = 2,
        retry_backoff: float = 0.05,
        limits: Limits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core.build(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            limits=limits,
        )
        self._http = httpx.Client(
            base_url=self._core.base_url, timeout=self._core.timeout, transport=transport
        )

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._core.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._core.base_url!r})"

    def rank(
        self,
        context: _ContextInput | None,
        actions: Sequence[Any],
        *,
        excluded_actions: Sequence[str] | None = None,
        event_id: str | None = None,
        defer_activation: bool = False,
        policy: str | None = None,
        session_id: str | None = None,
        device_id: str | None = None,
        user_id: str | None = None,
        explain: bool = False,
    ) -> RankResult:
        """Ask which action to show in `context` (``POST /v1/rank``).

        Parameters
        ----------
        context
            Shared features by namespace, ``{"user": {"tier": "gold", "age": 31}}``;
            values are numbers, strings or booleans. None means no features.
        actions
            The candidates: ids, ``{"id": ..., "features": {...}}`` dicts or
            :class:`~bandit.wire.schemas.RankableAction`; distinct ids.
        excluded_actions
            Ids among `actions` that must not be chosen this time.
        event_id
            Id of the decision, which seeds its draw; generated when None. Ranking again
            with the same id is idempotent.
        defer_activation
            Learn from the decision only once :meth:`activate` is called for it.
        policy
            Which policy decides; the server's default when None.
        session_id, device_id
            The user's session and device, whose features kept by the server (from
            behaviour events) join the context under ``session`` and ``device``.
        user_id
            The person the decision is for, as the app knows them: the server hashes it
            on arrival and serves the request as their consents allow (see
            :meth:`set_consent`).
        explain
            Also say why the action was chosen (``RankResult.explanation``).

        Returns
        -------
        RankResult

        Raises
        ------
        InvalidArgumentError
            If the request breaks a rule of :class:`~bandit.wire.schemas.RankRequest`.
        APIError
            If the server answers with an error status (see the module's tree).
        TransportError
            If no answer came, after the retries.

        Examples
        --------
        With a running API::

            with Client("http://localhost:8000", api_key="app-key-0123456789") as client:
                result = client.rank(
                    {"user": {"tier": "gold"}},
                    ["article-1", {"id": "article-2", "features": {"item": {"len": 0.9}}}],
                    event_id="evt-0001",
                )
            result.action_id, result.event_id
            # ('article-2', 'evt-0001')

        Arguments are checked before anything is sent:

        >>> with Client("http://localhost:8000") as client:
        ...     try:
        ...         client.rank({}, [])
        ...     except InvalidArgumentError as error:
        ...         print(error)
        invalid rank request: actions: at least 1 action required, got 0
        """
        call = self._core.rank(
            context,
            actions,
            excluded_actions=excluded_actions,
            event_id=event_id,
            defer_activation=defer_activation,
            policy=policy,
            session_id=session_id,
            device_id=device_id,
            user_id=user_id,
            explain=explain,
        )
        return self._send(call)

    def reward(
        self,
        event_id: str,
        value: float,
        *,
        action_id: str | None = None,
        reward_id: str | None = None,
        occurred_at: datetime | None = None,
        epsilon: float | None = None,
    ) -> str:
        """Report a reward for the decision `event_id` (``POST /v1/reward``).

        Parameters
        ----------
        event_id
            The decision's id, from :attr:`RankResult.event_id`.
        value
            The outcome, a finite number; higher is better.
        action_id
            The action rewarded, if you want the server to check it is the chosen one.
        reward_id
            Id of this reward, which the server counts once; generated when None. Pass
            your own to make a reward reported twice (by a retrying job) count once.
        occurred_at
            When the outcome happened (timezone-aware); the server's time when None.
        epsilon
            Send the reward through the local-DP channel (:mod:`bandit.privacy.dp`): `value`
            must be 0 or 1, and only a randomised-response bit with this ε leaves the
            app (the server learns its unbiased estimate). Report every decision this
            way, clicked or not: a missing report would give it away.

        Returns
        -------
        str
            The reward id.

        Raises
        ------
        InvalidArgumentError, APIError, TransportError
            As for :meth:`rank`.

        Examples
        --------
        With a running API::

            with Client("http://localhost:8000", api_key="app-key-0123456789") as client:
                client.reward("evt-0001", 1.0)
            # '5b0c6c0e9e6f4bd3a3f5d0b0c3c8e1a2'
        """
        return self._send(
            self._core.reward(
                event_id,
                value,
                action_id=action_id,
                reward_id=reward_id,
                occurred_at=occurred_at,
                epsilon=epsilon,
            )
        )

    def activate(self, event_id: str) -> None:
        """Tell the server a deferred decision was shown (``POST /v1/activate``).

        Parameters
        ----------
        event_id
            The decision's id; it was ranked with ``defer_activation=True``.

        Raises
        ------
        InvalidArgumentError, APIError, TransportError
            As for :meth:`rank`.
        """
        self._send(self._core.activate(event_id))

    def event(self, event: BehaviourEvent | Mapping[str, Any] | None = None, **fields: Any) -> str:
        """Publish what a user did (``POST /v1/events``).

        Parameters
        ----------
        event
            A :class:`~bandit.wire.schemas.BehaviourEvent`, or its fields as a dict.
        **fields
            Its fields as keywords, instead of (or added to) a dict.

        Returns
        -------
        str
            The event's id (generated when not given).

        Raises
        ------
        InvalidArgumentError, APIError, TransportError
            As for :meth:`rank`.

        Examples
        --------
        With a running API::

            with Client("http://localhost:8000", api_key="app-key-0123456789") as client:
                client.event(
                    kind="click",
                    user_id="u-3f9a",  # a pseudonym, never the raw id
                    session_id="s-1",
                    device={"type": "mobile", "os": "iOS 17.4"},
                    item_id="article-2",
                )
            # '0d6b1f0e2f8a4a7b9a1c2d3e4f5a6b7c'
        """
        return self._send(self._core.event(event, fields))

    def set_consent(
        self,
        user_id: str,
        *,
        personalisation: bool | None = None,
        learning: bool | None = None,
        source: str,
    ) -> ConsentView:
        """Give (true) or withdraw (false) a person's consents (``POST /v1/consent``).

        Parameters
        ----------
        user_id
            The person, as the app knows them; hashed by the server on arrival.
        personalisation
            Whether rank may personalise for them (else the baseline policy serves them).
        learning
            Whether their decisions may be learned from and kept.
        source
            Where they said so, e.g. ``"cookie-banner-v3"``.

        Returns
        -------
        ConsentView
            Both consents as recorded (with source and time) and what they allow now.

        Raises
        ------
        InvalidArgumentError
            If neither consent is given, or `source` is blank.
        """
        call = self._core.set_consent(
            user_id, personalisation=personalisation, learning=learning, source=source
        )
        return self._send(call)

    def consent(self, user_id: str) -> ConsentView:
        """Read a person's consents and what they allow now (``POST /v1/consent/lookup``)."""
        return self._send(self._core.consent(user_id))

    def export(self, user_id: str) -> dict[str, Any]:
        """Return everything the service holds about a person (``POST /v1/privacy/export``).

        Their pseudonym, consents, whether they have a secret (which links their logged
        decisions to them), the features of their sessions and devices, and their
        recent decisions (event ids) and those still pending.
        """
        return self._send(self._core.person("/v1/privacy/export", user_id))

    def erase(self, user_id: str) -> dict[str, Any]:
        """Erase a person (``POST /v1/privacy/erase``); return what was removed.

        Their consents and secret (their logged decisions become unlinkable), their
        sessions' and devices' features and their decisions still pending in the join.
        """
        return self._send(self._core.person("/v1/privacy/erase", user_id))

    def get_settings(self, policy: str) -> PolicySettings:
        """Return the live settings of `policy` (``GET /v1/policies/{policy}/settings``).

        Any key allowed the policy may read them.

        Raises
        ------
        PermissionDeniedError
            If the key may not use `policy`.
        NotFoundError
            If no policy of that name is served.
        """
        return self._send(self._core.get_settings(policy))

    def set_settings(
        self, policy: str, settings: PolicySettings | Mapping[str, Any]
    ) -> PolicySettings:
        """Replace the live settings of `policy` (admin key; ``PUT .../settings``).

        Parameters
        ----------
        policy
            The policy's name.
        settings
            The new settings, whole: a :class:`~bandit.wire.schemas.PolicySettings` or a dict.

        Returns
        -------
        PolicySettings
            The settings as the server stored them.

        Raises
        ------
        PermissionDeniedError
            If the key is not an admin key.
        UnprocessableRequestError
            If the server refuses the settings (e.g. exploration the policy lacks).

        Examples
        --------
        With a running API::

            with Client("http://localhost:8000", api_key="admin-key-0123456789") as admin:
                current = admin.get_settings("default")
                changed = admin.set_settings(
                    "default", current.model_copy(update={"exploration_floor": 0.05})
                )
        """
        return self._send(self._core.set_settings(policy, settings))

    def set_baseline(self, policy: str, forced: bool) -> PolicySettings:
        """Kill switch (admin key; ``PUT /v1/policies/{policy}/baseline``).

        With `forced`, the baseline serves every request of `policy` now (decisions are
        still logged, with the baseline's probabilities); without, its own model serves
        again. Nothing else in the settings changes.

        Returns
        -------
        PolicySettings
            The settings as the server stored them.

        Raises
        ------
        PermissionDeniedError
            If the key is not an admin key.
        NotFoundError
            If no policy of that name is served.
        """
        return self._send(self._core.set_baseline(policy, forced))

    def list_policies(self) -> list[PolicyStatus]:
        """Return the served policies this key may use, and their models (``GET /v1/policies``)."""
        return self._send(self._core.list_policies())

    def model_properties(self, policy: str) -> ModelProperties:
        """Return which model `policy` serves (``GET /v1/policies/{policy}/model/properties``).

        Any key allowed the policy may read them.

        Raises
        ------
        NotFoundError
            If no policy of that name is served, or it has saved no model yet.
        """
        return self._send(self._core.model_properties(policy))

    def model_versions(self, policy: str) -> ModelVersions:
        """Return the kept versions of `policy`'s model, newest first (admin key).

        ``GET /v1/policies/{policy}/model/versions``: each version's number, what saved
        it, when, and its size; the versions a rollback can serve again.

        Raises
        ------
        PermissionDeniedError
            If the key is not an admin key.
        """
        return self._send(self._core.model_versions(policy))

    def export_model(self, policy: str, version: int | None = None) -> ModelFile:
        """Return `policy`'s model as the VW model file ``vw -i`` loads (admin key).

        The model served (``GET /v1/policies/{policy}/model``), or a kept `version` of it
        (``GET .../model/versions/{version}``).

        Raises
        ------
        NotFoundError
            If the policy has saved no model, or does not keep `version`.
        APIError
            409 when the policy is not a VW policy (it has no VW model file).
        """
        return self._send(self._core.export_model(policy, version))

    def import_model(self, policy: str, model: bytes) -> ModelProperties:
        """Serve a VW model file trained elsewhere as `policy`'s next version (admin key).

        ``PUT /v1/policies/{policy}/model``: the server checks the file (VW must load it
        with the policy's options) before it serves it; the learner learns on from it.
        Give the client a `timeout` of a minute or so: the check may take that long.

        Raises
        ------
        UnprocessableRequestError
            If the policy cannot learn on from the file; the message says why.
        APIError
            409 when the learner saved a model meanwhile: send it again.
        """
        return self._send(self._core.import_model(policy, model))

    def reset_model(self, policy: str) -> ModelProperties:
        """Serve a fresh model of `policy` as its next version (admin key; ``DELETE .../model``).

        The version it replaces is kept: :meth:`rollback_model` serves it again.
        """
        return self._send(self._core.reset_model(policy))

    def rollback_model(self, policy: str, version: int) -> ModelProperties:
        """Serve kept `version` of `policy`'s model again, as its next version (admin key).

        ``POST /v1/policies/{policy}/model/rollback``: the version counter never goes
        back; the learner learns on from the model served again.

        Raises
        ------
        InvalidArgumentError
            If `version` is not a whole number >= 1.
        NotFoundError
            If the policy does not keep `version` (the message names those it keeps).
        APIError
            409 when the version cannot serve under the policy's live settings, or the
            learner saved a model meanwhile (send it again).

        Examples
        --------
        With a running API::

            with Client("http://localhost:8000", api_key="admin-key-0123456789") as admin:
                kept = admin.model_versions("default").versions
                served = admin.rollback_model("default", kept[1].version)
            served.model_version
            # 23
        """
        return self._send(self._core.rollback_model(policy, version))

    def service_configuration(self, policy: str) -> PersonalizerServiceConfiguration:
        """Return `policy`'s settings as Personalizer's service configuration (admin key).

        ``GET /personalizer/v1.0/configurations/service?policy={policy}``.
        """
        return self._send(self._core.service_configuration(policy))

    def set_service_configuration(
        self, policy: str, configuration: PersonalizerServiceConfiguration | Mapping[str, Any]
    ) -> PersonalizerServiceConfiguration:
        """Change `policy`'s settings as Personalizer's `configuration` asks (admin key).

        ``PUT /personalizer/v1.0/configurations/service?policy={policy}``; a dict is read
        by Personalizer's field names (``rewardWaitTime``, ...). Returns the configuration
        now in force.

        Raises
        ------
        BadRequestError
            For a field this service cannot apply; the message names it.
        """
        return self._send(self._core.set_service_configuration(policy, configuration))

    def set_learning_policy(self, policy: str, arguments: str) -> bool:
        """Learn `policy` with the VW command line `arguments`; return whether it reset the model.

        ``PUT /personalizer/v1.0/configurations/policy?policy={policy}`` (admin key): a
        change only of exploration keeps the model, any other serves a fresh one.

        Raises
        ------
        BadRequestError
            For options not accepted (files, daemons, unmapped); the message names them.
        """
        return self._send(self._core.set_learning_policy(policy, arguments))

    def ready(self) -> bool:
        """Return whether the service is ready to serve (``GET /readyz``).

        An error status means not ready; only a missing answer raises
        (:class:`TransportError`).
        """
        return self._send(self._core.ready())

    def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: _Call[_T]) -> _T:
        arguments = self._core.request(call)
        attempt = 0
        while True:
            try:
                response = self._http.request(**arguments)
            except httpx.TransportError as error:
                if not self._core.should_retry(call, error, attempt):
                    raise _transport_error(call, error, attempt) from error
                time.sleep(self._core.backoff(attempt))
                attempt += 1
                continue
            return self._core.finish(call, response)


class AsyncClient:
    """An asyncio client of the streambandit HTTP API; :class:`Client`'s twin.

    The parameters, methods and errors are :class:`Client`'s; the methods are
    coroutines, and ``transport`` is an ``httpx.AsyncBaseTransport`` (such as
    ``httpx.ASGITransport(app)`` to call an app in-process).

    Examples
    --------
    With a running API::

        import asyncio
        async def main() -> None:
            async with AsyncClient("http://localhost:8000", api_key="app-key-0123456789") as c:
                result = await c.rank({"user": {"tier": "gold"}}, ["a", "b"])
                await c.reward(result.event_id, 1.0)
        asyncio.run(main())
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 5.0,
        max_retries: int = 2,
        retry_backoff: float = 0.05,
        limits: Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _Core.build(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            limits=limits,
        )
        self._http = httpx.AsyncClient(
            base_url=self._core.base_url, timeout=self._core.timeout, transport=transport
        )

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._core.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._core.base_url!r})"

    async def rank(
        self,
        context: _ContextInput | None,
        actions: Sequence[Any],
        *,
        excluded_actions: Sequence[str] | None = None,
        event_id: str | None = None,
        defer_activation: bool = False,
        policy: str | None = None,
        session_id: str | None = None,
        device_id: str | None = None,
        user_id: str | None = None,
        explain: bool = False,
    ) -> RankResult:
        """Ask which action to show in `context`; see :meth:`Client.rank`."""
        call = self._core.rank(
            context,
            actions,
            excluded_actions=excluded_actions,
            event_id=event_id,
            defer_activation=defer_activation,
            policy=policy,
            session_id=session_id,
            device_id=device_id,
            user_id=user_id,
            explain=explain,
        )
        return await self._send(call)

    async def reward(
        self,
        event_id: str,
        value: float,
        *,
        action_id: str | None = None,
        reward_id: str | None = None,
        occurred_at: datetime | None = None,
        epsilon: float | None = None,
    ) -> str:
        """Report a reward and return its id; see :meth:`Client.reward`."""
        return await self._send(
            self._core.reward(
                event_id,
                value,
                action_id=action_id,
                reward_id=reward_id,
                occurred_at=occurred_at,
                epsilon=epsilon,
            )
        )

    async def activate(self, event_id: str) -> None:
        """Tell the server a deferred decision was shown; see :meth:`Client.activate`."""
        await self._send(self._core.activate(event_id))

    async def event(
        self, event: BehaviourEvent | Mapping[str, Any] | None = None, **fields: Any
    ) -> str:
        """Publish what a user did and return its id; see :meth:`Client.event`."""
        return await self._send(self._core.event(event, fields))

    async def set_consent(
        self,
        user_id: str,
        *,
        personalisation: bool | None = None,
        learning: bool | None = None,
        source: str,
    ) -> ConsentView:
        """Give or withdraw a person's consents; see :meth:`Client.set_consent`."""
        call = self._core.set_consent(
            user_id, personalisation=personalisation, learning=learning, source=source
        )
        return await self._send(call)

    async def consent(self, user_id: str) -> ConsentView:
        """Read a person's consents; see :meth:`Client.consent`."""
        return await self._send(self._core.consent(user_id))

    async def export(self, user_id: str) -> dict[str, Any]:
        """Return everything held about a person; see :meth:`Client.export`."""
        return await self._send(self._core.person("/v1/privacy/export", user_id))

    async def erase(self, user_id: str) -> dict[str, Any]:
        """Erase a person; see :meth:`Client.erase`."""
        return await self._send(self._core.person("/v1/privacy/erase", user_id))

    async def get_settings(self, policy: str) -> PolicySettings:
        """Return the live settings of `policy`; see :meth:`Client.get_settings`."""
        return await self._send(self._core.get_settings(policy))

    async def set_settings(
        self, policy: str, settings: PolicySettings | Mapping[str, Any]
    ) -> PolicySettings:
        """Replace the live settings of `policy`; see :meth:`Client.set_settings`."""
        return await self._send(self._core.set_settings(policy, settings))

    async def set_baseline(self, policy: str, forced: bool) -> PolicySettings:
        """Kill switch; see :meth:`Client.set_baseline`."""
        return await self._send(self._core.set_baseline(policy, forced))

    async def list_policies(self) -> list[PolicyStatus]:
        """Return the served policies this key may use; see :meth:`Client.list_policies`."""
        return await self._send(self._core.list_policies())

    async def model_properties(self, policy: str) -> ModelProperties:
        """Return which model `policy` serves; see :meth:`Client.model_properties`."""
        return await self._send(self._core.model_properties(policy))

    async def model_versions(self, policy: str) -> ModelVersions:
        """Return the kept versions of `policy`'s model; see :meth:`Client.model_versions`."""
        return await self._send(self._core.model_versions(policy))

    async def export_model(self, policy: str, version: int | None = None) -> ModelFile:
        """Return `policy`'s model as a VW model file; see :meth:`Client.export_model`."""
        return await self._send(self._core.export_model(policy, version))

    async def import_model(self, policy: str, model: bytes) -> ModelProperties:
        """Serve a VW model file trained elsewhere; see :meth:`Client.import_model`."""
        return await self._send(self._core.import_model(policy, model))

    async def reset_model(self, policy: str) -> ModelProperties:
        """Serve a fresh model of `policy`; see :meth:`Client.reset_model`."""
        return await self._send(self._core.reset_model(policy))

    async def rollback_model(self, policy: str, version: int) -> ModelProperties:
        """Serve a kept version again; see :meth:`Client.rollback_model`."""
        return await self._send(self._core.rollback_model(policy, version))

    async def service_configuration(self, policy: str) -> PersonalizerServiceConfiguration:
        """Return `policy`'s service configuration; see :meth:`Client.service_configuration`."""
        return await self._send(self._core.service_configuration(policy))

    async def set_service_configuration(
        self, policy: str, configuration: PersonalizerServiceConfiguration | Mapping[str, Any]
    ) -> PersonalizerServiceConfiguration:
        """Change `policy`'s settings; see :meth:`Client.set_service_configuration`."""
        return await self._send(self._core.set_service_configuration(policy, configuration))

    async def set_learning_policy(self, policy: str, arguments: str) -> bool:
        """Learn with a VW command line; see :meth:`Client.set_learning_policy`."""
        return await self._send(self._core.set_learning_policy(policy, arguments))

    async def ready(self) -> bool:
        """Return whether the service is ready to serve; see :meth:`Client.ready`."""
        return await self._send(self._core.ready())

    async def aclose(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call[_T]) -> _T:
        arguments = self._core.request(call)
        attempt = 0
        while True:
            try:
                response = await self._http.request(**arguments)
            except httpx.TransportError as error:
                if not self._core.should_retry(call, error, attempt):
                    raise _transport_error(call, error, attempt) from error
                await asyncio.sleep(self._core.backoff(attempt))
                attempt += 1
                continue
            return self._core.finish(call, response)


# -- private helpers -----------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > _SHOW_AT_MOST:
        text = text[: _SHOW_AT_MOST - 3] + "..."
    return text


def _action_data(action: object, index: int) -> object:
    """Return `action` as rank-request data: an id becomes ``{"id": id}``."""
    if isinstance(action, str):
        return {"id": action}
    if isinstance(action, RankableAction):
        return action.model_dump()
    if isinstance(action, Mapping):
        return action
    msg = (
        f"`actions`[{index}] must be an action id, a dict with 'id' (and 'features') or a "
        f"RankableAction, got {type(action).__name__}"
    )
    raise InvalidArgumentError(msg)


def _validate(model: type[_ModelT], data: object, limits: Limits, what: str) -> _ModelT:
    """Validate `data` as `model`, turning pydantic's error into an InvalidArgumentError."""
    try:
        return model.model_validate(data, context={"limits": limits})
    except pydantic.ValidationError as error:
        entries = error.errors(include_url=False, include_input=False)
        lines = [f"{_location(entry['loc'])}: {entry['msg']}" for entry in entries]
        msg = f"invalid {what}: " + "; ".join(lines)
        raise InvalidArgumentError(msg, errors=entries) from error


def _location(loc: Sequence[int | str]) -> str:
    if not loc:
        return "(value)"
    text = str(loc[0])
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _constant(value: _T) -> Callable[[httpx.Response], _T]:
    def read(response: httpx.Response) -> _T:
        return value

    return read


def _parse(response: httpx.Response, model: type[_ModelT], what: str) -> _ModelT:
    """Read the answer's JSON as `model`; an answer of another shape is an APIError."""
    try:
        return model.model_validate_json(response.content)
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        msg = (
            f"the server's answer is not {what} ({_location(first['loc'])}: {first['msg']}): "
            f"{_show(response.text)}"
        )
        raise APIError(msg, status=response.status_code, body=response.text) from error


def _read_rank(response: httpx.Response) -> RankResult:
    answer = _parse(response, ExplainedRankResponse, "a rank result")
    return RankResult(
        event_id=answer.event_id,
        action_id=answer.chosen_action_id,
        probability=answer.probability,
        ranking=tuple(answer.ranking),
        model_version=answer.model_version,
        policy=answer.policy,
        deferred=answer.deferred,
        explanation=answer.explanation,
    )


def _read_reward_id(sent: str) -> Callable[[httpx.Response], str]:
    def read(response: httpx.Response) -> str:
        answer = _parse(response, Accepted, "an acknowledgement")
        return answer.reward_id or sent

    return read


def _read_json(response: httpx.Response) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError as error:
        msg = f"the server answered HTTP {response.status_code} with a body that is not JSON"
        raise APIError(msg, status=response.status_code, body=response.text) from error
    if not isinstance(found, dict):
        msg = f"the server answered HTTP {response.status_code} with JSON that is not an object"
        raise APIError(msg, status=response.status_code, body=found)
    return found


def _read_consent(response: httpx.Response) -> ConsentView:
    return _parse(response, ConsentView, "a consent record")


def _read_settings(response: httpx.Response) -> PolicySettings:
    return _parse(response, PolicySettings, "policy settings")


def _read_policies(response: httpx.Response) -> list[PolicyStatus]:
    answer = _parse(response, PoliciesResponse, "a list of policies")
    return [PolicyStatus(**entry.model_dump()) for entry in answer.policies]


def _read_model(response: httpx.Response) -> ModelProperties:
    return _parse(response, ModelProperties, "model properties")


def _read_versions(response: httpx.Response) -> ModelVersions:
    return _parse(response, ModelVersions, "a list of model versions")


def _read_model_file(response: httpx.Response) -> ModelFile:
    try:
        version = int(response.headers["X-Streambandit-Model-Version"])
    except (KeyError, ValueError):
        msg = "the server's answer is not a model file: it names no X-Streambandit-Model-Version"
        raise APIError(msg, status=response.status_code, body=response.text) from None
    return ModelFile(version, response.content)


def _read_configuration(response: httpx.Response) -> PersonalizerServiceConfiguration:
    return _parse(response, PersonalizerServiceConfiguration, "a service configuration")


def _read_model_reset(response: httpx.Response) -> bool:
    return bool(response.headers.get(MODEL_RESET_HEADER) == "true")


def _read_ready(response: httpx.Response) -> bool:
    return response.is_success


def _server_message(body: object, response: httpx.Response) -> str:
    """Return the server's message in `body`: FastAPI's ``detail``, Personalizer's ``error``."""
    message: object = None
    if isinstance(body, Mapping):
        detail = body.get("detail")
        error = body.get("error")
        if isinstance(detail, list):
            message = "\n".join(_detail_line(entry) for entry in detail)
        elif detail is not None:
            message = detail
        elif isinstance(error, Mapping):
            message = "\n".join(_error_lines(error))
        elif error is not None:
            message = error
        else:
            message = body.get("message")
    elif isinstance(body, str):
        message = body.strip()[:_MESSAGE_AT_MOST]
    if isinstance(message, str) and message:
        return message
    return response.reason_phrase or f"HTTP {response.status_code}"


def _error_lines(error: Mapping[str, Any]) -> list[str]:
    """Personalizer's error: its message, then each detail as ``target: message``."""
    details = error.get("details")
    lines = [str(error.get("message") or "")]
    lines += [
        f"{detail.get('target')}: {detail.get('message')}"
        if detail.get("target")
        else str(detail.get("message"))
        for detail in (details if isinstance(details, list) else [])
        if isinstance(detail, Mapping) and detail.get("message")
    ]
    return [line for line in lines if line]


def _detail_line(entry: object) -> str:
    """One entry of FastAPI's validation ``detail`` as ``field.path: message``."""
    if not isinstance(entry, Mapping):
        return str(entry)
    loc = entry.get("loc")
    parts = list(loc) if isinstance(loc, list | tuple) else []
    if len(parts) > 1 and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return f"{_location(parts)}: {entry.get('msg', entry)}"


def _api_error(response: httpx.Response) -> APIError:
    try:
        body: object = response.json()
    except ValueError:
        body = response.text
    status = response.status_code
    kind = _ERRORS_BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else APIError
    return kind(_server_message(body, response), status=status, body=body)


def _transport_error(call: _Call[Any], error: httpx.TransportError, attempt: int) -> TransportError:
    tries = f" after {attempt + 1} tries" if attempt else ""
    what = f"{call.method} {call.path}"
    if isinstance(error, httpx.TimeoutException):
        return ClientTimeoutError(
            f"{what}: no answer in time{tries} ({type(error).__name__}: {error})"
        )
    return TransportError(f"{what}: no answer{tries} ({type(error).__name__}: {error})")
