"""Faust stream processors: context aggregation, decision-reward join, learner, log sink."""

from __future__ import annotations

__all__: list[str] = []
