"""Small number and text helpers the demo's modules share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replay import Interval

__all__ = [
    "finite",
    "finite_or_none",
    "integer",
    "interval_text",
    "lift",
    "mean",
    "percent",
    "rate",
]


def mean(values: Sequence[float]) -> float | None:
    """Return the mean of `values`; None when there are none."""
    return math.fsum(values) / len(values) if values else None


def lift(value: float | None, reference: float | None) -> float | None:
    """Return `value` over `reference`, minus 1; None without a positive reference."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference - 1.0


def rate(value: float | None) -> str:
    """Show a rate as ``0.123``; ``-`` for None."""
    return "-" if value is None else f"{value:.3f}"


def finite_or_none(value: float) -> float | None:
    """Return `value` when it is finite, else None."""
    return value if math.isfinite(value) else None


def interval_text(interval: Interval | None) -> str:
    """Show an interval as ``0.100 - 0.200``; ``-`` for None or an infinite end."""
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "-"
    return f"{interval.low:.3f} - {interval.high:.3f}"


def percent(value: float | None) -> str:
    """Show a relative change as ``+12%``; ``-`` for None."""
    return "-" if value is None else f"{value:+.0%}"


def finite(value: object) -> bool:
    """Whether `value` is a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: object) -> bool:
    """Whether `value` is an int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)
