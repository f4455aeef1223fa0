"""``python -m bandit``: the ``streambandit`` command."""

from __future__ import annotations

from bandit.ops.cli import main

main()
