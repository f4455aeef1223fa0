"""Wire schemas: valid payloads round-trip; every broken rule names its field and rule."""

from __future__ import annotations

import copy
import doctest
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import bandit.wire.schemas
from bandit.errors import InvalidDistributionError
from bandit.settings import Limits
from bandit.wire.schemas import (
    ID_PATTERN,
    LENIENT_IDS,
    ActionCache,
    BehaviourEvent,
    BehaviourKind,
    Decision,
    DeviceType,
    LoggedCache,
    RankRequest,
    RewardReported,
)
from policies import Action, Distribution, decide_ranking, make_policy

# -- valid payloads, and a helper to break one thing in them ------------------------------

RANK: dict[str, Any] = {
    "event_id": "evt-1",
    "context": {"user": {"age": 31, "tier": "gold", "returning": True}},
    "actions": [{"id": "a", "features": {"item": {"topic": "golf"}}}, {"id": "b"}],
}

DECISION: dict[str, Any] = {
    "event_id": "evt-1",
    "occurred_at": "2026-05-01T12:00:00Z",
    "policy": "vw",
    "model_version": "v1",
    "context": {"user": {"age": 31}},
    "actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
    "ranking": [
        {"id": "b", "probability": 0.5},
        {"id": "a", "probability": 0.3},
        {"id": "c", "probability": 0.2},
    ],
    "chosen_action_id": "b",
    "chosen_index": 1,
    "probability": 0.5,
    "explored": False,
}

REWARD: dict[str, Any] = {"event_id": "evt-1", "reward": 1.0, "action_id": "b"}

BEHAVIOUR: dict[str, Any] = {
    "kind": "purchase",
    "user_id": "9f86d081884c7d65",
    "session_id": "sess-1",
    "device": {"type": "mobile", "os": "iOS 17.4", "app_version": "5.2.1"},
    "item_id": "sku-1",
    "value": 19.99,
}

DELETE = object()


