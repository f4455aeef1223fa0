"""The HTTP API: one app, one router module per surface, load shedding and the ports' exposure."""

__all__: list[str] = []
