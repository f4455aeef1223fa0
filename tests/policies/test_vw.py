"""Vowpal Wabbit policy: text format, conversions, exploration changes, snapshots."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bandit.errors import ConfigurationError, InvalidFeaturesError, SnapshotError
from policies import Action, Distribution, make_policy
from policies._vwmodel import rewrite_options
from policies.baselines import Uniform
from policies.vw import VWPolicy, model_file_id, reward_to_cost, to_vw_lines
from policies.vwtext import ID_TOKEN, escape, example_text
from tests.policies import toy


def test_text_lines_escape_what_would_break_the_format() -> None:
    """Spaces, pipes, colons and percent signs in names and values are escaped."""
    lines = to_vw_lines(
        {"user": {"browser": "Chrome 120|x:y", "a b": 1.5}},
        [Action("id with space", {"item": {"tag": "50%"}})],
    )
    assert lines == [
        "shared |cuser browser=Chrome%20120%7Cx%3Ay a%20b:1.5",
        "|aitem tag=50%25 |id id=id%20with%20space",
    ]


def test_label_goes_on_the_chosen_actions_line_as_a_cost() -> None:
    """A learning example carries `0:cost:probability` on the 0-based chosen action's line."""
    lines = to_vw_lines({}, [Action("a"), Action("b"), Action("c")], (2, reward_to_cost(1.0), 0.4))
    assert lines == ["shared |", "|id id=a", "|id id=b", "0:-1.0:0.4 |id id=c"]


def test_default_interactions_cross_the_context_with_action_ids() -> None:
    """With `ci`, actions without features still get a best action per context."""
    policy = VWPolicy(exploration="epsilon", epsilon=0.1, floor=1e-6)
    assert policy.params()["interactions"] == ["ca", "ci"]
    actions = [Action("left"), Action("right")]
    for _ in range(100):
        for side, best in (("l", 0), ("r", 1)):
            context = {"user": {"side": side}}
            policy.learn(context, actions, best, 1.0, 0.5)
            policy.learn(context, actions, 1 - best, 0.0, 0.5)
    assert policy.pmf({"user": {"side": "l"}}, actions).argmax() == 0
    assert policy.pmf({"user": {"side": "r"}}, actions).argmax() == 1


def test_reward_becomes_a_cost_and_learning_prefers_rewarded_actions() -> None:
    """Positive rewards make VW, which minimises cost, prefer that action."""
    policy = VWPolicy(exploration="epsilon", epsilon=0.2)
    for _ in range(100):
        policy.learn(toy.context_for(0), toy.ACTIONS, 3, 1.0, 0.2)
        policy.learn(toy.context_for(0), toy.ACTIONS, 1, 0.0, 0.2)
    assert policy.pmf(toy.context_for(0), toy.ACTIONS).argmax() == 3


def test_epsilon_changes_live_without_losing_the_model() -> None:
    """Raising epsilon keeps the greedy action and gives it exactly 1 - eps + eps/n."""
    policy = VWPolicy(exploration="epsilon", epsilon=0.05, floor=1e-6)
    toy.run(policy, 600)
    greedy = [policy.pmf(toy.context_for(s), toy.ACTIONS).argmax() for s in range(3)]
    policy.configure(epsilon=0.4)
    for segment in range(3):
        distribution = policy.pmf(toy.context_for(segment), toy.ACTIONS)
        assert distribution.argmax() == greedy[segment] == toy.best_action(segment)
        assert distribution[greedy[segment]] == pytest.approx(0.6 + 0.4 / 5, abs=1e-6)
    assert policy.params()["epsilon"] == 0.4


@pytest.mark.parametrize(
    ("spec", "changes", "match"),
    [
        ("vw-squarecb", {"epsilon": 0.1}, r"cannot change 'epsilon' while running"),
        ("vw-epsilon", {"epsilon": 1.5}, r"`epsilon` must be in \[0.0, 1.0\], got 1.5"),
        ("vw-softmax", {"softmax_lambda": -1.0}, r"`softmax_lambda` must be finite and > 0"),
        ("vw-rnd", {"bit_precision": 20}, r"cannot change 'bit_precision' while running"),
    ],
)
def test_invalid_live_changes_are_refused(spec: str, changes: dict[str, float], match: str) -> None:
    """configure refuses parameters the exploration does not use, and bad values."""
    with pytest.raises(ConfigurationError, match=match):
        make_policy(spec).configure(**changes)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"exploration": "greedy"}, r"`exploration` must be one of \[.*\], got 'greedy'"),
        ({"epsilon": -0.1}, r"`epsilon` must be in \[0.0, 1.0\], got -0.1"),
        ({"bag": 0}, r"`bag` must be an integer in \[1, 64\], got 0"),
        ({"cover": 65}, r"`cover` must be an integer in \[1, 64\], got 65"),
        ({"bit_precision": 40}, r"`bit_precision` must be in \[1, 30\], got 40"),
        ({"interactions": ["c a"]}, r"`interactions` entries must be non-empty"),
        ({"floor": 0.0}, r"`floor` must be in \(0, 1\], got 0.0"),
    ],
)
def test_invalid_hyperparameters_are_refused(params: dict[str, object], match: str) -> None:
    """Construction names the argument, the rule and the value it refuses."""
    with pytest.raises(ConfigurationError, match=match):
        VWPolicy(**params)  # type: ignore[arg-type]


