"""The one exception hierarchy: the ground's (:mod:`policies.errors`), the service's, the client's.

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
    ├── UnknownServedPolicyError     (also LookupError) the service serves no such policy
    ├── FeatureRefusedError          (also ValueError) a feature the policy may not see
    ├── BudgetExhaustedError         a release would overspend the privacy budget
    ├── RefusedRequestError          the API's answer other than success: .status, .code
    ├── StructureError               (also ValueError) a record of our own topics, malformed
    ├── ModelFileError               (also ValueError) a model file or kept version refused
    └── ClientError                  bandit.client's: .status (None when no answer came), .message
        ├── InvalidArgumentError     (also ValueError) rejected before sending
        ├── TransportError           no answer: connection refused, reset, ...
        │   └── ClientTimeoutError   (also TimeoutError) no answer in time
        └── APIError                 the server answered with an error status
            ├── BadRequestError           400
            ├── AuthenticationError       401  no API key, or an unknown one
            ├── PermissionDeniedError     403  the key may not do this
            ├── NotFoundError             404
            ├── UnprocessableRequestError 422  the server's validation; .errors lists it
            ├── RateLimitedError          429
            ├── ServiceUnavailableError   503  not ready (broker or Redis away, ...)
            └── ServerError               other 5xx

The modules that raise an error re-export it (:mod:`bandit.client` its branch,
:mod:`bandit.privacy.minimise`, :mod:`bandit.privacy.dp` and
:mod:`bandit.service.modelfile` theirs), so either import works.
Request and event payloads are validated by pydantic and raise
:class:`pydantic.ValidationError`, whose entries name the field and the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExhaustedError",
    "ClientError",
    "ClientTimeoutError",
    "ConfigurationError",
    "DatasetError",
    "FeatureRefusedError",
    "InvalidActionsError",
    "InvalidArgumentError",
    "InvalidDistributionError",
    "InvalidFeaturesError",
    "InvalidFeedbackError",
    "InvalidModelError",
    "LogFormatError",
    "ModelFileError",
    "NotFoundError",
    "PermissionDeniedError",
    "PolicyError",
    "ProducerUnavailableError",
    "RateLimitedError",
    "RefusedRequestError",
    "RuntimeServiceError",
    "ServerError",
    "ServiceUnavailableError",
    "SnapshotError",
    "StreambanditError",
    "StructureError",
    "TransportError",
    "UnknownPolicyError",
    "UnknownServedPolicyError",
    "UnprocessableRequestError",
]


# -- the service's -------------------------------------------------------------------------


class RuntimeServiceError(StreambanditError, RuntimeError):
    """A server of the embedded runtime cannot be found or started; the message says why."""


class ProducerUnavailableError(StreambanditError, RuntimeError):
    """A record cannot be accepted: the buffer is full, or the broker refused it for good."""


class UnknownServedPolicyError(StreambanditError, LookupError):
    """The service serves no policy under the requested name."""


class FeatureRefusedError(StreambanditError, ValueError):
    """A feature the policy may not see: where it is, and the rule it breaks.

    Attributes
    ----------
    location
        Where the feature is, e.g. ``["context", "user", "email"]``.
    rule
        The rule it breaks, in words.
    kind
        The rule's kind, for counting (``undeclared``, ``identifier``, ``invalid``).
    """

    def __init__(self, location: Sequence[str | int], rule: str, kind: str) -> None:
        self.location = list(location)
        self.rule = rule
        self.kind = kind
        super().__init__(f"{'.'.join(map(str, location))}: {rule}")


class ModelFileError(StreambanditError, ValueError):
    """A VW model file or kept model version the served policy cannot take; says why."""


class BudgetExhaustedError(StreambanditError):
    """A release would spend more privacy budget than is left."""


# -- the client's (bandit.client) ----------------------------------------------------------


class ClientError(StreambanditError):
    """Base of every error the client raises.

    Attributes
    ----------
    message
        What went wrong: the server's own message for an error status.
    status
        The HTTP status of the answer, or None when none came (or nothing was sent).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class InvalidArgumentError(ClientError, ValueError):
    """An argument breaks a rule of the API; nothing was sent.

    Attributes
    ----------
    errors
        The pydantic error entries when a schema rejected the argument, else empty.
    """

    def __init__(self, message: str, *, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class TransportError(ClientError):
    """No answer came: the connection was refused, reset or closed."""


class ClientTimeoutError(TransportError, TimeoutError):
    """No answer came within the client's timeout."""


class APIError(ClientError):
    """The server answered with an error status.

    Attributes
    ----------
    status
        The HTTP status.
    message
        The server's message (for a 422, every rule broken, one per line).
    body
        The decoded JSON body of the answer, or its text when it was not JSON.
    """

    status: int

    def __init__(self, message: str, *, status: int, body: object = None) -> None:
        super().__init__(message, status=status)
        self.body = body

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class BadRequestError(APIError):
    """400: the server could not read the request."""


class AuthenticationError(APIError):
    """401: no API key was sent, or the server does not know it."""


class PermissionDeniedError(APIError):
    """403: the API key may not do this (an app key changing settings, another policy)."""


class NotFoundError(APIError):
    """404: no such policy or endpoint."""


class UnprocessableRequestError(APIError):
    """422: the server's validation rejected the request.

    Attributes
    ----------
    errors
        The server's error entries (``loc``, ``msg``, ``type``), when it sent them.
    """

    def __init__(self, message: str, *, status: int, body: object = None) -> None:
        super().__init__(message, status=status, body=body)
        detail = body.get("detail") if isinstance(body, Mapping) else None
        self.errors: list[Mapping[str, Any]] = (
            [entry for entry in detail if isinstance(entry, Mapping)]
            if isinstance(detail, list)
            else []
        )


class RateLimitedError(APIError):
    """429: too many requests; slow down."""


class ServiceUnavailableError(APIError):
    """503: the service cannot serve now (broker or Redis unreachable, not ready)."""


class ServerError(APIError):
    """A 5xx status other than 503: the server failed."""


class RefusedRequestError(StreambanditError):
    """The API refuses a request: the status, code, message and per-field details it answers.

    Raised by the HTTP API's handlers and turned into the error body by its exception
    handlers (:mod:`bandit.api.errors`); the client sees it as an :class:`APIError`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


class StructureError(StreambanditError, ValueError):
    """A record of the service's own topics without the structure the worker reads.

    Raised by :mod:`streams.trusted`; the worker dead-letters the record with its `reason`.

    Parameters
    ----------
    where
        The field, dotted (``decision.actions.2.id``); ``(record)`` for the whole record.
    message
        What is wrong, with what was found (types, never the values of identifiers).
    rule
        The rule's short name, as a dead letter's reason shows it in brackets.
    """

    def __init__(self, where: str, message: str, rule: str) -> None:
        self.where = where
        self.rule = rule
        self.reason = f"{where or '(record)'}: {message} [{rule}]"
        super().__init__(self.reason)
