"""Bandit policies behind one protocol: every decision comes with its probabilities.

A :class:`Policy` maps a context and the offered actions to a :class:`Distribution`;
:func:`choose` draws from it with a generator seeded from the event id
(:func:`rng_for_event`), so the logged probability is the probability of the draw.
"""

from __future__ import annotations

from policies._base import Policy, check_feature_values, check_reward, snapshot_contents
from policies._distribution import (
    Choice,
    Distribution,
    choose,
    decide_ranking,
    rng_for_event,
    slot_seed,
)
from policies._types import Action, Context, FeatureRef, Features, FeatureValue
from policies.registry import available, format_spec, make_policy, policy_class

__all__ = [
    "Action",
    "Choice",
    "Context",
    "Distribution",
    "FeatureRef",
    "FeatureValue",
    "Features",
    "Policy",
    "available",
    "check_feature_values",
    "check_reward",
    "choose",
    "decide_ranking",
    "format_spec",
    "make_policy",
    "policy_class",
    "rng_for_event",
    "slot_seed",
    "snapshot_contents",
]
