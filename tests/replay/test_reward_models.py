"""Reward predictions and the cross-fitted reward models: ridge, logistic, boosted trees."""

from __future__ import annotations

import copy
import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from bandit.errors import ConfigurationError, LogFormatError
from policies import Action
from policies._features import flatten, joint_features
from replay import (
    IPS,
    AutoRewardModel,
    BoostedTrees,
    DoublyRobust,
    HashedLogistic,
    HashedRidge,
    Intervals,
    LoggedDecisions,
    RewardModel,
    RewardPredictions,
    TargetProbabilities,
    make_reward_model,
    reward_models,
)
from replay.reward_models import _GOLDEN, _design, _digest, _hash, _mix

K = 3


def simulate(
    seed: int, n: int = 1500, *, features: bool = True
) -> tuple[LoggedDecisions, np.ndarray]:
    """Uniformly logged decisions whose mean reward is linear in context x action features.

    Each user has a taste ``t_j`` in [0, 1] for each action ``j``; action ``j`` pays 1
    with probability ``0.2 + 0.6 t_j``. Returns the log and the true means ``(n, K)``.
    """
    rng = np.random.default_rng(seed)
    taste = rng.random((n, K))
    mu = 0.2 + 0.6 * taste
    chosen = rng.integers(0, K, n)
    reward = (rng.random(n) < mu[np.arange(n), chosen]).astype(np.float64)
    ids = [f"a{j}" for j in range(K)]
    logs = LoggedDecisions(
        n_actions=np.full(n, K),
        chosen=chosen,
        propensity=np.full(n, 1.0 / K),
        reward=reward,
        action_ids=[ids] * n if features else None,
        contexts=[{"user": {f"likes_a{j}": float(t[j]) for j in range(K)}} for t in taste]
        if features
        else None,
        action_features=[[{"item": {"topic": f"t{j}"}} for j in range(K)]] * n
        if features
        else None,
    )
    return logs, mu


def test_hashed_ridge_is_a_reward_model() -> None:
    """HashedRidge satisfies the RewardModel protocol."""
    assert isinstance(HashedRidge(), RewardModel)


def test_cross_fitted_predictions_recover_the_true_means() -> None:
    """On a problem linear in joint features the predictions are within 0.05 RMSE of truth."""
    logs, mu = simulate(0, n=3000)
    predictions = HashedRidge().cross_fit(logs)
    rmse = math.sqrt(np.mean((predictions.values - mu) ** 2))
    assert rmse < 0.05, rmse


def test_a_rows_prediction_never_sees_its_own_reward() -> None:
    """Changing one row's reward leaves that row's predictions unchanged (cross-fitting)."""
    logs, _ = simulate(1, n=300)
    flipped = LoggedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity,
        reward=np.r_[1.0 - logs.reward[0], logs.reward[1:]],
        action_ids=logs.action_ids,
        contexts=logs.contexts,
        action_features=logs.action_features,
    )
    model = HashedRidge(n_folds=3)
    before, after = model.cross_fit(logs).values, model.cross_fit(flipped).values
    np.testing.assert_array_equal(before[0], after[0])
    changed = np.any(before != after, axis=1)
    assert 100 <= changed.sum() <= 250  # the other folds' rows (about 2/3) moved


def test_same_seed_same_predictions() -> None:
    """Fold assignment is seeded: same seed, same predictions; another seed, others."""
    logs, _ = simulate(2, n=200)
    a = HashedRidge(seed=3).cross_fit(logs).values
    b = HashedRidge(seed=3).cross_fit(logs).values
    c = HashedRidge(seed=4).cross_fit(logs).values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_without_features_the_model_predicts_each_actions_mean_reward() -> None:
    """A log without contexts or ids gives one (shrunk) mean per column."""
    logs, mu = simulate(3, n=3000, features=False)
    values = HashedRidge(alpha=1e-3).cross_fit(logs).values
    assert np.allclose(values, values[0], atol=0.02)  # nothing distinguishes rows
    np.testing.assert_allclose(values[0], mu.mean(axis=0), atol=0.04)


