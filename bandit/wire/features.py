"""Feature schemas: the features a policy declares, by namespace and name, with their rules.

Declared in a policy's live settings (:class:`bandit.wire.schemas.PolicySettings`) and
enforced by :class:`bandit.privacy.minimise.Minimiser`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FeatureSchema", "FeatureSpec"]


class FeatureSpec(BaseModel):
    """One declared feature: its type, and what values it may take.

    Booleans reach policies as 1.0 and 0.0, so a boolean feature is one of those.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["number", "string", "boolean"]
    minimum: float | None = Field(default=None, allow_inf_nan=False)
    maximum: float | None = Field(default=None, allow_inf_nan=False)
    values: tuple[str, ...] | None = Field(
        default=None, description="For strings: the values allowed (none: any)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type != "number" and (self.minimum is not None or self.maximum is not None):
            msg = "minimum and maximum apply to numbers only"
            raise ValueError(msg)
        if self.type != "string" and self.values is not None:
            msg = "values apply to strings only"
            raise ValueError(msg)
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            msg = f"minimum {self.minimum} is above maximum {self.maximum}"
            raise ValueError(msg)
        return self

    def broken(self, value: object) -> str | None:  # noqa: PLR0911  (one return per rule)
        """Say which rule `value` breaks, or return None when it keeps them all."""
        if self.type == "string":
            if type(value) is not str:
                return "must be a string"
            if self.values is not None and value not in self.values:
                return f"must be one of {list(self.values)}"
            return None
        if type(value) is bool or not isinstance(value, int | float):
            return "must be a number" if self.type == "number" else "must be a boolean"
        if self.type == "boolean":
            return None if value in (0, 1) else "must be a boolean"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum}"
        return None


class FeatureSchema(BaseModel):
    """The features a policy uses: context and action features by namespace and name.

    Examples
    --------
    >>> schema = FeatureSchema.model_validate({
    ...     "context": {"user": {"tier": {"type": "string", "values": ["gold", "basic"]}}},
    ...     "actions": {"item": {"price": {"type": "number", "minimum": 0}}},
    ... })
    >>> schema.undeclared
    'drop'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    context: dict[str, dict[str, FeatureSpec]] = Field(default_factory=dict)
    actions: dict[str, dict[str, FeatureSpec]] = Field(default_factory=dict)
    undeclared: Literal["drop", "reject"] = "drop"
