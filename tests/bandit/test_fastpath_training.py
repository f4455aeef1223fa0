"""Training examples as plain data: the fast path's values are pydantic's, or it defers."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bandit.settings import Limits
from bandit.wire import fastpath
from bandit.wire.schemas import TrainingExample
from policies.vw import logged_example
from tests.bandit.test_fastpath import SMALL, _break, _example, features

LIMITS = Limits()
ADAPTER = TypeAdapter(TrainingExample)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """`values` as ``TrainingExample.model_dump()`` gives them (actions with features)."""
    decision = dict(values["decision"])
    decision["actions"] = [
        {"id": action["id"], "features": action.get("features", {})}
        for action in decision["actions"]
    ]
    return {**values, "decision": decision}


def _pydantic(raw: bytes, limits: Limits) -> TrainingExample | None:
    try:
        return ADAPTER.validate_json(raw, context={"limits": limits})
    except pydantic.ValidationError:
        return None


@pytest.mark.parametrize("how", range(21))
def test_training_data_is_what_pydantic_validates(how: int) -> None:
    """Broken or unusual examples: the plain values equal pydantic's model, or None."""
    raw = json.dumps(_break(_example(how), how)).encode()
    slow = _pydantic(raw, LIMITS)
    found = fastpath.training_data(raw, LIMITS)
    if found is not None:
        assert slow is not None
        assert _plain(found) == slow.model_dump()
    # Features left to the caller: with features_ok, the same answer.
    unchecked = fastpath.training_data(raw, LIMITS, check_features=False)
    if unchecked is not None and fastpath.features_ok(unchecked["decision"], LIMITS):
        assert found is not None
        assert unchecked == found


def test_valid_training_data_takes_the_fast_path() -> None:
    """What the join writes is read without pydantic, to pydantic's values."""
    for i in range(10):
        raw = orjson.dumps(_example(i, excluded_actions=["c"] if i % 2 else []))
        found = fastpath.training_data(raw, LIMITS)
        assert found is not None
        assert _plain(found) == ADAPTER.validate_json(raw).model_dump()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    context=features,
    item=features,
    limits=st.sampled_from([LIMITS, SMALL]),
)
def test_features_written_under_the_rules_are_the_valid_ones(
    context: dict[str, Any], item: dict[str, Any], limits: Limits
) -> None:
    """Features the writer takes under `feature_rules` pass `features_ok`, and pydantic."""
    example = _example(1)
    example["decision"]["context"] = context
    example["decision"]["actions"][0]["features"] = item
    try:
        raw = orjson.dumps(example)
    except TypeError:  # an int orjson cannot write
        return
    values = fastpath.training_data(raw, limits, check_features=False)
    if values is None:
        return
    decision = values["decision"]
    ids = [action["id"] for action in decision["actions"]]
    by_id = {entry["id"]: entry["probability"] for entry in decision["ranking"]}
    written = logged_example(
        decision["context"],
        ids,
        [action.get("features", {}) for action in decision["actions"]],
        decision["chosen_index"],
        [by_id[i] for i in ids],
        reward=values["reward"],
        event_id=values["event_id"],
        timestamp=decision["occurred_at"],
        ranking=[ids.index(entry["id"]) for entry in decision["ranking"]],
        rules=fastpath.feature_rules(limits),
    )
    if written is not None:
        assert fastpath.features_ok(decision, limits)
        assert _pydantic(raw, limits) is not None


def test_feature_rules_are_one_object_per_limits() -> None:
    """The rules (and the names they remember) are kept per Limits."""
    assert fastpath.feature_rules(LIMITS) is fastpath.feature_rules(Limits())
    assert fastpath.feature_rules(SMALL) is not fastpath.feature_rules(LIMITS)
    assert fastpath.feature_rules(SMALL).max_string_length == SMALL.max_string_length