def changed(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """Return a deep copy of `base` with the item at `path` set to `value` (or deleted)."""
    payload = copy.deepcopy(base)
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


def actions(n: int) -> list[dict[str, Any]]:
    """`n` featureless actions with distinct ids."""
    return [{"id": f"a{i}"} for i in range(n)]


def namespaces(n: int) -> dict[str, dict[str, Any]]:
    """`n` namespaces holding one feature each."""
    return {f"ns{i}": {"x": 1} for i in range(n)}


def features(n: int) -> dict[str, Any]:
    """`n` numeric features."""
    return {f"f{i}": 1.0 for i in range(n)}


def only_error(excinfo: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    """The single error entry of a ValidationError."""
    errors = excinfo.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


# -- every rule, with the field it names and the message it gives -------------------------

R, D, W, B = RankRequest, Decision, RewardReported, BehaviourEvent
FEATURES = ("context", "user")

BAD_INPUTS = [
    # RankRequest: actions
    (R, RANK, ("actions",), [], ("actions",), r"^at least 1 action required, got 0$"),
    (R, RANK, ("actions",), actions(51), ("actions",), r"^at most 50 actions allowed, got 51$"),
    (
        R,
        RANK,
        ("actions",),
        [{"id": "a"}, {"id": "b"}, {"id": "a"}],
        ("actions",),
        r"^action ids must be distinct, got 'a' at \[0\] and \[2\]$",
    ),
    (R, RANK, ("actions",), DELETE, ("actions",), r"^Field required$"),
    # RankRequest: namespaces and features
    (
        R,
        RANK,
        ("context",),
        namespaces(17),
        ("context",),
        r"^at most 16 namespaces allowed, got 17$",
    ),
    (
        R,
        RANK,
        ("actions", 0, "features"),
        namespaces(17),
        ("actions", 0, "features"),
        r"^at most 16 namespaces allowed, got 17$",
    ),
    (
        R,
        RANK,
        FEATURES,
        features(65),
        FEATURES,
        r"^at most 64 features per namespace allowed, got 65$",
    ),
    (
        R,
        RANK,
        ("actions", 0, "features", "item"),
        features(65),
        ("actions", 0, "features", "item"),
        r"^at most 64 features per namespace allowed, got 65$",
    ),
    # RankRequest: key syntax and length
    *[
        (
            R,
            RANK,
            ("context", key),
            {"x": 1},
            ("context", key, "[key]"),
            rf"^namespace names must match .*, got {re.escape(repr(key))}$",
        )
        for key in ["us er", "user.profile", "1st", "-x", "", "a|b", "a:b", "a=b", "user\n"]
    ],
    (
        R,
        RANK,
        ("context", "n" * 65),
        {"x": 1},
        ("context", "n" * 65, "[key]"),
        r"^namespace names must be at most 64 characters, got 65$",
    ),
    *[
        (
            R,
            RANK,
            (*FEATURES, key),
            1.0,
            (*FEATURES, key, "[key]"),
            r"^feature names must match \^\[A-Za-z_\]\[A-Za-z0-9_\.-\]\*\$ ",
        )
        for key in ["a|b", "a:b", "a b", "a\tb", "a=b", "a*b", "9lives", ".x", "", "x\n"]
    ],
    (
        R,
        RANK,
        ("actions", 0, "features", "item", "f" * 65),
        1.0,
        ("actions", 0, "features", "item", "f" * 65, "[key]"),
        r"^feature names must be at most 64 characters, got 65$",
    ),
    # RankRequest: feature values
    (
        R,
        RANK,
        (*FEATURES, "tier"),
        "g" * 257,
        (*FEATURES, "tier"),
        r"^string feature values must be at most 256 characters, got 257$",
    ),
    (
        R,
        RANK,
        (*FEATURES, "tier"),
        "gold\x00",
        (*FEATURES, "tier"),
        r"^string feature values must be printable, got '\\x00' at position 4$",
    ),
    (
        R,
        RANK,
        ("actions", 0, "features", "item", "topic"),
        "golf\nclub",
        ("actions", 0, "features", "item", "topic"),
        r"^string feature values must be printable, got '\\n' at position 4$",
    ),
    *[
        (
            R,
            RANK,
            (*FEATURES, "age"),
            number,
            (*FEATURES, "age"),
            (
                r"^feature values must be finite numbers within \[-1e\+06, 1e\+06\] "
                rf"\(policies._base.FEATURE_VALUE_LIMIT\), got {shown}"
            ),
        )
        for number, shown in [
            (math.nan, "nan"),
            (math.inf, "inf"),
            (-math.inf, "-inf"),
            (10**400, "1000"),
            (1e308, "1e\\+308"),
            (-1e308, "-1e\\+308"),
            (1000001, "1000001"),
            (1e6 + 1, "1000001.0"),
        ]
    ],
    *[
        (
            R,
            RANK,
            (*FEATURES, "age"),
            value,
            (*FEATURES, "age"),
            rf"^feature values must be a number, a string or a boolean, got {kind}$",
        )
        for value, kind in [([31], "list"), (None, "NoneType"), ({"years": 31}, "dict")]
    ],
    # RankRequest: ids
    *[
        (
            R,
            RANK,
            ("actions", 0, "id"),
            bad,
            ("actions", 0, "id"),
            rf"^action ids must match .*, got {re.escape(repr(bad))}$",
        )
        for bad in ["a b", "", "-a", "a/b", "a@b", "é", "a\n"]
    ],
    (
        R,
        RANK,
        ("actions", 0, "id"),
        "a" * 129,
        ("actions", 0, "id"),
        r"^action ids must be at most 128 characters, got 129$",
    ),
    (R, RANK, ("event_id",), "evt 1", ("event_id",), r"^event ids must match .*, got 'evt 1'$"),
    (
        R,
        RANK,
        ("event_id",),
        "e" * 129,
        ("event_id",),
        r"^event ids must be at most 128 characters, got 129$",
    ),
    # RankRequest: exclusions
    (
        R,
        RANK,
        ("excluded_actions",),
        ["z"],
        ("excluded_actions",),
        r"^excluded actions must be among the offered action ids, got 'z' at \[0\]$",
    ),
    (
        R,
        RANK,
        ("excluded_actions",),
        ["b", "a"],
        ("excluded_actions",),
        r"^at least one offered action must remain, got all 2 excluded$",
    ),
    (
        R,
        RANK,
        ("excluded_actions",),
        ["a", "a"],
        ("excluded_actions",),
        r"^excluded action ids must be distinct, got 'a' again at \[1\]$",
    ),
    (
        R,
        RANK,
        ("excluded_actions",),
        ["a"] * 51,
        ("excluded_actions",),
        r"^at most 50 excluded actions allowed, got 51$",
    ),
    (
        R,
        RANK,
        ("excluded_actions",),
        ["a b"],
        ("excluded_actions", 0),
        r"^action ids must match .*, got 'a b'$",
    ),
    # RankRequest: closed
    (R, RANK, ("user",), "alice", ("user",), r"^Extra inputs are not permitted$"),
    (R, RANK, ("actions", 1, "weight"), 2, ("actions", 1, "weight"), r"^Extra inputs"),
    (R, RANK, ("defer_activation",), "maybe", ("defer_activation",), r"valid boolean"),
    # Decision: probabilities
    *[
        (
            D,
            DECISION,
            ("ranking", 1, "probability"),
            p,
            ("ranking", 1, "probability"),
            rf"^probabilities must be finite and in \(0, 1\], got {shown}$",
        )
        for p, shown in [(0.0, "0.0"), (-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan")]
    ],
    (
        D,
        DECISION,
        ("ranking", 2, "probability"),
        0.3,
        ("ranking",),
        r"^ranking probabilities must sum to 1 within 1e-09, got 1.1$",
    ),
    (
        D,
        DECISION,
        ("ranking", 2, "probability"),
        0.2 + 3e-9,
        ("ranking",),
        r"^ranking probabilities must sum to 1 within 1e-09, got 1.000000003",
    ),
    (
        D,
        DECISION,
        ("ranking", 2, "id"),
        "a",
        ("ranking",),
        r"^action ids must be distinct, got 'a' at \[1\] and \[2\]$",
    ),
    (
        D,
        DECISION,
        ("ranking", 2, "id"),
        "z",
        ("ranking",),
        (
            r"^the ranking must hold exactly the offered action ids; "
            r"missing \['c'\], not offered \['z'\]$"
        ),
    ),
    (
        D,
        DECISION,
        ("ranking",),
        [{"id": "b", "probability": 0.5}, {"id": "a", "probability": 0.5}],
        ("ranking",),
        r"missing \['c'\], not offered \[\]$",
    ),
    (
        D,
        DECISION,
        ("probability",),
        0.3,
        ("probability",),
        r"^the chosen action's probability must equal its ranking probability 0.5, got 0.3$",
    ),
    (
        D,
        DECISION,
        ("probability",),
        0.0,
        ("probability",),
        r"^probabilities must be finite and in \(0, 1\], got 0.0$",
    ),
    # Decision: the chosen action
    (
        D,
        DECISION,
        ("chosen_action_id",),
        "z",
        ("chosen_action_id",),
        r"^the chosen action must be in the ranking, got 'z'$",
    ),
    (
        D,
        DECISION,
        ("chosen_action_id",),
        "a",
        ("chosen_action_id",),
        r"^the chosen action must be ranked first, got 'a' ranked at \[1\]$",
    ),
    (
        D,
        DECISION,
        ("chosen_index",),
        3,
        ("chosen_index",),
        r"^the chosen index must be in \[0, 3\), got 3$",
    ),
    (
        D,
        DECISION,
        ("chosen_index",),
        -1,
        ("chosen_index",),
        r"^the chosen index must be in \[0, 3\), got -1$",
    ),
    (
        D,
        DECISION,
        ("chosen_index",),
        0,
        ("chosen_index",),
        r"^the chosen index must point at the chosen action 'b', got 0 which is 'a'$",
    ),
    # Decision: what the policy saw
    (
        D,
        DECISION,
        ("context", "user", "age"),
        True,
        ("context", "user", "age"),
        r"^logged feature values must be numbers or strings, .*\(booleans become 1.0 or 0.0\)",
    ),
    (
        D,
        DECISION,
        ("actions",),
        [{"id": "a"}, {"id": "b"}, {"id": "b"}],
        ("actions",),
        r"^action ids must be distinct, got 'b' at \[1\] and \[2\]$",
    ),
    (D, DECISION, ("actions",), [], ("actions",), r"^at least 1 action required, got 0$"),
    (
        D,
        DECISION,
        ("ranking",),
        [{"id": f"a{i}", "probability": 1 / 51} for i in range(51)],
        ("ranking",),
        r"^at most 50 actions allowed, got 51$",
    ),
    # Decision: the record itself
    (D, DECISION, ("policy",), "v w", ("policy",), r"^policy names must match .*, got 'v w'$"),
    (
        D,
        DECISION,
        ("model_version",),
        "v" * 129,
        ("model_version",),
        r"^model versions must be at most 128 characters, got 129$",
    ),
    (
        D,
        DECISION,
        ("occurred_at",),
        "2026-05-01T12:00:00",
        ("occurred_at",),
        r"^timestamps must be timezone-aware .*, got 2026-05-01T12:00:00 without a timezone$",
    ),
    (D, DECISION, ("schema_version",), 2, ("schema_version",), r"^Input should be 1$"),
    (D, DECISION, ("excluded_actions",), [], ("excluded_actions",), r"^Extra inputs"),
    (D, DECISION, ("explored",), DELETE, ("explored",), r"^Field required$"),
    # RewardReported
    *[
        (W, REWARD, ("reward",), r, ("reward",), r"^Input should be a finite number$")
        for r in [math.nan, math.inf, -math.inf]
    ],
    (W, REWARD, ("reward",), "high", ("reward",), r"valid number"),
    (W, REWARD, ("reward",), DELETE, ("reward",), r"^Field required$"),
    (W, REWARD, ("event_id",), DELETE, ("event_id",), r"^Field required$"),
    (W, REWARD, ("event_id",), "", ("event_id",), r"^event ids must match .*, got ''$"),
    (W, REWARD, ("action_id",), "a b", ("action_id",), r"^action ids must match"),
    (W, REWARD, ("user_id",), "u1", ("user_id",), r"^Extra inputs"),
    (
        W,
        REWARD,
        ("occurred_at",),
        datetime(2026, 5, 1, 12, 0),  # naive on purpose
        ("occurred_at",),
        r"^timestamps must be timezone-aware",
    ),
    # BehaviourEvent
    (B, BEHAVIOUR, ("kind",), "like", ("kind",), r"^Input should be 'view', 'click', "),
    (B, BEHAVIOUR, ("device", "type"), "watch", ("device", "type"), r"'mobile', 'desktop'"),
    (
        B,
        BEHAVIOUR,
        ("device", "os"),
        "",
        ("device", "os"),
        r"^must be 1 to 64 characters, got 0$",
    ),
    (
        B,
        BEHAVIOUR,
        ("device", "app_version"),
        "5.2\n",
        ("device", "app_version"),
        r"^must be printable, got '5.2\\n'$",
    ),
    (B, BEHAVIOUR, ("device", "model"), "X1", ("device", "model"), r"^Extra inputs"),
    (B, BEHAVIOUR, ("email",), "a@example.com", ("email",), r"^Extra inputs"),
    (R, RANK, ("excluded_actions",), "a" * 51, ("excluded_actions",), r"valid list"),
    (B, BEHAVIOUR, ("device",), DELETE, ("device",), r"^Field required$"),
    (
        B,
        BEHAVIOUR,
        ("user_id",),
        "u" * 257,
        ("user_id",),
        r"^String should have at most 256 characters$",
    ),
    (
        B,
        BEHAVIOUR,
        ("user_id",),
        "alice@example.com\t",
        ("user_id",),
        r"user ids must be printable text$",
    ),
    (B, BEHAVIOUR, ("session_id",), "s 1", ("session_id",), r"^session ids must match"),
    (B, BEHAVIOUR, ("item_id",), "sku/1", ("item_id",), r"^item ids must match"),
    (B, BEHAVIOUR, ("value",), math.nan, ("value",), r"^Input should be a finite number$"),
    (
        B,
        BEHAVIOUR,
        ("occurred_at",),
        "2026-05-01T12:00:00",
        ("occurred_at",),
        r"^timestamps must be timezone-aware",
    ),
]


@pytest.mark.parametrize(
    ("model", "base", "path", "value", "loc", "match"),
    [
        pytest.param(*case, id=f"{case[0].__name__}-{'.'.join(map(str, case[2]))}")
        for case in BAD_INPUTS
    ],
)
def test_bad_input_names_field_and_rule(
    model: type[BaseModel],
    base: dict[str, Any],
    path: tuple[Any, ...],
    value: Any,
    loc: tuple[Any, ...],
    match: str,
) -> None:
    """Each broken rule gives exactly one error, at the field, stating rule and finding."""
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(changed(base, path, value))
    error = only_error(excinfo)
    assert error["loc"] == loc
    assert re.search(match, error["msg"]), error["msg"]


@pytest.mark.parametrize(
    ("model", "payload"),
    [(R, RANK), (D, DECISION), (W, REWARD), (B, BEHAVIOUR)],
)
def test_valid_payloads_are_accepted(model: type[BaseModel], payload: dict[str, Any]) -> None:
    """The valid payloads the bad-input table starts from are valid."""
    model.model_validate(payload)


# -- limits come from the validation context ----------------------------------------------

ONE = [{"id": "a"}]

LIMITED = [
    ({"max_actions": 2}, R, {"actions": actions(3)}, ("actions",), "at most 2 actions"),
    (
        {"max_namespaces": 1},
        R,
        {"context": namespaces(2), "actions": ONE},
        ("context",),
        "at most 1 namespaces allowed, got 2",
    ),
    (
        {"max_features_per_namespace": 2},
        R,
        {"actions": [{"id": "a", "features": {"item": features(3)}}]},
        ("actions", 0, "features", "item"),
        "at most 2 features per namespace allowed, got 3",
    ),
    (
        {"max_features_per_rank": 3},
        R,
        {
            "context": {"u": {"a": 1, "b": 2}},
            "actions": [
                {"id": "a", "features": {"i": {"x": 1}}},
                {"id": "b", "features": {"i": {"y": 1}}},
            ],
        },
        ("actions",),
        (
            "at most 3 features allowed in the context and actions together "
            "(STREAMBANDIT_LIMITS__MAX_FEATURES_PER_RANK), got 4"
        ),
    ),
    (
        {"max_key_length": 3},
        R,
        {"context": {"user": {"x": 1}}, "actions": ONE},
        ("context", "user", "[key]"),
        "namespace names must be at most 3 characters, got 4",
    ),
    (
        {"max_string_length": 3},
        R,
        {"context": {"u": {"t": "gold"}}, "actions": ONE},
        ("context", "u", "t"),
        "string feature values must be at most 3 characters, got 4",
    ),
    (
        {"max_id_length": 8},
        R,
        {"event_id": "evt-123456789", "actions": ONE},
        ("event_id",),
        "event ids must be at most 8 characters, got 13",
    ),
    (
        {"max_id_length": 8},
        D,
        changed(DECISION, ("model_version",), "version-10"),
        ("model_version",),
        "model versions must be at most 8 characters, got 10",
    ),
    (
        {"max_key_length": 3},
        B,
        changed(BEHAVIOUR, ("device",), {"type": "tablet", "os": "iOS 17"}),
        ("device", "os"),
        "must be 1 to 3 characters, got 6",
    ),
]


@pytest.mark.parametrize(("limits", "model", "payload", "loc", "message"), LIMITED)
def test_configured_limits_apply(
    limits: dict[str, int],
    model: type[BaseModel],
    payload: dict[str, Any],
    loc: tuple[Any, ...],
    message: str,
) -> None:
    """A lowered maximum passed as context={"limits": ...} is enforced and reported."""
    model.model_validate(payload)  # fine under the default limits
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(payload, context={"limits": Limits(**limits)})
    error = only_error(excinfo)
    assert error["loc"] == loc
    assert message in error["msg"]


def test_raised_limit_admits_more() -> None:
    """51 actions fail under the default limits and pass with max_actions=100."""
    payload = changed(RANK, ("actions",), actions(51))
    with pytest.raises(ValidationError):
        RankRequest.model_validate(payload)
    request = RankRequest.model_validate(payload, context={"limits": Limits(max_actions=100)})
    assert len(request.actions) == 51


def test_limits_also_apply_to_json_input() -> None:
    """model_validate_json takes the same context as model_validate."""
    body = RankRequest.model_validate(changed(RANK, ("actions",), actions(3))).model_dump_json()
    with pytest.raises(ValidationError, match="at most 2 actions allowed, got 3"):
        RankRequest.model_validate_json(body, context={"limits": Limits(max_actions=2)})


def test_context_without_limits_uses_defaults() -> None:
    """A context that holds no "limits" key validates with Limits()."""
    payload = changed(RANK, ("actions",), actions(51))
    with pytest.raises(ValidationError, match="at most 50 actions allowed, got 51"):
        RankRequest.model_validate(payload, context={"request_id": "r1"})


def test_wrong_limits_object_is_a_programming_error() -> None:
    """A "limits" context value that is not a Limits raises TypeError, not a 422."""
    with pytest.raises(TypeError, match=r"must be a bandit\.settings\.Limits, got dict"):
        RankRequest.model_validate(RANK, context={"limits": {"max_actions": 2}})


# -- JSON on the wire ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "payload"),
    [(R, RANK), (D, DECISION), (W, REWARD), (B, BEHAVIOUR), (W, {"event_id": "e", "reward": 0})],
)
def test_json_round_trip(model: type[BaseModel], payload: dict[str, Any]) -> None:
    """model_dump_json then model_validate_json gives an equal model and the same JSON."""
    original = model.model_validate(payload)
    dumped = original.model_dump_json()
    again = model.model_validate_json(dumped)
    assert again == original
    assert again.model_dump_json() == dumped


def test_feature_value_types_survive_json() -> None:
    """Booleans stay booleans, ints ints and floats floats through JSON."""
    body = '{"context": {"u": {"b": true, "i": 1, "f": 1.0, "s": "1"}}, "actions": [{"id": "a"}]}'
    values = RankRequest.model_validate_json(body).context["u"]
    assert [type(v) for v in values.values()] == [bool, int, float, str]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_json_non_finite_literals_are_rejected(literal: str) -> None:
    """NaN and Infinity written into JSON are refused like any non-finite number."""
    body = f'{{"context": {{"u": {{"x": {literal}}}}}, "actions": [{{"id": "a"}}]}}'
    with pytest.raises(ValidationError, match="feature values must be finite numbers"):
        RankRequest.model_validate_json(body)
    with pytest.raises(ValidationError, match="finite number"):
        RewardReported.model_validate_json(f'{{"event_id": "e", "reward": {literal}}}')


@pytest.mark.parametrize(
    ("model", "payload", "field", "value"),
    [
        (R, RANK, "event_id", "other"),
        (D, DECISION, "probability", 0.3),
        (W, REWARD, "reward", 0.0),
        (B, BEHAVIOUR, "kind", BehaviourKind.VIEW),
    ],
)
def test_models_are_frozen(
    model: type[BaseModel], payload: dict[str, Any], field: str, value: Any
) -> None:
    """Assigning to a field of a validated model raises."""
    instance = model.model_validate(payload)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(instance, field, value)


@pytest.mark.parametrize("model", [R, D, W, B])
def test_json_schema_builds(model: type[BaseModel]) -> None:
    """Every model has a JSON schema (for OpenAPI) that forbids unknown fields."""
    schema = model.model_json_schema()
    assert schema["additionalProperties"] is False


# -- events: ids and timestamps ------------------------------------------------------------


def test_event_id_is_generated_when_absent() -> None:
    """A request or behaviour event without an id gets a fresh 32-hex-digit one."""
    first = RankRequest.model_validate(changed(RANK, ("event_id",), DELETE)).event_id
    second = RankRequest.model_validate(changed(RANK, ("event_id",), DELETE)).event_id
    assert len(first) == 32
    assert int(first, 16) >= 0
    assert first != second
    assert len(BehaviourEvent.model_validate(BEHAVIOUR).event_id) == 32


def test_given_event_id_is_kept() -> None:
    """An event id sent by the app is the one used."""
    assert RankRequest.model_validate(RANK).event_id == "evt-1"


def test_occurred_at_defaults_to_now_in_utc() -> None:
    """Without a timestamp an event is stamped with the current UTC time."""
    before = datetime.now(UTC)
    occurred = RewardReported.model_validate(REWARD).occurred_at
    assert occurred.tzinfo is UTC
    assert before <= occurred <= datetime.now(UTC)


def test_occurred_at_is_stored_in_utc() -> None:
    """A timestamp with another offset is kept as the same instant, in UTC."""
    local = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    event = RewardReported.model_validate({**REWARD, "occurred_at": local})
    assert event.occurred_at == local
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.model_dump_json().count("2026-05-01T12:00:00Z") == 1


def test_behaviour_event_parses_its_enums() -> None:
    """Kind and device type arrive as strings and become enum members."""
    event = BehaviourEvent.model_validate(BEHAVIOUR)
    assert event.kind is BehaviourKind.PURCHASE
    assert event.device.type is DeviceType.MOBILE


def test_behaviour_errors_never_echo_the_user_id() -> None:
    """A user id breaking a rule appears neither in the message nor in str(error)."""
    with pytest.raises(ValidationError) as excinfo:
        BehaviourEvent.model_validate(changed(BEHAVIOUR, ("user_id",), "alice@example.com\n"))
    assert "alice" not in str(excinfo.value)
    assert "alice" not in only_error(excinfo)["msg"]


# -- what the policy sees, and the decision logged from it ---------------------------------


def test_policy_inputs_drop_excluded_and_convert_booleans() -> None:
    """Excluded actions are removed and booleans become 1.0 or 0.0; the rest is kept."""
    payload = {
        "context": {"user": {"returning": True, "new": False, "age": 31, "tier": "gold"}},
        "actions": [
            {"id": "a", "features": {"item": {"promo": True}}},
            {"id": "b"},
            {"id": "c", "features": {"item": {"price": 9.5}}},
        ],
        "excluded_actions": ["b"],
    }
    context, offered = RankRequest.model_validate(payload).policy_inputs()
    assert context == {"user": {"returning": 1.0, "new": 0.0, "age": 31, "tier": "gold"}}
    assert type(context["user"]["returning"]) is float
    assert offered == [Action("a", {"item": {"promo": 1.0}}), Action("c", {"item": {"price": 9.5}})]


def test_policy_inputs_are_copies() -> None:
    """Changing what policy_inputs returned leaves the request as it was."""
    request = RankRequest.model_validate(RANK)
    context, offered = request.policy_inputs()
    context["user"]["age"] = 99
    offered[0].features["item"]["topic"] = "chess"  # type: ignore[index]
    assert request.context["user"]["age"] == 31
    assert request.actions[0].features["item"]["topic"] == "golf"


def _request_with_excluded() -> RankRequest:
    return RankRequest.model_validate(
        {
            "event_id": "evt-42",
            "context": {"user": {"returning": True}},
            "actions": [{"id": "x"}, {"id": "y"}, {"id": "z"}, {"id": "w"}],
            "excluded_actions": ["y"],
        }
    )


def test_decision_from_choice_logs_the_draw() -> None:
    """from_choice logs the chosen action, its probability and the ranking of the draw."""
    request = _request_with_excluded()
    distribution = Distribution((0.2, 0.5, 0.3))  # over x, z, w
    choice = decide_ranking(distribution, request.event_id)
    decision = Decision.from_choice(choice, request=request, policy="vw", model_version="m-7")
    ids = ["x", "z", "w"]
    assert decision.event_id == "evt-42"
    assert [a.id for a in decision.actions] == ids
    assert decision.context == {"user": {"returning": 1.0}}
    assert decision.chosen_index == choice.index
    assert decision.chosen_action_id == ids[choice.index]
    assert decision.probability == choice.probability == distribution[choice.index]
    assert [r.id for r in decision.ranking] == [ids[i] for i in choice.ranking]
    assert [r.probability for r in decision.ranking] == [distribution[i] for i in choice.ranking]
    assert decision.explored == choice.explored


def test_decision_from_choice_keeps_a_given_time() -> None:
    """from_choice stamps the decision with occurred_at when given."""
    request = _request_with_excluded()
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    choice = decide_ranking(Distribution.uniform(3), request.event_id)
    decision = Decision.from_choice(
        choice, request=request, policy="uniform", model_version="0", occurred_at=at
    )
    assert decision.occurred_at == at


def test_decision_from_choice_over_the_wrong_actions_fails() -> None:
    """A choice over a different number of actions than the policy saw is refused."""
    request = _request_with_excluded()
    choice = decide_ranking(Distribution.uniform(4), request.event_id)  # ignores exclusion
    with pytest.raises(InvalidDistributionError, match=r"over 4 actions .* leaves 3"):
        Decision.from_choice(choice, request=request, policy="vw", model_version="m")


def test_decision_from_choice_needs_the_request_limits() -> None:
    """A request valid under raised limits logs only when from_choice gets those limits."""
    limits = Limits(max_actions=100)
    request = RankRequest.model_validate({"actions": actions(60)}, context={"limits": limits})
    choice = decide_ranking(Distribution.uniform(60), request.event_id)
    with pytest.raises(ValidationError, match="at most 50 actions allowed, got 60"):
        Decision.from_choice(choice, request=request, policy="vw", model_version="m")
    decision = Decision.from_choice(
        choice, request=request, policy="vw", model_version="m", limits=limits
    )
    assert len(decision.ranking) == 60


def test_decision_sum_within_tolerance_is_accepted() -> None:
    """Probabilities summing to 1 within SUM_TOLERANCE (here 1 + 5e-10) are accepted."""
    payload = changed(DECISION, ("ranking", 2, "probability"), 0.2 + 5e-10)
    assert math.fsum(r["probability"] for r in payload["ranking"]) != 1.0
    Decision.model_validate(payload)


def test_module_examples_run() -> None:
    """The examples in bandit.wire.schemas' docstrings pass as doctests."""
    result = doctest.testmod(bandit.wire.schemas)
    assert result.attempted > 0
    assert result.failed == 0


# -- properties ---------------------------------------------------------------------------

_namespace_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,11}", fullmatch=True)
_feature_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,11}", fullmatch=True)
_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,11}", fullmatch=True)
_values = (  # numbers within FEATURE_VALUE_LIMIT
    st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(-1e6, 1e6)
    | st.text(st.characters(exclude_categories=("C", "Z")) | st.just(" "), max_size=12)
)
_features = st.dictionaries(
    _namespace_names, st.dictionaries(_feature_names, _values, max_size=4), max_size=3
)


