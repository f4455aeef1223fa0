"""Wire schemas: the rank request, and the events streambandit logs and consumes.

Every model is a frozen pydantic model that rejects unknown fields; events carry a
``schema_version``. They travel as JSON, never pickle.

Size limits come from :class:`bandit.settings.Limits`, passed through pydantic's
validation context so a configured maximum applies; without a context the defaults
apply::

    RankRequest.model_validate_json(body, context={"limits": settings.limits})

Every broken rule is a :class:`pydantic.ValidationError` entry whose ``loc`` names the
field and whose message states the rule and what was found.

Each rule is declared once, here, and checked once, at the trust boundary. The rules
that hold whatever the settings (syntax, types, finite and bounded numbers) are
pydantic-core constraints on the fields, checked in Rust; those that depend on the
limits (lengths, counts) are checked in one pass per event once it is built
(:class:`WireModel`). The rank path validates with the same declarations
(:meth:`RankRequest.from_json`, which reuses the models of repeated catalog actions)
and builds and writes its decision once (:meth:`Decision.of_rank`,
:meth:`Decision.to_json`).

Syntax
------
namespace names
    ``^[A-Za-z_][A-Za-z0-9_-]*$``, at most ``max_key_length`` characters. No ``.``, so
    flattened ``namespace.feature`` names cannot collide.
feature names
    ``^[A-Za-z_][A-Za-z0-9_.-]*$``, at most ``max_key_length`` characters. Neither kind
    of key may hold ``|``, ``:``, ``=``, ``*`` or whitespace, which mean something in VW
    text and in flattened feature names.
feature values
    A finite number within ±1e6 (:data:`policies._base.FEATURE_VALUE_LIMIT`), a boolean
    (the policy sees 1.0 or 0.0), or a printable string of at most
    ``max_string_length`` characters (the VW writer escapes it).
rewards
    Within ``[min_reward, max_reward]`` of :class:`~bandit.settings.Limits` (default
    [-1000, 1000], docs/limits.md); a policy's default reward too, when set.
ids
    Action, event, session, item, user ids, policy names and model versions:
    ``^[A-Za-z0-9][A-Za-z0-9_.:-]*$``, at most ``max_id_length`` characters. Event and
    action ids under the lenient rule (validation context :data:`LENIENT_IDS`: the
    Personalizer routes, and readers of the topics, which carry what either surface
    took): any printable string of at most 256 characters, as Personalizer took them.

Examples
--------
>>> request = RankRequest.model_validate(
...     {
...         "event_id": "evt-1",
...         "context": {"user": {"returning": True, "tier": "gold"}},
...         "actions": [{"id": "a"}, {"id": "b", "features": {"item": {"price": 9.5}}}],
...         "excluded_actions": ["a"],
...     }
... )
>>> context, actions = request.policy_inputs()
>>> context
{'user': {'returning': 1.0, 'tier': 'gold'}}
>>> [action.id for action in actions]
['b']
>>> import pydantic
>>> try:
...     RankRequest.model_validate(
...         {"actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}]},
...         context={"limits": Limits(max_actions=2)},
...     )
... except pydantic.ValidationError as error:
...     print(error.errors()[0]["loc"], error.errors()[0]["msg"])
('actions',) at most 2 actions allowed, got 3
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain
from operator import attrgetter
from types import MappingProxyType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Literal,
    Self,
    TypeAlias,
    cast,
    get_args,
    get_origin,
)

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema
from pydantic_core.core_schema import ErrorType

from bandit.errors import InvalidDistributionError
from bandit.settings import MAX_AUTO_OPTIMIZATION_SECONDS, MIN_AUTO_OPTIMIZATION_SECONDS, Limits
from bandit.wire.consent import RawUserId
from bandit.wire.features import FeatureSchema
from policies import Action, Choice, FeatureValue
from policies._base import FEATURE_VALUE_LIMIT
from policies._distribution import SUM_TOLERANCE

__all__ = [
    "ACTION_CACHE_SIZE",
    "FEATURE_NAME_PATTERN",
    "ID_PATTERN",
    "LENIENT_IDS",
    "LENIENT_ID_LENGTH",
    "MAX_CANDIDATES",
    "NAMESPACE_PATTERN",
    "ActionCache",
    "ActionId",
    "Activation",
    "Aggregation",
    "BehaviourEvent",
    "BehaviourKind",
    "ConsentPath",
    "DeadLetter",
    "Decision",
    "Device",
    "DeviceId",
    "DeviceType",
    "Event",
    "EventId",
    "KeyScope",
    "LearningMode",
    "LiveEvaluationSettings",
    "LoggedAction",
    "LoggedCache",
    "LoggedFeatures",
    "ModelRollback",
    "MultiSlotRankRequest",
    "PolicyName",
    "PolicySettings",
    "RankRequest",
    "RankSlot",
    "RankableAction",
    "RankedAction",
    "RequestFeatures",
    "RewardReported",
    "RewardsRecord",
    "SessionId",
    "SlotDecision",
    "TrainingExample",
    "WireModel",
    "argument_model",
    "new_event_id",
]

# The syntaxes documented in the module docstring (pydantic-core's regex: `$` is the end).
NAMESPACE_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_-]*$"
FEATURE_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
MAX_CANDIDATES: Final = 8
"""Most candidate policies one served policy evaluates live (:class:`LiveEvaluationSettings`)."""
_NAMESPACE_RE = re.compile(NAMESPACE_PATTERN)
_FEATURE_NAME_RE = re.compile(FEATURE_NAME_PATTERN)
_ID_RE = re.compile(ID_PATTERN)
LENIENT_ID_LENGTH: Final = 256
"""The longest event or action id the lenient id rule takes (Personalizer's bound)."""
LENIENT_IDS: Final[Mapping[str, str]] = MappingProxyType({"ids": "lenient"})
"""Validation context (with ``limits``) for the lenient id rule: see :class:`_IdRule`."""
_DEFAULT_LIMITS = Limits()
_SHOW_AT_MOST = 40


# -- helpers -----------------------------------------------------------------------------


def new_event_id() -> str:
    """Return a fresh random event id: 32 lowercase hex digits (a uuid4).

    Examples
    --------
    >>> len(new_event_id())
    32
    """
    return uuid.uuid4().hex


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _limits(info: ValidationInfo) -> Limits:
    """Return the limits passed as ``context={"limits": ...}``, else the defaults."""
    context = info.context
    if context is None:
        return _DEFAULT_LIMITS
    if type(context) is dict:  # the usual case, without the ABC checks below
        found = context.get("limits", _DEFAULT_LIMITS)
        if type(found) is Limits:
            return found
    if not isinstance(context, Mapping):
        msg = f"the validation context must be a mapping, got {type(context).__name__}"
        raise TypeError(msg)
    limits = context.get("limits", _DEFAULT_LIMITS)
    if not isinstance(limits, Limits):
        msg = (
            "the validation context's 'limits' must be a bandit.settings.Limits, "
            f"got {type(limits).__name__}"
        )
        raise TypeError(msg)
    return limits


def _lenient(info: ValidationInfo) -> bool:
    """Whether the context asks for the lenient id rule (``ids="lenient"``)."""
    context = info.context
    return context is not None and context.get("ids") == "lenient"


_LENIENT_LIMITS: dict[int, tuple[Limits, Limits]] = {}


def _id_limits(limits: Limits, lenient: bool) -> Limits:
    """`limits`, with ids up to :data:`LENIENT_ID_LENGTH` under the lenient rule."""
    if not lenient or limits.max_id_length >= LENIENT_ID_LENGTH:
        return limits
    entry = _LENIENT_LIMITS.get(id(limits))
    if entry is None or entry[0] is not limits:  # (the entry keeps `limits` alive)
        if len(_LENIENT_LIMITS) > 64:
            _LENIENT_LIMITS.clear()
        widened = limits.model_copy(update={"max_id_length": LENIENT_ID_LENGTH})
        entry = _LENIENT_LIMITS[id(limits)] = (limits, widened)
    return entry[1]


def _error(kind: str, template: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, template, context)


def _show(value: object) -> str:
    """``repr(value)``, shortened so an error message stays readable."""
    text = repr(value)
    if len(text) > _SHOW_AT_MOST:
        text = text[: _SHOW_AT_MOST - 3] + "..."
    return text


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


# -- keys, ids and feature values ----------------------------------------------------------
#
# The rules that do not depend on the settings are pydantic-core constraints, checked in
# Rust: syntax (patterns), types (strict), finite numbers within FEATURE_VALUE_LIMIT,
# probabilities in (0, 1]. Each is wrapped in one error of its own (`_Rule`) that names
# the rule. The rules that depend on the settings (:class:`~bandit.settings.Limits`:
# lengths, counts; and printable strings, a rule of Python's) are checked once per
# event, after it is built, in one pass (`_limit_errors`), with messages naming the
# setting. Models validated at the trust boundary derive from `WireModel`, which runs that
# pass and says what was found (`{found}`) in the messages of the rules.

_FOUND = "{found}"
"""Left in a rule's message by pydantic; `WireModel` puts what was found in its place."""


class _Rule:
    """Annotated metadata: any error of the constrained type is this one error.

    pydantic-core's ``custom_error_schema`` around the type's own (Rust) schema: the
    JSON schema (OpenAPI) is the type's, the message states the rule.
    """

    def __init__(
        self, kind: str, message: str, *, unstated: tuple[str, ...] = (), **context: Any
    ) -> None:
        self.kind = kind
        self.message = message
        self.context = context
        self.unstated = unstated

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.custom_error_schema(
            handler(source),
            custom_error_type=self.kind,
            custom_error_message=self.message,
            custom_error_context=self.context or None,
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Return the type's JSON schema without the keywords `unstated`."""
        shown: JsonSchemaValue = _without(handler(schema), self.unstated)
        return shown


def _without(schema: Any, keywords: tuple[str, ...]) -> Any:
    if isinstance(schema, dict):
        return {k: _without(v, keywords) for k, v in schema.items() if k not in keywords}
    if isinstance(schema, list):
        return [_without(item, keywords) for item in schema]
    return schema


def _syntax(what: str, pattern: str, explained: str, kind: str) -> _Rule:
    """Return the rule of strings matching `pattern` (their length: `_limit_errors`).

    Keys (namespace and feature names) do not state their pattern in the JSON schema:
    the OpenAPI document stays as it was (``additionalProperties``).
    """
    return _Rule(
        kind,
        f"{what} must match {{pattern}} ({explained}), got {_FOUND}",
        unstated=("pattern",) if kind == "key_syntax" else (),
        pattern=pattern,
        what=what,
    )


_ID_EXPLAINED = "letters, digits, '_', '.', ':' and '-', starting with a letter or digit"


def _id(what: str) -> _Rule:
    return _syntax(what, ID_PATTERN, _ID_EXPLAINED, "id_syntax")


_ID = StringConstraints(pattern=ID_PATTERN)


class _IdRule(_Rule):
    """The rule of event and action ids: strict on the native API, lenient for Personalizer.

    **Strict** (the default): the id syntax, ``ID_PATTERN``, and at most
    ``limits.max_id_length`` characters. **Lenient** (validation context
    :data:`LENIENT_IDS`, as the Personalizer routes and the topics' readers validate):
    any printable string of at most :data:`LENIENT_ID_LENGTH` characters, as Personalizer
    took them, kept exactly (each format escapes what it must: VW text with
    :func:`policies.vwtext.escape`, DSJSON and the topics as JSON strings). The OpenAPI
    document states the strict pattern: the native routes' rule.
    """

    def __init__(self, what: str) -> None:
        super().__init__(
            "id_syntax",
            f"{what} must match {{pattern}} ({_ID_EXPLAINED}), got {_FOUND}",
            pattern=ID_PATTERN,
            what=what,
        )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        typed = super().__get_pydantic_core_schema__(source, handler)  # a string, or this error
        return core_schema.with_info_after_validator_function(self._check, typed)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        shown: JsonSchemaValue = handler(schema)
        shown["pattern"] = ID_PATTERN
        return shown

    def _check(self, value: str, info: ValidationInfo) -> str:
        if _ID_RE.fullmatch(value) is not None:
            return value
        if not _lenient(info):
            raise PydanticCustomError(self.kind, self.message, self.context)
        if not value or not value.isprintable():
            raise _error(
                "id_syntax",
                "{what} must be printable and not empty, got {found}",
                what=self.context["what"],
                found=_show(value),
            )
        return value


_FINITE = f"finite numbers within [-{FEATURE_VALUE_LIMIT:g}, {FEATURE_VALUE_LIMIT:g}]"
_BOUNDED = Field(ge=-FEATURE_VALUE_LIMIT, le=FEATURE_VALUE_LIMIT, allow_inf_nan=False)
_Number: TypeAlias = Annotated[StrictInt, _BOUNDED] | Annotated[StrictFloat, _BOUNDED]
_REQUEST_VALUE = "feature values must be a number, a string or a boolean"
_LOGGED_VALUE = (
    "logged feature values must be numbers or strings, as the policy saw them "
    "(booleans become 1.0 or 0.0)"
)


def _value_error(value: object, *, logged: bool) -> PydanticCustomError:
    """Say which rule of feature values `value` breaks (it broke one, `_RequestValue`)."""
    if isinstance(value, bool) and logged:
        return _error("feature_value_type", _LOGGED_VALUE + ", got {found}", found=_show(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _error(
            "number_not_finite" if not _is_finite(value) else "number_too_large",
            "feature values must be {rule} (policies._base.FEATURE_VALUE_LIMIT), got {found}",
            rule=_FINITE,
            found=_show(value),
        )
    return _error("feature_value_type", _REQUEST_VALUE + ", got {type}", type=type(value).__name__)


def _key_errors(
    keys: Iterable[str], what: str, limit: int, loc: tuple[Any, ...], out: list[Any]
) -> None:
    out.extend(
        _detail(
            _error(
                "key_too_long",
                "{what} must be at most {limit} characters, got {length}",
                what=what, limit=limit, length=len(key),
            ),
            (*loc, key, "[key]"), key,
        )
        for key in keys
        if len(key) > limit
    )  # fmt: skip


def _feature_errors(
    features: Mapping[str, Mapping[str, Any]],
    loc: tuple[Any, ...],
    limits: Limits,
    out: list[Any],
) -> None:
    """Add the errors of the rules of features that depend on the limits (Rust checked the rest)."""
    if len(features) > limits.max_namespaces:
        out.append(_detail(
            _error(
                "too_many_namespaces", "at most {limit} namespaces allowed, got {count}",
                limit=limits.max_namespaces, count=len(features),
            ),
            loc, features,
        ))  # fmt: skip
    key_limit = limits.max_key_length
    string_limit = limits.max_string_length
    per_namespace = limits.max_features_per_namespace
    if any(len(namespace) > key_limit for namespace in features):
        _key_errors(features, "namespace names", key_limit, loc, out)
    for namespace, values in features.items():
        if len(values) > per_namespace:
            out.append(_detail(
                _error(
                    "too_many_features",
                    "at most {limit} features per namespace allowed, got {count}",
                    limit=per_namespace, count=len(values),
                ),
                (*loc, namespace), values,
            ))  # fmt: skip
        if any(len(name) > key_limit for name in values):
            _key_errors(values, "feature names", key_limit, (*loc, namespace), out)
        for name, value in values.items():
            if type(value) is str and (len(value) > string_limit or not value.isprintable()):
                out.append(_detail(_string_error(value, string_limit), (*loc, namespace, name),
                                   value))  # fmt: skip


def _string_error(value: str, limit: int) -> PydanticCustomError:
    if len(value) > limit:
        return _error(
            "string_too_long",
            "string feature values must be at most {limit} characters, got {length}",
            limit=limit,
            length=len(value),
        )
    position = next(i for i, char in enumerate(value) if not char.isprintable())
    return _error(
        "string_not_printable",
        "string feature values must be printable, got {found} at position {position}",
        found=_show(value[position]),
        position=position,
    )


def _offer_errors(
    context: Mapping[str, Mapping[str, Any]],
    actions: Sequence[RankableAction | LoggedAction],
    limits: Limits,
    out: list[InitErrorDetails],
    *,
    total: bool = False,
) -> None:
    """Add the errors of the rules of a context and offered actions that depend on the limits.

    Checked in bulk first (a few C-level passes over every key and string); only a
    request that breaks one is gone through feature by feature, to say where. With
    `total`, the features of the context and the actions together are counted too.
    """
    if total:
        # The policy crosses the context with every action: a rank's cost grows with both.
        features = map(dict.values, map(_features_of, actions))  # (C-level, as below)
        count = sum(map(len, context.values())) + sum(map(len, chain.from_iterable(features)))
        if count > limits.max_features_per_rank:
            out.append(_detail(
                _error(
                    "too_many_features_in_rank",
                    "at most {limit} features allowed in the context and actions together "
                    "(STREAMBANDIT_LIMITS__MAX_FEATURES_PER_RANK), got {count}",
                    limit=limits.max_features_per_rank, count=count,
                ),
                ("actions",), actions,
            ))  # fmt: skip
    vouched = _vouched(limits)  # repeated catalog actions, checked under `limits` before
    fresh = [action for action in actions if id(action) not in vouched]
    if not _features_fit([context, *[action.features for action in fresh]], limits):
        _feature_errors(context, ("context",), limits, out)
        for index, action in enumerate(actions):
            if action.features:
                _feature_errors(action.features, ("actions", index, "features"), limits, out)
    id_limit = limits.max_id_length
    if fresh and max(len(action.id) for action in fresh) > id_limit:
        ids = ((("actions", index, "id"), action.id) for index, action in enumerate(actions))
        _id_errors(ids, "action ids", id_limit, out)


def _features_fit(all_features: list[Mapping[str, Mapping[str, Any]]], limits: Limits) -> bool:
    """Whether `_feature_errors` would find nothing in any of `all_features`."""
    namespaces = [values for features in all_features for values in features.values()]
    if not namespaces:
        return True
    strings = [value for values in namespaces for value in values.values() if type(value) is str]
    key_limit = limits.max_key_length
    return (
        max(map(len, all_features)) <= limits.max_namespaces
        and max(map(len, namespaces)) <= limits.max_features_per_namespace
        and max(map(len, chain.from_iterable(all_features))) <= key_limit
        and max(map(len, chain.from_iterable(namespaces)), default=0) <= key_limit
        and (
            not strings
            or (
                max(map(len, strings)) <= limits.max_string_length
                and "".join(strings).isprintable()
            )
        )
    )


def _id_errors(
    ids: Iterable[tuple[tuple[Any, ...], str | None]], what: str, limit: int, out: list[Any]
) -> None:
    for loc, value in ids:
        if value is not None and len(value) > limit:
            out.append(_detail(
                _error(
                    "id_too_long", "{what} must be at most {limit} characters, got {length}",
                    what=what, limit=limit, length=len(value),
                ),
                loc, value,
            ))  # fmt: skip


def _detail(error: PydanticCustomError, loc: tuple[Any, ...], value: Any) -> InitErrorDetails:
    return {"type": error, "loc": loc, "input": value}


def _reward_checker(what: str, *, stored: bool) -> Callable[[float, ValidationInfo], float]:
    """Check a reward against the configured range (:class:`~bandit.settings.Limits`).

    With `stored`, values validated without limits in the context (settings read back
    from Redis) pass: they were checked when set, and a range changed since must not
    make them unreadable.
    """

    def check(value: float, info: ValidationInfo) -> float:
        if stored and not (isinstance(info.context, Mapping) and "limits" in info.context):
            return value
        limits = _limits(info)
        if not limits.min_reward <= value <= limits.max_reward:
            raise _error(
                "reward_range",
                "{what} must be within [{low}, {high}] (settings limits.min_reward and "
                "limits.max_reward: STREAMBANDIT_LIMITS__MIN_REWARD and "
                "STREAMBANDIT_LIMITS__MAX_REWARD), got {found}",
                what=what,
                low=limits.min_reward,
                high=limits.max_reward,
                found=_show(value),
            )
        return value

    return check


def _check_action_count(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return value  # pydantic reports the wrong type
    limit = _limits(info).max_actions
    if len(value) > limit:
        raise _error(
            "too_many_actions",
            "at most {limit} actions allowed, got {count}",
            limit=limit,
            count=len(value),
        )
    if not value:
        raise _error("no_actions", "at least 1 action required, got 0")
    return value


def _check_distinct_ids(actions: list[Any]) -> list[Any]:
    _check_distinct(actions, "action")
    return actions


def _check_distinct_slot_ids(slots: Sequence[Any]) -> None:
    _check_distinct(slots, "slot")


def _check_distinct(items: Sequence[Any], kind: Literal["action", "slot"]) -> None:
    """Refuse two of `items` with one ``id`` (``duplicate_<kind>_id``), naming both places."""
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first = first_seen.setdefault(item.id, index)
        if first != index:
            raise _error(
                f"duplicate_{kind}_id",
                f"{kind} ids must be distinct, got {{found}} at [{{first}}] and [{{index}}]",
                found=_show(item.id),
                first=first,
                index=index,
            )


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise _error(
            "naive_datetime",
            "timestamps must be timezone-aware (e.g. 2026-05-01T12:00:00Z or +02:00), "
            "got {found} without a timezone",
            found=value.isoformat(),
        )
    return value.astimezone(UTC)


_NamespaceName: TypeAlias = Annotated[
    str,
    StringConstraints(pattern=NAMESPACE_PATTERN),
    _syntax(
        "namespace names",
        NAMESPACE_PATTERN,
        "letters, digits, '_' and '-', not starting with a digit or '-'",
        "key_syntax",
    ),
]
_FeatureName: TypeAlias = Annotated[
    str,
    StringConstraints(pattern=FEATURE_NAME_PATTERN),
    _syntax(
        "feature names",
        FEATURE_NAME_PATTERN,
        "letters, digits, '_', '.' and '-', not starting with a digit, '.' or '-'",
        "key_syntax",
    ),
]
_RequestValue: TypeAlias = Annotated[
    StrictBool | _Number | StrictStr,
    _Rule(
        "request_feature_value",
        _REQUEST_VALUE + " (numbers " + _FINITE + ")",
        unstated=("minimum", "maximum"),  # the OpenAPI document as it was
    ),
]
_LoggedValue: TypeAlias = Annotated[
    _Number | StrictStr,
    _Rule(
        "logged_feature_value",
        _LOGGED_VALUE + " (" + _FINITE + ")",
        unstated=("minimum", "maximum"),
    ),
]
RequestFeatures: TypeAlias = dict[_NamespaceName, dict[_FeatureName, _RequestValue]]
"""Features by namespace, as a request gives them (counts and lengths: `_limit_errors`)."""
LoggedFeatures: TypeAlias = dict[_NamespaceName, dict[_FeatureName, _LoggedValue]]
"""Features by namespace as the policy saw them: no booleans."""
_Subject: TypeAlias = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
ConsentPath: TypeAlias = Literal["personalise", "baseline"]
"""Which policy served a decision under the person's consent (see :mod:`bandit.privacy.consent`)."""
LearningMode: TypeAlias = Literal["Online", "Apprentice", "LoggingOnly"]
"""How a policy serves and learns (Personalizer's learning modes): ``Online`` serves its
model and learns; ``Apprentice`` serves the baseline action, logs what its model would
have done, and learns; ``LoggingOnly`` serves the baseline action and learns nothing."""
ActionId: TypeAlias = Annotated[str, _IdRule("action ids")]
EventId: TypeAlias = Annotated[str, _IdRule("event ids")]
SessionId: TypeAlias = Annotated[str, _ID, _id("session ids")]
DeviceId: TypeAlias = Annotated[str, _ID, _id("device ids")]
PolicyName: TypeAlias = Annotated[str, _ID, _id("policy names")]
_ItemId: TypeAlias = Annotated[str, _ID, _id("item ids")]
_ModelVersion: TypeAlias = Annotated[str, _ID, _id("model versions")]
_SessionId: TypeAlias = SessionId
_PolicyName: TypeAlias = PolicyName
_UserId: TypeAlias = RawUserId
_Probability: TypeAlias = Annotated[
    float,
    Field(gt=0.0, le=1.0, allow_inf_nan=False),
    _Rule(
        "probability_range",
        f"probabilities must be finite and in (0, 1], got {_FOUND}",
        unstated=("exclusiveMinimum", "maximum"),  # the OpenAPI document as it was
    ),
]
_Timestamp: TypeAlias = Annotated[datetime, AfterValidator(_check_aware)]


def _check_label(value: str, info: ValidationInfo) -> str:
    limit = _limits(info).max_key_length
    if not 0 < len(value) <= limit:
        raise _error(
            "label_length",
            "must be 1 to {limit} characters, got {length}",
            limit=limit,
            length=len(value),
        )
    if not value.isprintable():
        raise _error("label_not_printable", "must be printable, got {found}", found=_show(value))
    return value


_Label: TypeAlias = Annotated[str, AfterValidator(_check_label)]


def _policy_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Copy features as a policy sees them: booleans become 1.0 or 0.0."""
    return {
        namespace: {
            name: (1.0 if value else 0.0) if isinstance(value, bool) else value
            for name, value in values.items()
        }
        for namespace, values in features.items()
    }


# -- models ------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_VALUE_KINDS: Final = frozenset({"request_feature_value", "logged_feature_value"})


def _phrased(exc: ValidationError, title: str) -> ValidationError:
    """`exc` with what was found in the messages of the rules (`_Rule`), else `exc` itself."""
    errors = exc.errors(include_url=False)
    if not any(e["type"] in _VALUE_KINDS or _FOUND in e["msg"] for e in errors):
        return exc
    details: list[InitErrorDetails] = []
    for e in errors:
        kind, found = e["type"], e["input"]
        if kind in _VALUE_KINDS:
            error: Any = _value_error(found, logged=kind == "logged_feature_value")
        elif kind == "id_syntax" and not isinstance(found, str):
            error = "string_type"  # no id at all: pydantic's own words
        elif _FOUND in e["msg"]:
            error = PydanticCustomError(kind, e["msg"], {"found": _show(found)})
        elif kind in _KNOWN_ERRORS:
            known: InitErrorDetails = {"type": kind, "loc": e["loc"], "input": found}
            if "ctx" in e:
                known["ctx"] = e["ctx"]
            details.append(known)
            continue
        else:
            error = PydanticCustomError(kind, e["msg"])
        details.append({"type": error, "loc": e["loc"], "input": found})
    return ValidationError.from_exception_data(title, details)


_KNOWN_ERRORS: Final = frozenset(get_args(ErrorType))


def _declared_ids(model: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """Return the fields of `model` holding one id (optional or not), with what the id is."""
    found: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        candidates = [
            field.metadata,
            *(
                arg.__metadata__
                for arg in get_args(field.annotation)
                if get_origin(arg) is Annotated
            ),
        ]
        rules = [m for metadata in candidates for m in metadata if isinstance(m, _Rule)]
        found.extend((name, str(r.context["what"])) for r in rules[:1] if r.kind == "id_syntax")
    return tuple(found)


class WireModel(_Frozen):
    """A model validated at the trust boundary, whole, in two steps.

    First the rules of its types (pydantic-core, in Rust; the messages of the rules say
    what was found), then those that depend on the limits (`_limit_errors`), in one pass
    per event.
    """

    _ids: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._ids = _declared_ids(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _checked(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        try:
            model = handler(data)
        except ValidationError as exc:
            raise _phrased(exc, cls.__name__) from None
        errors: list[InitErrorDetails] = []
        model._limit_errors(_id_limits(_limits(info), _lenient(info)), errors)
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return model

    def _limit_errors(self, limits: Limits, out: list[InitErrorDetails]) -> None:
        """Add the errors of the rules that depend on `limits` to `out` (ids' lengths here)."""
        values = self.__dict__
        limit = limits.max_id_length
        for name, what in self._ids:
            value = values[name]
            if value is not None and len(value) > limit:
                _id_errors((((name,), value),), what, limit, out)


def argument_model(name: str, annotation: Any) -> type[WireModel]:
    """Return a :class:`WireModel` of one field, `name`: one value checked by the wire's rules.

    For a caller that holds a single value of a wire type (the Python client's arguments),
    so it is refused by the same rules, limits and messages as inside an event.

    Examples
    --------
    >>> Policy = argument_model("policy", PolicyName)
    >>> Policy.model_validate({"policy": "vw-squarecb"}).policy
    'vw-squarecb'
    >>> Policy.model_validate({"policy": "x" * 9}, context={"limits": Limits(max_id_length=8)})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for policy
    policy
      policy names must be at most 8 characters, got 9 [type=id_too_long, ...]
    """
    fields: dict[str, Any] = {name: (annotation, ...)}
    return create_model(name, __base__=WireModel, **fields)


class Event(WireModel):
    """Base of every event on a topic: closed, frozen, versioned, timestamped.

    Attributes
    ----------
    schema_version
        Version of the event's schema; only 1 exists.
    event_id
        Id of the event (for rewards: of the decision rewarded).
    occurred_at
        When it happened; timezone-aware (naive times are rejected), stored in UTC.
        Defaults to now.
    """

    schema_version: Literal[1] = 1
    event_id: EventId
    occurred_at: _Timestamp = Field(default_factory=_utc_now)


ACTION_CACHE_SIZE = 20_000
"""Most actions an :data:`ActionCache` (or :meth:`RankRequest.from_json`) holds before it
starts again."""

_known: list[tuple[Limits, dict[bytes, RankableAction], set[int]]] = []  # the last limits'


def _known_actions(limits: Limits) -> tuple[dict[bytes, RankableAction], set[int]]:
    """Return the actions validated under `limits`, by their JSON, and their models' ids.

    The models are frozen and shared by the requests that offer them again
    (:meth:`RankRequest.from_json`); each was part of a request that passed every rule
    under `limits`, so its own rules are not checked again (`_offer_errors`).
    """
    if not _known or _known[0][0] is not limits:
        _known[:] = [(limits, {}, set())]
    return _known[0][1], _known[0][2]


def _vouched(limits: Limits) -> set[int]:
    """Return the ids of the action models validated under `limits` (`_known_actions`)."""
    return _known[0][2] if _known and _known[0][0] is limits else _NONE_VOUCHED


_NONE_VOUCHED: Final[set[int]] = set()
_features_of: Final = attrgetter("features")


ActionCache: TypeAlias = "dict[int, tuple[RankableAction, Action]]"
"""Policy actions by the identity of the action model they were made of."""
LoggedCache: TypeAlias = "dict[int, tuple[Action, LoggedAction]]"
"""The logged form of policy actions, by the identity of the policy action."""


class RankableAction(_Frozen):
    """One action offered in a :class:`RankRequest`: its id and features by namespace."""

    id: ActionId
    features: RequestFeatures = Field(default_factory=dict)


class LoggedAction(_Frozen):
    """One offered action as a :class:`Decision` logs it: as the policy saw it."""

    id: ActionId
    features: LoggedFeatures = Field(default_factory=dict)


class RankedAction(_Frozen):
    """One entry of a ranking: an action id and its probability of being chosen."""

    id: ActionId
    probability: _Probability


class RankRequest(WireModel):
    """A request to choose among `actions` in `context` (``POST /v1/rank``).

    Attributes
    ----------
    event_id
        Id of the decision to make; it seeds the draw. Generated when absent.
    context
        Shared features by namespace: ``{"user": {"age": 31, "tier": "gold"}}``.
    actions
        The candidates, 1 to ``max_actions``, with distinct ids.
    excluded_actions
        Ids among `actions` that must not be chosen this time; at least one action must
        remain. Excluded actions are not shown to the policy and not logged.
    defer_activation
        Log the decision but learn from it only once the app activates it.
    """

    event_id: EventId = Field(default_factory=new_event_id)
    context: RequestFeatures = Field(default_factory=dict)
    actions: Annotated[
        list[RankableAction],
        BeforeValidator(_check_action_count),
        AfterValidator(_check_distinct_ids),
    ]
    excluded_actions: list[ActionId] = Field(default_factory=list)
    defer_activation: StrictBool = False

    @field_validator("excluded_actions", mode="before")
    @classmethod
    def _excluded_count(cls, value: Any, info: ValidationInfo) -> Any:
        limit = _limits(info).max_actions
        is_list = isinstance(value, Sequence) and not isinstance(value, str | bytes)
        if is_list and len(value) > limit:
            raise _error(
                "too_many_excluded",
                "at most {limit} excluded actions allowed, got {count}",
                limit=limit,
                count=len(value),
            )
        return value

    @field_validator("excluded_actions")
    @classmethod
    def _excluded_are_offered(cls, value: list[str], info: ValidationInfo) -> list[str]:
        actions: list[RankableAction] | None = info.data.get("actions")
        seen: set[str] = set()
        for index, action_id in enumerate(value):
            if action_id in seen:
                raise _error(
                    "duplicate_excluded_action",
                    "excluded action ids must be distinct, got {found} again at [{index}]",
                    found=_show(action_id),
                    index=index,
                )
            seen.add(action_id)
        if actions is None:  # `actions` is invalid and already reported
            return value
        offered = {action.id for action in actions}
        for index, action_id in enumerate(value):
            if action_id not in offered:
                raise _error(
                    "excluded_action_not_offered",
                    "excluded actions must be among the offered action ids, got {found} "
                    "at [{index}]",
                    found=_show(action_id),
                    index=index,
                )
        if len(seen) == len(offered):
            raise _error(
                "all_actions_excluded",
                "at least one offered action must remain, got all {count} excluded",
                count=len(offered),
            )
        return value

    def _limit_errors(self, limits: Limits, out: list[InitErrorDetails]) -> None:
        super()._limit_errors(limits, out)
        _offer_errors(self.context, self.actions, limits, out, total=True)
        excluded = ((("excluded_actions", i), e) for i, e in enumerate(self.excluded_actions))
        _id_errors(excluded, "action ids", limits.max_id_length, out)

    def policy_inputs(
        self, cache: ActionCache | None = None
    ) -> tuple[dict[str, dict[str, FeatureValue]], list[Action]]:
        """Return what the policy sees: the context and the actions not excluded.

        Booleans become 1.0 or 0.0; everything is copied, so the request is not shared
        with the policy.

        Parameters
        ----------
        cache
            Where to keep the :class:`~policies.Action` made of each action model, to
            give the same one again for the same model (:meth:`from_json` shares the
            models of repeated actions): policies may then reuse their own work per
            action, and :meth:`Decision.of_rank` its logged form. Cleared when it holds
            ``ACTION_CACHE_SIZE``.

        Returns
        -------
        tuple[dict, list[policies.Action]]
            The context mapping and the remaining actions, in offer order.
        """
        excluded = set(self.excluded_actions)
        if cache is None:
            actions = [
                Action(action.id, _policy_features(action.features))
                for action in self.actions
                if action.id not in excluded
            ]
            return _policy_features(self.context), actions
        actions = []
        for action in self.actions:
            if action.id in excluded:
                continue
            entry = cache.get(id(action))
            if entry is None or entry[0] is not action:  # (the cache keeps `action` alive)
                if len(cache) >= ACTION_CACHE_SIZE:
                    cache.clear()
                entry = cache[id(action)] = (
                    action,
                    Action(action.id, _policy_features(action.features)),
                )
            actions.append(entry[1])
        return _policy_features(self.context), actions

    @classmethod
    def from_json(cls, raw: bytes | str, limits: Limits) -> Self:
        """Return ``cls.model_validate_json(raw, context={"limits": limits})``, reusing work.

        An action offered again with the same JSON (an app's catalog) is the action
        model validated the first time under the same `limits`, shared: only the new
        actions are validated, with the rest of the request (its rules across actions
        included), by the same declarations. What is refused is refused by
        ``model_validate_json``, in its words.
        """
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        actions = data.get("actions") if type(data) is dict else None
        if type(actions) is not list or not actions:
            return cls.model_validate_json(raw, context={"limits": limits})
        known, ids = _known_actions(limits)
        new: list[tuple[int, bytes]] = []
        offered: list[Any] = []
        for index, action in enumerate(actions):
            try:
                blob = orjson.dumps(action)  # exact: 1, 1.0 and true write differently
            except TypeError:  # an int beyond 64 bits: validated, not kept
                offered.append(action)
                continue
            found = known.get(blob)
            if found is None:
                new.append((index, blob))
                offered.append(action)
            else:
                offered.append(found)
        data["actions"] = offered
        try:
            request = cls.model_validate(data, context={"limits": limits})
        except ValidationError:
            return cls.model_validate_json(raw, context={"limits": limits})
        if len(known) + len(new) > ACTION_CACHE_SIZE:
            known.clear()
            ids.clear()
        for index, blob in new:
            made = known[blob] = request.actions[index]
            ids.add(id(made))
        return request


def _check_slot_count(value: Any, info: ValidationInfo) -> Any:
    limit = _limits(info).max_slots
    if isinstance(value, list) and not 1 <= len(value) <= limit:
        raise _error(
            "slot_count",
            "1 to {limit} slots allowed (STREAMBANDIT_LIMITS__MAX_SLOTS), got {count}",
            limit=limit,
            count=len(value),
        )
    return value


class RankSlot(_Frozen):
    """One slot of a :class:`MultiSlotRankRequest`: a place on the page to fill with an action.

    Attributes
    ----------
    id
        The slot's id, distinct within the request (the lenient or strict id rule, as the
        request's action ids).
    features
        The slot's features by namespace (its size, its position...). The policy sees
        them in one namespace, :data:`policies.vwtext.SLOT_NAMESPACE`
        (:meth:`policy_features`).
    excluded_actions
        Ids of offered actions this slot must not show.
    baseline_action
        The action this slot shows without a learned policy (Apprentice and LoggingOnly
        serve it; the baseline's first choice); one of the actions it may show.
    """

    id: ActionId
    features: RequestFeatures = Field(default_factory=dict)
    excluded_actions: list[ActionId] = Field(default_factory=list)
    baseline_action: ActionId | None = None

    def policy_features(self) -> dict[str, FeatureValue]:
        """Return the slot's features as the policy sees them: ``<namespace>.<name>``, no booleans.

        Examples
        --------
        >>> slot = RankSlot(id="top", features={"default": {"size": "Large", "big": True}})
        >>> slot.policy_features()
        {'default.size': 'Large', 'default.big': 1.0}
        """
        return self.flat(self.features)

    @staticmethod
    def flat(features: Mapping[str, Mapping[str, Any]]) -> dict[str, FeatureValue]:
        """Return slot features by namespace as the policy sees them (:meth:`policy_features`)."""
        return {
            f"{namespace}.{name}": value
            for namespace, values in _policy_features(features).items()
            for name, value in values.items()
        }


class MultiSlotRankRequest(RankRequest):
    """A request to fill `slots`, in order, each with a different one of `actions`.

    A conditional contextual bandit decision (Personalizer's multi-slot rank): each slot
    in turn chooses among the offered actions that the request and the slot do not
    exclude and that no slot before it chose. So that every slot has an action left
    whatever the slots before it choose, slot ``k`` (from 0) must allow at least ``k + 1``
    actions.

    Attributes
    ----------
    slots
        1 to ``limits.max_slots`` slots with distinct ids (:class:`RankSlot`).
    """

    slots: Annotated[list[RankSlot], BeforeValidator(_check_slot_count)]

    @field_validator("slots")
    @classmethod
    def _slots_fit(cls, slots: list[RankSlot], info: ValidationInfo) -> list[RankSlot]:
        actions: list[RankableAction] | None = info.data.get("actions")
        excluded: list[str] | None = info.data.get("excluded_actions")
        _check_distinct_slot_ids(slots)
        if actions is None or excluded is None:  # invalid and already reported
            return slots
        offered = {action.id for action in actions} - set(excluded)
        for index, slot in enumerate(slots):
            where = f"slot [{index}] {_show(slot.id)}"
            banned = set(slot.excluded_actions)
            for action_id in slot.excluded_actions:
                if action_id not in offered:
                    raise _error(
                        "slot_excluded_not_offered",
                        "{where}: excluded actions must be among the actions offered to the "
                        "slots, got {found}",
                        where=where,
                        found=_show(action_id),
                    )
            baseline = slot.baseline_action
            if baseline is not None and (baseline not in offered or baseline in banned):
                raise _error(
                    "slot_baseline_not_offered",
                    "{where}: the baseline action must be one the slot may show, got {found}",
                    where=where,
                    found=_show(baseline),
                )
            allowed = len(offered - banned)
            if allowed < index + 1:
                raise _error(
                    "slot_actions_too_few",
                    "{where}: the slots before it may take {before} of its actions, so it "
                    "must allow at least {least}, got {allowed}",
                    where=where,
                    before=index,
                    least=index + 1,
                    allowed=allowed,
                )
        return slots

    def _limit_errors(self, limits: Limits, out: list[InitErrorDetails]) -> None:
        super()._limit_errors(limits, out)
        id_limit = limits.max_id_length
        for index, slot in enumerate(self.slots):
            if slot.features:
                _feature_errors(slot.features, ("slots", index, "features"), limits, out)
            ids: list[tuple[tuple[Any, ...], str | None]] = [
                (("slots", index, "id"), slot.id),
                (("slots", index, "baseline_action"), slot.baseline_action),
                *((("slots", index, "excluded_actions", i), e)
                  for i, e in enumerate(slot.excluded_actions)),
            ]  # fmt: skip
            _id_errors(ids, "action ids", id_limit, out)


class SlotDecision(_Frozen):
    """One slot of a multi-slot :class:`Decision`: what it could show, and what it showed.

    Attributes
    ----------
    id
        The slot's id.
    features
        The slot's features as the policy saw them (:meth:`RankSlot.policy_features`).
    include
        Indices into the decision's ``actions`` of the actions the slot could choose
        (those neither excluded nor chosen by a slot before it), in the order its
        distribution was over them.
    ranking, chosen_action_id, chosen_index, probability, explored
        As :class:`Decision`'s, over the slot's actions: every one of `include` once,
        the chosen first; `chosen_index` indexes the decision's ``actions``.
    baseline_action_id
        The slot's baseline action, when the request named one.
    learned
        In ``Apprentice`` mode: the served policy's own probabilities of the slot's
        actions, in `include`'s order.
    """

    id: ActionId
    features: dict[_FeatureName, _LoggedValue] = Field(default_factory=dict)
    include: list[Annotated[int, Field(ge=0)]]
    ranking: list[RankedAction]
    chosen_action_id: ActionId
    chosen_index: int
    probability: _Probability
    explored: bool
    baseline_action_id: ActionId | None = None
    learned: list[_Probability] | None = None

    @model_validator(mode="after")
    def _a_distribution(self) -> Self:
        _check_distinct_ids(self.ranking)
        total = math.fsum(entry.probability for entry in self.ranking)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise _error(
                "probability_sum",
                "a slot's ranking probabilities must sum to 1 within {tolerance}, got {total}",
                tolerance=SUM_TOLERANCE,
                total=repr(total),
            )
        if len(self.ranking) != len(self.include) or len(set(self.include)) != len(self.include):
            raise _error(
                "slot_include",
                "a slot's ranking must hold each of its {count} distinct actions once, got {found}",
                count=len(set(self.include)),
                found=len(self.ranking),
            )
        first = self.ranking[0]
        if first.id != self.chosen_action_id or first.probability != self.probability:
            raise _error(
                "chosen_not_first",
                "a slot's chosen action must be ranked first with its probability, got "
                "{found} first",
                found=_show(first.id),
            )
        if self.chosen_index not in self.include:
            raise _error(
                "chosen_index_range",
                "a slot's chosen index must be one of its actions {include}, got {value}",
                include=_show(self.include),
                value=self.chosen_index,
            )
        if self.learned is not None and (
            len(self.learned) != len(self.include)
            or abs(math.fsum(self.learned) - 1.0) > SUM_TOLERANCE
        ):
            raise _error(
                "learned_length",
                "a slot's learned probabilities must be one per action ({count}), summing to 1",
                count=len(self.include),
            )
        return self


class Decision(Event):
    """The propensity log record of one decision (topic ``decisions``).

    It holds the exact inputs the policy saw and the full distribution the choice was
    drawn from, so any other policy can be evaluated on it.

    Attributes
    ----------
    policy
        Name of the policy that decided.
    model_version
        Version of that policy's model.
    context, actions
        Exactly what the policy saw: after exclusion, booleans as 1.0 or 0.0.
    ranking
        Every offered action once with its probability, in rank order, the chosen
        action first. Probabilities are finite, in (0, 1], and sum to 1 within
        ``SUM_TOLERANCE``.
    chosen_action_id, chosen_index
        The chosen action's id and its 0-based index in `actions`.
    probability
        The chosen action's probability; equal to its ranking entry's.
    explored
        Whether the chosen action is not the policy's most probable one.
    deferred
        Whether the app asked to activate the decision later (``deferActivation``): it
        is learned only once activated within the reward wait time.
    learn
        Whether the decision may be learned from and kept (learning consent). A
        decision without it is logged without any feature, only to be counted.
    consent
        Which policy decided under the person's consent: ``"personalise"`` (the served
        policy) or ``"baseline"`` (no personalisation consent: the baseline policy,
        whose probabilities these are; see :mod:`bandit.privacy.consent`).
    subject
        For a decision naming a person: the token linking it to them through their
        secret (:func:`bandit.privacy.consent.subject_token`), unlinkable once they are erased.
    learning_mode
        The policy's learning mode when it decided (:data:`LearningMode`). In
        ``Apprentice`` and ``LoggingOnly`` the baseline action decided (the first
        offered, :class:`policies.baselines.FixedOrder` with the policy's exploration
        floor): `ranking` and `probability` are its, the propensities of record.
    learned
        In ``Apprentice`` mode, with personalisation consent: the served policy's own
        probabilities of `actions` (in their order), what it would have done; they
        sum to 1. Never used as propensities.
    slots
        A multi-slot decision's slots, in order (:class:`SlotDecision`; None: a
        single-slot decision). `actions` then holds every action offered to the slots,
        `context` the shared features, and the top-level `ranking`, `chosen_action_id`,
        `chosen_index`, `probability`, `explored` and `learned` are the first slot's,
        so that a reader of single-slot decisions reads its first slot. No action is
        chosen by two slots.
    """

    policy: PolicyName
    model_version: _ModelVersion
    context: LoggedFeatures = Field(default_factory=dict)
    actions: Annotated[
        list[LoggedAction],
        BeforeValidator(_check_action_count),
        AfterValidator(_check_distinct_ids),
    ]
    slots: list[SlotDecision] | None = None
    ranking: Annotated[list[RankedAction], BeforeValidator(_check_action_count)]
    chosen_action_id: ActionId
    chosen_index: int
    probability: _Probability
    explored: bool
    deferred: bool = False
    learn: bool = True
    consent: ConsentPath = "personalise"
    subject: _Subject | None = None
    learning_mode: LearningMode = "Online"
    learned: Annotated[list[_Probability] | None, BeforeValidator(_check_action_count)] = None

    @field_validator("learned")
    @classmethod
    def _learned_is_a_distribution(
        cls, learned: list[float] | None, info: ValidationInfo
    ) -> list[float] | None:
        actions: list[LoggedAction] | None = info.data.get("actions")
        slots: list[SlotDecision] | None = info.data.get("slots")
        if learned is None or actions is None:
            return learned
        if slots:
            actions = [actions[i] for i in slots[0].include if i < len(actions)]
        if len(learned) != len(actions):
            raise _error(
                "learned_length",
                "learned must hold one probability per offered action ({count}), got {found}",
                count=len(actions),
                found=len(learned),
            )
        total = math.fsum(learned)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise _error(
                "probability_sum",
                "learned probabilities must sum to 1 within {tolerance}, got {total}",
                tolerance=SUM_TOLERANCE,
                total=repr(total),
            )
        return learned

    @field_validator("ranking")
    @classmethod
    def _ranking_is_a_distribution(
        cls, ranking: list[RankedAction], info: ValidationInfo
    ) -> list[RankedAction]:
        _check_distinct_ids(ranking)
        actions: list[LoggedAction] | None = info.data.get("actions")
        slots: list[SlotDecision] | None = info.data.get("slots")
        if actions is not None:
            ranked = {entry.id for entry in ranking}
            offered = {action.id for action in actions}
            if slots:  # the first slot's ranking: over its actions
                offered = {actions[i].id for i in slots[0].include if i < len(actions)}
            if ranked != offered:
                raise _error(
                    "ranking_ids",
                    "the ranking must hold exactly the offered action ids; "
                    "missing {missing}, not offered {extra}",
                    missing=_show(sorted(offered - ranked)),
                    extra=_show(sorted(ranked - offered)),
                )
        total = math.fsum(entry.probability for entry in ranking)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise _error(
                "probability_sum",
                "ranking probabilities must sum to 1 within {tolerance}, got {total}",
                tolerance=SUM_TOLERANCE,
                total=repr(total),
            )
        return ranking

    @field_validator("chosen_action_id")
    @classmethod
    def _chosen_is_ranked_first(cls, value: str, info: ValidationInfo) -> str:
        ranking: list[RankedAction] | None = info.data.get("ranking")
        if ranking is None:
            return value
        ids = [entry.id for entry in ranking]
        if value not in ids:
            raise _error(
                "chosen_not_ranked",
                "the chosen action must be in the ranking, got {found}",
                found=_show(value),
            )
        if ids[0] != value:
            raise _error(
                "chosen_not_first",
                "the chosen action must be ranked first, got {found} ranked at [{index}]",
                found=_show(value),
                index=ids.index(value),
            )
        return value

    @field_validator("chosen_index")
    @classmethod
    def _index_points_at_chosen(cls, value: int, info: ValidationInfo) -> int:
        actions: list[LoggedAction] | None = info.data.get("actions")
        chosen: str | None = info.data.get("chosen_action_id")
        if actions is None:
            return value
        if not 0 <= value < len(actions):
            raise _error(
                "chosen_index_range",
                "the chosen index must be in [0, {count}), got {value}",
                count=len(actions),
                value=value,
            )
        if chosen is not None and actions[value].id != chosen:
            raise _error(
                "chosen_index_mismatch",
                "the chosen index must point at the chosen action {chosen}, got {value} "
                "which is {found}",
                chosen=_show(chosen),
                value=value,
                found=_show(actions[value].id),
            )
        return value

    @field_validator("probability")
    @classmethod
    def _probability_matches_ranking(cls, value: float, info: ValidationInfo) -> float:
        ranking: list[RankedAction] | None = info.data.get("ranking")
        chosen: str | None = info.data.get("chosen_action_id")
        if ranking is None or chosen is None:
            return value
        logged = next(entry.probability for entry in ranking if entry.id == chosen)
        if value != logged:
            raise _error(
                "probability_mismatch",
                "the chosen action's probability must equal its ranking probability "
                "{logged}, got {found}",
                logged=repr(logged),
                found=_show(value),
            )
        return value

    @model_validator(mode="after")
    def _slots_fit(self) -> Self:
        if self.slots is None:
            return self
        if not self.slots:
            raise _error("slot_count", "a multi-slot decision must hold at least one slot")
        _check_distinct_slot_ids(self.slots)
        count = len(self.actions)
        taken: set[int] = set()
        for number, slot in enumerate(self.slots):
            where = f"slot [{number}] {_show(slot.id)}"
            if any(i >= count for i in slot.include):
                raise _error(
                    "slot_include",
                    "{where}: its actions must be indices of the {count} offered actions",
                    where=where,
                    count=count,
                )
            if taken & set(slot.include):
                raise _error(
                    "slot_include",
                    "{where}: its actions must leave out those chosen by the slots before it",
                    where=where,
                )
            if {e.id for e in slot.ranking} != {self.actions[i].id for i in slot.include}:
                raise _error(
                    "ranking_ids", "{where}: its ranking must hold its actions", where=where
                )
            if self.actions[slot.chosen_index].id != slot.chosen_action_id:
                raise _error(
                    "chosen_index_mismatch",
                    "{where}: its chosen index must point at its chosen action",
                    where=where,
                )
            taken.add(slot.chosen_index)
        first = self.slots[0]
        if (self.chosen_index, self.ranking) != (first.chosen_index, first.ranking):
            raise _error(
                "slot_first",
                "the decision's chosen action and ranking must be its first slot's",
            )
        return self

    @classmethod
    def from_choice(
        cls,
        choice: Choice,
        *,
        request: RankRequest,
        policy: str,
        model_version: str,
        limits: Limits | None = None,
        occurred_at: datetime | None = None,
        inputs: tuple[dict[str, dict[str, FeatureValue]], list[Action]] | None = None,
        learn: bool = True,
        consent: ConsentPath = "personalise",
        subject: str | None = None,
    ) -> Self:
        """Build the log record of `choice`, drawn for `request` by `policy`.

        Parameters
        ----------
        choice
            The draw, from :func:`policies.decide_ranking` on the policy's distribution
            over ``request.policy_inputs()``'s actions.
        request
            The request decided; its event id becomes the decision's.
        policy, model_version
            Who decided.
        limits
            The limits `request` was validated with (defaults to ``Limits()``).
        occurred_at
            When the decision was made; defaults to now.
        inputs
            ``request.policy_inputs()``, when the caller has it already (or what of it
            is logged: no features for a decision without learning consent).
        learn, consent, subject
            Whether the decision may be learned from and kept, which policy decided
            under the person's consent, and the token linking it to them.

        Returns
        -------
        Decision

        Raises
        ------
        InvalidDistributionError
            If `choice` is not over as many actions as the request leaves to the policy.
        pydantic.ValidationError
            If the record breaks a rule of :class:`Decision`.
        """
        context, actions = request.policy_inputs() if inputs is None else inputs
        probabilities = choice.distribution.probabilities
        if len(probabilities) != len(actions):
            msg = (
                f"the choice is over {len(probabilities)} actions but the request leaves "
                f"{len(actions)} to the policy"
            )
            raise InvalidDistributionError(msg)
        data: dict[str, Any] = {
            "event_id": request.event_id,
            "policy": policy,
            "model_version": model_version,
            "context": context,
            "actions": [{"id": a.id, "features": a.features} for a in actions],
            "ranking": [
                {"id": actions[i].id, "probability": probabilities[i]} for i in choice.ranking
            ],
            "chosen_action_id": actions[choice.index].id,
            "chosen_index": choice.index,
            "probability": choice.probability,
            "explored": choice.explored,
            "deferred": request.defer_activation,
        }
        if not learn:
            data["learn"] = False
        if consent != "personalise":
            data["consent"] = consent
        if subject is not None:
            data["subject"] = subject
        if occurred_at is not None:
            data["occurred_at"] = occurred_at
        if limits is None:
            limits = _DEFAULT_LIMITS
        return cls.model_validate(data, context={"limits": limits})

    @classmethod
    def of_rank(
        cls,
        choice: Choice,
        *,
        request: RankRequest,
        policy: str,
        model_version: str,
        inputs: tuple[dict[str, dict[str, Any]], list[Action]],
        learn: bool = True,
        consent: ConsentPath = "personalise",
        subject: str | None = None,
        cache: LoggedCache | None = None,
        learning_mode: LearningMode = "Online",
        learned: Sequence[float] | None = None,
    ) -> Decision:
        """Build the decision of `choice` as the rank path has it, without validating again.

        What :meth:`from_choice` builds, with ``model_construct``: every rule already
        holds by construction. `request` was validated; `inputs` is what
        ``request.policy_inputs()`` gave (booleans already numbers), or what of it is
        logged (no features without learning consent); `choice` was drawn by
        :func:`policies.decide_ranking` from a :class:`~policies.Distribution` over
        exactly those actions (finite, in (0, 1], summing to 1: checked when it was
        made); `policy` and `model_version` name the served policy. `cache` keeps the
        logged form of each policy action (the rank path gives the same action object
        for a repeated catalog action, :meth:`RankRequest.policy_inputs`).

        Raises
        ------
        InvalidDistributionError
            If `choice` is not over as many actions as `inputs` holds.
        """
        context, actions = inputs
        probabilities = choice.distribution.probabilities
        if len(probabilities) != len(actions):
            msg = (
                f"the choice is over {len(probabilities)} actions but the request leaves "
                f"{len(actions)} to the policy"
            )
            raise InvalidDistributionError(msg)
        fields: set[str] = set(_DECIDED)
        if not learn:
            fields.add("learn")
        if consent != "personalise":
            fields.add("consent")
        if subject is not None:
            fields.add("subject")
        extra: dict[str, Any] = {}
        if learning_mode != "Online":
            fields.add("learning_mode")
            extra["learning_mode"] = learning_mode
        if learned is not None:
            fields.add("learned")
            extra["learned"] = list(learned)
        return cls.model_construct(
            fields,
            occurred_at=datetime.now(UTC),  # (given: a default factory costs a signature)
            event_id=request.event_id,
            policy=policy,
            model_version=model_version,
            context=context,
            actions=[_logged(action, cache) for action in actions],
            ranking=_RANKING.validate_python(  # (ids: the request's, checked by its rule)
                [{"id": actions[i].id, "probability": probabilities[i]} for i in choice.ranking],
                context=LENIENT_IDS,
            ),
            chosen_action_id=actions[choice.index].id,
            chosen_index=choice.index,
            probability=choice.probability,
            explored=choice.explored,
            deferred=request.defer_activation,
            learn=learn,
            consent=consent,
            subject=subject,
            **extra,
        )

    @classmethod
    def of_slots(
        cls,
        slots: Sequence[
            tuple[RankSlot, Mapping[str, Any], Sequence[int], Choice, Sequence[float] | None]
        ],
        *,
        request: RankRequest,
        policy: str,
        model_version: str,
        inputs: tuple[dict[str, dict[str, Any]], list[Action]],
        learn: bool = True,
        consent: ConsentPath = "personalise",
        subject: str | None = None,
        learning_mode: LearningMode = "Online",
        limits: Limits | None = None,
    ) -> Decision:
        """Build the log record of a multi-slot decision, validated.

        Parameters
        ----------
        slots
            Per slot, in order: the request's slot, its features as the policy saw
            them, the indices into `inputs`' actions it chose among (in its
            distribution's order), its draw over those, and (in Apprentice mode) the
            served policy's own probabilities of them.
        request, policy, model_version, inputs, learn, consent, subject, learning_mode
            As for :meth:`of_rank`; `inputs`' actions are every action offered to the
            slots. Without `learn`, the slots' features are left out too.
        limits
            The limits `request` was validated with (defaults to ``Limits()``).

        Raises
        ------
        pydantic.ValidationError
            If the record breaks a rule of :class:`Decision` (a bug of the caller).
        """
        context, actions = inputs
        logged = []
        for slot, features, include, choice, learned in slots:
            probabilities = choice.distribution.probabilities
            chosen = include[choice.index]
            entry: dict[str, Any] = {
                "id": slot.id,
                "features": dict(features) if learn else {},
                "include": list(include),
                "ranking": [
                    {"id": actions[include[i]].id, "probability": probabilities[i]}
                    for i in choice.ranking
                ],
                "chosen_action_id": actions[chosen].id,
                "chosen_index": chosen,
                "probability": choice.probability,
                "explored": choice.explored,
                "baseline_action_id": slot.baseline_action,
            }
            if learned is not None:
                entry["learned"] = list(learned)
            logged.append(entry)
        first = logged[0]
        data: dict[str, Any] = {
            "event_id": request.event_id,
            "policy": policy,
            "model_version": model_version,
            "context": context,
            "actions": [{"id": a.id, "features": a.features} for a in actions],
            "slots": logged,
            "ranking": first["ranking"],
            "chosen_action_id": first["chosen_action_id"],
            "chosen_index": first["chosen_index"],
            "probability": first["probability"],
            "explored": first["explored"],
            "deferred": request.defer_activation,
            "learn": learn,
            "consent": consent,
            "subject": subject,
            "learning_mode": learning_mode,
            "learned": first.get("learned"),
        }
        validation = {"limits": limits or _DEFAULT_LIMITS, **LENIENT_IDS}
        return cls.model_validate(data, context=validation)

    def to_json(self) -> bytes:
        """Return ``self.model_dump_json().encode()``, written by orjson (several times faster).

        The bytes are pydantic's (tested): the fields in order, nested models as their
        fields, timestamps in UTC with ``Z``. The rank path writes each decision once, to
        the ``decisions`` topic.
        """
        return _to_json(self)

    def answer_json(self) -> bytes:
        """Return the JSON of the answer to ``POST /v1/rank`` for this decision.

        ``bandit.api.app.RankResponse(...).model_dump_json()`` of the decision's fields
        (tests check the bytes): event id, policy, model version, chosen action, its
        probability, the ranking, and whether activation is deferred.
        """
        return _to_json(
            {
                "event_id": self.event_id,
                "policy": self.policy,
                "model_version": self.model_version,
                "chosen_action_id": self.chosen_action_id,
                "probability": self.probability,
                "ranking": self.ranking,
                "deferred": self.deferred,
            }
        )

    def _limit_errors(self, limits: Limits, out: list[InitErrorDetails]) -> None:
        super()._limit_errors(limits, out)
        _offer_errors(self.context, self.actions, limits, out)
        # (the ranking's ids are the offered ones: `_ranking_is_a_distribution`)


def _to_json(value: Any) -> bytes:
    """Write `value` as pydantic would, its models (frozen, plain fields) as their fields."""
    return orjson.dumps(value, default=_fields, option=orjson.OPT_UTC_Z)


_fields: Final = attrgetter("__dict__")
"""A model's fields by name (``__dict__``: the fields of a model without extras), in C."""


_RANKING: Final = TypeAdapter(list[RankedAction])
"""Builds a ranking's entries (in Rust: faster than ``model_construct`` for each)."""
_DECIDED: Final = frozenset(
    {"event_id", "policy", "model_version", "context", "actions", "ranking",
     "chosen_action_id", "chosen_index", "probability", "explored", "deferred"}
)  # fmt: skip
"""The fields :meth:`Decision.of_rank` sets always (as :meth:`Decision.from_choice` does)."""


def _as_logged(action: Action) -> LoggedFeatures:
    return cast(LoggedFeatures, action.features)  # as the policy saw them: no booleans


def _logged(action: Action, cache: LoggedCache | None) -> LoggedAction:
    """Return the :class:`LoggedAction` of a policy action: one per action object in `cache`."""
    if cache is None:
        return LoggedAction.model_construct(id=action.id, features=_as_logged(action))
    entry = cache.get(id(action))
    if entry is None or entry[0] is not action:  # (the entry keeps `action` alive)
        if len(cache) >= ACTION_CACHE_SIZE:
            cache.clear()
        made = LoggedAction.model_construct(id=action.id, features=_as_logged(action))
        entry = cache[id(action)] = (action, made)
    return entry[1]


KeyScope: TypeAlias = Annotated[
    Annotated[tuple[PolicyName, ...], Field(min_length=1, max_length=256)] | None,
    Field(
        description=(
            "Set by the API, never by the caller: the policies of the API key that sent "
            "the record. The join refuses the record for a decision of any other policy. "
            "None: any policy (a key allowed '*', or an app producing to the topic itself)."
        )
    ),
]
"""The policies a reward or activation may act on (see :class:`RewardReported`)."""


class RewardReported(Event):
    """A reward for the decision `event_id` (``POST /v1/reward``, topic ``rewards``).

    Attributes
    ----------
    reward
        The outcome; higher is better. Within ``[limits.min_reward, limits.max_reward]``
        (:class:`~bandit.settings.Limits`, docs/limits.md).
    action_id
        The action the reward is for, when the app states it (it should be the chosen
        one).
    slot_id
        The slot the reward is for, in a multi-slot decision (Personalizer's multi-slot
        reward); None for a single-slot decision.
    ldp_epsilon
        Set when the reward went through the local-DP channel (:mod:`bandit.privacy.dp`): the
        app sent a randomised-response bit with this ε (0.01 to 20: below, one report
        would be scaled past any sensible reward), and `reward` on the topic is the
        API's unbiased estimate of the true reward from it.
    scope
        The policies of the API key that sent it, set by the API (docs/live-loop.md,
        "Keys scoped to policies"); None: any.
    """

    type: Literal["reward"] = "reward"
    reward: Annotated[
        StrictFloat,  # strict: true is no reward of 1.0
        Field(allow_inf_nan=False),
        AfterValidator(_reward_checker("rewards", stored=False)),
    ]
    action_id: ActionId | None = None
    slot_id: ActionId | None = None
    reward_id: EventId = Field(default_factory=new_event_id)
    ldp_epsilon: StrictFloat | None = Field(default=None, ge=0.01, le=20.0, allow_inf_nan=False)
    scope: KeyScope = None

    def _limit_errors(self, limits: Limits, out: list[InitErrorDetails]) -> None:
        super()._limit_errors(limits, out)
        _scope_errors(self.scope, limits, out)


def _scope_errors(
    scope: tuple[str, ...] | None, limits: Limits, out: list[InitErrorDetails]
) -> None:
    names = ((("scope", i), name) for i, name in enumerate(scope or ()))
    _id_errors(names, "policy names", limits.max_id_length, out)


class Activation(Event):
    """The app showed a deferred decision: it may now be learned (topic ``rewards``).

    Attributes
    ----------
    scope
        As for :class:`RewardReported`.
    """

    type: Literal["activation"] = "activation"
    scope: KeyScope = None

    def _limit_errors(self, limits: Limits, out: list[InitErrorDetails]) -> None:
        super()._limit_errors(limits, out)
        _scope_errors(self.scope, limits, out)


RewardsRecord: TypeAlias = Annotated[RewardReported | Activation, Field(discriminator="type")]
"""What the ``rewards`` topic carries: rewards and activations, keyed by event id."""


class TrainingExample(Event):
    """A decision joined with its outcome, ready to learn (topic ``training``).

    Attributes
    ----------
    decision
        The decision as it was logged.
    reward
        The aggregated reward, or the policy's default reward when none arrived.
    reward_count
        How many distinct rewards were aggregated (0 with the default reward).
    default_reward
        Whether `reward` is the default reward.
    slot_rewards, slot_reward_counts
        For a multi-slot decision: each slot's aggregated reward (its default reward
        when none came for it) and how many rewards it aggregated, in slot order;
        `reward`, `reward_count` and `default_reward` are then the first slot's.
    """

    decision: Decision
    reward: float = Field(allow_inf_nan=False)
    reward_count: int = Field(ge=0)
    default_reward: bool
    slot_rewards: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None
    slot_reward_counts: list[Annotated[int, Field(ge=0)]] | None = None


class DeadLetter(Event):
    """A record no agent could use, with the reason (topic ``dead-letters``).

    `value` is the record as text (undecodable bytes replaced), cut to 64 KiB.
    """

    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    value: str = Field(max_length=65_536)
    reason: str


Aggregation: TypeAlias = Literal["sum", "earliest", "max"]
"""How several rewards for one decision combine: their sum, the first to arrive, or
the largest (the reward is *at least* every value reported)."""


def _check_auto_optimization_seconds(value: float, info: ValidationInfo) -> float:
    """Check a frequency against ``limits.min_auto_optimization_seconds`` when set.

    Settings read back from Redis (no limits in the context) pass, as stored rewards do.
    """
    if not (isinstance(info.context, Mapping) and "limits" in info.context):
        return value
    shortest = _limits(info).min_auto_optimization_seconds
    if value < shortest:
        raise _error(
            "auto_optimization_frequency",
            "automatic optimisation runs at most every {low} s (settings "
            "limits.min_auto_optimization_seconds: "
            "STREAMBANDIT_LIMITS__MIN_AUTO_OPTIMIZATION_SECONDS), got {found} s",
            low=f"{shortest:g}",
            found=_show(value),
        )
    return value


class LiveEvaluationSettings(_Frozen):
    """Candidate policies evaluated on a served policy's live decisions.

    For each candidate the learner keeps an off-policy (IPS) estimate of its mean reward
    per decision with an anytime-valid confidence sequence
    (:mod:`bandit.service.liveeval`, :mod:`replay.sequential`), read at
    ``GET /v1/policies/{name}/evaluation/live`` and in the metrics.

    Attributes
    ----------
    candidates
        Policy specs (``uniform``, ``vw-epsilon:epsilon=0.05``), at most
        :data:`MAX_CANDIDATES`, distinct. Each learns along the traffic after it is
        evaluated on each decision. Whether a spec builds is checked when the settings
        are changed through the API.
    reward_range
        ``[low, high]``: the rewards the sequence assumes (it is valid only for rewards
        in it; a reward outside is clipped to it and counted). Must hold the default
        reward.
    alpha
        The error level: the chance that a candidate's sequence ever excludes its value.
    """

    candidates: list[Annotated[str, StringConstraints(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=MAX_CANDIDATES
    )
    reward_range: tuple[StrictFloat, StrictFloat] = (0.0, 1.0)
    alpha: StrictFloat = Field(default=0.05, gt=0.0, le=0.5)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        for index, spec in enumerate(value):
            if spec in value[:index]:
                raise _error(
                    "candidates_distinct",
                    "candidates must be distinct, got {found} twice",
                    found=_show(spec),
                )
        return value

    @field_validator("reward_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (_is_finite(low) and _is_finite(high) and low < high):
            raise _error(
                "reward_range_order",
                "reward_range must be finite [low, high] with low < high, got {found}",
                found=_show(list(value)),
            )
        return value


class PolicySettings(_Frozen):
    """The settings of one live policy, changed by an admin while it runs.

    Attributes
    ----------
    spec
        The policy spec it is built from (``vw-squarecb``, ``linucb:alpha=0.5``).
    exploration
        Live exploration parameters (those the policy's ``tunable_params`` accepts).
    exploration_floor
        Smallest probability any offered action gets.
    reward_wait_seconds
        How long after a decision its rewards are joined (Personalizer's reward wait
        time).
    default_reward
        The reward learned when none arrived in time; within the reward range
        (``limits.min_reward``, ``limits.max_reward``) when set through the API.
    reward_aggregation
        How several rewards combine.
    feature_schema
        The features the policy uses (:class:`bandit.privacy.minimise.FeatureSchema`); others
        are dropped or refused. None declares nothing: every feature but identifier-like
        ones reaches the policy.
    baseline_forced
        The kill switch: while true every request is served by the baseline policy
        (``settings.privacy.baseline_policy``), whose probabilities are logged, and the
        served policy keeps its model and goes on learning, for when it is released
        (``streambandit policy baseline|resume``; docs/runbook.md).
    learning_mode
        ``Online`` (serve the model, learn), ``Apprentice`` (serve the baseline action,
        log the model's own probabilities beside it, learn, and count how the model
        compares: :mod:`bandit.service.apprentice`) or ``LoggingOnly`` (serve the
        baseline action, learn nothing). The kill switch wins over either.
    auto_optimization
        Whether offline evaluations with exploration of learning settings run every
        `auto_optimization_seconds` (Personalizer's automatic optimisation,
        :mod:`bandit.api.autoopt`), each over the last such window of the decision log,
        and apply the best learning policy when it beats the online one.
    auto_optimization_seconds
        How often: at least ``limits.min_auto_optimization_seconds`` when set (validated
        with the limits in the context), at most 90 days.
    auto_optimization_start
        When the runs are counted from (a run is due at start + k x frequency, k >= 1);
        None counts from the Unix epoch.
    live_evaluation
        Candidate policies evaluated on this policy's live decisions, with anytime-valid
        confidence sequences (:class:`LiveEvaluationSettings`); None evaluates none.
    """

    spec: str = Field(min_length=1, max_length=512)
    exploration: dict[str, StrictFloat] = Field(default_factory=dict)
    exploration_floor: StrictFloat = Field(default=1e-3, gt=0.0, le=1.0)
    reward_wait_seconds: StrictFloat = Field(default=10.0, gt=0.0, le=7 * 24 * 3600)
    default_reward: Annotated[
        StrictFloat,
        Field(allow_inf_nan=False),
        AfterValidator(_reward_checker("default rewards", stored=True)),
    ] = 0.0
    reward_aggregation: Aggregation = "earliest"
    feature_schema: FeatureSchema | None = None
    baseline_forced: bool = Field(default=False, strict=True)
    learning_mode: LearningMode = "Online"
    auto_optimization: bool = Field(default=False, strict=True)
    auto_optimization_seconds: Annotated[
        StrictFloat,
        Field(ge=MIN_AUTO_OPTIMIZATION_SECONDS, le=MAX_AUTO_OPTIMIZATION_SECONDS),
        AfterValidator(_check_auto_optimization_seconds),
    ] = 7 * 24 * 3600.0
    auto_optimization_start: AwareDatetime | None = None
    live_evaluation: LiveEvaluationSettings | None = None

    @field_validator("live_evaluation")
    @classmethod
    def _default_reward_evaluated(
        cls, found: LiveEvaluationSettings | None, info: ValidationInfo
    ) -> LiveEvaluationSettings | None:
        default = info.data.get("default_reward")
        if found is not None and default is not None:
            low, high = found.reward_range
            if not low <= default <= high:
                raise _error(
                    "reward_range_default",
                    "live_evaluation.reward_range {range} must hold default_reward {found}",
                    range=_show([low, high]),
                    found=_show(default),
                )
        return found


class BehaviourKind(StrEnum):
    """What a user did."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"


class DeviceType(StrEnum):
    """The kind of device a user is on."""

    MOBILE = "mobile"
    DESKTOP = "desktop"
    TABLET = "tablet"
    OTHER = "other"


class Device(_Frozen):
    """The device an event came from.

    Attributes
    ----------
    type
        Mobile, desktop, tablet or other.
    os
        Operating system, e.g. ``"iOS 17.4"``: printable, 1 to ``max_key_length``
        characters.
    app_version
        Version of the app, if any; same rule as `os`.
    """

    type: DeviceType
    os: _Label
    app_version: _Label | None = None


class BehaviourEvent(Event):
    """Something a user did in the app (``POST /v1/events``, topic ``events``).

    Error messages and reprs of failed validation never show the input, so a user id
    is not echoed into logs.

    Attributes
    ----------
    event_id
        Id of this event; generated when absent.
    kind
        What happened.
    user_id
        The person: the app's own id in ``POST /v1/events`` (the API replaces it with
        its pseudonym, :func:`bandit.privacy.consent.pseudonymise`), the pseudonym on the topic
        ``events``. Apps producing to the topic themselves must hash it the same way.
    session_id
        The session the event belongs to.
    device
        The device it came from.
    item_id
        The item concerned, if any.
    value
        A finite amount, e.g. a purchase's value, if any.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    event_id: EventId = Field(default_factory=new_event_id)
    kind: BehaviourKind
    user_id: _UserId
    session_id: SessionId
    device: Device
    item_id: _ItemId | None = None
    value: StrictFloat | None = Field(default=None, allow_inf_nan=False)


class ModelRollback(_Frozen):
    """Which kept version a policy serves again (``POST /v1/policies/{name}/model/rollback``)."""

    version: StrictInt = Field(ge=1, description="A kept version (GET .../model/versions).")
