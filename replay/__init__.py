"""Reading decision logs, off-policy estimators and counterfactual replay."""

from __future__ import annotations

__all__: list[str] = []
