"""The one exception hierarchy: the ground's (:mod:`policies.errors`) and the service's.

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
    ├── LogFormatError               (also ValueError) a decision log row breaks a rule
    ├── ProducerUnavailableError     (also RuntimeError) a record cannot be taken for the broker
    ├── RuntimeServiceError          (also RuntimeError) a local broker or Redis cannot start
    └── UnknownServedPolicyError     (also LookupError) the service serves no such policy

Request and event payloads are validated by pydantic and raise
:class:`pydantic.ValidationError`, whose entries name the field and the rule.
"""

from __future__ import annotations

from policies.errors import (
    ConfigurationError,
    DatasetError,
    InvalidActionsError,
    InvalidDistributionError,
    InvalidFeaturesError,
    InvalidFeedbackError,
    InvalidModelError,
    LogFormatError,
    PolicyError,
    SnapshotError,
    StreambanditError,
    UnknownPolicyError,
)

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
    "ProducerUnavailableError",
    "RuntimeServiceError",
    "SnapshotError",
    "StreambanditError",
    "UnknownPolicyError",
    "UnknownServedPolicyError",
]


class RuntimeServiceError(StreambanditError, RuntimeError):
    """A server of the embedded runtime cannot be found or started; the message says why."""


class ProducerUnavailableError(StreambanditError, RuntimeError):
    """A record cannot be accepted: the buffer is full, or the broker refused it for good."""


class UnknownServedPolicyError(StreambanditError, LookupError):
    """The service serves no policy under the requested name."""
