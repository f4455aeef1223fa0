"""Baselines: uniform random, and a fixed default order (Personalizer's baseline action)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from policies._base import Policy
from policies._types import Action, Context
from policies.registry import register

__all__ = ["FixedOrder", "Uniform"]


class Uniform(Policy):
    """Choose uniformly at random among the offered actions; never learns.

    The reference point for every other policy, and the ideal logging policy for the
    replay method (Li et al., 2011).

    Examples
    --------
    >>> Uniform().pmf({}, [Action("a"), Action("b"), Action("c"), Action("d")]).probabilities
    (0.25, 0.25, 0.25, 0.25)
    """

    name: ClassVar[str] = "uniform"
    learns: ClassVar[bool] = False

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        return [1.0] * len(actions)

    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        return

    def _params(self) -> dict[str, Any]:
        return {}

    def _state(self) -> bytes:
        return b""

    def _load_state(self, payload: bytes) -> None:
        return


class FixedOrder(Policy):
    """Always prefer the baseline action; every other action keeps only the floor.

    The baseline action is the first offered action whose id comes earliest in
    `order`; with no `order` (or none of its ids offered) it is the first offered
    action, as in Azure Personalizer's "baseline action". The floor keeps the log
    usable for off-policy evaluation.

    Parameters
    ----------
    order
        Action ids by preference, most preferred first.
    floor
        Probability left to each other action.

    Examples
    --------
    >>> d = FixedOrder(order=["b"], floor=0.01).pmf({}, [Action("a"), Action("b"), Action("c")])
    >>> [round(p, 3) for p in d]
    [0.01, 0.98, 0.01]
    """

    name: ClassVar[str] = "fixed"
    learns: ClassVar[bool] = False
    live_params: ClassVar[frozenset[str]] = frozenset({"floor", "order"})

    def __init__(self, *, order: Sequence[str] = (), floor: float = 1e-3) -> None:
        super().__init__(floor=floor)
        self.order = [str(item) for item in order]

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        rank = {action_id: i for i, action_id in enumerate(self.order)}
        best = min(range(len(actions)), key=lambda i: (rank.get(actions[i].id, len(rank)), i))
        return [1.0 if i == best else 0.0 for i in range(len(actions))]

    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        return

    def _params(self) -> dict[str, Any]:
        return {"order": list(self.order)}

    def _state(self) -> bytes:
        return b""

    def _load_state(self, payload: bytes) -> None:
        return

    def _configure(self, changes: dict[str, Any]) -> None:
        self.order = [str(item) for item in changes["order"]]


register(Uniform)
register(FixedOrder)
