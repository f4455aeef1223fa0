"""Intervals that respect the reward range: coverage on simulations, range, and errors.

The simulation: three kinds of context, a logger that gives the target's action 0.1,
0.25 or 0.5 by kind (four actions), clicks at 0.05, 0.1 or 0.15 for it (true value
0.1), a target that always takes it. The weights' ESS is about 3n/16, so n is chosen for
an ESS of about 5, 50 and 5,000. Seeds are fixed: the asserted coverages are what these
seeds give, each with a margin of three binomial standard errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from bandit.errors import ConfigurationError, LogFormatError
from replay import (
    IPS,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    Estimator,
    Intervals,
    LoggedDecisions,
    RewardPredictions,
    TargetProbabilities,
)
from replay.bounds import (
    bernstein_interval,
    betting_interval,
    infer_reward_range,
    off_policy_betting_interval,
)
from replay.estimators import Terms

PROPENSITY = np.array([0.1, 0.25, 0.5])
RATE = np.array([[0.05, 0.3, 0.2, 0.4], [0.1, 0.1, 0.5, 0.3], [0.15, 0.6, 0.2, 0.1]])
TRUTH = float(RATE[:, 0].mean())
REPS = 200
LEVEL = 0.95
MARGIN = 3.0 * math.sqrt(LEVEL * (1.0 - LEVEL) / REPS)  # three binomial standard errors
ROWS = {5: 27, 50: 267, 5000: 26_667}  # rows for each ESS (3n/16)


def simulate(
    n: int, rng: np.random.Generator
) -> tuple[LoggedDecisions, TargetProbabilities, RewardPredictions]:
    """A log of `n` decisions, the always-action-0 target and a reward model 0.1 too high."""
    kind = rng.integers(0, 3, n)
    probabilities = np.empty((n, 4))
    probabilities[:, 0] = PROPENSITY[kind]
    probabilities[:, 1:] = ((1.0 - PROPENSITY[kind]) / 3.0)[:, None]
    chosen = np.minimum((np.cumsum(probabilities, axis=1) < rng.random((n, 1))).sum(axis=1), 3)
    rates = RATE[kind]
    reward = (rng.random(n) < rates[np.arange(n), chosen]).astype(np.float64)
    logs = LoggedDecisions(
        n_actions=np.full(n, 4),
        chosen=chosen,
        propensity=probabilities[np.arange(n), chosen],
        reward=reward,
        probabilities=probabilities,
    )
    always = np.zeros((n, 4))
    always[:, 0] = 1.0
    return logs, TargetProbabilities(logs, always), RewardPredictions(logs, rates + 0.1)


def _coverage(ess: int, estimator: IPS | DoublyRobust) -> dict[str, tuple[float, bool]]:
    """Per interval kind: the share of REPS intervals holding TRUTH, and whether all stayed."""
    rng = np.random.default_rng(ess)
    hits: dict[str, list[bool]] = {"normal": [], "bernstein": [], "betting": []}
    inside = dict.fromkeys(hits, True)
    for _ in range(REPS):
        logs, target, model = simulate(ROWS[ess], rng)
        estimate = estimator.estimate(logs, target, rewards=model)
        for kind, interval in (
            ("normal", estimate.ci),
            ("bernstein", estimate.bernstein_ci),
            ("betting", estimate.betting_ci),
        ):
            hits[kind].append(interval is not None and TRUTH in interval)
            if interval is not None and kind != "normal":
                inside[kind] &= 0.0 <= interval.low <= interval.high <= 1.0
    return {kind: (float(np.mean(h)), inside[kind]) for kind, h in hits.items()}


FAST = Intervals(n_bootstrap=0, reward_range=(0.0, 1.0), kinds=("normal", "bernstein", "betting"))


@pytest.mark.parametrize("ess", [5, 50, 5000])
@pytest.mark.parametrize(
    "estimator", [IPS(intervals=FAST), DoublyRobust(intervals=FAST)], ids=["ips", "dr"]
)
def test_bernstein_and_betting_cover_the_truth_within_the_range(
    ess: int, estimator: IPS | DoublyRobust
) -> None:
    """At ESS 5, 50 and 5,000 both new intervals cover at the nominal level, inside [0, 1]."""
    coverage = _coverage(ess, estimator)
    for kind in ("bernstein", "betting"):
        share, stayed = coverage[kind]
        assert share >= LEVEL - MARGIN, (kind, share)
        assert stayed, kind


def test_the_normal_interval_undercovers_at_ess_5() -> None:
    """On a handful of clicks the normal interval misses far more often than 5%."""
    share, _ = _coverage(5, IPS(intervals=FAST))["normal"]
    assert share < LEVEL - MARGIN


def test_snips_at_ess_2_gets_a_clipped_delta_interval_and_a_betting_one_inside_0_1() -> None:
    """The delta interval that went below 0 is clipped and says so; betting stays in range."""
    logs = LoggedDecisions(
        n_actions=np.full(8, 2),
        chosen=np.array([0, 0, 1, 1, 1, 1, 1, 0]),
        propensity=np.array([0.1, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5]),
        reward=np.array([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
    )
    target = TargetProbabilities(logs, np.tile([1.0, 0.0], (8, 1)))
    estimate = SNIPS(intervals=Intervals(n_bootstrap=0)).estimate(logs, target)
    assert estimate.diagnostics.ess < 2.0
    assert estimate.ci is not None
    assert estimate.ci.clipped
    assert estimate.ci.low == 0.0
    assert any("delta interval left [0, 1]" in w for w in estimate.diagnostics.warnings)
    for interval in (estimate.bernstein_ci, estimate.betting_ci):
        assert interval is not None
        assert 0.0 <= interval.low <= interval.high <= 1.0
        assert not interval.clipped


def test_a_normal_interval_inside_the_range_is_not_clipped() -> None:
    """Plenty of data: nothing to clip, no warning."""
    logs, target, _ = simulate(2000, np.random.default_rng(1))
    estimate = IPS(intervals=Intervals(n_bootstrap=0)).estimate(logs, target)
    assert estimate.ci is not None
    assert not estimate.ci.clipped
    assert not any("clipped" in w for w in estimate.diagnostics.warnings)


def test_kinds_choose_the_intervals() -> None:
    """Only the kinds asked for are computed."""
    logs, target, _ = simulate(300, np.random.default_rng(2))
    only = IPS(intervals=Intervals(n_bootstrap=50, kinds=("betting",))).estimate(logs, target)
    assert only.ci is None
    assert only.bootstrap_ci is None
    assert only.bernstein_ci is None
    assert only.betting_ci is not None
    assert only.betting_ci.method == "betting"
    every = IPS(intervals=Intervals(n_bootstrap=50)).estimate(logs, target)
    assert every.ci is not None
    assert every.bootstrap_ci is not None
    assert every.bernstein_ci is not None
    assert every.bernstein_ci.method == "empirical Bernstein"


def test_a_reward_range_bounds_the_intervals_and_refuses_rewards_outside_it() -> None:
    """Rewards in [2, 5]: intervals stay in the given range; a reward above it is refused."""
    rng = np.random.default_rng(3)
    logs, target, _ = simulate(400, rng)
    scaled = LoggedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity,
        reward=2.0 + 3.0 * logs.reward,
        probabilities=logs.probabilities,
    )
    target = TargetProbabilities(scaled, target.probabilities)
    estimate = IPS(intervals=Intervals(reward_range=(2.0, 5.0))).estimate(scaled, target)
    for interval in (estimate.ci, estimate.bernstein_ci, estimate.betting_ci):
        assert interval is not None
        assert 2.0 <= interval.low <= interval.high <= 5.0
    assert 2.0 + 3.0 * TRUTH in estimate.betting_ci  # type: ignore[operator]
    with pytest.raises(LogFormatError, match=r"row \d+: `reward` must be in the reward range"):
        IPS(intervals=Intervals(reward_range=(2.0, 4.0))).estimate(scaled, target)


def test_an_inferred_range_beyond_0_1_is_said_to_be_no_guarantee() -> None:
    """Rewards outside [0, 1] and no range given: the log's extremes, with a warning."""
    logs = LoggedDecisions(
        n_actions=np.full(4, 2),
        chosen=np.array([0, 1, 0, 1]),
        propensity=np.full(4, 0.5),
        reward=np.array([3.0, 1.0, 2.0, 5.0]),
    )
    target = TargetProbabilities(logs, np.tile([0.5, 0.5], (4, 1)))
    estimate = IPS(intervals=Intervals(n_bootstrap=0)).estimate(logs, target)
    assert any("taken from the log's rewards" in w for w in estimate.diagnostics.warnings)
    assert estimate.betting_ci is not None
    assert 1.0 <= estimate.betting_ci.low <= estimate.betting_ci.high <= 5.0


