"""Fast decoding of the service's own training records, for the stream workers.

What is left of the plain-Python twin of :mod:`bandit.wire.schemas` (the rank path now
validates with the schemas alone, in pydantic-core): the stream workers still read
training examples and decisions with :func:`training_data`, :func:`features_ok`,
:func:`feature_rules` and :class:`FastDecoder`, until they trust the service's own topics
(issue 11); then this module goes. Each function returns exactly what pydantic's
validation would return, or ``None`` ("ask pydantic"): the rules live in the schemas.

Examples
--------
>>> from bandit.settings import Limits
>>> raw = b'{"event_id": "e1", "policy": "p", "model_version": "1", "explored": false,'
>>> raw += b' "actions": [{"id": "a"}], "ranking": [{"id": "a", "probability": 1.0}],'
>>> raw += b' "chosen_action_id": "a", "chosen_index": 0, "probability": 1.0}'
>>> decision(raw, Limits()).chosen_action_id
'a'
>>> decision(raw.replace(b'"a"}]', b'"b"}]'), Limits()) is None  # pydantic explains
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar, cast

import orjson
from pydantic import BaseModel, TypeAdapter

from bandit.settings import Limits
from bandit.wire.schemas import (
    _FEATURE_NAME_RE,
    _ID_RE,
    _NAMESPACE_RE,
    Decision,
    LoggedAction,
    RankedAction,
    TrainingExample,
)
from policies._base import FEATURE_VALUE_LIMIT
from policies._distribution import SUM_TOLERANCE
from policies.vw import FeatureRules

__all__ = [
    "FastDecoder",
    "decision",
    "decision_from_data",
    "decision_values",
    "feature_rules",
    "features_ok",
    "training_data",
    "training_example",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_DEFAULT_LIMITS = Limits()
_CACHE_SIZE = 65_536  # names and ids known to match their pattern (lengths checked apart)
_TIMESTAMP_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})"
)

_ids: set[str] = set()
_names: dict[tuple[re.Pattern[str], int], set[str]] = {}  # by pattern and key length limit


def _matches(value: str, pattern: re.Pattern[str], known: set[str]) -> bool:
    if value in known:
        return True
    if pattern.fullmatch(value) is None:
        return False
    if len(known) < _CACHE_SIZE:
        known.add(value)
    return True


def _id_ok(value: object, limit: int) -> bool:
    return type(value) is str and len(value) <= limit and _matches(value, _ID_RE, _ids)


def _unique_id_ok(value: object, limit: int) -> bool:
    """Check an id that will not repeat (event ids): never cached."""
    return type(value) is str and len(value) <= limit and _ID_RE.fullmatch(value) is not None


def _known_names(pattern: re.Pattern[str], limit: int) -> set[str]:
    known = _names.get((pattern, limit))
    if known is None:
        known = _names[pattern, limit] = set()
    return known


def _names_ok(names: Any, pattern: re.Pattern[str], limit: int, known: set[str]) -> bool:
    """Whether every name is at most `limit` long and matches `pattern` (cached)."""
    for name in names:
        if name not in known:
            if len(name) > limit or pattern.fullmatch(name) is None:
                return False
            if len(known) < _CACHE_SIZE:
                known.add(name)
    return True


def _features_ok(  # noqa: PLR0911, PLR0912  (one flat pass over every rule)
    features: object, limits: Limits, *, logged: bool
) -> bool:
    """Whether `features` passes ``RequestFeatures`` (or ``LoggedFeatures``) unchanged."""
    if type(features) is not dict or len(features) > limits.max_namespaces:
        return False
    key_limit = limits.max_key_length
    namespaces = _known_names(_NAMESPACE_RE, key_limit)
    names = _known_names(_FEATURE_NAME_RE, key_limit)
    if not features.keys() <= namespaces and not _names_ok(
        features, _NAMESPACE_RE, key_limit, namespaces
    ):
        return False
    string_limit = limits.max_string_length
    per_namespace = limits.max_features_per_namespace
    for values in features.values():
        if type(values) is not dict or len(values) > per_namespace:
            return False
        if not values.keys() <= names and not _names_ok(values, _FEATURE_NAME_RE, key_limit, names):
            return False
        for value in values.values():
            kind = type(value)
            if kind is str:
                if len(value) > string_limit or not value.isprintable():
                    return False
            elif kind is float:
                if not -FEATURE_VALUE_LIMIT <= value <= FEATURE_VALUE_LIMIT:  # (NaN too)
                    return False
            elif kind is bool:
                if logged:
                    return False
            elif kind is not int or not -FEATURE_VALUE_LIMIT <= value <= FEATURE_VALUE_LIMIT:
                return False
    return True


def _timestamp(value: object) -> datetime | None:
    if type(value) is not str or _TIMESTAMP_RE.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed.astimezone(UTC)


_object_new = object.__new__
_object_setattr = object.__setattr__
# BaseModel's slots, set through their descriptors (frozen models refuse __setattr__)
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _make(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """Build a model from values that pass its validation, as validation would have.

    What ``model_construct`` does for a model without private attributes or a post-init
    hook (checked at import), in a third of the time.
    """
    model = _object_new(cls)
    _object_setattr(model, "__dict__", values)
    _set_fields_set(model, fields_set)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def _plain(cls: type[BaseModel]) -> None:
    """Refuse at import a model :func:`_make` cannot build (private attrs, post-init)."""
    if cls.__private_attributes__ or cls.__pydantic_post_init__ is not None:
        msg = f"bandit.wire.fastpath cannot build {cls.__name__}: it has private attributes"
        raise TypeError(msg)


for _model in (Decision, LoggedAction, RankedAction, TrainingExample):
    _plain(_model)


def _as_dict(raw: bytes | str) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if type(data) is dict else None


# -- decisions ----------------------------------------------------------------------------

_DECISION_REQUIRED: Final = frozenset(
    {"event_id", "policy", "model_version", "actions", "ranking", "chosen_action_id",
     "chosen_index", "probability", "explored"}
)  # fmt: skip
_DECISION_FIELDS: Final = tuple(Decision.model_fields)
_DECISION_KEYS: Final = frozenset(_DECISION_FIELDS)
_RANKED_FIELDS: Final = frozenset({"id", "probability"})
_ACTION_FIELDS: Final = frozenset({"id", "features"})
_CONSENT_PATHS: Final = frozenset({"personalise", "baseline"})
_SUBJECT_RE: Final = re.compile(
    r"[0-9a-f]{32}"
)  # bandit.wire.schemas.Decision.subject  # bandit.wire.schemas.ConsentPath
_EXAMPLE_REQUIRED: Final = frozenset(
    {"event_id", "decision", "reward", "reward_count", "default_reward"}
)
_EXAMPLE_FIELDS: Final = tuple(TrainingExample.model_fields)
_EXAMPLE_KEYS: Final = frozenset(_EXAMPLE_FIELDS)


def _event_fields(values: dict[str, Any], limits: Limits) -> bool:
    """Check (and fill in) ``schema_version``, ``event_id`` and ``occurred_at``."""
    if "schema_version" in values:
        version = values["schema_version"]
        if type(version) is not int or version != 1:
            return False
    else:
        values["schema_version"] = 1
    if not _unique_id_ok(values["event_id"], limits.max_id_length):
        return False
    if "occurred_at" in values:
        occurred = values["occurred_at"]
        if type(occurred) is datetime:  # given as a datetime (from_choice)
            if occurred.tzinfo is None or occurred.utcoffset() is None:
                return False
            values["occurred_at"] = occurred.astimezone(UTC)
        else:
            parsed = _timestamp(occurred)
            if parsed is None:
                return False
            values["occurred_at"] = parsed
    else:
        values["occurred_at"] = datetime.now(UTC)
    return True


def decision_from_data(data: Mapping[str, Any], limits: Limits) -> Decision | None:
    """Return ``Decision.model_validate(data, context={"limits": limits})``, or None.

    `data` holds JSON-like values (and ``occurred_at`` may be an aware datetime); it is
    not changed. None means "ask pydantic".
    """
    found = decision_values(data, limits)
    if found is None:
        return None
    values = {name: found[name] for name in _DECISION_FIELDS}
    values["actions"] = [
        _make(LoggedAction, {"id": action["id"], "features": action["features"]},
              {"id", "features"})
        if "features" in action
        else _make(LoggedAction, {"id": action["id"], "features": {}}, {"id"})
        for action in values["actions"]
    ]  # fmt: skip
    values["ranking"] = [
        _make(RankedAction, {"id": entry["id"], "probability": entry["probability"]},
              {"id", "probability"})
        for entry in values["ranking"]
    ]  # fmt: skip
    return _make(Decision, values, set(data))


def decision_values(  # noqa: PLR0911, PLR0912  (one flat pass over every rule)
    data: Mapping[str, Any], limits: Limits, *, check_features: bool = True
) -> dict[str, Any] | None:
    """Check `data` against every rule of :class:`~bandit.wire.schemas.Decision`; return its values.

    The values of the decision :func:`decision_from_data` would build, as plain data:
    defaults filled in, ``occurred_at`` an aware UTC datetime, ``actions`` and
    ``ranking`` lists of `data`'s own dicts (an action given without ``features`` has
    none). None means "ask pydantic". `data` is not changed.

    With `check_features` false the context and action features are not checked: the
    caller must check them, with :func:`features_ok` or as it reads them (the stream
    worker writes them with :func:`policies.vw.logged_example` and
    :func:`feature_rules`).
    """
    if not data.keys() <= _DECISION_KEYS or not data.keys() >= _DECISION_REQUIRED:
        return None
    values = dict(data)
    if not _event_fields(values, limits):
        return None
    id_limit = limits.max_id_length
    if not (_id_ok(values["policy"], id_limit) and _id_ok(values["model_version"], id_limit)):
        return None
    context = values.get("context")
    if context is None:
        if "context" in values:
            return None
        values["context"] = context = {}
    if check_features and not _features_ok(context, limits, logged=True):
        return None
    # actions
    actions = values["actions"]
    max_actions = limits.max_actions
    if type(actions) is not list or not actions or len(actions) > max_actions:
        return None
    ids: list[str] = []
    for action in actions:
        if type(action) is not dict or not action.keys() <= _ACTION_FIELDS:
            return None
        action_id = action.get("id")
        if type(action_id) is not str or not _id_ok(action_id, id_limit):
            return None
        ids.append(action_id)
        if (
            check_features
            and "features" in action
            and not _features_ok(action["features"], limits, logged=True)
        ):
            return None
    offered = set(ids)
    if len(offered) != len(ids):
        return None
    # ranking: every offered id once, a distribution
    ranking = values["ranking"]
    if type(ranking) is not list or len(ranking) != len(ids):
        return None
    by_id: dict[str, float] = {}
    for entry in ranking:
        if type(entry) is not dict or entry.keys() != _RANKED_FIELDS:
            return None
        entry_id, probability = entry["id"], entry["probability"]
        if type(probability) is not float or not 0.0 < probability <= 1.0:
            return None
        if entry_id not in offered or entry_id in by_id:  # offered ids are valid ids
            return None
        by_id[entry_id] = probability
    if abs(math.fsum(by_id.values()) - 1.0) > SUM_TOLERANCE:
        return None
    # the choice
    chosen, index, probability = (
        values["chosen_action_id"],
        values["chosen_index"],
        values["probability"],
    )
    if type(chosen) is not str or ranking[0]["id"] != chosen:
        return None
    if type(index) is not int or not 0 <= index < len(ids) or ids[index] != chosen:
        return None
    if type(probability) is not float or probability != by_id[chosen]:
        return None
    for flag, default in (("explored", None), ("deferred", False), ("learn", True)):
        if flag in values:
            if type(values[flag]) is not bool:
                return None
        else:
            values[flag] = default
    if "consent" in values:
        consent = values["consent"]
        if type(consent) is not str or consent not in _CONSENT_PATHS:
            return None
    else:
        values["consent"] = "personalise"
    subject = values.get("subject")
    if subject is None:
        values["subject"] = None
    elif type(subject) is not str or _SUBJECT_RE.fullmatch(subject) is None:
        return None
    return values


def decision(raw: bytes | str, limits: Limits) -> Decision | None:
    """Return ``TypeAdapter(Decision).validate_json(raw, context=...)``, or None."""
    data = _as_dict(raw)
    return None if data is None else decision_from_data(data, limits)


def training_example(raw: bytes | str, limits: Limits) -> TrainingExample | None:
    """Return ``TypeAdapter(TrainingExample).validate_json(raw, context=...)``, or None."""
    data = _as_dict(raw)
    if data is None:
        return None
    values = _example_values(data, limits)
    if values is None:
        return None
    found = decision_from_data(values["decision"], limits)
    if found is None:
        return None
    values["decision"] = found
    return _make(TrainingExample, {name: values[name] for name in _EXAMPLE_FIELDS}, set(data))


def training_data(
    raw: bytes | str, limits: Limits, *, check_features: bool = True
) -> dict[str, Any] | None:
    """Check a training example's JSON against every rule; return its values as plain data.

    What :func:`training_example` would validate, without building the models: the
    example's values, its ``decision`` as :func:`decision_values` returns it. None means
    "ask pydantic" (``TypeAdapter(TrainingExample)``). `check_features` is as for
    :func:`decision_values`.

    Examples
    --------
    >>> raw = (
    ...     b'{"event_id": "e1", "reward": 1.0, "reward_count": 1, "default_reward": false,'
    ...     b' "decision": {"event_id": "e1", "policy": "p", "model_version": "1",'
    ...     b' "actions": [{"id": "a"}, {"id": "b"}], "explored": false,'
    ...     b' "ranking": [{"id": "b", "probability": 0.75}, {"id": "a", "probability": 0.25}],'
    ...     b' "chosen_action_id": "b", "chosen_index": 1, "probability": 0.75}}'
    ... )
    >>> data = training_data(raw, Limits())
    >>> data["reward"], data["decision"]["chosen_index"], data["decision"]["learn"]
    (1.0, 1, True)
    >>> training_data(raw.replace(b"0.75", b"0.5"), Limits()) is None  # pydantic explains
    True
    """
    data = _as_dict(raw)
    if data is None:
        return None
    values = _example_values(data, limits)
    if values is None:
        return None
    decision = decision_values(values["decision"], limits, check_features=check_features)
    if decision is None:
        return None
    values["decision"] = decision
    return values


def features_ok(decision: Mapping[str, Any], limits: Limits) -> bool:
    """Whether the context and action features of decision values keep every rule.

    For values from :func:`decision_values` with ``check_features=False``.
    """
    if not _features_ok(decision["context"], limits, logged=True):
        return False
    return all(
        _features_ok(action["features"], limits, logged=True)
        for action in decision["actions"]
        if "features" in action
    )


def feature_rules(limits: Limits) -> FeatureRules:
    """Return the rules of logged features under `limits`, for :func:`~policies.vw.logged_example`.

    Together with what that writer refuses anyway (values that are not finite numbers or
    printable strings, booleans included), they are the rules :func:`features_ok`
    checks. One object per `limits` (it remembers the names found valid).
    """
    rules = _rules.get(limits)
    if rules is None:
        key_limit = limits.max_key_length

        def namespace_ok(name: str) -> bool:
            return len(name) <= key_limit and _NAMESPACE_RE.fullmatch(name) is not None

        def name_ok(name: str) -> bool:
            return len(name) <= key_limit and _FEATURE_NAME_RE.fullmatch(name) is not None

        rules = _rules[limits] = FeatureRules(
            namespace_ok=namespace_ok,
            name_ok=name_ok,
            max_namespaces=limits.max_namespaces,
            max_features=limits.max_features_per_namespace,
            max_string_length=limits.max_string_length,
        )
    return rules


_rules: dict[Limits, FeatureRules] = {}


def _example_values(data: dict[str, Any], limits: Limits) -> dict[str, Any] | None:
    """Check the fields of a training example but its decision; return its values."""
    if not data.keys() <= _EXAMPLE_KEYS or not data.keys() >= _EXAMPLE_REQUIRED:
        return None
    values = dict(data)
    if not _event_fields(values, limits):
        return None
    reward, count, default = values["reward"], values["reward_count"], values["default_reward"]
    if type(reward) is not float or not math.isfinite(reward):
        return None
    if type(count) is not int or count < 0 or type(default) is not bool:
        return None
    if type(values["decision"]) is not dict:
        return None
    return values


# -- a TypeAdapter with the fast path in front ----------------------------------------------

_FAST_JSON: dict[type[Any], Callable[[bytes | str, Limits], Any]] = {
    Decision: decision,
    TrainingExample: training_example,
}


class FastDecoder(Generic[T]):
    """``TypeAdapter(model)``'s ``validate_json``, trying the fast path first.

    Same results and same errors as the adapter: what the fast path cannot vouch for is
    validated by pydantic.

    Parameters
    ----------
    model
        :class:`~bandit.wire.schemas.Decision` or :class:`~bandit.wire.schemas.TrainingExample`
        (or any type, validated by pydantic alone).
    """

    def __init__(self, model: type[T]) -> None:
        self.model = model
        self.adapter: TypeAdapter[T] = TypeAdapter(model)
        self._fast = _FAST_JSON.get(model)

    def validate_json(self, data: bytes | str, /, *, context: Any = None) -> T:
        """Validate JSON `data`; `context` may hold ``{"limits": Limits}``."""
        if self._fast is not None and (context is None or type(context) is dict):
            limits = _DEFAULT_LIMITS if context is None else context.get("limits", _DEFAULT_LIMITS)
            if type(limits) is Limits:
                found = self._fast(data, limits)
                if found is not None:
                    return cast(T, found)
        return self.adapter.validate_json(data, context=context)
