"""The plain data a policy sees: a context and the actions offered in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

__all__ = ["Action", "Context", "FeatureRef", "FeatureValue", "Features"]

FeatureValue: TypeAlias = float | int | str
"""A number is a weighted feature; a string is a categorical value (one-hot)."""

Features: TypeAlias = Mapping[str, Mapping[str, FeatureValue]]
"""Features grouped by namespace: ``{"user": {"age": 31, "tier": "gold"}}``."""

Context: TypeAlias = Features
"""The shared context of one decision (user, session, device, time...)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One candidate action: a stable id and its own features, by namespace.

    Examples
    --------
    >>> Action("article-7", {"item": {"topic": "sports", "length": 0.4}}).id
    'article-7'
    """

    id: str
    features: Features = field(default_factory=dict)


class FeatureRef(NamedTuple):
    """Where one feature of a decision is: the context's, or one offered action's.

    Attributes
    ----------
    action
        None for a context feature; else the offer-order index of the action it is on.
    namespace, name
        Its namespace and name.

    Examples
    --------
    >>> FeatureRef(None, "page", "section")
    FeatureRef(action=None, namespace='page', name='section')
    """

    action: int | None
    namespace: str
    name: str