def test_rows_offering_fewer_actions_are_padded_with_zero() -> None:
    """Predictions cover each row's offered actions and leave padding at 0."""
    logs = LoggedDecisions(
        n_actions=np.array([1, 3, 2, 3, 2]),
        chosen=np.array([0, 2, 1, 0, 0]),
        propensity=np.array([1.0, 1 / 3, 0.5, 1 / 3, 0.5]),
        reward=np.array([1.0, 0.0, 1.0, 1.0, 0.0]),
    )
    values = HashedRidge(n_folds=2).cross_fit(logs).values
    assert values.shape == (5, 3)
    assert values[0, 1:].tolist() == [0.0, 0.0]
    assert values[2, 2] == values[4, 2] == 0.0
    assert np.all(np.isfinite(values))


def test_dr_with_the_cross_fitted_ridge_beats_ips() -> None:
    """Over 30 seeds DR with HashedRidge has lower RMSE than IPS and stays unbiased."""
    none = Intervals(n_bootstrap=0)
    errors: dict[str, list[float]] = {"IPS": [], "DR": []}
    for seed in range(30):
        logs, mu = simulate(100 + seed, n=1000)
        target = TargetProbabilities(logs, np.eye(K)[mu.argmax(axis=1)])
        truth = float(mu.max(axis=1).mean())
        rewards = HashedRidge().cross_fit(logs)
        errors["IPS"].append(IPS(none).estimate(logs, target).value - truth)
        errors["DR"].append(
            DoublyRobust(none).estimate(logs, target, rewards=rewards).value - truth
        )
    ips, dr = np.asarray(errors["IPS"]), np.asarray(errors["DR"])
    assert np.sqrt(np.mean(dr**2)) < 0.7 * np.sqrt(np.mean(ips**2))
    assert abs(dr.mean()) < 3 * dr.std(ddof=1) / math.sqrt(dr.size)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: HashedRidge(alpha=0.0), r"`alpha` must be > 0 and finite, got 0.0"),
        (lambda: HashedRidge(alpha=math.nan), r"`alpha` must be > 0 and finite, got nan"),
        (lambda: HashedRidge(alpha=math.inf), r"`alpha` must be > 0 and finite, got inf"),
        (lambda: HashedRidge(alpha="1"), r"`alpha` must be > 0 and finite, got '1'"),
        (
            lambda: HashedRidge(n_features=0),
            r"`n_features` must be an integer in \[1, 16384\], got 0",
        ),
        (
            lambda: HashedRidge(n_features=2**15),
            r"`n_features` must be an integer in \[1, 16384\], got 32768",
        ),
        (lambda: HashedRidge(n_folds=1), r"`n_folds` must be an integer >= 2, got 1"),
        (lambda: HashedRidge(n_folds=2.0), r"`n_folds` must be an integer >= 2, got 2.0"),
        (lambda: HashedRidge(interactions=1), r"`interactions` must be a bool, got 1"),
        (lambda: HashedRidge(seed=-1), r"`seed` must be an integer >= 0, got -1"),
    ],
)
def test_bad_hyperparameters_are_refused(build: Callable[[], object], match: str) -> None:
    """Construction names the argument, the rule and the value it refuses."""
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_fewer_rows_than_folds_is_refused() -> None:
    """Cross-fitting needs a row per fold at least, and says so."""
    logs, _ = simulate(4, n=3)
    with pytest.raises(ConfigurationError, match=r"`n_folds`=5 needs at least 5 rows, got 3"):
        HashedRidge().cross_fit(logs)


