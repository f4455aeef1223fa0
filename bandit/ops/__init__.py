"""The operator's side: the ``streambandit`` command, local runtime, demo and simulator."""

__all__: list[str] = []
