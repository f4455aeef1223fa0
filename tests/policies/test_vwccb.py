"""The conditional contextual bandit policy on VW's ``--ccb_explore_adf``."""

from __future__ import annotations

import random

import pytest

from bandit.errors import InvalidFeedbackError, SnapshotError
from policies import Action, Policy, choose, make_policy, rng_for_event
from policies.vwccb import SlotOutcome, VWCCBPolicy
from policies.vwtext import SLOT_NAMESPACE

ACTIONS = [Action(f"item-{j}", {"item": {"kind": f"k{j}"}}) for j in range(4)]
SLOTS = ({"pos": "top"}, {"pos": "side"})
BEST = (2, 0)  # the action that pays in each slot; the slot decides it


def _run(policy: VWCCBPolicy, rounds: int) -> None:
    """Decide both slots, in order, and learn the multi-slot outcome, `rounds` times."""
    for step in range(rounds):
        left = list(range(len(ACTIONS)))
        outcomes = []
        for number, slot in enumerate(SLOTS):
            offered = [ACTIONS[i] for i in left]
            distribution = policy.slot_pmf({}, slot, offered)
            index, probability = choose(distribution, rng_for_event(f"e{step}/{number}"))
            chosen = left[index]
            reward = 1.0 if chosen == BEST[number] else 0.0
            include = tuple(left)
            outcomes.append(
                SlotOutcome({SLOT_NAMESPACE: slot}, include, chosen, reward, probability)
            )
            left.remove(chosen)
        policy.learn_slots({}, ACTIONS, outcomes)


def test_each_slot_learns_its_own_best_action() -> None:
    """Two slots paying for different actions: each slot favours its own, given the first's."""
    policy = make_policy("vw-ccb", exploration="epsilon", epsilon=0.2)
    assert isinstance(policy, VWCCBPolicy)
    _run(policy, 300)
    top = policy.slot_pmf({}, SLOTS[0], ACTIONS).probabilities
    left = [action for action in ACTIONS if action is not ACTIONS[BEST[0]]]
    side = policy.slot_pmf({}, SLOTS[1], left).probabilities
    assert max(range(4), key=top.__getitem__) == BEST[0]
    assert left[max(range(3), key=side.__getitem__)] is ACTIONS[BEST[1]]
    assert policy.n_learned == 300


def test_a_slot_is_offered_only_what_the_slots_before_it_left() -> None:
    """The distribution of a later slot is over the actions left, each at least the floor."""
    policy = make_policy("vw-ccb", floor=0.05)
    assert isinstance(policy, VWCCBPolicy)
    _run(policy, 20)
    left = [ACTIONS[0], ACTIONS[3]]
    distribution = policy.slot_pmf({}, SLOTS[1], left)
    assert len(distribution) == 2
    assert min(distribution) >= 0.05


def test_snapshot_restores_the_multi_slot_model() -> None:
    """A restored CCB policy gives every slot the same distribution and learns on alike."""
    policy = make_policy("vw-ccb", exploration="epsilon")
    assert isinstance(policy, VWCCBPolicy)
    _run(policy, 50)
    again = Policy.restore(policy.snapshot())
    assert isinstance(again, VWCCBPolicy)
    for slot in SLOTS:
        assert again.slot_pmf({}, slot, ACTIONS) == policy.slot_pmf({}, slot, ACTIONS)
    _run(policy, 10)
    _run(again, 10)
    assert again.slot_pmf({}, SLOTS[0], ACTIONS) == policy.slot_pmf({}, SLOTS[0], ACTIONS)
    assert again.vw_arguments().startswith("--ccb_explore_adf ")


@pytest.mark.parametrize(
    ("slots", "match"),
    [
        ([], "`slots` must hold at least one slot"),
        ([SlotOutcome({}, None, 4, 1.0, 0.5)], r"slot 0: `chosen` must be in \[0, 4\), got 4"),
        (
            [SlotOutcome({}, None, 1, 1.0, 0.5), SlotOutcome({}, None, 1, 0.0, 0.5)],
            "slot 1: action 1 was chosen by an earlier slot",
        ),
        ([SlotOutcome({}, (0, 2), 1, 1.0, 0.5)], "slot 0: `chosen` 1 is not in its `include`"),
        ([SlotOutcome({}, None, 1, 1.0, 0.0)], r"slot 0: `probability` must be in \(0, 1\]"),
    ],
)
def test_learn_slots_refuses_impossible_outcomes(slots: list[SlotOutcome], match: str) -> None:
    """An outcome CCB cannot have is refused with the slot and the rule; nothing is learned."""
    policy = make_policy("vw-ccb")
    assert isinstance(policy, VWCCBPolicy)
    with pytest.raises(InvalidFeedbackError, match=match):
        policy.learn_slots({}, ACTIONS, slots)
    assert policy.n_learned == 0


def test_single_slot_rank_sees_the_slot_namespace() -> None:
    """As a Policy, the context's ``_slot`` namespace is the slot's: it changes the pmf."""
    policy = make_policy("vw-ccb", exploration="epsilon", epsilon=0.2)
    assert isinstance(policy, VWCCBPolicy)
    rng = random.Random(3)
    for _ in range(200):
        number = rng.randrange(2)
        context = {"page": {"kind": "home"}, SLOT_NAMESPACE: SLOTS[number]}
        chosen = rng.randrange(4)
        reward = 1.0 if chosen == BEST[number] else 0.0
        policy.learn(context, ACTIONS, chosen, reward, 0.25)
    for number, slot in enumerate(SLOTS):
        pmf = policy.pmf({"page": {"kind": "home"}, SLOT_NAMESPACE: slot}, ACTIONS)
        assert max(range(4), key=pmf.probabilities.__getitem__) == BEST[number]


def test_a_multi_slot_model_file_loads_only_into_a_multi_slot_policy() -> None:
    """A ccb_explore_adf file serves a vw-ccb policy as it served; a cb file is refused by it,
    and a single-slot policy refuses a ccb file, each saying which it is."""
    trained = make_policy("vw-ccb", exploration="epsilon", epsilon=0.2)
    assert isinstance(trained, VWCCBPolicy)
    _run(trained, 60)
    loaded = make_policy("vw-ccb", exploration="epsilon", epsilon=0.2)
    assert isinstance(loaded, VWCCBPolicy)
    loaded.load_model_file(trained.model_file())
    for slot in SLOTS:
        assert loaded.slot_pmf({}, slot, ACTIONS) == trained.slot_pmf({}, slot, ACTIONS)
    single = make_policy("vw-epsilon")
    with pytest.raises(SnapshotError, match=r"multi-slot model \(--ccb_explore_adf\).*vw-ccb"):
        single.load_model_file(trained.model_file())
    with pytest.raises(SnapshotError, match=r"single-slot model \(no --ccb_explore_adf\)"):
        loaded.load_model_file(make_policy("vw-epsilon").model_file())
    assert loaded.slot_pmf({}, SLOTS[0], ACTIONS) == trained.slot_pmf({}, SLOTS[0], ACTIONS)
