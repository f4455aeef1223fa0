"""The errors of the ground layer: what policies and the log formats raise.

::

    StreambanditError
    ├── ConfigurationError          (also ValueError) a setting or hyperparameter breaks its rule
    ├── PolicyError
    │   ├── InvalidDistributionError (also ValueError) probabilities that are not a distribution
    │   ├── InvalidActionsError      (also ValueError) no actions, or actions with repeated ids
    │   ├── InvalidFeaturesError     (also ValueError) features a model cannot use (NaN, inf)
    │   ├── InvalidFeedbackError     (also ValueError) `learn` got an impossible outcome
    │   ├── InvalidModelError        (also ValueError) a learned model holds NaN or infinities
    │   ├── SnapshotError            (also ValueError) bytes that do not restore this policy
    │   └── UnknownPolicyError       (also LookupError) no policy registered under that name
    ├── DatasetError                 (also ValueError) a simulation data set cannot be built
    └── LogFormatError               (also ValueError) a decision log row breaks a rule

The service adds its own branches in :mod:`bandit.errors`, which re-exports these: the
whole tree is importable from there.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatasetError",
    "InvalidActionsError",
    "InvalidDistributionError",
    "InvalidFeaturesError",
    "InvalidFeedbackError",
    "InvalidModelError",
    "LogFormatError",
    "PolicyError",
    "SnapshotError",
    "StreambanditError",
    "UnknownPolicyError",
]


class StreambanditError(Exception):
    """Base class of every error streambandit raises on purpose."""


class ConfigurationError(StreambanditError, ValueError):
    """A setting or hyperparameter breaks its rule; the message names both."""


class PolicyError(StreambanditError):
    """A policy cannot do what was asked."""


class InvalidDistributionError(PolicyError, ValueError):
    """Probabilities that are not finite, not in (0, 1], or do not sum to 1."""


class InvalidActionsError(PolicyError, ValueError):
    """No actions were offered, or two offered actions share an id."""


class InvalidFeaturesError(PolicyError, ValueError):
    """Features a model cannot use, such as a non-finite value; the message names it."""


class InvalidFeedbackError(PolicyError, ValueError):
    """`learn` received a chosen index, reward or probability that cannot be right."""


class InvalidModelError(PolicyError, ValueError):
    """A learned model holds a NaN or infinite number, so it must not be saved or served."""


class SnapshotError(PolicyError, ValueError):
    """Snapshot bytes that are corrupt or belong to another policy."""


class UnknownPolicyError(PolicyError, LookupError):
    """No policy is registered under the requested name."""


class DatasetError(StreambanditError, ValueError):
    """A simulation environment or data set cannot be built as asked."""


class LogFormatError(StreambanditError, ValueError):
    """A logged decision breaks a rule; the message names the row, the field and the rule.

    `reason` names the kind of rule broken (``missing_field``, ``bad_probability``, ...),
    which a reader that skips bad rows counts them by.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason
