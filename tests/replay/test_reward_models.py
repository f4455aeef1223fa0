"""Reward predictions and the cross-fitted hashed ridge reward model."""

from __future__ import annotations

import copy
import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from bandit.errors import ConfigurationError, LogFormatError
from policies import Action
from policies._features import flatten, joint_features
from replay import (
    IPS,
    DoublyRobust,
    HashedRidge,
    Intervals,
    TrustedDecisions,
    RewardModel,
    RewardPredictions,
    TargetProbabilities,
    reward_models,
)
from replay.reward_models import _GOLDEN, _design, _digest, _hash, _mix

K = 3


def simulate(
    seed: int, n: int = 1500, *, features: bool = True
) -> tuple[TrustedDecisions, np.ndarray]:
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
    logs = TrustedDecisions(
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
    flipped = TrustedDecisions(
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
    logs = TrustedDecisions(
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


def _two_rows() -> TrustedDecisions:
    return TrustedDecisions(
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


def _reference_design(logs: TrustedDecisions, d: int, *, interactions: bool) -> np.ndarray:
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


def _awkward_log() -> TrustedDecisions:
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
    return TrustedDecisions(
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
    plain = TrustedDecisions(
        n_actions=np.array([2, 3]),
        chosen=np.array([0, 1]),
        propensity=np.full(2, 0.5),
        reward=np.ones(2),
    )
    for logs in (_awkward_log(), plain):
        got = _design(logs, 64, interactions=interactions).toarray()
        expected = _reference_design(logs, 64, interactions=interactions)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def _awkward_rewards(seed: int, copies: int) -> TrustedDecisions:
    """The awkward log's rows repeated, with random choices and rewards."""
    rng = np.random.default_rng(seed)
    base = _awkward_log().take(np.arange(6).repeat(copies))
    chosen = rng.integers(0, base.n_actions)
    return TrustedDecisions(
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
    copied = TrustedDecisions(
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
    logs = TrustedDecisions(
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
