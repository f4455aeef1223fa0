"""Target policies built on a log: fixed, uniform, logging, counterfactual learning, snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bandit.errors import ConfigurationError, LogFormatError
from policies import Action, make_policy
from replay import SNIPS, TrustedDecisions
from replay.estimators import IPS
from replay.targets import build_target, parse_target

N_SEGMENTS = N_ACTIONS = 3
GOOD, BAD = 0.8, 0.2
IDS = [f"item-{j}" for j in range(N_ACTIONS)]
ACTION_FEATURES = [{"item": {"kind": f"k{j}"}} for j in range(N_ACTIONS)]


def segment_log(n: int, seed: int = 0) -> tuple[TrustedDecisions, np.ndarray]:
    """A uniformly random log whose best action is the user's segment; also the true means."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, N_SEGMENTS, n)
    chosen = rng.integers(0, N_ACTIONS, n)
    means = np.where(np.arange(N_ACTIONS)[None, :] == segment[:, None], GOOD, BAD)
    reward = rng.binomial(1, means[np.arange(n), chosen]).astype(float)
    logs = TrustedDecisions(
        n_actions=np.full(n, N_ACTIONS),
        chosen=chosen,
        propensity=np.full(n, 1 / N_ACTIONS),
        reward=reward,
        probabilities=np.full((n, N_ACTIONS), 1 / N_ACTIONS),
        action_ids=[IDS] * n,
        contexts=[{"user": {"segment": f"s{s}"}} for s in segment],
        action_features=[ACTION_FEATURES] * n,
    )
    return logs, means


def small_log() -> TrustedDecisions:
    """Three rows offering different actions, with features."""
    ids = [["a", "b"], ["c", "b", "a"], ["c", "d"]]
    return TrustedDecisions(
        n_actions=np.array([2, 3, 2]),
        chosen=np.array([1, 0, 1]),
        propensity=np.array([0.5, 0.2, 0.5]),
        reward=np.array([1.0, 0.0, 1.0]),
        probabilities=np.array([[0.5, 0.5, 0], [0.2, 0.4, 0.4], [0.5, 0.5, 0]]),
        action_ids=ids,
        contexts=[{}] * 3,
        action_features=[[{}] * len(row) for row in ids],
    )


def test_fixed_puts_all_mass_on_the_first_listed_id_offered() -> None:
    """fixed:ID,ID ranks the ids; a row offering none of them takes its first action."""
    target = build_target("fixed:a,b", small_log())
    np.testing.assert_array_equal(
        target.probabilities.probabilities, [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    )
    assert target.running_value is None


def test_uniform_and_logging_targets_are_valid() -> None:
    """uniform spreads over each row's offers; logging reproduces the logged probabilities."""
    logs = small_log()
    uniform = build_target("uniform", logs).probabilities.probabilities
    np.testing.assert_allclose(uniform.sum(axis=1), 1.0)
    np.testing.assert_allclose(uniform[1], [1 / 3] * 3)
    assert uniform[0, 2] == 0.0
    logged = build_target("logging", logs).probabilities
    np.testing.assert_array_equal(logged.probabilities, logs.probabilities)
    np.testing.assert_allclose(logged.weights(), 1.0)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("best", "must be one of fixed:ID"),
        ("fixed:", "must be one of fixed:ID"),
        ("uniform:x", "must be one of"),
        ("policy:", "must be one of"),
        ("snapshot:", "must be one of"),
    ],
)
def test_bad_specs_are_refused_naming_the_spec(spec: str, match: str) -> None:
    """A spec of no known kind raises naming it and the kinds accepted."""
    with pytest.raises(ConfigurationError, match=match):
        parse_target(spec)


