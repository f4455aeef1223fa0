"""``python -m bandit``: the ``streambandit`` command."""

from __future__ import annotations

from bandit.cli import main

main()
