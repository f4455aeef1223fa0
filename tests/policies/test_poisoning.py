"""Poisoning: no input can leave any registered policy with a non-finite model.

Every registered policy is fed extreme, tiny, negative and NaN-adjacent rewards and
feature values. Those beyond the limits (``REWARD_LIMIT``, ``FEATURE_VALUE_LIMIT``) are
refused, naming the rule, and change nothing; those at or inside them are learned, and
the model stays finite (:meth:`Policy.check_model`) with valid distributions, also
after a snapshot round trip.
"""

from __future__ import annotations

import math
import random
import sys
import warnings
from datetime import UTC, datetime

import pytest

import policies._base
from bandit.errors import InvalidFeaturesError, InvalidFeedbackError, InvalidModelError
from policies import Action, Distribution, Policy, available, make_policy
from policies._base import FEATURE_VALUE_LIMIT, REWARD_LIMIT
from policies._distribution import SUM_TOLERANCE
from policies._types import Context
from policies.vw import VWPolicy, logged_example
from tests.policies import toy

POLICIES = available()

TINY = 5e-324  # the smallest positive float (subnormal)

REFUSED_REWARDS = [
    1e308,
    -1e308,
    3.5e38,  # just past float32's largest: the reward that broke vw-squarecb
    -3.5e38,
    REWARD_LIMIT * (1 + 1e-9),
    math.inf,
    -math.inf,
    math.nan,
    sys.float_info.max,
]

REFUSED_FEATURES = [
    1e308,
    -1e308,
    1e30,
    FEATURE_VALUE_LIMIT * (1 + 1e-9),
    -FEATURE_VALUE_LIMIT * (1 + 1e-9),
    10**400,  # an int no float can hold
    math.inf,
    math.nan,
]

# Learned: the limits themselves, and everything tiny, negative or NaN-adjacent inside them.
EXTREME_REWARDS = [REWARD_LIMIT, -REWARD_LIMIT, TINY, -TINY, 0.0, 1e-300, -1e-300, 1.0]
EXTREME_FEATURES = [
    FEATURE_VALUE_LIMIT,
    -FEATURE_VALUE_LIMIT,
    TINY,
    -TINY,
    1e-300,
    -1e-300,
    1e-38,  # around float32's smallest normal: VW reads subnormals
    1e-45,
    FEATURE_VALUE_LIMIT - 1,
    int(FEATURE_VALUE_LIMIT),
]

PROBES: list[Context] = [
    {},
    toy.context_for(0),
    {"user": {"x": FEATURE_VALUE_LIMIT, "y": -FEATURE_VALUE_LIMIT}},
    {"user": {"x": TINY, "y": 1e-300}},
]