def test_restore_refuses_another_policys_snapshot() -> None:
    """VWPolicy.restore on a uniform policy's snapshot says whose snapshot it is."""
    with pytest.raises(SnapshotError, match="snapshot is of policy 'uniform', not 'vw'"):
        VWPolicy.restore(Uniform().snapshot())


def test_restore_refuses_bytes_that_are_not_a_snapshot() -> None:
    """Arbitrary bytes are refused by their magic prefix."""
    with pytest.raises(SnapshotError, match="bad magic bytes"):
        VWPolicy.restore(b"\x07\x00\x00\x009.11.9")


def test_squarecb_gamma_changes_live_without_losing_the_model() -> None:
    """A larger SquareCB gamma keeps the greedy actions and exploits them more."""
    policy = VWPolicy(exploration="squarecb", floor=1e-6)
    toy.run(policy, 600)
    before = [policy.pmf(toy.context_for(s), toy.ACTIONS) for s in range(3)]
    policy.configure(gamma_scale=1000.0, gamma_exponent=0.6)
    after = [policy.pmf(toy.context_for(s), toy.ACTIONS) for s in range(3)]
    for segment, (old, new) in enumerate(zip(before, after, strict=True)):
        assert new.argmax() == old.argmax() == toy.best_action(segment)
        assert new[new.argmax()] > old[old.argmax()]
    restored = VWPolicy.restore(policy.snapshot())
    assert (restored.gamma_scale, restored.gamma_exponent) == (1000.0, 0.6)
    assert restored.pmf(toy.context_for(1), toy.ACTIONS) == policy.pmf(
        toy.context_for(1), toy.ACTIONS
    )


def test_cover_psi_changes_live() -> None:
    """Cover's psi, frozen into VW's model, changes on the running policy."""
    policy = VWPolicy(exploration="cover")
    toy.run(policy, 200)
    before = policy.pmf(toy.context_for(0), toy.ACTIONS)
    policy.configure(psi=0.25)
    assert policy.params()["psi"] == 0.25
    assert policy.pmf(toy.context_for(0), toy.ACTIONS) == before  # psi acts while learning
    assert "--psi 0.25" in policy._vw.get_arguments()


def test_counts_that_shape_the_model_cannot_change_live() -> None:
    """The number of bagged or cover policies is refused as a live change."""
    with pytest.raises(ConfigurationError, match="cannot change 'bag' while running"):
        VWPolicy(exploration="bag").configure(bag=3)


def test_fast_path_predicts_exactly_like_pyvw() -> None:
    """The policy's native-binding path gives pyvw.Workspace.predict's probabilities."""
    policy = VWPolicy(exploration="softmax", floor=1e-9)
    toy.run(policy, 300)
    for segment in range(3):
        context = toy.context_for(segment)
        expected = policy._vw.predict(to_vw_lines(context, toy.ACTIONS))
        total = sum(max(p, 0.0) for p in expected)
        got = policy.pmf(context, toy.ACTIONS)
        assert list(got) == pytest.approx([p / total for p in expected], abs=1e-7)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_features_are_refused(value: float) -> None:
    """NaN and infinite feature values are refused before VW can learn them."""
    policy = VWPolicy()
    context = {"user": {"info": "x", "score": value}}
    with pytest.raises(InvalidFeaturesError, match=r"feature user\.score must be finite"):
        policy.pmf(context, toy.ACTIONS)
    with pytest.raises(InvalidFeaturesError, match=r"feature user\.score must be a finite number"):
        policy.learn(context, toy.ACTIONS, 0, 1.0, 0.5)


