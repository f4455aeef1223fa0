"""The wire declarations: every event and request streambandit accepts or sends, and their rules.

The ground of the service: it stands on :mod:`policies`, :mod:`bandit.errors` and
:mod:`bandit.settings`, and everything above (privacy, the service, the surfaces) reads
the wire through these declarations alone.
"""

__all__: list[str] = []