@pytest.fixture(params=POLICIES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _valid(distribution: Distribution, n: int) -> None:
    assert len(distribution) == n
    assert all(math.isfinite(p) and 0.0 < p <= 1.0 for p in distribution)
    assert abs(math.fsum(distribution) - 1.0) <= SUM_TOLERANCE


def _pmfs(policy: Policy) -> list[tuple[float, ...]]:
    return [policy.pmf(context, toy.ACTIONS).probabilities for context in PROBES]


def _assert_finite(policy: Policy) -> None:
    policy.check_model()
    for context in PROBES:
        _valid(policy.pmf(context, toy.ACTIONS), len(toy.ACTIONS))


@pytest.mark.parametrize("reward", REFUSED_REWARDS, ids=repr)
def test_rewards_beyond_the_limit_are_refused_and_change_nothing(name: str, reward: float) -> None:
    """A reward past REWARD_LIMIT (or not finite) is refused by name; the model is as before."""
    policy = make_policy(name)
    toy.run(policy, 20)
    before = _pmfs(policy)
    learned = policy.n_learned
    with pytest.raises(InvalidFeedbackError, match=r"`reward` must be finite and within"):
        policy.learn(toy.context_for(1), toy.ACTIONS, 0, reward, 0.2)
    assert policy.n_learned == learned
    assert _pmfs(policy) == before
    _assert_finite(policy)


@pytest.mark.parametrize("value", REFUSED_FEATURES, ids=repr)
@pytest.mark.parametrize("where", ["context", "action"])
def test_feature_values_beyond_the_limit_are_refused_and_change_nothing(
    name: str, value: float, where: str
) -> None:
    """A feature value past FEATURE_VALUE_LIMIT is refused naming the feature; nothing learned."""
    policy = make_policy(name)
    toy.run(policy, 20)
    before = _pmfs(policy)
    context: Context = toy.context_for(0)
    actions = list(toy.ACTIONS)
    if where == "context":
        context = {**context, "user": {"x": value}}
    else:
        actions[2] = Action(actions[2].id, {"item": {"size": value}})
    with pytest.raises(InvalidFeaturesError, match=r"must be a finite number within"):
        policy.learn(context, actions, 2, 1.0, 0.2)
    assert _pmfs(policy) == before
    _assert_finite(policy)


def test_extreme_inputs_inside_the_limits_keep_the_model_finite(name: str) -> None:
    """Rewards and features at the limits, tiny, negative and subnormal leave it finite."""
    policy = make_policy(name)
    rng = random.Random(7)
    for step in range(60):
        values = [rng.choice(EXTREME_FEATURES) for _ in range(4)]
        context: Context = {"user": {"a": values[0], "b": values[1], "tier": "gold"}}
        actions = [
            Action("x", {"item": {"size": values[2]}}),
            Action("y", {"item": {"size": values[3], "kind": "k"}}),
            Action("z"),
        ]
        reward = EXTREME_REWARDS[step % len(EXTREME_REWARDS)]
        policy.learn(context, actions, step % 3, reward, rng.choice([1e-3, 0.5, 1.0]))
    _assert_finite(policy)
    restored = Policy.restore(policy.snapshot())
    _assert_finite(restored)
    assert _pmfs(restored) == _pmfs(policy) or policy.samples


def test_many_features_at_the_limit_keep_the_model_finite(name: str) -> None:
    """Hundreds of features, all at the value limit, with alternating extreme rewards."""
    policy = make_policy(name)
    context: Context = {
        f"ns{k}": {f"f{j}": FEATURE_VALUE_LIMIT * (-1) ** j for j in range(16)} for k in range(8)
    }
    actions = [
        Action(f"a{i}", {"item": {f"g{j}": -FEATURE_VALUE_LIMIT for j in range(8)}})
        for i in range(4)
    ]
    for step in range(8):
        reward = REWARD_LIMIT if step % 2 else -REWARD_LIMIT
        policy.learn(context, actions, step % 4, reward, 0.25)
    policy.check_model()
    _valid(policy.pmf(context, actions), len(actions))
    _assert_finite(policy)


def test_the_reward_that_broke_vw_squarecb_is_refused() -> None:
    """The finding: reward 1e308 once made every rank on vw-squarecb fail with NaN."""
    policy = make_policy("vw-squarecb")
    toy.run(policy, 20)
    with pytest.raises(InvalidFeedbackError, match=r"got 1e\+308"):
        policy.learn(toy.context_for(0), toy.ACTIONS, 0, 1e308, 0.5)
    _assert_finite(policy)


@pytest.mark.parametrize(
    "name",
    [
        *(name for name in POLICIES if name.startswith("vw")),
        "linucb",
        "lints",
        "river-greedy-linear",
        "river-greedy-bayesian",
    ],
)
def test_check_model_finds_a_model_poisoned_behind_the_guard(name: str) -> None:
    """A model made non-finite past the input checks (the private hook) fails check_model."""
    policy = make_policy(name)
    toy.run(policy, 20)
    policy.check_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy says it overflowed
        x = 1.0 if name.startswith("vw") else 1e300  # (VW reads 1e300 as float32 inf)
        policy._learn({"user": {"x": x}}, toy.ACTIONS, 0, 1e308, 0.5)
    with pytest.raises(InvalidModelError, match=r"model is not finite"):
        policy.check_model()


def test_an_overflow_while_learning_is_an_invalid_model_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should a huge reward get past the limit, River's tree overflows: learn says so."""
    monkeypatch.setattr(policies._base, "REWARD_LIMIT", math.inf)
    policy = make_policy("river-greedy-tree")
    with pytest.raises(InvalidModelError, match="overflowed learning this outcome"):
        policy.learn({"user": {"x": 1.0}}, toy.ACTIONS, 0, 1e308, 0.5)


@pytest.mark.parametrize("reward", [1e308, REWARD_LIMIT * 2, math.nan])
def test_the_one_pass_writer_leaves_out_of_range_rewards_to_learn(reward: float) -> None:
    """The worker's VW fast path writes nothing past the limits: learn then refuses it."""
    assert _logged(reward=reward) is None
    assert _logged(reward=1.0) is not None


@pytest.mark.parametrize("value", [1e308, FEATURE_VALUE_LIMIT * 2, 10**7, math.inf])
def test_the_one_pass_writer_leaves_out_of_range_features_to_learn(value: float) -> None:
    """Feature values past the limit fall back to the checked path, which refuses them."""
    assert _logged(context={"user": {"x": value}}) is None
    policy = VWPolicy()
    with pytest.raises(InvalidFeaturesError, match=r"feature user\.x must be a finite number"):
        policy.learn({"user": {"x": value}}, [Action("a"), Action("b")], 0, 1.0, 0.5)


def _logged(*, reward: float = 1.0, context: Context | None = None) -> object:
    return logged_example(
        {"user": {"x": 1.0}} if context is None else context,
        ["a", "b"],
        [{}, {}],
        0,
        [0.5, 0.5],
        reward=reward,
        event_id="evt-1",
        timestamp=datetime(2026, 12, 6, tzinfo=UTC),
        ranking=[0, 1],
    )
