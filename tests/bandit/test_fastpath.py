"""The stream workers' fast decoding gives exactly pydantic's model, or leaves it to pydantic."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bandit.settings import Limits
from bandit.wire import fastpath
from bandit.wire.schemas import Decision, RankRequest, TrainingExample
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