def test_an_empty_context_still_gives_one_probability_per_action() -> None:
    """With no context features VW still sees a shared line, not an extra action."""
    distribution = VWPolicy().pmf({}, toy.ACTIONS[:3])
    assert len(distribution) == 3


def test_prediction_lines_are_to_vw_lines_with_repeated_actions_written_once() -> None:
    """Kept lines are reused only for the very same Action; the text is always VW's."""
    policy = VWPolicy(exploration="epsilon", seed=1)
    golf = Action("golf", {"item": {"topic": "golf", "len": 0.5}})
    chess = Action("chess", {"item": {"topic": "chess"}})
    context = {"user": {"age": 0.25}}
    first = policy._prediction_lines(context, [golf, chess])
    assert first == to_vw_lines(context, [golf, chess])
    # The same objects again: the kept lines, same text, same distribution as fresh text.
    assert policy._prediction_lines({"user": {"age": 0.5}}, [chess, golf]) == to_vw_lines(
        {"user": {"age": 0.5}}, [chess, golf]
    )
    # An equal id with other features is another action: its own line, not the kept one.
    changed = Action("golf", {"item": {"topic": "golf", "len": 0.75}})
    lines = policy._prediction_lines(context, [changed, chess])
    assert lines == to_vw_lines(context, [changed, chess])
    assert "len:0.75" in lines[1]
    fresh = VWPolicy(exploration="epsilon", seed=1)
    assert (
        policy.pmf(context, [golf, chess]).probabilities
        == fresh.pmf(context, [golf, chess]).probabilities
    )


def _escaped_text(prefix: str, features: Any, action_id: str | None = None) -> str:
    """Namespaces as VW text, every name and value escaped, every number as f-strings write it."""
    parts = []
    for namespace, values in features.items():
        tokens = [f" |{prefix}{escape(namespace)}"]
        for name, value in values.items():
            if isinstance(value, str):
                tokens.append(f"{escape(name)}={escape(value)}")
            elif value:  # VW drops a zero
                tokens.append(f"{escape(name)}:{value}")
        parts.append(" ".join(tokens))
    if action_id is not None:
        parts.append(ID_TOKEN + escape(action_id))
    return "".join(parts)


def _reference_text(context: Any, actions: list[Action]) -> str:
    """A decision's VW text with every name and value escaped and every number by repr.

    Joined as pyvw joins lines (:func:`~policies.vwtext.example_text`): the text's last
    blanks are stripped, as a last id ending in ``"\\x0b"`` has one that escape() keeps.
    """
    lines = ["shared" + (_escaped_text("c", context) or " |")]
    lines += [_escaped_text("a", a.features, a.id)[1:] for a in actions]
    return example_text(lines)


def _refusal(context: Any, actions: list[Action]) -> str | None:
    """The refusal of the first value that is not finite, the context's first; or None."""
    for features in [context, *(action.features for action in actions)]:
        for namespace, values in features.items():
            for name, value in values.items():
                if not isinstance(value, str) and not math.isfinite(value):
                    return f"feature {namespace}.{name} must be finite, got {value!r}"
    return None


_names = st.sampled_from(["age", "tier", "x_1", "a.b", "a b", "x=y", "50%", "é", "a:b", ""])
_values = st.one_of(
    st.sampled_from(["gold", "", "a b", "x|y", "a:b", "50%", "tab\there", "nul\0", "日本"]),
    st.floats(),
    st.sampled_from([0.0, -0.0, 1e-05, 9.9e-05, 1e-4, 2.5e-7, 1e16, 1e22, 0.1, 1 / 3]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
)
_features = st.dictionaries(
    st.sampled_from(["user", "item", "a b", "id", ""]),
    st.dictionaries(_names, _values, max_size=4),
    max_size=3,
)
_POLICY = VWPolicy(exploration="epsilon")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    context=_features,
    actions=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "x:y", "id with space", "q%", "vt\x0b", "\x1f"]), _features
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda action: action[0],
    ),
)
@example(  # a kept action's refusal must not come before the context's
    context={"user": {"age": math.nan}}, actions=[("a", {"item": {"len": math.inf}})]
)
def test_prediction_text_is_every_name_escaped_and_every_number_written_by_repr(
    context: Any, actions: list[tuple[str, Any]]
) -> None:
    """The one-pass text (fresh, then kept lines) is the escaped text, or the refusal.

    The refusal names the first value that is not finite in the order the text is
    written, the context's first, however often the actions came before.
    """
    offered = [Action(i, f) for i, f in actions]
    refusal = _refusal(context, offered)
    for _ in range(3):  # fresh, then written on its own the second time, then kept
        if refusal is None:
            assert _POLICY._prediction_text(context, offered) == _reference_text(context, offered)
        else:
            with pytest.raises(InvalidFeaturesError) as raised:
                _POLICY._prediction_text(context, offered)
            assert str(raised.value) == refusal


