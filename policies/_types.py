"""The plain data a policy sees: a context and the actions offered in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["Action", "Context", "FeatureValue", "Features"]

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