def _two_rows() -> LoggedDecisions:
    return LoggedDecisions(
        n_actions=np.array([2, 3]),
        chosen=np.array([1, 0]),
        propensity=np.array([0.5, 0.2]),
        reward=np.array([1.0, 0.0]),
    )


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.zeros((2, 2)), r"reward `values` must have shape \(2, 3\), got \(2, 2\)"),
        (np.zeros(6), r"reward `values` must have shape \(2, 3\), got \(6,\)"),
        (
            np.array([[0.0, 0.0, 0.0], [0.0, math.nan, 0.0]]),
            r"row 1: reward `values` must be finite for every offered action",
        ),
        (
            np.array([[math.inf, 0.0, 0.0], [0.0, 0.0, 0.0]]),
            r"row 0: reward `values` must be finite for every offered action",
        ),
    ],
)
def test_bad_predictions_are_refused(values: np.ndarray, match: str) -> None:
    """Predictions of the wrong shape, or not finite on an offered action, are refused."""
    with pytest.raises(LogFormatError, match=match):
        RewardPredictions(_two_rows(), values)


def test_padding_is_ignored_and_the_input_is_not_mutated() -> None:
    """NaN in padding is accepted and stored as 0; the caller's array is left as it was."""
    values = np.array([[0.1, 0.9, math.nan], [0.3, 0.2, 0.5]])
    predictions = RewardPredictions(_two_rows(), values)
    assert predictions.values[0, 2] == 0.0
    assert math.isnan(values[0, 2])
    assert predictions.at_chosen().tolist() == [0.9, 0.3]
    with pytest.raises(ValueError, match="read-only"):
        predictions.values[0, 0] = 1.0


def _reference_design(logs: LoggedDecisions, d: int, *, interactions: bool) -> np.ndarray:
    """Every pair's features hashed one by one: what the model's design must equal.

    The linear part is joint_features' without products (bias, context, action, the
    action's value winning a shared name), each name by _hash; each product
    ``context name x action name`` by the two names' digests mixed.
    """
    rows: list[np.ndarray] = []
    for i, count in enumerate(logs.n_actions.tolist()):
        context = {} if logs.contexts is None else logs.contexts[i]
        for j in range(count):
            action = Action(
                str(j) if logs.action_ids is None else logs.action_ids[i][j],
                {} if logs.action_features is None else logs.action_features[i][j],
            )
            row = np.zeros(d)
            linear = joint_features(context, action, interactions=False)
            for name, x in linear.items():
                bucket, sign = _hash(name, d)
                row[bucket] += sign * x
            if interactions:
                own = {**flatten(action.features), f"action={action.id}": 1.0}
                products = {
                    (ck, ak): cv * av
                    for ck, cv in flatten(context).items()
                    for ak, av in own.items()
                }
                joined = joint_features(context, action, interactions=True)
                assert len(joined) <= len(linear) + len(products)  # "*" names may merge there
                for (ck, ak), x in products.items():
                    digest = _mix(
                        np.array([_digest(ck)], dtype=np.uint64) * _GOLDEN,
                        np.array([_digest(ak)], dtype=np.uint64),
                    )[0]
                    row[int(digest % np.uint64(d))] += (
                        1.0 if digest >> np.uint64(63) else -1.0
                    ) * x
            rows.append(row)
    return np.array(rows)


def _awkward_log() -> LoggedDecisions:
    """Rows with shared names on both sides, ``*`` in names, no context, a one-action row."""
    contexts: list[dict[str, dict[str, str | float]]] = [
        {"user": {"tier": "gold", "age": 0.5, "zero": 0.0}, "time": {"weekend": 1.0}},
        {"user": {"tier": "basic"}},
        {},
        {"item": {"topic": "golf"}},  # the same name as an action's feature
        {"bias": {"x": 2.0}, "user": {"a*b": 1.0}},  # a "*" in a name
        {"user": {"tier": "gold"}, "item": {"length": 0.5}},  # shared with one action only
    ]
    action_features = [
        {"item": {"topic": "golf", "length": 0.25}},
        {"item": {"topic": "chess"}, "x": {"y*z": 3.0}},
        {},
    ]
    n = len(contexts)
    return LoggedDecisions(
        n_actions=np.array([3, 2, 3, 3, 3, 1]),
        chosen=np.zeros(n, dtype=int),
        propensity=np.full(n, 0.5),
        reward=np.ones(n),
        action_ids=[
            ["a", "b", "c"],
            ["b", "a"],
            ["a", "b", "c"],
            ["a", "b", "c"],
            ["c", "b", "a"],
            ["bias"],
        ],
        contexts=contexts,
        action_features=[[action_features[k % 3] for k in range(3)]] * n,
    )


