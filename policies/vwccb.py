"""Vowpal Wabbit's conditional contextual bandit, ``--ccb_explore_adf``: one policy, many slots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from policies._base import Policy, check_feature_values, check_reward
from policies._distribution import Distribution
from policies._types import Action, Context, FeatureRef, Features
from policies.errors import InvalidActionsError, InvalidFeedbackError, InvalidModelError
from policies.registry import register
from policies.vw import LoggedExample, VWPolicy
from policies.vwtext import SLOT_NAMESPACE, example_text, reward_to_cost, to_ccb_lines

__all__ = ["SlotOutcome", "VWCCBPolicy"]


@dataclass(frozen=True, slots=True)
class SlotOutcome:
    """One slot of a multi-slot decision, as it was decided and rewarded.

    Attributes
    ----------
    features
        The slot's features, by namespace (written under the slot's VW namespace).
    include
        Indices of the decision's actions the slot could choose from, in the order its
        distribution was over them (None: every action).
    chosen
        Index (into the decision's actions) of the action the slot chose.
    reward
        The slot's reward.
    probability
        The chosen action's probability in the slot's distribution, in (0, 1].
    """

    features: Features
    include: tuple[int, ...] | None
    chosen: int
    reward: float
    probability: float


class VWCCBPolicy(VWPolicy):
    """Vowpal Wabbit ``--ccb_explore_adf``: slots filled in order, no action twice.

    A conditional contextual bandit (VW's CCB reduction) decides several slots of one
    page from one set of actions: each slot, in order, is a contextual bandit decision
    over the actions the slots before it left, seeing the shared context, its own
    features and the actions'. VW's exploration distribution is computed per slot
    (:meth:`slot_pmf`); streambandit applies the floor and draws each slot's action
    itself, seeded by the event id and the slot, so every slot's logged probability is
    the probability of its draw, and passes the slots after it only the actions left.

    As a :class:`~policies.Policy` it decides one slot: the context's namespace
    :data:`~policies.vwtext.SLOT_NAMESPACE` (``_slot``) holds the slot's features, the
    rest is shared; so it serves single-slot rank as well, and passes the conformance
    suite as a one-slot CCB. :meth:`learn_slots` learns a whole multi-slot decision as
    one CCB example (each slot's outcome, and the actions each slot could choose).

    Parameters
    ----------
    interactions
        As :class:`~policies.vw.VWPolicy`'s, with ``s`` for the slot's namespace; the
        default also crosses the slot's features with the actions' and their ids.
    **params
        Every other parameter of :class:`~policies.vw.VWPolicy`.

    Examples
    --------
    >>> policy = VWCCBPolicy(exploration="epsilon", epsilon=0.1, seed=1)
    >>> actions = [Action("a"), Action("b"), Action("c")]
    >>> top, side = {"pos": "top"}, {"pos": "side"}
    >>> for _ in range(40):
    ...     policy.learn_slots({}, actions, [
    ...         SlotOutcome({"_slot": top}, None, 1, 1.0, 0.5),
    ...         SlotOutcome({"_slot": side}, (0, 2), 2, 1.0, 0.5),
    ...     ])
    >>> [round(p, 3) for p in policy.slot_pmf({}, top, actions)]
    [0.033, 0.933, 0.033]
    >>> [round(p, 3) for p in policy.slot_pmf({}, side, [actions[0], actions[2]])]
    [0.05, 0.95]
    """

    name: ClassVar[str] = "vw-ccb"
    learns_logged: ClassVar[bool] = False
    multi_slot: ClassVar[bool] = True

    def __init__(
        self, *, interactions: Sequence[str] = ("ca", "ci", "sa", "si"), **params: Any
    ) -> None:
        super().__init__(interactions=interactions, **params)

    def vw_arguments(self) -> str:
        """Return the VW command line this policy learns with (``--ccb_explore_adf ...``).

        Examples
        --------
        >>> VWCCBPolicy(exploration="epsilon", epsilon=0.2).vw_arguments()[:37]
        '--ccb_explore_adf --epsilon 0.2 --int'
        """
        return "--ccb_explore_adf" + super().vw_arguments().removeprefix("--cb_explore_adf")

    # -- per slot -------------------------------------------------------------------

    def slot_pmf(
        self, context: Context, slot: Mapping[str, Any], actions: Sequence[Action]
    ) -> Distribution:
        """Return the slot's distribution over `actions`: those the slots before it left.

        The same as ``pmf({**context, "_slot": slot}, actions)``.
        """
        return self.pmf({**context, SLOT_NAMESPACE: slot}, actions)

    def learn_slots(
        self, context: Context, actions: Sequence[Action], slots: Sequence[SlotOutcome]
    ) -> None:
        """Learn one multi-slot decision: every slot's outcome, as one CCB example.

        Parameters
        ----------
        context
            The shared features (without ``_slot``).
        actions
            Every action offered to the decision.
        slots
            The slots in order; no action chosen by two slots.

        Raises
        ------
        InvalidFeedbackError, InvalidFeaturesError, InvalidActionsError
            If an input breaks its rule; nothing was learned.
        InvalidModelError
            If the update overflowed.
        """
        if not actions:
            msg = "`actions` must hold at least one action"
            raise InvalidActionsError(msg)
        if not slots:
            msg = "`slots` must hold at least one slot"
            raise InvalidFeedbackError(msg)
        chosen: set[int] = set()
        for number, slot in enumerate(slots):
            if not (0 <= slot.chosen < len(actions)):
                msg = f"slot {number}: `chosen` must be in [0, {len(actions)}), got {slot.chosen}"
                raise InvalidFeedbackError(msg)
            if slot.chosen in chosen:
                msg = f"slot {number}: action {slot.chosen} was chosen by an earlier slot"
                raise InvalidFeedbackError(msg)
            if slot.include is not None and slot.chosen not in slot.include:
                msg = f"slot {number}: `chosen` {slot.chosen} is not in its `include`"
                raise InvalidFeedbackError(msg)
            chosen.add(slot.chosen)
            check_reward(slot.reward)
            if not (0.0 < slot.probability <= 1.0):
                msg = f"slot {number}: `probability` must be in (0, 1], got {slot.probability!r}"
                raise InvalidFeedbackError(msg)
            check_feature_values(slot.features, f"slot {number} ")
        check_feature_values(context)
        for action in actions:
            check_feature_values(action.features, f"action {action.id!r} ")
        lines = to_ccb_lines(
            context,
            actions,
            [
                (s.features, s.include, (s.chosen, reward_to_cost(s.reward), s.probability))
                for s in slots
            ],
        )
        try:
            self._learn_text(example_text(lines))
        except ArithmeticError as exc:
            msg = f"the {self.name} model overflowed learning this outcome: {exc}"
            raise InvalidModelError(msg) from exc
        self._n_learned += 1

    # -- hooks ----------------------------------------------------------------------

    def _lines(
        self,
        context: Context,
        actions: Sequence[Action],
        label: tuple[int, float, float] | None = None,
    ) -> list[str]:
        shared = {k: v for k, v in context.items() if k != SLOT_NAMESPACE}
        slot = context.get(SLOT_NAMESPACE)
        features: Features = {SLOT_NAMESPACE: slot} if slot else {}
        return to_ccb_lines(shared, actions, [(features, None, label)])

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        return self._predicted(example_text(self._lines(context, actions)))

    def _weights_without(
        self, context: Context, actions: Sequence[Action], features: Sequence[FeatureRef]
    ) -> list[Sequence[float]]:
        # (the base's one prediction per feature; VWPolicy's batch writes cb text)
        return Policy._weights_without(self, context, actions, features)

    def _predicted(self, text: str) -> list[float]:
        """VW's exploration distribution of the one slot of `text`, in action order."""
        vw = self._vw
        examples = vw._parse(text)
        vw.predict_multi(examples)
        scores: list[list[tuple[int, float]]] = examples[0].get_decision_scores()
        vw._finish_example_multi_ex(examples)
        probabilities = [0.0] * (len(examples) - 2)  # (the shared line, the slot line)
        for index, probability in scores[0]:
            probabilities[index] = max(float(probability), 0.0)
        return probabilities

    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        label = (chosen, reward_to_cost(reward), probability)
        self._learn_text(example_text(self._lines(context, actions, label)))

    def _learn_text(self, text: str) -> None:
        vw = self._vw
        examples = vw._parse(text)
        vw.learn_multi(examples)
        vw._finish_example_multi_ex(examples)

    def learn_logged(self, example: LoggedExample) -> None:
        """Refused: a CCB policy learns from its own decisions (:meth:`learn_slots`).

        Raises
        ------
        InvalidFeedbackError
            Always: the logged examples of :mod:`policies.dsjson` are ``cb_explore_adf``'s.
        """
        msg = (
            f"{self.name} cannot learn cb_explore_adf examples of a DSJSON log; "
            "it learns single-slot decisions with learn() and multi-slot ones with learn_slots()"
        )
        raise InvalidFeedbackError(msg)


register(VWCCBPolicy)