def test_model_based_and_clipped_estimands_widen_the_range_they_are_cut_to() -> None:
    """DM with predictions above 1 and clipped IPS (towards 0) keep their own estimand."""
    logs, target, _ = simulate(200, np.random.default_rng(4))
    high = RewardPredictions(logs, np.full((logs.n, 4), 1.5))
    dm = DirectMethod(intervals=Intervals(n_bootstrap=0)).estimate(logs, target, rewards=high)
    assert dm.betting_ci is not None
    assert dm.betting_ci.low == pytest.approx(1.5)
    clipped = ClippedIPS(
        max_weight=1.0, intervals=Intervals(n_bootstrap=0, reward_range=(0.5, 1.0))
    )
    reward = 0.5 + 0.5 * logs.reward
    shifted = LoggedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity,
        reward=reward,
        probabilities=logs.probabilities,
    )
    estimate = clipped.estimate(shifted, TargetProbabilities(shifted, target.probabilities))
    assert estimate.value < 0.5  # the clipped estimand lies below the reward range
    assert estimate.betting_ci is not None
    assert estimate.value in estimate.betting_ci


def test_weights_that_contradict_a_mean_of_1_give_no_betting_interval() -> None:
    """Every weight 5 (wrong propensities): the off-policy interval is empty and says so."""
    n = 200
    logs = LoggedDecisions(
        n_actions=np.full(n, 2),
        chosen=np.zeros(n, dtype=np.int64),
        propensity=np.full(n, 0.2),
        reward=np.tile([0.0, 1.0], n // 2),
    )
    target = TargetProbabilities(logs, np.tile([1.0, 0.0], (n, 1)))
    estimate = IPS(intervals=Intervals(n_bootstrap=0, reward_range=(0.0, 1.0))).estimate(
        logs, target
    )
    assert estimate.betting_ci is None
    assert any("contradict a mean of 1" in w for w in estimate.diagnostics.warnings)


# -- the bounds themselves -------------------------------------------------------------------


@pytest.mark.parametrize("function", [bernstein_interval, betting_interval])
def test_bounds_stay_in_range_and_narrow_with_data(function: object) -> None:
    """Within [low, high] for any sample; wider on 30 terms than on 3,000 like them."""
    rng = np.random.default_rng(5)
    few, many = rng.uniform(2.0, 4.0, 30), rng.uniform(2.0, 4.0, 3000)
    lo_few, hi_few = function(few, 2.0, 4.0, 0.95)  # type: ignore[operator]
    lo_many, hi_many = function(many, 2.0, 4.0, 0.95)  # type: ignore[operator]
    assert 2.0 <= lo_few <= lo_many <= 3.0 <= hi_many <= hi_few <= 4.0


def test_betting_is_narrower_than_bernstein_on_rare_clicks() -> None:
    """Five clicks in 500: betting adapts to the small variance better than Bernstein."""
    clicks = np.zeros(500)
    clicks[::100] = 1.0
    bet = betting_interval(clicks, 0.0, 1.0, 0.95)
    bern = bernstein_interval(clicks, 0.0, 1.0, 0.95)
    assert bet[1] - bet[0] < bern[1] - bern[0]
    assert bet[0] >= 0.0


def test_off_policy_betting_needs_no_weight_bound() -> None:
    """One huge weight on a non-click does not move the lower bound much."""
    rng = np.random.default_rng(6)
    weights = np.where(rng.random(1000) < 0.5, 2.0, 0.0)
    reward = (rng.random(1000) < 0.3).astype(np.float64)
    before = off_policy_betting_interval(weights, reward, 0.0, 1.0, 0.95)
    weights[np.argmax(reward == 0)] = 1e6
    after = off_policy_betting_interval(weights, reward, 0.0, 1.0, 0.95)
    assert after[0] == pytest.approx(before[0], abs=0.02)


def test_infer_reward_range() -> None:
    """[0, 1] for rewards within it, else the extremes, flagged."""
    assert infer_reward_range(np.array([0.2, 0.7])) == ((0.0, 1.0), False)
    assert infer_reward_range(np.array([-1.0, 0.5])) == ((-1.0, 0.5), True)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: betting_interval(np.array([0.5, 2.0]), 0.0, 1.0, 0.9), r"must be in \[0, 1\]"),
        (lambda: bernstein_interval(np.zeros(3), 1.0, 0.0, 0.9), "low <= high"),
        (lambda: betting_interval(np.zeros(3), 0.0, math.inf, 0.9), "finite"),
        (lambda: betting_interval(np.zeros((2, 2)), 0.0, 1.0, 0.9), r"\(n,\) array"),
        (
            lambda: off_policy_betting_interval(np.array([-1.0]), np.zeros(1), 0.0, 1.0, 0.9),
            "`weights` must be finite and >= 0",
        ),
        (
            lambda: off_policy_betting_interval(np.ones(2), np.zeros(3), 0.0, 1.0, 0.9),
            "arrays alike",
        ),
        (lambda: Intervals(reward_range=(0.0, math.nan)), "`reward_range` must be"),
        (lambda: Intervals(reward_range=(1.0,)), "`reward_range` must be"),  # type: ignore[arg-type]
        (lambda: Intervals(kinds=()), "`kinds` must be a non-empty tuple"),
        (lambda: Intervals(kinds=("wald",)), "`kinds` must be a non-empty tuple"),
    ],
)
def test_bad_inputs_are_refused(call: object, match: str) -> None:
    """Each bad input names its field and rule."""
    with pytest.raises(ConfigurationError, match=match):
        call()  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class _Negative(Estimator):
    """IPS whose terms claim a negative slope."""

    intervals: Intervals = FAST

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        weights = target.weights()
        return Terms(weights=weights, a=weights * logs.reward, slope=-weights)


def test_terms_with_a_negative_slope_are_refused() -> None:
    """The terms' bounds assume the reward enters with a nonnegative slope."""
    logs, target, _ = simulate(10, np.random.default_rng(7))
    with pytest.raises(ConfigurationError, match="`slope` >= 0"):
        _Negative().estimate(logs, target)