@pytest.mark.parametrize("interactions", [True, False])
def test_the_design_is_joint_features_hashed_pair_by_pair(interactions: bool) -> None:
    """Every pair's hashed entries sum to its joint features', shared and odd names too."""
    plain = LoggedDecisions(
        n_actions=np.array([2, 3]),
        chosen=np.array([0, 1]),
        propensity=np.full(2, 0.5),
        reward=np.ones(2),
    )
    for logs in (_awkward_log(), plain):
        got = _design(logs, 64, interactions=interactions).toarray()
        expected = _reference_design(logs, 64, interactions=interactions)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def _awkward_rewards(seed: int, copies: int) -> LoggedDecisions:
    """The awkward log's rows repeated, with random choices and rewards."""
    rng = np.random.default_rng(seed)
    base = _awkward_log().take(np.arange(6).repeat(copies))
    chosen = rng.integers(0, base.n_actions)
    return LoggedDecisions(
        n_actions=base.n_actions,
        chosen=chosen,
        propensity=1.0 / base.n_actions,
        reward=rng.binomial(1, 0.2 + 0.1 * chosen).astype(float),
        action_ids=base.action_ids,
        contexts=base.contexts,
        action_features=base.action_features,
    )


@pytest.mark.parametrize("awkward", [False, True])
def test_predictions_are_ridge_fits_on_the_other_folds(awkward: bool) -> None:
    """Each row is predicted by ridge on the other folds' logged choices, with their mean."""
    logs = _awkward_rewards(5, 40) if awkward else simulate(5, n=400)[0]
    model = HashedRidge(alpha=0.5, n_features=256, n_folds=4, seed=7)
    values = model.cross_fit(logs).values
    design = _reference_design(logs, 256, interactions=True)
    first = np.cumsum(logs.n_actions) - logs.n_actions  # each row's first pair
    fold = np.random.default_rng(7).permutation(logs.n) % 4
    for k in range(4):
        train = fold != k
        mean = logs.reward[train].mean()
        ridge = Ridge(alpha=0.5, fit_intercept=False, solver="cholesky")
        ridge.fit(design[(first + logs.chosen)[train]], logs.reward[train] - mean)
        for row in np.flatnonzero(~train).tolist():
            count = int(logs.n_actions[row])
            expected = ridge.predict(design[first[row] : first[row] + count]) + mean
            np.testing.assert_allclose(values[row, :count], expected, rtol=0, atol=1e-9)


def test_block_and_batch_sizes_do_not_change_the_predictions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoding a few rows and entries at a time predicts what one big block does."""
    logs = _awkward_rewards(8, 5)
    at_once = HashedRidge(n_folds=3).cross_fit(logs).values
    monkeypatch.setattr(reward_models, "_BLOCK_ROWS", 4)
    monkeypatch.setattr(reward_models, "_BATCH_ENTRIES", 7)
    np.testing.assert_allclose(
        HashedRidge(n_folds=3).cross_fit(logs).values, at_once, rtol=0, atol=1e-12
    )


def test_equal_features_in_separate_objects_predict_the_same() -> None:
    """Actions are recognised by id and features object; copies only cost time."""
    logs, _ = simulate(6, n=300)
    assert logs.action_features is not None
    copied = LoggedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity,
        reward=logs.reward,
        action_ids=[list(ids) for ids in logs.action_ids or []],
        contexts=logs.contexts,
        action_features=[copy.deepcopy(list(row)) for row in logs.action_features],
    )
    np.testing.assert_allclose(
        HashedRidge().cross_fit(copied).values,
        HashedRidge().cross_fit(logs).values,
        rtol=0,
        atol=1e-12,
    )


def test_too_few_action_features_are_refused() -> None:
    """A row whose action_features miss an offered action is named (extra ones are unused)."""
    logs = LoggedDecisions(
        n_actions=np.array([2, 2]),
        chosen=np.array([0, 1]),
        propensity=np.full(2, 0.5),
        reward=np.ones(2),
        action_features=[[{}, {}], [{}]],
    )
    with pytest.raises(
        LogFormatError, match=r"row 1: `action_features` must list 2 actions, got 1"
    ):
        HashedRidge(n_folds=2).cross_fit(logs)


def test_memory_beyond_the_predictions_does_not_grow_with_the_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten times the rows: the peak beyond the returned predictions grows by < 4 B a row."""
    monkeypatch.setattr(reward_models, "_BLOCK_ROWS", 256)
    monkeypatch.setattr(reward_models, "_BATCH_ENTRIES", 2**12)
    extra = []
    for n in (5_000, 50_000):
        logs, _ = simulate(7, n=n)
        tracemalloc.start()
        try:
            values = HashedRidge().cross_fit(logs).values
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        extra.append(peak - values.nbytes)
    assert extra[1] - extra[0] < 4 * 45_000, extra


