"""Slate estimators against the true value of simulated rankings under known click models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from policies.errors import ConfigurationError, LogFormatError
from replay import Intervals, LoggedDecisions, TargetProbabilities
from replay.slates import IIPS, RIPS, SIPS, SlateEstimator, consecutive_slates

N_ITEMS, DEPTH = 4, 3
LOGGING = np.array([0.5, 0.0, -0.2, 0.3])  # Plackett-Luce scores of the logging ranker
TARGET = np.array([1.5, -0.5, 0.8, -1.0])  # and of the target ranker
ATTRACTION = np.array([0.8, 0.1, 0.5, 0.3])  # click probability of an examined item
EXAMINATION = np.array([1.0, 0.6, 0.3])  # position-based model: P(position examined)
SLATES = 20_000
INTERVALS = Intervals(n_bootstrap=0)
RANKINGS = list(itertools.permutations(range(N_ITEMS), DEPTH))


def _ranking_probability(scores: np.ndarray, ranking: tuple[int, ...]) -> float:
    left, probability = list(range(N_ITEMS)), 1.0
    for item in ranking:
        probability *= math.exp(scores[item]) / np.exp(scores[left]).sum()
        left.remove(item)
    return probability


def _expected_clicks(ranking: tuple[int, ...], model: str) -> list[float]:
    if model == "independent":  # a position's click depends on its item alone
        return [ATTRACTION[a] * EXAMINATION[k] for k, a in enumerate(ranking)]
    clicks, unclicked = [], 1.0  # cascade: read down until the first click
    for item in ranking:
        clicks.append(unclicked * ATTRACTION[item])
        unclicked *= 1.0 - ATTRACTION[item]
    return clicks


def _truth(model: str) -> float:
    return sum(_ranking_probability(TARGET, r) * sum(_expected_clicks(r, model)) for r in RANKINGS)


def _marginals(scores: np.ndarray) -> np.ndarray:
    """``(DEPTH, N_ITEMS)``: the probability of each item at each position."""
    marginal = np.zeros((DEPTH, N_ITEMS))
    for ranking in RANKINGS:
        for k, item in enumerate(ranking):
            marginal[k, item] += _ranking_probability(scores, ranking)
    return marginal


def _conditionals(scores: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Per slate, the ranker's distribution over the items left, packed in item order."""
    weights = np.where(remaining, np.exp(scores), 0.0)
    order = np.argsort(~remaining, axis=1, kind="stable")  # the items left first, by id
    packed = np.take_along_axis(weights, order, axis=1)  # 0 after them: the padding
    conditional: np.ndarray = packed / packed.sum(axis=1, keepdims=True)
    return conditional


def _simulate(model: str, seed: int) -> tuple[LoggedDecisions, TargetProbabilities,
                                              LoggedDecisions, TargetProbabilities]:  # fmt: skip
    """Rankings logged by the logging ranker, one row per (slate, position).

    Returns the rows with conditional probabilities (for RIPS and SIPS: each position
    over the items the positions above left) and with marginal ones (for IIPS: over
    every item), each with the target's probabilities of the same kind.
    """
    rng = np.random.default_rng(seed)
    rankings = np.argsort(-(LOGGING + rng.gumbel(size=(SLATES, N_ITEMS))), axis=1)[:, :DEPTH]
    if model == "independent":
        clicks = rng.random((SLATES, DEPTH)) < ATTRACTION[rankings] * EXAMINATION
    else:
        attracted = rng.random((SLATES, DEPTH)) < ATTRACTION[rankings]
        clicks = attracted & (np.cumsum(attracted, axis=1) == 1)
    remaining = np.ones((SLATES, N_ITEMS), dtype=bool)
    chosen, logged, target = [], [], []
    for k in range(DEPTH):
        item = rankings[:, k]
        chosen.append(remaining.cumsum(axis=1)[np.arange(SLATES), item] - 1)  # among the left
        logged.append(_conditionals(LOGGING, remaining))
        target.append(_conditionals(TARGET, remaining))
        remaining[np.arange(SLATES), item] = False
    # rows slate by slate: (slate 0, position 0), (slate 0, position 1), ...
    chosen_rows = np.stack(chosen, axis=1).ravel()
    logged_rows = np.stack(logged, axis=1).reshape(-1, N_ITEMS)
    target_rows = np.stack(target, axis=1).reshape(-1, N_ITEMS)
    position = np.tile(np.arange(DEPTH), SLATES)
    reward = clicks.astype(float).ravel()
    conditional = LoggedDecisions(
        n_actions=N_ITEMS - position, chosen=chosen_rows,
        propensity=logged_rows[np.arange(chosen_rows.size), chosen_rows], reward=reward,
        probabilities=logged_rows, position=position,
    )  # fmt: skip
    marginal_logged, marginal_target = _marginals(LOGGING), _marginals(TARGET)
    items = rankings.ravel()
    marginal = LoggedDecisions(
        n_actions=np.full(items.size, N_ITEMS), chosen=items,
        propensity=marginal_logged[position, items], reward=reward,
        probabilities=marginal_logged[position], position=position,
    )  # fmt: skip
    return (
        conditional,
        TargetProbabilities(conditional, target_rows),
        marginal,
        TargetProbabilities(marginal, marginal_target[position]),
    )


