"""The fast validation path returns exactly pydantic's model, or leaves the record to it."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bandit.api.native import NativeRankRequest, RankResponse
from bandit.settings import Limits
from bandit.wire import fastpath
from bandit.wire.schemas import ActionCache, Decision, RankRequest, TrainingExample
from policies import decide_ranking, make_policy
from streams.deadletter import RawRecord, decode_record

LIMITS = Limits()
SMALL = Limits(
    max_actions=3, max_key_length=8, max_string_length=10, max_id_length=12,
    max_features_per_rank=6,
)  # fmt: skip

names = st.sampled_from(["age", "tier", "x_1", "a.b", "_n", "bad name", "1st", "é", "ok-2", ""])
values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["gold", "", "tab\there", "x" * 20, "日本", "ok"]),
    st.none(),
    st.lists(st.integers(), max_size=1),
)
features = st.dictionaries(
    st.sampled_from(["user", "item", "page", "_x", "bad ns", "9", "a" * 9]),
    st.dictionaries(names, values, max_size=4),
    max_size=3,
)
ids = st.sampled_from(["a", "b", "c", "item-1", "x:y.z_1", "", " a", "-a", "a" * 13, "b"])
actions = st.lists(
    st.fixed_dictionaries({"id": ids}, optional={"features": features}), min_size=0, max_size=4
)
requests = st.fixed_dictionaries(
    {"actions": actions},
    optional={
        "event_id": st.one_of(ids, st.none(), st.integers()),
        "context": st.one_of(features, st.none()),
        "excluded_actions": st.lists(ids, max_size=3),
        "defer_activation": st.one_of(st.booleans(), st.sampled_from(["true", 1, None])),
        "policy": st.one_of(ids, st.none()),
        "session_id": st.one_of(ids, st.none()),
        "extra": st.just(1),
    },
)


def _pydantic(model: type[Any], raw: bytes, limits: Limits) -> Any:
    try:
        return model.model_validate_json(raw, context={"limits": limits})
    except pydantic.ValidationError:
        return None


def _same(fast: Any, slow: Any, *, ignore_event_id: bool = False) -> None:
    exclude = {"event_id"} if ignore_event_id else set()
    assert type(fast) is type(slow)
    assert fast.model_dump(exclude=exclude) == slow.model_dump(exclude=exclude)
    assert fast.model_fields_set == slow.model_fields_set
    for name in ("actions", "ranking"):
        for a, b in zip(getattr(fast, name, []), getattr(slow, name, []), strict=True):
            assert (a == b, a.model_fields_set) == (True, b.model_fields_set)
    if not ignore_event_id:
        assert fast == slow
        assert fast.model_dump_json() == slow.model_dump_json()
        assert repr(fast) == repr(slow)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=requests, limits=st.sampled_from([LIMITS, SMALL]))
def test_rank_requests_agree_with_pydantic(data: dict[str, Any], limits: Limits) -> None:
    """Whatever the fast path accepts, pydantic accepts as the very same request."""
    for model in (RankRequest, NativeRankRequest):
        payload = {k: v for k, v in data.items() if model is NativeRankRequest or k != "policy"}
        try:
            raw = orjson.dumps(payload)
        except TypeError:
            raw = json.dumps(payload).encode()
        fast = fastpath.rank_request(raw, model, limits)
        if fast is None:
            continue
        slow = _pydantic(model, raw, limits)
        assert slow is not None, f"the fast path accepted what pydantic refuses: {raw!r}"
        _same(fast, slow, ignore_event_id="event_id" not in payload)


def _decision(i: int, **request: Any) -> Decision:
    body = {
        "event_id": f"evt-{i}",
        "context": {"user": {"age": 31, "gold": True, "score": 0.25 + i}, "page": {"s": "tech"}},
        "actions": [
            {"id": "a", "features": {"item": {"topic": "golf", "len": 3}}},
            {"id": "b"},
            {"id": "c", "features": {"item": {"topic": "chess", "new": False}}},
        ],
        **request,
    }
    parsed = RankRequest.model_validate(body)
    context, actions = parsed.policy_inputs()
    choice = decide_ranking(make_policy("vw-squarecb").pmf(context, actions), parsed.event_id)
    return Decision.from_choice(choice, request=parsed, policy="default", model_version="7")


def _example(i: int, **request: Any) -> dict[str, Any]:
    decision = _decision(i, **request)
    example = TrainingExample(
        event_id=decision.event_id, decision=decision, reward=1.0, reward_count=1,
        default_reward=False,
    )  # fmt: skip
    return orjson.loads(example.model_dump_json())


def test_from_choice_builds_what_pydantic_validates() -> None:
    """Decision.from_choice's fast path equals validating its data with pydantic."""
    for i in range(20):
        decision = _decision(i, excluded_actions=["b"] if i % 2 else [])
        again = Decision.model_validate(orjson.loads(decision.model_dump_json()))
        assert decision == again
        assert decision.model_dump_json() == again.model_dump_json()
        assert decision.model_fields_set == {
            "event_id", "policy", "model_version", "context", "actions", "ranking",
            "chosen_action_id", "chosen_index", "probability", "explored", "deferred",
        }  # fmt: skip