# -- bounded and nonlinear models, held-out quality ----------------------------------------


def rare_clicks(seed: int, n: int = 40_000) -> tuple[LoggedDecisions, np.ndarray]:
    """A click log with a 0.4% click rate: segments, an activity level, 4 items.

    Item ``j``'s click log-odds are ``taste[segment, j] + slope[j] (activity - 0.5)``
    plus a constant that sets the mean click probability to 0.004; the logger prefers
    item 0. Returns the log and the true click probabilities ``(n, 4)``.
    """
    rng = np.random.default_rng(seed)
    taste = np.random.default_rng(99).normal(0.0, 0.8, (4, K + 1))
    slope = np.array([3.0, -3.0, 2.0, -2.0])
    segment = rng.integers(0, 4, n)
    activity = rng.random(n).round(3)
    logit = taste[segment] + slope * (activity[:, None] - 0.5)
    mu = 0.004 * np.exp(logit) / np.exp(logit).mean()
    logged = np.array([0.4, 0.2, 0.2, 0.2])
    chosen = rng.choice(K + 1, size=n, p=logged)
    reward = (rng.random(n) < mu[np.arange(n), chosen]).astype(np.float64)
    ids = [f"item-{j}" for j in range(K + 1)]
    logs = LoggedDecisions(
        n_actions=np.full(n, K + 1),
        chosen=chosen,
        propensity=logged[chosen],
        reward=reward,
        probabilities=np.tile(logged, (n, 1)),
        action_ids=[ids] * n,
        contexts=[
            {"user": {"segment": f"s{s}", "activity": a}}
            for s, a in zip(segment.tolist(), activity.tolist(), strict=True)
        ],
        action_features=[[{} for _ in ids]] * n,
    )
    return logs, mu


def test_new_models_are_reward_models() -> None:
    """HashedLogistic, BoostedTrees and AutoRewardModel satisfy the RewardModel protocol."""
    for model in (HashedLogistic(), BoostedTrees(), AutoRewardModel()):
        assert isinstance(model, RewardModel)


def test_logistic_on_rare_clicks_is_bounded_and_dr_finds_the_truth() -> None:
    """At a 0.4% click rate the logistic model predicts probabilities; DR with it is right.

    The ridge on the same log predicts some negative click probabilities (the issue's
    symptom); the logistic none, and DR with it is positive and within 3 standard
    errors of the true value of the best-item policy.
    """
    logs, mu = rare_clicks(0)
    assert 0.003 < logs.reward.mean() < 0.005
    target = TargetProbabilities(logs, np.eye(K + 1)[mu.argmax(axis=1)])
    truth = float(mu.max(axis=1).mean())
    logistic = HashedLogistic().cross_fit(logs)
    assert logistic.values.min() >= 0.0
    assert logistic.values.max() <= 1.0
    assert logistic.quality is not None
    assert logistic.quality.out_of_range == 0.0
    assert logistic.quality.metric == "log loss"
    assert logistic.quality.better
    estimate = DoublyRobust(Intervals(n_bootstrap=0)).estimate(logs, target, rewards=logistic)
    assert estimate.value > 0.0
    assert abs(estimate.value - truth) < 3 * estimate.std_error, (estimate.value, truth)
    ridge = HashedRidge().cross_fit(logs)
    assert ridge.quality is not None
    assert ridge.quality.out_of_range > 0.0
    assert logistic.quality.value < ridge.quality.value


