"""One simulated decision round, and the protocol every simulation environment follows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from bandit.errors import DatasetError
from policies import Action, Context

__all__ = ["Environment", "Round"]


@dataclass(frozen=True, slots=True)
class Round:
    """One decision of a simulation: what is offered, and what each offer would earn.

    The expected reward and the drawn reward of *every* offered action are known to the
    simulator (never to a policy), so the oracle and the regret are exact, and every
    policy that picks the same action in the same round gets the same reward.

    Attributes
    ----------
    index
        Position of the round in the run, from 0.
    event_id
        Deterministic id of the decision; its draw is seeded from it.
    context
        Shared features by namespace, as a policy sees them.
    actions
        The offered actions, with their features.
    expected
        True expected reward of each offered action, in offer order.
    rewards
        The reward each offered action earns if chosen this round (one draw each).

    Examples
    --------
    >>> r = Round(0, "evt-0", {}, (Action("a"), Action("b")), (0.2, 0.7), (0.0, 1.0))
    >>> r.best, r.best_expected, r.reward(1)
    (1, 0.7, 1.0)
    """

    index: int
    event_id: str
    context: Context
    actions: tuple[Action, ...]
    expected: tuple[float, ...]
    rewards: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.actions)
        if n == 0 or len(self.expected) != n or len(self.rewards) != n:
            msg = (
                "a round needs at least one action and one `expected` and one `rewards` "
                f"entry per action, got {n} actions, {len(self.expected)} expected, "
                f"{len(self.rewards)} rewards"
            )
            raise DatasetError(msg)

    @property
    def best(self) -> int:
        """Offer-order index of the action with the highest expected reward (first on ties)."""
        expected = self.expected
        return max(range(len(expected)), key=expected.__getitem__)

    @property
    def best_expected(self) -> float:
        """The oracle's expected reward in this round."""
        return max(self.expected)

    def reward(self, index: int) -> float:
        """Return the reward the action at offer-order `index` earns in this round."""
        return self.rewards[index]


class Environment(Protocol):
    """A reproducible source of decision rounds.

    The same constructor arguments (seed included) give the same rounds, in the same
    order, on every call of :meth:`rounds`.
    """

    @property
    def name(self) -> str:
        """Short name, used in event ids and reports."""
        ...

    @property
    def n_actions(self) -> int:
        """How many actions every round offers."""
        ...

    @property
    def description(self) -> str:
        """One line describing the environment and its settings, for reports."""
        ...

    def rounds(self, n: int) -> Iterator[Round]:
        """Yield the first `n` rounds, from round 0."""
        ...