def test_targets_refuse_logs_missing_what_they_need() -> None:
    """logging needs every probability, fixed needs ids, policies need features."""
    bare = TrustedDecisions(
        n_actions=np.array([2]),
        chosen=np.array([0]),
        propensity=np.array([0.5]),
        reward=np.array([1.0]),
    )
    with pytest.raises(LogFormatError, match="only the chosen action's probability"):
        build_target("logging", bare)
    with pytest.raises(LogFormatError, match="no action ids"):
        build_target("fixed:a", bare)
    with pytest.raises(LogFormatError, match="features=True"):
        build_target("policy:uniform", bare)
    with pytest.raises(ConfigurationError, match="no policy named 'nope'"):
        build_target("policy:nope", small_log())


def test_counterfactual_learning_finds_the_segment_rule_and_its_true_value() -> None:
    """A learner replayed on a uniform log ends far above uniform and near its true value."""
    logs, means = segment_log(3000)
    learner = build_target("policy:vw-squarecb", logs)
    uniform = build_target("uniform", logs)
    estimate = SNIPS().estimate(logs, learner.probabilities)
    baseline = SNIPS().estimate(logs, uniform.probabilities).value
    truth = float(np.mean(np.sum(learner.probabilities.probabilities * means, axis=1)))
    assert truth > 0.7
    assert estimate.value > baseline + 0.25
    assert abs(estimate.value - truth) < 3 * estimate.std_error
    assert learner.running_value is not None
    assert learner.running_value[-1] == pytest.approx(
        IPS().estimate(logs, learner.probabilities).value
    )
    late = learner.probabilities.probabilities[-500:]
    best = np.array([int(c["user"]["segment"][1]) for c in logs.contexts[-500:]])  # type: ignore[index]
    assert np.mean(late.argmax(axis=1) == best) > 0.95


def test_learning_target_learns_the_logged_choice_with_its_propensity() -> None:
    """Row by row the target is the pmf of a policy fed the log's outcomes, as live."""
    logs, _ = segment_log(60, seed=1)
    target = build_target("policy:vw-epsilon:epsilon=0.1", logs)
    policy = make_policy("vw-epsilon:epsilon=0.1")
    actions = [Action(i, f) for i, f in zip(IDS, ACTION_FEATURES, strict=True)]
    for i in range(logs.n):
        context = logs.contexts[i]  # type: ignore[index]
        np.testing.assert_allclose(
            target.probabilities.probabilities[i], list(policy.pmf(context, actions))
        )
        policy.learn(context, actions, int(logs.chosen[i]), float(logs.reward[i]), 1 / 3)
    assert target.matched_reward is not None
    matched = ~np.isnan(target.matched_reward)
    np.testing.assert_array_equal(target.matched_reward[matched], logs.reward[matched])


def test_snapshot_target_is_evaluated_frozen_or_learning(tmp_path: Path) -> None:
    """snapshot:PATH scores a saved model without learning; snapshot-learn:PATH goes on."""
    train, _ = segment_log(1500, seed=2)
    trained = build_target("policy:vw-squarecb", train)
    assert trained.running_value is not None
    policy = make_policy("vw-squarecb")
    actions = [Action(i, f) for i, f in zip(IDS, ACTION_FEATURES, strict=True)]
    for i in range(train.n):
        policy.learn(
            train.contexts[i], actions, int(train.chosen[i]), float(train.reward[i]), 1 / 3
        )  # type: ignore[index]
    path = tmp_path / "model.snapshot"
    path.write_bytes(policy.snapshot())
    logs, means = segment_log(600, seed=3)
    frozen = build_target(f"snapshot:{path}", logs).probabilities.probabilities
    context = logs.contexts[0]  # type: ignore[index]
    same = [i for i in range(logs.n) if logs.contexts[i] == context]  # type: ignore[index]
    np.testing.assert_allclose(frozen[same], np.tile(frozen[same[0]], (len(same), 1)))
    assert float(np.mean(np.sum(frozen * means, axis=1))) > 0.7
    learning = build_target(f"snapshot-learn:{path}", logs).probabilities.probabilities
    np.testing.assert_allclose(learning[0], frozen[0])
    assert not np.allclose(learning, frozen)
    with pytest.raises(ConfigurationError, match="cannot read the snapshot"):
        build_target(f"snapshot:{tmp_path / 'missing'}", logs)
