"""Distributions over offered actions, and the one function that samples from them.

Every decision is drawn by :func:`choose` from a :class:`Distribution`, with a random
generator seeded from the event id (:func:`rng_for_event`), so the probability logged
with a decision is exactly the probability of the draw that made it, and the draw can
be re-derived from the log.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from policies.errors import InvalidDistributionError

__all__ = [
    "SUM_TOLERANCE",
    "Choice",
    "Distribution",
    "choose",
    "decide_ranking",
    "rng_for_event",
    "slot_seed",
]

SUM_TOLERANCE = 1e-9
"""How far from 1 the probabilities of a :class:`Distribution` may sum."""


@dataclass(frozen=True, slots=True)
class Distribution:
    """A probability for every offered action, validated once on construction.

    Parameters
    ----------
    probabilities
        One probability per offered action, in offer order. Each must be finite and in
        (0, 1]; together they must sum to 1 within :data:`SUM_TOLERANCE`.

    Examples
    --------
    >>> d = Distribution.from_weights([3.0, 1.0, 0.0], floor=0.05)
    >>> [round(p, 4) for p in d]
    [0.6875, 0.2625, 0.05]
    >>> d.argmax()
    0
    >>> Distribution((0.5, 0.6))
    Traceback (most recent call last):
    ...
    policies.errors.InvalidDistributionError: probabilities must sum to 1 within 1e-09, got 1.1
    """

    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        probabilities = self.probabilities
        if not probabilities:
            msg = "a distribution needs at least one probability, got none"
            raise InvalidDistributionError(msg)
        for i, p in enumerate(probabilities):
            if not (0.0 < p <= 1.0):  # also rejects NaN
                msg = f"probabilities[{i}] must be finite and in (0, 1], got {p!r}"
                raise InvalidDistributionError(msg)
        total = math.fsum(probabilities)
        if abs(total - 1.0) > SUM_TOLERANCE:
            msg = f"probabilities must sum to 1 within {SUM_TOLERANCE}, got {total!r}"
            raise InvalidDistributionError(msg)

    @classmethod
    def from_weights(cls, weights: Sequence[float], floor: float = 0.0) -> Distribution:
        """Normalise non-negative weights and apply an exploration floor.

        Parameters
        ----------
        weights
            Non-negative, finite, not all zero; one per offered action.
        floor
            Smallest probability any action may get, in [0, 1]. It is capped at
            ``1 / len(weights)`` (a floor of 1/n is the uniform distribution). The floor
            is applied by mixing with the uniform distribution,
            ``p' = floor + (1 - n * floor) * p``, and only when some action is below it.

        Returns
        -------
        Distribution
        """
        n = len(weights)
        if n == 0:
            msg = "`weights` must hold one weight per offered action, got none"
            raise InvalidDistributionError(msg)
        if not (0.0 <= floor <= 1.0):
            msg = f"`floor` must be in [0, 1], got {floor!r}"
            raise InvalidDistributionError(msg)
        try:
            total = math.fsum(weights)  # NaN or infinite when a weight is
        except (ValueError, OverflowError):  # both infinities, or a sum past floats
            total = math.nan
        if not (0.0 < total < math.inf) or min(weights) < 0.0:
            for i, w in enumerate(weights):
                if not (0.0 <= w < math.inf):
                    msg = f"weights[{i}] must be finite and >= 0, got {w!r}"
                    raise InvalidDistributionError(msg)
            math.fsum(weights)  # every weight is fine: raises OverflowError if the sum is
            msg = "`weights` must not all be zero"
            raise InvalidDistributionError(msg)
        probabilities = [w / total for w in weights]
        floor = min(floor, 1.0 / n)
        if floor > 0.0 and min(probabilities) < floor:
            keep = 1.0 - n * floor
            probabilities = [floor + keep * p for p in probabilities]
        # A last exact renormalisation keeps the sum within a few ulps of 1.
        total = math.fsum(probabilities)
        return cls(tuple(p / total for p in probabilities))

    @classmethod
    def uniform(cls, n: int) -> Distribution:
        """Return the uniform distribution over `n` actions."""
        if n < 1:
            msg = f"`n` must be >= 1, got {n!r}"
            raise InvalidDistributionError(msg)
        return cls((1.0 / n,) * n)

    def __len__(self) -> int:
        return len(self.probabilities)

    def __iter__(self) -> Iterator[float]:
        return iter(self.probabilities)

    def __getitem__(self, index: int) -> float:
        return self.probabilities[index]

    def argmax(self) -> int:
        """Index of the most probable action (the first one on ties)."""
        probabilities = self.probabilities
        return max(range(len(probabilities)), key=probabilities.__getitem__)


def rng_for_event(event_id: str) -> random.Random:
    """Return the random generator a decision with this event id draws from.

    The seed is a hash of the event id, so the same id always gives the same draw.

    Examples
    --------
    >>> rng_for_event("evt-1").random() == rng_for_event("evt-1").random()
    True
    """
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def slot_seed(event_id: str, slot: int) -> str:
    """Return the key the draw of slot `slot` (from 0) of a multi-slot decision is seeded by.

    The event id and the slot's number, apart by a NUL (which no id holds: ids are
    printable), so no two (event, slot) pairs share a key, and none is an event id.

    Examples
    --------
    >>> slot_seed("evt-1", 0) == slot_seed("evt-1", 0) != slot_seed("evt-1", 1)
    True
    """
    return f"{event_id}\x00{slot}"


def choose(distribution: Distribution, rng: random.Random) -> tuple[int, float]:
    """Draw one action index from `distribution`.

    Returns
    -------
    tuple[int, float]
        The chosen index and its probability under `distribution`.

    Examples
    --------
    >>> d = Distribution((0.2, 0.5, 0.3))
    >>> choose(d, rng_for_event("evt-42")) == choose(d, rng_for_event("evt-42"))
    True
    """
    u = rng.random()
    cumulative = 0.0
    probabilities = distribution.probabilities
    for index, p in enumerate(probabilities):
        cumulative += p
        if u < cumulative:
            return index, p
    # u fell in the rounding gap above the cumulative sum: take the last action.
    last = len(probabilities) - 1
    return last, probabilities[last]


@dataclass(frozen=True, slots=True)
class Choice:
    """One decision: what was drawn, with which probability, from which distribution.

    Attributes
    ----------
    index
        Offer-order index of the chosen action.
    probability
        Its probability under `distribution`.
    distribution
        The full distribution it was drawn from.
    ranking
        Offer-order indices, the chosen action first, then the rest by decreasing
        probability (offer order on ties).
    explored
        Whether the chosen action is less probable than the policy's most probable
        one (a choice among actions tied for the top is not exploration).
    """

    index: int
    probability: float
    distribution: Distribution
    ranking: tuple[int, ...]
    explored: bool


def decide_ranking(distribution: Distribution, event_id: str) -> Choice:
    """Draw the decision for `event_id` from `distribution` and rank the rest.

    Examples
    --------
    >>> c = decide_ranking(Distribution((0.1, 0.6, 0.3)), "evt-9")
    >>> c.ranking[0] == c.index and sorted(c.ranking) == [0, 1, 2]
    True
    """
    index, probability = choose(distribution, rng_for_event(event_id))
    probabilities = distribution.probabilities
    # Decreasing probability, offer order on ties: a reversed sort keeps ties in order.
    rest = sorted(range(len(probabilities)), key=probabilities.__getitem__, reverse=True)
    top = probabilities[rest[0]]
    rest.remove(index)
    return Choice(
        index=index,
        probability=probability,
        distribution=distribution,
        ranking=(index, *rest),
        explored=probability < top,
    )
