"""Explanations: why a decision chose what it chose, from the model's own predictions.

For a decision the served policy made on its best guess, each feature the policy saw
(the context's, and the chosen action's own) is taken away in turn and the policy asked
again: how much more (or less) likely the chosen action was with the feature than
without it is that feature's effect. The features with the largest effects either way
are the reasons, in plain words and as data. This is the model's own answer, not a
separate surrogate: for a linear model it is exactly what that feature's weights add.

Two kinds of decision are not explained by features, and say so instead of inventing a
reason: an exploratory choice (the policy picked a less likely action on purpose, to
keep learning), and a decision by the baseline policy (no personalisation consent:
chosen at random, no feature used).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bandit.wire.answers import Explanation, FeatureEffect
from policies import Action, FeatureRef, Policy

__all__ = ["Explanation", "FeatureEffect", "explain"]

_TOP = 3
_NEGLIGIBLE = 0.005  # relative change below which a feature is not a reason
_BATCH = 64  # features taken away per policy call; the deadline is checked between calls


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def explain(
    policy: Policy,
    context: Mapping[str, Mapping[str, Any]],
    actions: Sequence[Action],
    chosen: int,
    *,
    explored: bool,
    personalised: bool,
    policy_name: str,
    model_version: str,
    top: int = _TOP,
    deadline: float | None = None,
) -> Explanation:
    """Explain the choice of ``actions[chosen]`` by `policy` in `context`.

    Parameters
    ----------
    policy
        The policy that decided (asked again, never taught).
    context, actions
        What it saw (after minimisation).
    chosen
        Offer-order index of the chosen action.
    explored
        Whether the choice was exploration (then no feature is a reason).
    personalised
        False for a decision by the baseline policy (no personalisation consent).
    policy_name, model_version
        Who decided, as the decision logs it.
    top
        How many features to give for and against.
    deadline
        A :func:`time.monotonic` time by which to be done, or None. The features are
        taken away in batches of ``_BATCH`` (:meth:`policies.Policy.pmf_without`, one
        call each), and the deadline is checked before each batch.

    Raises
    ------
    TimeoutError
        If `deadline` passed before the last batch.
    policies.PolicyError
        If the policy cannot predict on the decision.

    Examples
    --------
    >>> from policies import make_policy
    >>> plain = make_policy("uniform")
    >>> e = explain(plain, {}, [Action("a"), Action("b")], 0, explored=False,
    ...             personalised=False, policy_name="default", model_version="0")
    >>> e.kind, e.for_it
    ('baseline', [])
    """
    pmf = policy.pmf(context, actions)
    probability = pmf.probabilities[chosen]
    action = actions[chosen]
    head: dict[str, Any] = {
        "policy": policy_name,
        "model_version": model_version,
        "chosen_action_id": action.id,
        "probability": probability,
    }
    if not personalised:
        text = (
            f"{action.id!r} was chosen by the baseline policy: you have not agreed to "
            "personalisation, so nothing about you was used."
        )
        return Explanation(kind="baseline", for_it=[], against_it=[], text=text, **head)
    if explored:
        text = (
            f"{action.id!r} was an exploratory choice (probability {probability:.2f}): the "
            "service sometimes shows an option it rates lower, to keep learning what people "
            "like. It was not chosen because of anything about you."
        )
        return Explanation(kind="exploration", for_it=[], against_it=[], text=text, **head)
    best = pmf.argmax() == chosen or pmf.probabilities[pmf.argmax()] == probability
    if policy.samples:
        text = (
            f"{action.id!r} was chosen by the model (probability {probability:.2f}). This "
            "model samples from what it is unsure of, so no single feature's effect can be "
            "told apart from that sampling."
        )
        return Explanation(kind="personalised", for_it=[], against_it=[], text=text, **head)
    effects = _effects(policy, context, actions, chosen, probability=probability, deadline=deadline)
    ranked = sorted(effects, key=lambda e: -abs(e.effect))
    for_it = [e for e in ranked if e.effect > _NEGLIGIBLE][:top]
    against_it = [e for e in ranked if e.effect < -_NEGLIGIBLE][:top]
    return Explanation(
        kind="personalised",
        for_it=for_it,
        against_it=against_it,
        text=_text(action.id, probability, for_it, against_it, best=best),
        **head,
    )


def _effects(
    policy: Policy,
    context: Mapping[str, Mapping[str, Any]],
    actions: Sequence[Action],
    chosen: int,
    *,
    probability: float,
    deadline: float | None,
) -> list[FeatureEffect]:
    """Each feature's effect: the context's, then the chosen action's, in batches."""
    features: list[FeatureRef] = []
    names: list[str] = []
    for where, index, features_by_namespace in (
        ("context", None, context),
        ("action", chosen, actions[chosen].features),
    ):
        for namespace, values in features_by_namespace.items():
            for name, value in values.items():
                features.append(FeatureRef(index, namespace, name))
                names.append(f"{where}.{namespace}.{name}={_shown(value)}")
    effects: list[FeatureEffect] = []
    for start in range(0, len(features), _BATCH):
        if deadline is not None and time.monotonic() > deadline:
            msg = f"explanation not done by its deadline: {start} of {len(features)} features"
            raise TimeoutError(msg)
        batch = policy.pmf_without(context, actions, features[start : start + _BATCH])
        effects += [
            _effect(name, probability, without.probabilities[chosen])
            for name, without in zip(names[start : start + _BATCH], batch, strict=True)
        ]
    return effects


def _effect(feature: str, probability: float, without: float) -> FeatureEffect:
    change = probability / without - 1.0 if without > 0 else math.inf
    return FeatureEffect(feature=feature, effect=round(max(min(change, 1e6), -1.0), 4))


def _text(
    action_id: str,
    probability: float,
    for_it: list[FeatureEffect],
    against_it: list[FeatureEffect],
    *,
    best: bool,
) -> str:
    def listed(effects: list[FeatureEffect]) -> str:
        return ", ".join(f"{e.feature} ({e.effect:+.0%})" for e in effects)

    if best:
        text = f"{action_id!r} was the model's best guess (probability {probability:.2f})."
    else:  # (a past decision, explained with a model that has learned since)
        text = f"{action_id!r} is not the model's first choice now (probability {probability:.2f})."
    if for_it:
        text += f" It was made more likely by {listed(for_it)}."
    if against_it:
        text += f" It was made less likely by {listed(against_it)}."
    if not for_it and not against_it:
        text += " No single feature changed how likely it was."
    return text
