"""The conformance battery every registered policy must pass."""

from __future__ import annotations

import copy
import math

import pytest

from bandit.errors import (
    InvalidActionsError,
    InvalidFeaturesError,
    InvalidFeedbackError,
    SnapshotError,
)
from policies import Action, Distribution, FeatureRef, Policy, available, make_policy
from policies._distribution import SUM_TOLERANCE
from tests.policies import toy

POLICIES = available()
LEARNING = [name for name in POLICIES if make_policy(name).learns]
STATIC = [name for name in POLICIES if name not in LEARNING]


@pytest.fixture(params=POLICIES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _check_distribution(distribution: Distribution, n: int, floor: float) -> None:
    assert len(distribution) == n
    assert all(math.isfinite(p) and 0.0 < p <= 1.0 for p in distribution)
    assert abs(math.fsum(distribution) - 1.0) <= SUM_TOLERANCE
    assert min(distribution) >= min(floor, 1.0 / n) * (1 - 1e-12)


def test_every_policy_is_registered_and_named(name: str) -> None:
    """Every registry name builds a Policy whose restore target is its own class."""
    policy = make_policy(name)
    assert isinstance(policy, Policy)
    assert type(Policy.restore(policy.snapshot())) is type(policy)


def test_distribution_is_valid_before_and_after_learning(name: str) -> None:
    """Probabilities are finite, in (0, 1], sum to 1 and respect the floor, always."""
    policy = make_policy(name, floor=0.02)
    _check_distribution(policy.pmf(toy.context_for(0), toy.ACTIONS), toy.N_ACTIONS, 0.02)
    toy.run(policy, 200)
    for segment in range(toy.N_SEGMENTS):
        distribution = policy.pmf(toy.context_for(segment), toy.ACTIONS)
        _check_distribution(distribution, toy.N_ACTIONS, 0.02)


def test_single_action_gets_probability_one(name: str) -> None:
    """With one action offered, it is chosen with probability 1."""
    policy = make_policy(name)
    assert policy.pmf(toy.context_for(1), toy.ACTIONS[:1]).probabilities == (1.0,)


def test_inputs_are_not_mutated(name: str) -> None:
    """Neither pmf nor learn changes the context or the actions they are given."""
    policy = make_policy(name)
    context = {"user": {"segment": "s1", "activity": 0.3}, "device": {"kind": "mobile"}}
    actions = [Action(a.id, {ns: dict(f) for ns, f in a.features.items()}) for a in toy.ACTIONS]
    before = (copy.deepcopy(context), copy.deepcopy(actions))
    distribution = policy.pmf(context, actions)
    policy.learn(context, actions, 2, 1.0, distribution[2])
    policy.pmf(context, actions)
    assert (context, actions) == before


def test_pmf_is_a_pure_function_of_state_and_input(name: str) -> None:
    """Asking twice without learning in between gives the same distribution."""
    policy = make_policy(name)
    toy.run(policy, 50)
    context = toy.context_for(2)
    assert policy.pmf(context, toy.ACTIONS) == policy.pmf(context, toy.ACTIONS)


def test_same_seed_same_choices(name: str) -> None:
    """Two policies built alike, fed the same stream, choose identically."""
    first = toy.run(make_policy(name), 150, seed=3)
    second = toy.run(make_policy(name), 150, seed=3)
    assert [(s.choice.index, s.choice.probability) for s in first] == [
        (s.choice.index, s.choice.probability) for s in second
    ]


def test_snapshot_mid_stream_continues_identically(name: str) -> None:
    """A policy restored mid-stream makes exactly the original's later decisions."""
    original = make_policy(name)
    toy.run(original, 120, seed=5)
    restored = Policy.restore(original.snapshot())
    assert restored.n_learned == original.n_learned == 120
    later_original = toy.run(original, 80, seed=5, start=120)
    later_restored = toy.run(restored, 80, seed=5, start=120)
    assert [s.choice.distribution for s in later_original] == [
        s.choice.distribution for s in later_restored
    ]


def test_unseen_features_and_actions_are_handled(name: str) -> None:
    """New namespaces, features and action ids after training give a valid distribution."""
    policy = make_policy(name)
    toy.run(policy, 100)
    context = {"user": {"segment": "never-seen", "new_score": 3.5}, "weather": {"sky": "rain"}}
    actions = [Action("brand-new", {"promo": {"discount": 0.3}}), toy.ACTIONS[0], Action("x")]
    _check_distribution(policy.pmf(context, actions), 3, policy.floor)
    policy.learn(context, actions, 0, 1.0, 0.5)


def test_pmf_without_is_pmf_without_each_feature(name: str) -> None:
    """The batched leave-one-out answers exactly what pmf says of each reduced decision."""
    policy = make_policy(name)
    toy.run(policy, 100)
    context = {"user": {"segment": "s1", "activity": 0.7, "zero": 0.0}, "page": {"lang": "en"}}
    actions = list(toy.ACTIONS)
    features = [FeatureRef(None, ns, f) for ns, values in context.items() for f in values]
    features += [FeatureRef(2, "item", "kind"), FeatureRef(2, "item", "size")]
    found = policy.pmf_without(context, actions, features)
    for feature, distribution in zip(features, found, strict=True):
        if feature.action is None:
            reduced = {ns: dict(values) for ns, values in context.items()}
            del reduced[feature.namespace][feature.name]
            expected = policy.pmf(reduced, actions)
        else:
            changed = list(actions)
            kept = dict(actions[2].features["item"])
            del kept[feature.name]
            changed[2] = Action(actions[2].id, {"item": kept})
            expected = policy.pmf(context, changed)
        assert distribution.probabilities == pytest.approx(expected.probabilities, rel=1e-12)
    with pytest.raises(InvalidFeaturesError, match=r"no feature user\.age to take away"):
        policy.pmf_without(context, actions, [FeatureRef(None, "user", "age")])
    with pytest.raises(InvalidFeaturesError, match=r"index must be in \[0, 5\), got 5"):
        policy.pmf_without(context, actions, [FeatureRef(5, "item", "kind")])


def test_configuring_live_params_to_their_values_keeps_what_was_learned(name: str) -> None:
    """Re-applying the current live parameters changes nothing that was learned."""
    policy = make_policy(name)
    toy.run(policy, 150)
    before = [policy.pmf(toy.context_for(s), toy.ACTIONS) for s in range(toy.N_SEGMENTS)]
    params = policy.params()
    policy.configure(**{key: params[key] for key in policy.tunable_params()})
    after = [policy.pmf(toy.context_for(s), toy.ACTIONS) for s in range(toy.N_SEGMENTS)]
    assert after == before


@pytest.mark.parametrize("learner", LEARNING)
def test_learning_policies_beat_uniform_on_a_known_problem(learner: str) -> None:
    """A learning policy ends far above uniform on a problem whose best action is known."""
    policy = make_policy(learner)
    toy.run(policy, 1500, seed=11)
    assert toy.policy_value(policy) > toy.UNIFORM_VALUE + 0.3


@pytest.mark.parametrize("baseline", STATIC)
def test_policies_that_declare_no_learning_do_not_change(baseline: str) -> None:
    """A baseline's distributions are the same after learning as before."""
    policy = make_policy(baseline)
    before = [policy.pmf(toy.context_for(s), toy.ACTIONS) for s in range(toy.N_SEGMENTS)]
    toy.run(policy, 100)
    after = [policy.pmf(toy.context_for(s), toy.ACTIONS) for s in range(toy.N_SEGMENTS)]
    assert after == before


def test_there_are_learning_policies_and_baselines() -> None:
    """The registry holds both kinds, so neither parametrized test above is empty."""
    assert LEARNING
    assert STATIC


@pytest.mark.parametrize(
    ("chosen", "reward", "probability", "error", "match"),
    [
        (5, 1.0, 0.5, InvalidFeedbackError, r"`chosen` must be an index in \[0, 5\), got 5"),
        (-1, 1.0, 0.5, InvalidFeedbackError, r"`chosen` must be an index in \[0, 5\), got -1"),
        (
            0,
            math.nan,
            0.5,
            InvalidFeedbackError,
            r"`reward` must be finite and within \[-1e\+09, 1e\+09\].*got nan",
        ),
        (0, math.inf, 0.5, InvalidFeedbackError, r"`reward` must be finite and within .*got inf"),
        (0, 1.0, 0.0, InvalidFeedbackError, r"`probability` must be in \(0, 1\], got 0.0"),
        (0, 1.0, 1.5, InvalidFeedbackError, r"`probability` must be in \(0, 1\], got 1.5"),
    ],
)
def test_learn_rejects_impossible_feedback(
    name: str, chosen: int, reward: float, probability: float, error: type, match: str
) -> None:
    """learn names the argument, the rule and the value for every impossible outcome."""
    with pytest.raises(error, match=match):
        make_policy(name).learn(toy.context_for(0), toy.ACTIONS, chosen, reward, probability)


def test_pmf_rejects_empty_and_repeated_actions(name: str) -> None:
    """No actions, or repeated ids, are refused with the rule in the message."""
    policy = make_policy(name)
    with pytest.raises(InvalidActionsError, match="at least one action"):
        policy.pmf(toy.context_for(0), [])
    with pytest.raises(InvalidActionsError, match=r"distinct ids, repeated: \['item-0'\]"):
        policy.pmf(toy.context_for(0), [toy.ACTIONS[0], toy.ACTIONS[0]])


def test_corrupt_snapshot_is_refused(name: str) -> None:
    """A payload changed after snapshotting makes restore fail with a checksum error."""
    policy = make_policy(name)
    toy.run(policy, 20)
    with pytest.raises(SnapshotError, match="corrupt"):
        Policy.restore(policy.snapshot() + b"\x00")
