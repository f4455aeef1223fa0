"""streambandit's service package: settings, schemas, simulator, CLI and runtime."""

from __future__ import annotations

__all__: list[str] = []
