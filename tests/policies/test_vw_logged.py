"""One-pass writing of VW's two formats: exactly the general functions' output, or None."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import Action, Policy
from policies.dsjson import (
    FeatureRules,
    LoggedExample,
    dsjson_line,
    dsjson_record,
    logged_example,
)
from policies.vw import VWPolicy
from policies.vwtext import example_text, reward_to_cost, to_vw_lines
from tests.policies import toy

WHEN = datetime(2026, 11, 27, 23, 15, 1, 250_000, tzinfo=UTC)

# Names and values that are plain, and ones each format escapes or refuses.
names = st.sampled_from(
    ["age", "tier", "x_1", "a.b", "ok-2", "_hidden", "a b", "x=y", "50%", "é", 'q"', "a,}", ""]
)
strings = st.sampled_from(
    ["gold", "", "a b", "x|y", "a:b", "50%", 'q"x', "back\\slash", "tab\there", "日本", "a,}"]
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-05, 2.5e-7, 1e16, 0.1, 3.0]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 10**400]),
    st.booleans(),
)
features = st.dictionaries(
    st.sampled_from(["user", "item", "page", "_ns", "a b", "id"]),
    st.dictionaries(names, st.one_of(strings, numbers), max_size=4),
    max_size=3,
)
ids = st.sampled_from(["a", "b", "x:y", "id with space", "item-7", 'q"', "b"])


def _general(
    context: Any,
    action_ids: list[str],
    action_features: list[Any],
    chosen: int,
    probabilities: list[float],
    reward: float,
    ranking: list[int],
    extra: dict[str, Any],
) -> LoggedExample | None:
    """What the general functions write, or None when either refuses."""
    actions = [Action(i, f) for i, f in zip(action_ids, action_features, strict=True)]
    try:
        text = example_text(
            to_vw_lines(context, actions, (chosen, reward_to_cost(reward), probabilities[chosen]))
        )
        record = dsjson_record(
            context,
            actions,
            chosen,
            probabilities,
            reward,
            event_id="evt-1",
            timestamp=WHEN,
            ranking=ranking,
            extra=extra,
        )
        line = dsjson_line(record)
    except Exception:  # noqa: BLE001  # any refusal: the fast path must refuse too
        return None
    return LoggedExample(text, line)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    context=features,
    actions=st.lists(st.tuples(ids, features), min_size=1, max_size=4),
    data=st.data(),
    reward=st.sampled_from([1.0, 0.0, -0.5, 0.25, 3.0]),
)
def test_logged_example_writes_what_to_vw_lines_and_dsjson_record_write(
    context: Any, actions: list[tuple[str, Any]], data: st.DataObject, reward: float
) -> None:
    """Whatever the input, the one-pass writer gives both formats exactly, or None."""
    n = len(actions)
    chosen = data.draw(st.integers(0, n - 1))
    weights = data.draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 7.0]), min_size=n, max_size=n))
    probabilities = [w / sum(weights) for w in weights]
    rest = data.draw(st.permutations([i for i in range(n) if i != chosen]))
    ranking = [chosen, *rest]
    extra = {"policy": "p", "explored": data.draw(st.sampled_from([True, None])), "count": 2}
    action_ids = [i for i, _ in actions]
    action_features = [f for _, f in actions]
    expected = _general(
        context, action_ids, action_features, chosen, probabilities, reward, ranking, extra
    )
    found = logged_example(
        context,
        action_ids,
        action_features,
        chosen,
        probabilities,
        reward=reward,
        event_id="evt-1",
        timestamp=WHEN,
        ranking=ranking,
        extra=extra,
    )
    if found is not None:
        assert expected is not None
        assert found == expected


def test_plain_decisions_take_the_one_pass_writer() -> None:
    """What the service logs (plain names, short values, zeros, ids with ':') is written."""
    context = {"user": {"age": 0.25, "tier": "gold", "visits": 0}, "time": {"weekend": 1}}
    actions = [
        Action("urn:item:1", {"item": {"topic": "golf", "len": 0.0}}),
        Action("b"),
        Action("c", {"item": {"topic": "finance", "len": 1e-05, "n": 12}}),
    ]
    args = (context, [a.id for a in actions], [a.features for a in actions], 2)
    found = logged_example(
        *args,
        [0.25, 0.25, 0.5],
        reward=1.0,
        event_id="evt-9",
        timestamp=WHEN - timedelta(days=1),
        ranking=[2, 0, 1],
        extra={"policy": "p"},
    )
    assert found is not None
    assert found.text == example_text(to_vw_lines(context, actions, (2, -1.0, 0.5)))
    assert found.dsjson == dsjson_line(
        dsjson_record(
            context,
            actions,
            2,
            [0.25, 0.25, 0.5],
            1.0,
            event_id="evt-9",
            timestamp=WHEN - timedelta(days=1),
            ranking=[2, 0, 1],
            extra={"policy": "p"},
        )
    )


@pytest.mark.parametrize(
    ("rules", "features"),
    [
        (FeatureRules(max_namespaces=1), {"a": {"x": 1}, "b": {"y": 1}}),
        (FeatureRules(max_features=1), {"a": {"x": 1, "y": 2}}),
        (FeatureRules(max_string_length=3), {"a": {"x": "long"}}),
        (FeatureRules(name_ok=lambda name: name != "x"), {"a": {"x": 1}}),
        (FeatureRules(namespace_ok=lambda name: name != "a"), {"a": {"y": 1}}),
    ],
)
def test_features_breaking_the_callers_rules_are_left_to_the_caller(
    rules: FeatureRules, features: dict[str, Any]
) -> None:
    """A rule the caller gives (its schema's limits) turns the fast path down, not VW's."""
    arguments: dict[str, Any] = {
        "reward": 1.0,
        "event_id": "e",
        "timestamp": WHEN,
        "ranking": [0],
    }
    assert logged_example(features, ["a"], [{}], 0, [1.0], **arguments) is not None
    assert logged_example(features, ["a"], [{}], 0, [1.0], rules=rules, **arguments) is None


def test_repeated_actions_are_written_alike_wherever_they_stand() -> None:
    """An action written before (same features, same rules) is written again exactly.

    Its pieces are remembered per rules: features another caller's rules refuse are not
    taken from what a permissive caller wrote.
    """
    golf = {"item": {"topic": "golf", "len": 0.5, "n": 0}}
    chess = {"item": {"topic": "chess", "len": 1, "n": 3}}
    strict = FeatureRules(max_features=2)
    for chosen, order in ((0, [golf, chess]), (1, [golf, chess]), (0, [dict(chess), golf])):
        arguments: dict[str, Any] = {
            "reward": 1.0,
            "event_id": "evt-1",
            "timestamp": WHEN,
            "ranking": [chosen, 1 - chosen],
        }
        found = logged_example(
            {"u": {"a": 1.5}}, ["x", "y"], order, chosen, [0.5, 0.5], **arguments
        )
        expected = _general(
            {"u": {"a": 1.5}}, ["x", "y"], order, chosen, [0.5, 0.5], 1.0, [chosen, 1 - chosen], {}
        )
        assert found is not None
        assert expected is not None
        assert found.text == expected.text
        refused = logged_example(
            {"u": {"a": 1.5}}, ["x", "y"], order, chosen, [0.5, 0.5], rules=strict, **arguments
        )
        assert refused is None  # three features in a namespace: more than two


def test_bad_distributions_and_rankings_are_left_to_the_general_functions() -> None:
    """The writer checks what dsjson_record checks, and leaves it to it to explain."""
    arguments: dict[str, Any] = {"reward": 1.0, "event_id": "e", "timestamp": WHEN}
    two, features = ["a", "b"], [{}, {}]
    assert logged_example({}, two, features, 0, [0.5, 0.5], ranking=[0, 1], **arguments)
    assert logged_example({}, two, features, 0, [0.5, 0.6], ranking=[0, 1], **arguments) is None
    assert logged_example({}, two, features, 0, [0.5, 0.5], ranking=[1, 0], **arguments) is None
    assert logged_example({}, two, features, 2, [0.5, 0.5], ranking=[0, 1], **arguments) is None
    assert (
        logged_example({}, ["a", "a"], features, 0, [0.5, 0.5], ranking=[0, 1], **arguments) is None
    )
    naive = {**arguments, "timestamp": WHEN.replace(tzinfo=None)}
    assert logged_example({}, two, features, 0, [0.5, 0.5], ranking=[0, 1], **naive) is None
    nan = {**arguments, "reward": math.nan}
    assert logged_example({}, two, features, 0, [0.5, 0.5], ranking=[0, 1], **nan) is None


def test_learn_logged_learns_what_learn_learns() -> None:
    """Learning the written text gives the very model (and count) `learn` gives."""
    by_text, by_learn = VWPolicy(exploration="squarecb", seed=3), VWPolicy(seed=3)
    for t in range(300):
        segment = t % toy.N_SEGMENTS
        context = toy.context_for(segment, (t % 7) / 10)
        chosen = t % len(toy.ACTIONS)
        probabilities = [1 / len(toy.ACTIONS)] * len(toy.ACTIONS)
        reward = toy.expected_reward(segment, chosen)
        written = logged_example(
            context,
            [a.id for a in toy.ACTIONS],
            [a.features for a in toy.ACTIONS],
            chosen,
            probabilities,
            reward=float(reward),
            event_id=f"e{t}",
            timestamp=WHEN,
            ranking=[chosen, *(i for i in range(len(toy.ACTIONS)) if i != chosen)],
        )
        assert written is not None
        by_text.learn_logged(written)
        by_learn.learn(context, toy.ACTIONS, chosen, reward, probabilities[chosen])
    assert by_text.n_learned == by_learn.n_learned == 300
    snapshot = by_text.snapshot()
    assert snapshot == by_learn.snapshot()
    assert Policy.restore(snapshot).n_learned == 300


plain_features = st.dictionaries(
    st.sampled_from(["user", "item", "page"]),
    st.dictionaries(
        st.sampled_from(["age", "tier", "x_1", "a.b", "ok-2"]),
        st.one_of(
            st.sampled_from(["gold", "日本", "x", ""]),
            # numbers within FEATURE_VALUE_LIMIT (beyond it, learn says what is wrong)
            st.floats(min_value=-1e6, max_value=1e6),
            st.integers(min_value=-(10**6), max_value=10**6),
        ),
        max_size=4,
    ),
    max_size=3,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    context=plain_features,
    actions=st.lists(
        st.tuples(st.sampled_from(["a", "b", "x:y", "item-7", "c"]), plain_features),
        min_size=1,
        max_size=4,
        unique_by=lambda action: action[0],
    ),
)
def test_plain_features_are_always_written_in_one_pass(
    context: Any, actions: list[tuple[str, Any]]
) -> None:
    """Plain names, printable values and numbers within the limit never fall back, and match."""
    n = len(actions)
    probabilities = [1 / n] * n
    action_ids = [i for i, _ in actions]
    action_features = [f for _, f in actions]
    ranking = list(range(n))
    found = logged_example(
        context,
        action_ids,
        action_features,
        0,
        probabilities,
        reward=0.5,
        event_id="evt-1",
        timestamp=WHEN,
        ranking=ranking,
        extra={"policy": "p"},
    )
    expected = _general(
        context, action_ids, action_features, 0, probabilities, 0.5, ranking, {"policy": "p"}
    )
    assert found is not None
    assert found == expected