@pytest.mark.parametrize("defer", [False, True])
def test_decided_equals_from_choice_and_its_json_equals_pydantic(defer: bool) -> None:
    """The rank path's unchecked builder and writers give what the checked ones give."""
    policy = make_policy("vw-squarecb")
    cache: ActionCache = {}
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
        when = Decision.model_fields["occurred_at"].default_factory()  # type: ignore[misc,call-arg]
        checked = Decision.from_choice(
            choice, request=request, policy="default", model_version="3", occurred_at=when
        )
        fast = fastpath.decided(
            choice, request=request, policy="default", model_version="3", inputs=inputs,
            occurred_at=when,
        )  # fmt: skip
        _same(fast, checked)
        assert fast.deferred is defer
        assert fastpath.decision_json(fast) == checked.model_dump_json().encode()
        unstamped = fastpath.decided(
            choice, request=request, policy="default", model_version="3", inputs=inputs
        )
        assert fastpath.decision_json(unstamped) == unstamped.model_dump_json().encode()
        assert "occurred_at" not in unstamped.model_fields_set
        # the same policy actions give the same logged actions, written once
        assert [a is b for a, b in zip(fast.actions, unstamped.actions, strict=True)] == [
            True
        ] * len(fast.actions)
        answer = RankResponse(
            event_id=fast.event_id,
            policy=fast.policy,
            model_version=fast.model_version,
            chosen_action_id=fast.chosen_action_id,
            probability=fast.probability,
            ranking=fast.ranking,
            deferred=fast.deferred,
        )
        assert fastpath.rank_answer_json(fast) == answer.model_dump_json().encode()


def test_repeated_actions_are_validated_once_and_exactly() -> None:
    """An action seen before (same JSON, same limits) is the same model; types are exact."""

    def body(value: Any, action_id: str = "a") -> bytes:
        return orjson.dumps(
            {"actions": [{"id": action_id, "features": {"item": {"x": value}}}, {"id": "z"}]}
        )

    first = fastpath.rank_request(body(1), RankRequest, LIMITS)
    again = fastpath.rank_request(body(1), RankRequest, LIMITS)
    assert first is not None
    assert again is not None
    assert again.actions[0] is first.actions[0]  # taken from the cache
    for value in (1.0, True):  # equal in Python, not in JSON: validated and kept apart
        other = fastpath.rank_request(body(value), RankRequest, LIMITS)
        assert other is not None
        assert other.actions[0] is not first.actions[0]
        assert type(other.actions[0].features["item"]["x"]) is type(value)
    # A repeated id in one request is refused even when both copies come from the cache.
    twice = orjson.dumps({"actions": [{"id": "z"}, {"id": "z"}]})
    assert fastpath.rank_request(twice, RankRequest, LIMITS) is None
    # Other limits: validated again, and refused where they are tighter.
    tight = Limits(max_string_length=3)
    long_value = body("golfing")
    assert fastpath.rank_request(long_value, RankRequest, LIMITS) is not None
    assert fastpath.rank_request(long_value, RankRequest, tight) is None


def _break(data: dict[str, Any], how: int) -> dict[str, Any]:
    data = copy.deepcopy(data)
    decision = data["decision"]
    breaks = [
        lambda: decision.update(probability=decision["probability"] / 2),
        lambda: decision.update(chosen_index=(decision["chosen_index"] + 1) % 3),
        decision["ranking"].reverse,
        lambda: decision["ranking"][0].update(probability=1.5),
        lambda: decision["ranking"][1].update(id="zzz"),
        lambda: decision["actions"][1].update(id="a"),
        lambda: decision["context"]["user"].update(gold=True),  # booleans are not logged
        lambda: decision["context"]["user"].update({"bad name": 1}),
        lambda: decision.update(occurred_at="2026-01-01T00:00:00"),  # naive
        lambda: decision.update(occurred_at="yesterday"),
        lambda: decision.update(schema_version=2),
        lambda: decision.update(explored="no"),
        lambda: decision.update(extra=1),
        lambda: data.update(reward=float("inf")),
        lambda: data.update(reward=1),  # an int: pydantic decides (it accepts)
        lambda: data.update(reward_count=-1),
        lambda: data.update({"default_reward": "yes"}),
        lambda: decision.pop("actions"),
        lambda: decision.update(context=None),
        lambda: decision.update(occurred_at="2026-01-01T00:00:00+02:00"),  # fine
        lambda: decision["ranking"][0].update(probability=1),  # an int: pydantic decides
    ]
    breaks[how]()
    return data


@pytest.mark.parametrize("how", range(21))
def test_training_examples_agree_with_pydantic(how: int) -> None:
    """Broken or unusual training examples: the fast path agrees with pydantic or defers."""
    adapter = TypeAdapter(TrainingExample)
    data = _break(_example(how), how)
    raw = json.dumps(data).encode()
    fast = fastpath.training_example(raw, LIMITS)
    try:
        slow = adapter.validate_json(raw, context={"limits": LIMITS})
    except pydantic.ValidationError:
        slow = None
    if fast is not None:
        assert slow is not None
        _same(fast, slow)
        _same(fast.decision, slow.decision)
    # The decoder the workers use gives pydantic's answer either way, dead letter included.
    record = RawRecord("t", 0, how, b"k", raw)
    decoded = decode_record(fastpath.FastDecoder(TrainingExample), record, limits=LIMITS)
    expected = decode_record(adapter, record, limits=LIMITS)
    assert decoded == expected or (
        type(decoded).__name__ == type(expected).__name__ == "DeadLetter"
        and decoded.reason == expected.reason  # type: ignore[union-attr]
    )


def test_valid_training_examples_take_the_fast_path() -> None:
    """What this system writes is decoded without pydantic's validators, to the same model."""
    adapter = TypeAdapter(TrainingExample)
    for i in range(20):
        raw = orjson.dumps(_example(i, excluded_actions=["c"] if i % 3 else []))
        fast = fastpath.training_example(raw, LIMITS)
        assert fast is not None
        _same(fast, adapter.validate_json(raw))
        decision = orjson.dumps(orjson.loads(raw)["decision"])
        assert fastpath.decision(decision, LIMITS) == TypeAdapter(Decision).validate_json(decision)
