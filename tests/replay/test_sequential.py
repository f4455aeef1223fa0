"""The anytime-valid confidence sequence (replay/sequential.py), against simulated truth."""

from __future__ import annotations

import itertools
import math
import re
from statistics import NormalDist

import numpy as np
import pytest

from replay._data import LoggedDecisions
from replay.estimators import Intervals
from replay.report import evaluate, render_html, to_json
from replay.sequential import BettingSequence, over_log
from replay.targets import build_target

ALPHA = 0.1
STREAMS = 200
LOOKS = 20
EVERY = 50  # a look after every 50 decisions
N_ACTIONS = 4
# the target always plays action 0; rewards are Bernoulli with these means
MEANS = np.array([0.3, 0.6, 0.5, 0.2])
TRUTH = float(MEANS[0])


def _stream(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """IPS weights and rewards of one logged stream: uniform logging, the target plays 0."""
    rng = np.random.default_rng(seed)
    n = LOOKS * EVERY
    chosen = rng.integers(N_ACTIONS, size=n)
    weights = np.where(chosen == 0, float(N_ACTIONS), 0.0)
    rewards = (rng.random(n) < MEANS[chosen]).astype(float)
    return weights, rewards


def _tolerance(rate: float, trials: int) -> float:
    """Three binomial standard deviations of a rate over `trials` trials."""
    return 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


def test_repeated_looks_keep_the_error_below_alpha_where_a_normal_interval_does_not() -> None:
    """Over many streams, looked at every 50 decisions, the CS misses the truth at most alpha.

    The normal interval of the same level, checked at the same looks, excludes the
    truth at some look in far more streams than alpha: that is what repeated looks do
    to a fixed-time interval.
    """
    z = NormalDist().inv_cdf(1.0 - ALPHA / 2.0)
    cs_misses = normal_misses = 0
    for seed in range(STREAMS):
        weights, rewards = _stream(seed)
        cs = BettingSequence(alpha=ALPHA, grid=64)
        cs_missed = normal_missed = False
        for look in range(1, LOOKS + 1):
            part = slice((look - 1) * EVERY, look * EVERY)
            cs.update(weights[part], rewards[part])
            reading = cs.reading()
            cs_missed |= not reading.lower <= TRUTH <= reading.upper
            terms = weights[: look * EVERY] * rewards[: look * EVERY]
            half = z * terms.std(ddof=1) / math.sqrt(terms.size)
            normal_missed |= abs(terms.mean() - TRUTH) > half
        cs_misses += cs_missed
        normal_misses += normal_missed
    assert cs_misses / STREAMS <= ALPHA + _tolerance(ALPHA, STREAMS)
    assert normal_misses / STREAMS > ALPHA + _tolerance(ALPHA, STREAMS)


def test_it_covers_with_heavy_weights_that_no_bound_was_given_for() -> None:
    """Logged propensities of 0.02 (weights of 50) need no weight bound: coverage holds."""
    misses = 0
    streams = 100
    for seed in range(streams):
        rng = np.random.default_rng(1000 + seed)
        # the logging policy plays the target's action with probability 0.02
        hit = rng.random(2000) < 0.02
        weights = np.where(hit, 50.0, 0.0)
        rewards = (rng.random(2000) < np.where(hit, 0.7, 0.4)).astype(float)
        cs = BettingSequence(alpha=ALPHA, grid=64)
        missed = False
        for part in np.array_split(np.arange(2000), 20):
            cs.update(weights[part], rewards[part])
            reading = cs.reading()
            missed |= not reading.lower <= 0.7 <= reading.upper
        misses += missed
    assert misses / streams <= ALPHA + _tolerance(ALPHA, streams)


def test_it_narrows_around_the_truth_as_terms_come() -> None:
    """After 20,000 on-policy terms the interval holds the truth and is under 0.05 wide."""
    rng = np.random.default_rng(7)
    cs = BettingSequence(alpha=0.05)
    widths = []
    for _ in range(20):
        cs.update(np.ones(1000), (rng.random(1000) < 0.3).astype(float))
        reading = cs.reading()
        widths.append(reading.upper - reading.lower)
    assert reading.lower <= 0.3 <= reading.upper
    assert widths[-1] < 0.05
    assert all(b <= a for a, b in itertools.pairwise(widths))  # never widens


def test_the_reward_range_is_respected_and_scaled() -> None:
    """Rewards in [-1, 3]: the bounds are in that range and cover a known mean of 1.4."""
    rng = np.random.default_rng(3)
    cs = BettingSequence(alpha=0.05, low=-1.0, high=3.0)
    before = cs.reading()
    assert (before.estimate, before.lower, before.upper, before.n) == (None, -1.0, 3.0, 0)
    rewards = rng.choice([-1.0, 3.0], size=5000, p=[0.4, 0.6])  # mean 1.4
    cs.update(np.ones(5000), rewards)
    reading = cs.reading()
    assert -1.0 <= reading.lower <= 1.4 <= reading.upper <= 3.0
    assert reading.estimate == pytest.approx(rewards.mean())


def test_batches_and_a_stored_state_give_what_one_pass_gives() -> None:
    """Fed in batches, stored and restored between them, the state ends as one pass ends."""
    weights, rewards = _stream(11)
    whole = BettingSequence(alpha=ALPHA)
    whole.update(weights, rewards)
    parts = BettingSequence(alpha=ALPHA)
    for chunk in np.array_split(np.arange(weights.size), 7):
        parts.update(weights[chunk], rewards[chunk])
        parts = BettingSequence.from_bytes(parts.to_bytes())
    a, b = whole.reading(), parts.reading()
    assert a.n == b.n
    assert a.estimate == pytest.approx(b.estimate)
    # the running intersection over the looks can only be narrower than the last look
    assert a.lower <= b.lower + 1e-12
    assert b.upper <= a.upper + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "`alpha` must be in (0, 1), got 0.0"),
        ({"alpha": float("nan")}, "`alpha` must be in (0, 1)"),
        ({"low": 1.0, "high": 1.0}, "`low` and `high` must be finite with low < high"),
        ({"high": float("inf")}, "`low` and `high` must be finite"),
        ({"grid": 5}, "`grid` must be in [10, 100000], got 5"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(
    kwargs: dict[str, float], message: str
) -> None:
    """Each bad argument is named, with its rule, in the error."""
    with pytest.raises(ValueError, match=re.escape(message)):
        BettingSequence(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weights", "rewards", "message"),
    [
        ([1.0, -0.5], [0.0, 1.0], "`weights` must be finite and >= 0, got -0.5 at 1"),
        ([1.0, float("inf")], [0.0, 1.0], "`weights` must be finite and >= 0, got inf at 1"),
        ([1.0], [1.5], "`rewards` must be in [0.0, 1.0], got 1.5 at 0"),
        ([1.0, 1.0], [1.0], "the same length, got 2 and 1"),
    ],
)
def test_bad_terms_are_refused_and_nothing_is_added(
    weights: list[float], rewards: list[float], message: str
) -> None:
    """A bad weight or reward is named with its position; the state is unchanged."""
    cs = BettingSequence()
    with pytest.raises(ValueError, match=re.escape(message)):
        cs.update(weights, rewards)
    assert cs.reading().n == 0


def test_a_damaged_state_is_refused() -> None:
    """Bytes that are not a stored state raise ValueError saying so."""
    data = BettingSequence().to_bytes()
    for bad in (b"", b"{}\n", data[:-8], b"not json\n" + data.partition(b"\n")[2]):
        with pytest.raises(ValueError, match="not a serialised BettingSequence"):
            BettingSequence.from_bytes(bad)


def test_the_replay_report_carries_the_sequence_beside_the_fixed_time_intervals() -> None:
    """Each target gets an anytime-valid row holding the truth, wider than its normal CI."""
    rng = np.random.default_rng(5)
    n = 4000
    chosen = rng.integers(N_ACTIONS, size=n)
    logs = LoggedDecisions(
        n_actions=np.full(n, N_ACTIONS),
        chosen=chosen,
        propensity=np.full(n, 1.0 / N_ACTIONS),
        reward=(rng.random(n) < MEANS[chosen]).astype(float),
        action_ids=[["a", "b", "c", "d"]] * n,
    )
    report = evaluate(
        logs,
        [build_target("fixed:a", logs)],
        ["ips"],
        intervals=Intervals(n_bootstrap=0),
        anytime=True,
    )
    reading = report.anytime["fixed:a"]
    assert reading.n == n
    assert reading.lower <= TRUTH <= reading.upper
    ci = report.evaluations[0].estimate.ci
    assert ci is not None
    assert reading.lower < ci.low
    assert ci.high < reading.upper
    assert reading.estimate == pytest.approx(report.evaluations[0].estimate.value)
    data = to_json(report)["anytime_valid"]["fixed:a"]
    assert (data["low"], data["high"], data["level"]) == (
        reading.lower,
        reading.upper,
        pytest.approx(0.95),
    )
    assert "anytime-valid" in render_html(report)


def test_over_log_refuses_no_looks() -> None:
    """`looks` below 1 is refused, naming it."""
    with pytest.raises(ValueError, match="`looks` must be >= 1, got 0"):
        over_log([1.0], [1.0], looks=0)