def _random_decision(rng: random.Random, catalog: list[Action]) -> tuple[Any, list[Action]]:
    """A context and offer like an app's: long floats, ints, zeros, categories, repeats."""
    context = {
        "user": {
            "age": rng.random(),
            "tier": rng.choice(["free", "gold", "a b"]),
            "visits": rng.randint(0, 40),
        },
        "page": {"scroll": round(rng.random(), 3), "dwell": rng.random() * 30, "x": 1e-05},
    }
    fresh = [
        Action(
            f"new:{rng.randrange(50)}",
            {"item": {"len": rng.random(), "topic": rng.choice(["golf", "x|y"]), "n": 0.0}},
        )
        for _ in range(rng.randint(0, 3))
    ]
    offered = {a.id: a for a in [*rng.sample(catalog, rng.randint(1, 4)), *fresh]}
    return context, list(offered.values())


@pytest.mark.parametrize("exploration", ["squarecb", "epsilon", "softmax", "bag", "cover", "rnd"])
def test_pmf_is_pyvw_text_predict_on_random_decisions(exploration: str) -> None:
    """The policy's distribution is exactly what pyvw's text predict gives, floored."""
    rng = random.Random(exploration)
    catalog = [
        Action(f"item-{j}", {"item": {"len": rng.random(), "topic": f"t{j % 3}"}}) for j in range(8)
    ]
    policy = VWPolicy(exploration=exploration, seed=1)  # type: ignore[arg-type]
    for _ in range(60):
        context, offered = _random_decision(rng, catalog)
        chosen = rng.randrange(len(offered))
        policy.learn(context, offered, chosen, rng.choice([0.0, 1.0]), 1 / len(offered))
    for _ in range(60):
        context, offered = _random_decision(rng, catalog)
        lines = _reference_text(context, offered).split("\n")
        weights = [max(p, 0.0) for p in policy._vw.predict(lines)]
        expected = Distribution.from_weights(weights, floor=policy.floor)
        assert policy.pmf(context, offered) == expected


def test_a_model_file_keeping_an_option_beyond_a_bandits_is_refused_by_name() -> None:
    """VW applies the options a model file keeps: one that would write a file is refused,
    and the policy keeps serving what it served."""
    trained = make_policy("vw-epsilon")
    trained.learn({"u": {"x": 1.0}}, [Action("a"), Action("b")], 0, 1.0, 0.5)
    crafted = rewrite_options(trained.model_file(), {"learning_rate": "-f", "power_t": "/tmp/x"})
    policy = make_policy("vw-epsilon")
    before = policy.pmf({"u": {"x": 1.0}}, [Action("a"), Action("b")]).probabilities
    with pytest.raises(SnapshotError, match="keeps the option '-f'"):
        policy.load_model_file(crafted)
    after = policy.pmf({"u": {"x": 1.0}}, [Action("a"), Action("b")]).probabilities
    assert after == before
    policy.load_model_file(trained.model_file())  # its own options pass


@pytest.mark.parametrize("exploration", ["epsilon", "squarecb", "bag"])
def test_a_model_files_id_stays_through_snapshots_settings_and_learning(exploration: str) -> None:
    """A model loaded from a file with an id keeps it through what a served model goes through."""
    trained = VWPolicy(exploration=exploration, seed=1)  # type: ignore[arg-type]
    trained.learn({"u": {"x": 1.0}}, [Action("a"), Action("b")], 0, 1.0, 0.5)
    served = VWPolicy(exploration=exploration, seed=1)  # type: ignore[arg-type]
    served.load_model_file(trained.model_file(model_id="import:abc"))
    restored = VWPolicy.restore(served.snapshot())
    assert isinstance(restored, VWPolicy)
    restored.configure(floor=0.01, **dict.fromkeys(restored.tunable_params() - {"floor"}, 0.3))
    restored.learn({"u": {"x": 2.0}}, [Action("a"), Action("b")], 1, 0.0, 0.5)
    again = VWPolicy.restore(restored.snapshot())
    assert isinstance(again, VWPolicy)
    assert model_file_id(again.model_file()) == "import:abc"
    assert model_file_id(again.model_file(model_id="other")) == "other"
    assert model_file_id(trained.model_file()) == ""
