"""Turning namespaced features into the flat feature dicts River models learn from."""

from __future__ import annotations

from policies._types import Action, Context, Features

__all__ = ["flatten", "joint_features"]


def flatten(features: Features) -> dict[str, float]:
    """Flatten namespaced features: numbers keep their value, strings become one-hot.

    Examples
    --------
    >>> flatten({"user": {"age": 0.5, "tier": "gold"}})
    {'user.age': 0.5, 'user.tier=gold': 1.0}
    """
    flat: dict[str, float] = {}
    for namespace, values in features.items():
        for name, value in values.items():
            if isinstance(value, str):
                flat[f"{namespace}.{name}={value}"] = 1.0
            elif value:
                flat[f"{namespace}.{name}"] = float(value)
    return flat


def joint_features(
    context: Context, action: Action, *, interactions: bool = True
) -> dict[str, float]:
    """Features of one (context, action) pair: both sides, and their products.

    Parameters
    ----------
    context, action
        The shared context and one offered action.
    interactions
        Whether to add every context-feature x action-feature product, which lets a
        linear model learn that different contexts prefer different actions.

    Examples
    --------
    >>> x = joint_features({"u": {"young": 1.0}}, Action("a", {"i": {"topic": "golf"}}))
    >>> sorted(x)
    ['action=a', 'bias', 'i.topic=golf', 'u.young', 'u.young*action=a', 'u.young*i.topic=golf']
    """
    shared = flatten(context)
    own = flatten(action.features)
    own[f"action={action.id}"] = 1.0
    joint: dict[str, float] = {"bias": 1.0, **shared, **own}
    if interactions:
        for ck, cv in shared.items():
            for ak, av in own.items():
                joint[f"{ck}*{ak}"] = cv * av
    return joint