@st.composite
def _rank_payloads(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(_ids, min_size=1, max_size=6, unique=True))
    excluded = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids) - 1))
    return {
        "context": draw(_features),
        "actions": [{"id": i, "features": draw(_features)} for i in ids],
        "excluded_actions": excluded,
    }


@settings(max_examples=60, deadline=None)
@given(_rank_payloads(), st.data())
def test_any_valid_request_round_trips_and_logs(
    payload: dict[str, Any], data: st.DataObject
) -> None:
    """Any valid request round-trips through JSON, and any draw over it logs a valid Decision."""
    request = RankRequest.model_validate(payload)
    dumped = request.model_dump_json()
    assert RankRequest.model_validate_json(dumped).model_dump_json() == dumped

    context, offered = request.policy_inputs()
    excluded = set(payload["excluded_actions"])
    assert [a.id for a in offered] == [
        a["id"] for a in payload["actions"] if a["id"] not in excluded
    ]
    for features in [context, *(a.features for a in offered)]:
        assert not any(isinstance(v, bool) for ns in features.values() for v in ns.values())

    weights = data.draw(
        st.lists(st.floats(0.01, 10.0), min_size=len(offered), max_size=len(offered))
    )
    choice = decide_ranking(Distribution.from_weights(weights, floor=0.01), request.event_id)
    decision = Decision.from_choice(choice, request=request, policy="vw", model_version="m")
    logged = decision.model_dump_json()
    assert Decision.model_validate_json(logged) == decision
    assert Decision.model_validate_json(logged).model_dump_json() == logged


