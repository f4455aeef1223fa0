"""The service's parts: decision engine, Redis state, producer, metrics, logging, learning."""

__all__: list[str] = []
