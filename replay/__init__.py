"""Reading decision logs, off-policy estimators and counterfactual replay."""

from __future__ import annotations

from replay._data import LoggedDecisions, TargetProbabilities

__all__ = ["LoggedDecisions", "TargetProbabilities"]