# -- the rank path's decision ----------------------------------------------------------


@pytest.mark.parametrize("defer", [False, True])
def test_of_rank_builds_what_from_choice_validates(defer: bool) -> None:
    """The rank path's builder (no validation again) gives the validated decision."""
    policy = make_policy("vw-squarecb")
    cache: ActionCache = {}
    logged: LoggedCache = {}
    for i in range(30):
        body = {
            "event_id": f"evt-{i}",
            "context": {"user": {"age": 31, "gold": i % 2 == 0, "s": 0.5 + i}},
            "actions": [
                {"id": "a", "features": {"item": {"topic": "golf", "len": 3, "new": True}}},
                {"id": "b"},
                {"id": "c", "features": {"item": {"topic": "chess", "len": 2.5}}},
            ],
            "excluded_actions": ["b"] if i % 3 == 0 else [],
            "defer_activation": defer,
        }
        request = RankRequest.model_validate(body)
        inputs = request.policy_inputs(cache if i % 2 else None)
        choice = decide_ranking(policy.pmf(*inputs), request.event_id)
        checked = Decision.from_choice(choice, request=request, policy="p", model_version="3")
        built = Decision.of_rank(
            choice, request=request, policy="p", model_version="3", inputs=inputs,
            cache=logged if i % 2 else None,
        )  # fmt: skip
        assert built.model_dump(exclude={"occurred_at"}) == checked.model_dump(
            exclude={"occurred_at"}
        )
        assert built.model_fields_set == checked.model_fields_set
        assert built.deferred is defer
        again = Decision.model_validate_json(built.model_dump_json())
        assert again == built
        assert again.model_dump_json() == built.model_dump_json()
    # a repeated catalog action is the same validated model, the same policy action
    limits = Limits()
    one = b'{"actions": [{"id": "a", "features": {"i": {"x": 1}}}, {"id": "b"}]}'
    first = RankRequest.from_json(one, limits)
    again = RankRequest.from_json(one.replace(b'"b"', b'"c"'), limits)
    other = RankRequest.from_json(one.replace(b"1}", b"1.0}"), limits)  # 1 and 1.0 apart
    assert again.actions[0] is first.actions[0]
    assert other.actions[0] is not first.actions[0]
    assert other.actions[0].features["i"]["x"] == 1.0
    assert again.policy_inputs(cache)[1][0] is first.policy_inputs(cache)[1][0]
    assert first == RankRequest.model_validate_json(one, context={"limits": limits}).model_copy(
        update={"event_id": first.event_id}
    )
    # the rules across actions still hold for shared models; refusals are pydantic's own
    twice = orjson.dumps({"actions": [{"id": "a", "features": {"i": {"x": 1}}}] * 2})
    with pytest.raises(ValidationError, match="action ids must be distinct"):
        RankRequest.from_json(twice, limits)
    many = orjson.dumps({"actions": [{"id": "a", "features": {"i": {"x": 1, "y": 2, "z": 3}}}]})
    with pytest.raises(ValidationError, match="at most 2 features per namespace allowed, got 3"):
        RankRequest.from_json(many, Limits(max_features_per_namespace=2))
    with pytest.raises(ValidationError, match="Invalid JSON"):
        RankRequest.from_json(b'{"actions": [', limits)


