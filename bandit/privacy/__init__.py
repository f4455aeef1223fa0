"""Privacy: pseudonyms and consent, data minimisation, differential privacy, the privacy page."""

__all__: list[str] = []
