"""River-based policies (placeholder module replaced in this change)."""

from __future__ import annotations