def test_the_rank_path_writes_pydantic_json() -> None:
    """The decision's and the rank answer's JSON (orjson) are pydantic's bytes."""
    from bandit.wire.answers import RankResponse

    policy = make_policy("vw-squarecb")
    for i, extra in enumerate([{}, {"excluded_actions": ["b"]}, {"defer_activation": True}]):
        body = {
            "event_id": f"evt-{i}",
            "context": {"user": {"age": 31, "gold": True, "s": 'é, "x"'}},
            "actions": [{"id": "a:1", "features": {"i": {"t": "golf", "n": 1e-7}}}, {"id": "b"}],
            **extra,
        }
        request = RankRequest.model_validate(body)
        inputs = request.policy_inputs()
        choice = decide_ranking(policy.pmf(*inputs), request.event_id)
        for decision in (
            Decision.of_rank(choice, request=request, policy="p", model_version="3", inputs=inputs),
            Decision.from_choice(choice, request=request, policy="p", model_version="3"),
        ):
            assert decision.to_json() == decision.model_dump_json().encode()
            answer = RankResponse(
                event_id=decision.event_id,
                policy=decision.policy,
                model_version=decision.model_version,
                chosen_action_id=decision.chosen_action_id,
                probability=decision.probability,
                ranking=decision.ranking,
                deferred=decision.deferred,
            )
            assert decision.answer_json() == answer.model_dump_json().encode()