def nonlinear(seed: int, n: int = 3000, *, binary: bool) -> LoggedDecisions:
    """Two items; item a pays when the user's age is in the middle, item b otherwise."""
    rng = np.random.default_rng(seed)
    age = rng.random(n).round(2)
    chosen = rng.integers(0, 2, n)
    middle = (age > 0.3) & (age < 0.7)
    mu = np.where(middle == (chosen == 0), 0.8, 0.1)
    reward = (rng.random(n) < mu).astype(float) if binary else mu + rng.normal(0, 0.1, n)
    return LoggedDecisions(
        n_actions=np.full(n, 2),
        chosen=chosen,
        propensity=np.full(n, 0.5),
        reward=reward,
        action_ids=[["a", "b"]] * n,
        contexts=[{"user": {"age": float(a)}} for a in age],
    )


def test_trees_beat_the_linear_models_on_a_nonlinear_problem() -> None:
    """Where the reward is not monotone in a feature, GBT wins on held-out loss and RMSE."""
    binary = nonlinear(0, binary=True)
    gbt, logistic = BoostedTrees(max_iter=30).cross_fit(binary), HashedLogistic().cross_fit(binary)
    assert gbt.quality is not None
    assert logistic.quality is not None
    assert gbt.quality.metric == logistic.quality.metric == "log loss"
    assert gbt.quality.value < logistic.quality.value - 0.05
    assert 0.0 <= gbt.values.min() <= gbt.values.max() <= 1.0

    continuous = nonlinear(1, binary=False)
    gbt, ridge = (
        BoostedTrees(max_iter=30).cross_fit(continuous),
        HashedRidge().cross_fit(continuous),
    )
    assert gbt.quality is not None
    assert ridge.quality is not None
    assert gbt.quality.metric == ridge.quality.metric == "RMSE"
    assert gbt.quality.value < 0.5 * ridge.quality.value
    low, high = continuous.reward.min(), continuous.reward.max()
    assert low <= gbt.values.min() <= gbt.values.max() <= high  # clipped to the range


def test_auto_picks_logistic_for_clicks_and_ridge_otherwise() -> None:
    """0/1 rewards get the logistic model; continuous ones the ridge."""
    clicks, continuous = nonlinear(2, binary=True), nonlinear(2, binary=False)
    assert isinstance(AutoRewardModel(seed=3).choose(clicks), HashedLogistic)
    assert AutoRewardModel(seed=3).choose(continuous) == HashedRidge(seed=3)
    assert make_reward_model("auto", seed=3) == AutoRewardModel(seed=3)
    assert make_reward_model("gbt:max_iter=5") == BoostedTrees(max_iter=5)


def test_logistic_refuses_rewards_outside_zero_one() -> None:
    """The logistic model names the first row whose reward it cannot model."""
    logs = nonlinear(3, n=50, binary=False)
    with pytest.raises(LogFormatError, match=r"row \d+: `reward` must be in \[0, 1\]"):
        HashedLogistic().cross_fit(logs)


def test_a_logistic_rows_prediction_never_sees_its_own_reward() -> None:
    """Changing one row's reward leaves that row's logistic predictions unchanged."""
    logs = nonlinear(4, n=300, binary=True)
    flipped = LoggedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity,
        reward=np.r_[1.0 - logs.reward[0], logs.reward[1:]],
        action_ids=logs.action_ids,
        contexts=logs.contexts,
    )
    for model in (HashedLogistic(n_folds=3), BoostedTrees(n_folds=3, max_iter=5)):
        before, after = model.cross_fit(logs).values, model.cross_fit(flipped).values
        np.testing.assert_array_equal(before[0], after[0])
        assert np.any(before != after)