@pytest.mark.parametrize(
    ("model", "estimator"),
    [
        ("independent", IIPS(INTERVALS)),
        ("independent", RIPS(INTERVALS)),
        ("independent", SIPS(INTERVALS)),
        ("cascade", RIPS(INTERVALS)),
        ("cascade", SIPS(INTERVALS)),
    ],
)
def test_the_matching_estimator_covers_the_true_value(
    model: str, estimator: SlateEstimator
) -> None:
    """Each estimator's interval holds the target's true clicks per page under its model."""
    conditional, conditional_target, marginal, marginal_target = _simulate(model, seed=0)
    slates = consecutive_slates(conditional.position)  # type: ignore[arg-type]
    if isinstance(estimator, IIPS):
        estimate = estimator.estimate(marginal, marginal_target, slates=slates)
    else:
        estimate = estimator.estimate(conditional, conditional_target, slates=slates)
    truth = _truth(model)
    assert estimate.ci is not None
    assert truth in estimate.ci, (estimate.value, truth)
    assert estimate.n_slates == SLATES
    assert sum(value for _, value in estimate.by_position) == pytest.approx(estimate.value)


def test_iips_per_position_values_match_each_position_under_the_independent_model() -> None:
    """Without slate numbers IIPS values each position on its own rows, and they sum up."""
    _, _, marginal, marginal_target = _simulate("independent", seed=5)
    estimate = IIPS(INTERVALS).estimate(marginal, marginal_target)
    per_position = _marginals(TARGET) @ ATTRACTION * EXAMINATION
    assert [k for k, _ in estimate.by_position] == [0, 1, 2]
    assert np.array(estimate.by_position)[:, 1] == pytest.approx(per_position, abs=0.03)
    assert estimate.n_slates == marginal.n


def test_iips_is_biased_under_the_cascade_where_rips_is_not() -> None:
    """Under the cascade IIPS misses the truth by far more than its interval; RIPS holds it."""
    conditional, conditional_target, marginal, marginal_target = _simulate("cascade", seed=3)
    slates = consecutive_slates(conditional.position)  # type: ignore[arg-type]
    truth = _truth("cascade")
    iips = IIPS(INTERVALS).estimate(marginal, marginal_target, slates=slates)
    rips = RIPS(INTERVALS).estimate(conditional, conditional_target, slates=slates)
    assert iips.ci is not None
    assert rips.ci is not None
    assert truth not in iips.ci
    assert iips.value - truth > 5 * iips.std_error  # 0.12 clicks too many, in expectation
    assert truth in rips.ci
    assert (
        rips.std_error
        < SIPS(INTERVALS).estimate(conditional, conditional_target, slates=slates).std_error
    )


