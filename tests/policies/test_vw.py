"""Vowpal Wabbit policy: text format, conversions, exploration changes, snapshots."""

from __future__ import annotations

import pytest

from bandit.errors import ConfigurationError, InvalidFeaturesError, SnapshotError
from policies import Action, make_policy
from policies.baselines import Uniform
from policies.vw import VWPolicy, reward_to_cost, to_vw_lines
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
        ({"bag": 0}, r"`bag` must be an integer >= 1, got 0"),
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