# -- the two id rules -------------------------------------------------------------------

_ODD_IDS = ["ice cream", "a/b", "50% off | a:b", 'say "crème" ✓', "x" * 256]


@pytest.mark.parametrize("odd", _ODD_IDS)
def test_the_lenient_id_rule_keeps_any_printable_id_the_strict_one_refuses(odd: str) -> None:
    """Personalizer's ids pass the lenient rule exactly as given; the native rule refuses them."""
    data = {"event_id": odd, "actions": [{"id": odd}, {"id": "b"}], "excluded_actions": ["b"]}
    lenient = RankRequest.model_validate(data, context={"limits": Limits(), **LENIENT_IDS})
    assert (lenient.event_id, lenient.actions[0].id) == (odd, odd)
    reward = RewardReported.model_validate(
        {"event_id": odd, "reward": 1.0}, context={"limits": Limits(), **LENIENT_IDS}
    )
    assert reward.event_id == odd
    with pytest.raises(ValidationError) as strict:
        RankRequest.model_validate(data, context={"limits": Limits()})
    kind = "id_too_long" if odd.isalnum() else "id_syntax"  # (256 x's: the pattern's)
    found = {(".".join(map(str, e["loc"])), e["type"]) for e in strict.value.errors()}
    assert {("event_id", kind), ("actions.0.id", kind)} <= found