def test_the_bootstrap_interval_is_over_pages() -> None:
    """The bootstrap resamples pages: its interval is close to the normal one."""
    conditional, target, _, _ = _simulate("cascade", seed=2)
    slates = consecutive_slates(conditional.position)  # type: ignore[arg-type]
    estimate = RIPS(Intervals(n_bootstrap=200, seed=1)).estimate(conditional, target, slates=slates)
    assert estimate.ci is not None
    assert estimate.bootstrap_ci is not None
    width = estimate.ci.high - estimate.ci.low
    assert estimate.bootstrap_ci.high - estimate.bootstrap_ci.low == pytest.approx(width, rel=0.3)


def _small(position: list[int] | None) -> tuple[LoggedDecisions, TargetProbabilities]:
    logs = LoggedDecisions(
        n_actions=np.full(3, 2), chosen=np.zeros(3, dtype=np.int64),
        propensity=np.full(3, 0.5), reward=np.ones(3),
        position=None if position is None else np.array(position),
    )  # fmt: skip
    return logs, TargetProbabilities(logs, np.full((3, 2), 0.5))


@pytest.mark.parametrize(
    ("estimator", "position", "slates", "error", "match"),
    [
        (IIPS(), None, None, LogFormatError, "needs each row's `position`"),
        (RIPS(), [0, 1, 0], None, ConfigurationError, "RIPS needs `slates`"),
        (SIPS(), [0, 0, 1], [0, 0, 1], LogFormatError, "row 1: slate 0 holds position 0 twice"),
        (RIPS(), [0, 1, 0], [0, 0], LogFormatError, r"`slates` must be \(3,\) integers"),
        (RIPS(), [0, 1, 0], [0.0, 0.0, 1.0], LogFormatError, "`slates` must be"),
    ],
)
def test_bad_inputs_are_refused(
    estimator: SlateEstimator,
    position: list[int] | None,
    slates: list[float] | None,
    error: type[Exception],
    match: str,
) -> None:
    """A log without positions, missing slates or a repeated position names the rule."""
    logs, target = _small(position)
    with pytest.raises(error, match=match):
        estimator.estimate(logs, target, slates=None if slates is None else np.array(slates))


@pytest.mark.parametrize(
    ("position", "match"),
    [
        ([0, -1, 2], "row 1: `position` must be >= 0, got -1"),
        ([0, 1], r"`position` must be \(3,\) integers"),
        ([0.0, 1.0, 2.0], r"`position` must be \(3,\) integers, got float64"),
    ],
)
def test_a_bad_position_column_is_refused(position: list[float], match: str) -> None:
    """LoggedDecisions checks the position column once, naming the rule."""
    with pytest.raises(LogFormatError, match=match):
        _small(position)  # type: ignore[arg-type]


def test_take_carries_the_position() -> None:
    """Resampling rows keeps each row's position."""
    logs, _ = _small([2, 0, 1])
    assert logs.take(np.array([2, 2, 0])).position.tolist() == [1, 1, 2]  # type: ignore[union-attr]


@pytest.mark.parametrize("estimator", [IIPS(INTERVALS), RIPS(INTERVALS), SIPS(INTERVALS)])
def test_the_logging_policy_as_target_gives_the_logged_clicks_per_page(
    estimator: SlateEstimator,
) -> None:
    """With the logger as the target every weight is 1: the value is the mean page total."""
    conditional, _, marginal, _ = _simulate("cascade", seed=4)
    slates = consecutive_slates(conditional.position)  # type: ignore[arg-type]
    logs = marginal if isinstance(estimator, IIPS) else conditional
    assert logs.probabilities is not None
    estimate = estimator.estimate(
        logs, TargetProbabilities(logs, logs.probabilities), slates=slates
    )
    assert estimate.value == pytest.approx(logs.reward.sum() / SLATES, rel=1e-12)
    assert estimate.weight_max == pytest.approx(1.0)


def test_a_target_built_for_other_logs_is_refused() -> None:
    """The target must be the one built for these rows."""
    logs, _ = _small([0, 1, 2])
    _, target = _small([0, 1, 2])
    with pytest.raises(LogFormatError, match="IIPS: the target was built for other logs"):
        IIPS().estimate(logs, target)