def test_quality_is_the_held_out_loss_beside_the_training_folds_mean() -> None:
    """The figures are recomputable from the predictions and the fold means."""
    logs = nonlinear(5, n=400, binary=False)
    model = HashedRidge(n_folds=4, seed=2)
    predictions = model.cross_fit(logs)
    fold = np.random.default_rng(2).permutation(logs.n) % 4
    baseline = np.array([logs.reward[fold != k].mean() for k in range(4)])[fold]
    quality = predictions.quality
    assert quality is not None
    assert quality.model == repr(model)
    assert quality.value == pytest.approx(
        math.sqrt(np.mean((logs.reward - predictions.at_chosen()) ** 2))
    )
    assert quality.baseline == pytest.approx(math.sqrt(np.mean((logs.reward - baseline) ** 2)))


def test_a_model_no_better_than_a_constant_is_warned_about() -> None:
    """Rewards that are noise: an overfitted model loses to the constant, and DR says so."""
    rng = np.random.default_rng(6)
    n = 200
    logs = LoggedDecisions(
        n_actions=np.full(n, 2),
        chosen=rng.integers(0, 2, n),
        propensity=np.full(n, 0.5),
        reward=rng.normal(0.0, 1.0, n),
        action_ids=[["a", "b"]] * n,
        contexts=[
            {"u": {f"x{j}": float(v) for j, v in enumerate(row)}}
            for row in rng.normal(size=(n, 20))
        ],
    )
    predictions = HashedRidge(alpha=1e-3).cross_fit(logs)
    assert predictions.quality is not None
    assert not predictions.quality.better
    target = TargetProbabilities(logs, np.tile([1.0, 0.0], (n, 1)))
    warnings = (
        DoublyRobust(Intervals(n_bootstrap=0))
        .estimate(logs, target, rewards=predictions)
        .diagnostics.warnings
    )
    assert any("no better than a constant on held-out rows" in w for w in warnings)
    good = HashedRidge().cross_fit(simulate(0, n=1500)[0])
    assert good.quality is not None
    assert good.quality.better
    assert good.quality.warning() is None


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: HashedLogistic(C=0), r"`C` must be > 0 and finite, got 0"),
        (lambda: HashedLogistic(max_iter=0), r"`max_iter` must be an integer >= 1, got 0"),
        (lambda: HashedLogistic(interactions="yes"), r"`interactions` must be a bool, got 'yes'"),
        (
            lambda: BoostedTrees(max_columns=2000),
            r"`max_columns` must be an integer in \[1, 1024\], got 2000",
        ),
        (lambda: BoostedTrees(learning_rate=0), r"`learning_rate` must be in \(0, 1\], got 0"),
        (
            lambda: BoostedTrees(max_leaf_nodes=1),
            r"`max_leaf_nodes` must be an integer >= 2, got 1",
        ),
        (lambda: make_reward_model("forest"), r"no reward model named 'forest'; known: auto"),
        (lambda: make_reward_model("logistic:alpha=1"), r"reward model 'logistic:alpha=1': "),
    ],
)
def test_bad_model_settings_are_refused(build: Callable[[], object], match: str) -> None:
    """Construction names the argument, the rule and the value it refuses."""
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_logistic_predictions_are_logistic_regressions_on_the_other_folds() -> None:
    """Each row is predicted by scikit-learn's LogisticRegression on the other folds."""
    logs = _awkward_rewards(6, 40)
    model = HashedLogistic(C=0.5, n_features=256, n_folds=3, max_iter=500, seed=4)
    values = model.cross_fit(logs).values
    design = _reference_design(logs, 256, interactions=True)
    first = np.cumsum(logs.n_actions) - logs.n_actions
    fold = np.random.default_rng(4).permutation(logs.n) % 3
    for k in range(3):
        train = fold != k
        reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)
        reference.fit(design[(first + logs.chosen)[train]], logs.reward[train])
        for row in np.flatnonzero(~train).tolist():
            count = int(logs.n_actions[row])
            expected = reference.predict_proba(design[first[row] : first[row] + count])[:, 1]
            np.testing.assert_allclose(values[row, :count], expected, rtol=0, atol=2e-4)