@pytest.mark.parametrize(
    ("odd", "rule"),
    [
        ("", "must be printable and not empty"),
        ("tab\there", "must be printable and not empty"),
        ("line\nbreak", "must be printable and not empty"),
        ("x" * 257, "must be at most 256 characters, got 257"),
    ],
)
def test_the_lenient_id_rule_refuses_what_no_format_should_hold(odd: str, rule: str) -> None:
    """Empty, non-printable (a line break would split a VW example) or beyond 256: refused."""
    with pytest.raises(ValidationError) as refused:
        RankRequest.model_validate(
            {"actions": [{"id": "a"}, {"id": odd}]}, context={"limits": Limits(), **LENIENT_IDS}
        )
    [error] = refused.value.errors()
    assert (error["loc"], error["type"] in ("id_syntax", "id_too_long")) == (
        ("actions", 1, "id"),
        True,
    )
    assert rule in error["msg"]


def test_the_openapi_document_states_the_strict_id_rule() -> None:
    """The native routes' rule is what the JSON schema says of event and action ids."""
    schema = RankRequest.model_json_schema()
    assert schema["properties"]["event_id"]["pattern"] == ID_PATTERN
    assert schema["$defs"]["RankableAction"]["properties"]["id"]["pattern"] == ID_PATTERN
