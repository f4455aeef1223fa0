"""A small contextual problem whose best action is known: the segment decides it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from policies import Action, Choice, Context, Policy, decide_ranking

N_SEGMENTS = 3
N_ACTIONS = 5
GOOD, BAD = 0.9, 0.2

ACTIONS = [
    Action(f"item-{j}", {"item": {"kind": f"k{j}", "size": 0.1 * (j + 1)}})
    for j in range(N_ACTIONS)
]


def best_action(segment: int) -> int:
    """The action that pays most in `segment`; it differs between segments."""
    return (2 * segment) % N_ACTIONS


def context_for(segment: int, noise: float = 0.0) -> Context:
    """The context a user of `segment` is seen in."""
    return {"user": {"segment": f"s{segment}", "activity": 0.5 + noise}}


def expected_reward(segment: int, action: int) -> float:
    """True click probability of `action` in `segment`."""
    return GOOD if action == best_action(segment) else BAD


UNIFORM_VALUE = (GOOD + (N_ACTIONS - 1) * BAD) / N_ACTIONS


@dataclass
class Step:
    """One round of the toy problem: what was offered and what the policy chose."""

    context: Context
    choice: Choice
    reward: float


def run(policy: Policy, rounds: int, seed: int = 0, start: int = 0) -> list[Step]:
    """Let `policy` decide and learn for `rounds` rounds of the toy problem."""
    rng = random.Random(seed * 1_000_003 + start)
    steps = []
    for t in range(start, start + rounds):
        segment = rng.randrange(N_SEGMENTS)
        context = context_for(segment, noise=rng.random() * 0.1)
        choice = decide_ranking(policy.pmf(context, ACTIONS), f"evt-{seed}-{t}")
        reward = 1.0 if rng.random() < expected_reward(segment, choice.index) else 0.0
        policy.learn(context, ACTIONS, choice.index, reward, choice.probability)
        steps.append(Step(context, choice, reward))
    return steps


def policy_value(policy: Policy) -> float:
    """Expected reward of the policy's current distribution, averaged over segments."""
    total = 0.0
    for segment in range(N_SEGMENTS):
        distribution = policy.pmf(context_for(segment, 0.05), ACTIONS)
        total += sum(p * expected_reward(segment, a) for a, p in enumerate(distribution))
    return total / N_SEGMENTS
