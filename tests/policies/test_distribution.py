"""Distributions, the exploration floor and the one sampling function."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandit.errors import InvalidDistributionError
from policies import Distribution, choose, decide_ranking, rng_for_event
from policies._distribution import SUM_TOLERANCE


@pytest.mark.parametrize(
    ("probabilities", "match"),
    [
        ((), "at least one probability, got none"),
        ((0.5, 0.5, 0.0), r"probabilities\[2\] must be finite and in \(0, 1\], got 0.0"),
        ((1.5, -0.5), r"probabilities\[0\] must be finite and in \(0, 1\], got 1.5"),
        ((math.nan, 1.0), r"probabilities\[0\] must be finite and in \(0, 1\], got nan"),
        ((0.5, 0.5 + 1e-8), r"must sum to 1 within 1e-09, got 1.00000001"),
    ],
)
def test_invalid_probabilities_are_refused(probabilities: tuple[float, ...], match: str) -> None:
    """A distribution names the index, the rule and the value it refuses."""
    with pytest.raises(InvalidDistributionError, match=match):
        Distribution(probabilities)


@pytest.mark.parametrize(
    ("weights", "floor", "match"),
    [
        ([], 0.0, "one weight per offered action, got none"),
        ([1.0, -0.1], 0.0, r"weights\[1\] must be finite and >= 0, got -0.1"),
        ([1.0, math.inf], 0.0, r"weights\[1\] must be finite and >= 0, got inf"),
        ([0.0, 0.0], 0.0, "must not all be zero"),
        ([1.0], 1.5, r"`floor` must be in \[0, 1\], got 1.5"),
    ],
)
def test_invalid_weights_are_refused(weights: list[float], floor: float, match: str) -> None:
    """from_weights names the argument, the rule and the value it refuses."""
    with pytest.raises(InvalidDistributionError, match=match):
        Distribution.from_weights(weights, floor=floor)


@given(
    weights=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=60).filter(lambda w: sum(w) > 0),
    floor=st.floats(1e-6, 1.0),
)
def test_from_weights_always_gives_a_valid_floored_distribution(
    weights: list[float], floor: float
) -> None:
    """Any non-negative weights become a distribution with every action above the floor."""
    distribution = Distribution.from_weights(weights, floor=floor)
    assert abs(math.fsum(distribution) - 1.0) <= SUM_TOLERANCE
    assert min(distribution) >= min(floor, 1 / len(weights)) * (1 - 1e-9)


def test_floor_is_not_applied_when_every_action_is_above_it() -> None:
    """A distribution already above the floor is left as it is."""
    assert Distribution.from_weights([1.0, 3.0], floor=0.1).probabilities == (0.25, 0.75)


def test_a_floor_above_one_over_n_gives_uniform() -> None:
    """The floor is capped at 1/n, which is the uniform distribution."""
    assert Distribution.from_weights([1.0, 0.0, 0.0, 0.0], floor=0.5) == Distribution.uniform(4)


def test_choose_follows_the_distribution() -> None:
    """Over many seeded draws each action is chosen in proportion to its probability."""
    distribution = Distribution((0.1, 0.6, 0.3))
    rng = random.Random(7)
    counts = Counter(choose(distribution, rng)[0] for _ in range(30_000))
    for index, p in enumerate(distribution):
        assert abs(counts[index] / 30_000 - p) < 0.015


def test_choose_returns_the_probability_of_the_chosen_action() -> None:
    """The probability returned is the chosen action's own."""
    distribution = Distribution((0.1, 0.6, 0.3))
    for seed in range(50):
        index, probability = choose(distribution, random.Random(seed))
        assert probability == distribution[index]


def test_the_draw_is_reproducible_from_the_event_id() -> None:
    """The same event id and distribution give the same choice; ids spread the draws."""
    distribution = Distribution((0.25, 0.25, 0.25, 0.25))
    first = [decide_ranking(distribution, f"evt-{i}").index for i in range(200)]
    again = [decide_ranking(distribution, f"evt-{i}").index for i in range(200)]
    assert first == again
    assert set(first) == {0, 1, 2, 3}
    assert rng_for_event("a").random() != rng_for_event("b").random()


def test_ranking_puts_the_chosen_first_then_by_probability() -> None:
    """The ranking starts with the chosen action; the rest follow by decreasing probability."""
    distribution = Distribution((0.1, 0.5, 0.15, 0.25))
    for i in range(100):
        choice = decide_ranking(distribution, f"evt-{i}")
        rest = [j for j in (1, 3, 2, 0) if j != choice.index]
        assert choice.ranking == (choice.index, *rest)
        assert choice.explored == (choice.index != 1)


def test_ranking_keeps_offer_order_among_equally_likely_actions() -> None:
    """Actions with the same probability follow one another in offer order."""
    distribution = Distribution((0.2, 0.3, 0.2, 0.3))
    for i in range(40):
        choice = decide_ranking(distribution, f"evt-{i}")
        rest = [j for j in (1, 3, 0, 2) if j != choice.index]
        assert choice.ranking == (choice.index, *rest)


def test_a_choice_among_tied_top_actions_is_not_exploration() -> None:
    """With every action equally likely, no choice counts as explored."""
    uniform = Distribution.uniform(4)
    assert not any(decide_ranking(uniform, f"evt-{i}").explored for i in range(50))
