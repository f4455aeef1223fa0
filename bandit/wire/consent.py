"""Consent on the wire: a person's raw id, their consents as given, changed and shown.

The rule of a raw user id lives here (:data:`RawUserId`, :data:`MAX_USER_ID_LENGTH`),
used by the API, the Python client and the pseudonymisation in :mod:`bandit.privacy.consent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

__all__ = [
    "CONSENT_KINDS",
    "MAX_USER_ID_LENGTH",
    "ConsentGrant",
    "ConsentKind",
    "ConsentLookup",
    "ConsentRecord",
    "ConsentSource",
    "ConsentUpdate",
    "ConsentView",
    "EffectiveConsent",
    "RawUserId",
]

ConsentKind = Literal["personalisation", "learning"]
"""The two consents a person gives or withholds, separately."""
CONSENT_KINDS: tuple[ConsentKind, ...] = ("personalisation", "learning")


def _check_source(value: str) -> str:
    if not value.isprintable() or not value.strip():
        msg = "the source must be printable text, not blank (e.g. 'cookie-banner-v3')"
        raise ValueError(msg)
    return value


ConsentSource = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_source)]

MAX_USER_ID_LENGTH = 256


def _check_user_id(value: str) -> str:
    if not value.isprintable():
        msg = "user ids must be printable text"
        raise ValueError(msg)
    return value


RawUserId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_USER_ID_LENGTH),
    AfterValidator(_check_user_id),
]
"""A person's id as the app knows it (an account id, an email): hashed on arrival."""


class ConsentGrant(BaseModel):
    """One consent as given or withdrawn: granted or not, where, and when (UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    granted: bool
    source: ConsentSource
    at: datetime


class ConsentRecord(BaseModel):
    """A person's consents as stored: each one absent until first given or refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    personalisation: ConsentGrant | None = None
    learning: ConsentGrant | None = None

    def with_changes(
        self, changes: dict[ConsentKind, bool], source: str, at: datetime | None = None
    ) -> ConsentRecord:
        """Return this record with `changes` given from `source` at `at` (default now).

        Examples
        --------
        >>> record = ConsentRecord().with_changes({"learning": False}, "settings-page")
        >>> record.learning.granted, record.personalisation is None
        (False, True)
        """
        when = datetime.now(UTC) if at is None else at.astimezone(UTC)
        grants: dict[str, ConsentGrant] = {
            kind: ConsentGrant(granted=granted, source=source, at=when)
            for kind, granted in changes.items()
        }
        return self.model_copy(update=grants)

    def to_redis(self) -> dict[str, bytes]:
        """Return the record as the fields of its Redis hash (one JSON value per consent)."""
        return {
            kind: orjson.dumps(grant.model_dump(mode="json"))
            for kind in CONSENT_KINDS
            if (grant := getattr(self, kind)) is not None
        }

    @classmethod
    def from_redis(cls, fields: Mapping[Any, bytes | str]) -> ConsentRecord:
        """Read a record from its Redis hash (empty: no record, every consent absent)."""
        values = {
            (name.decode() if isinstance(name, bytes) else name): value
            for name, value in fields.items()
        }
        return cls.model_validate(
            {kind: orjson.loads(values[kind]) for kind in CONSENT_KINDS if kind in values}
        )


class ConsentUpdate(BaseModel):
    """Give or withdraw a person's consents (``POST /v1/consent``).

    Attributes
    ----------
    user_id
        The person, as the app knows them (hashed on arrival, never stored).
    personalisation, learning
        The consents changed: true to give, false to withdraw; at least one.
    source
        Where the person said so (e.g. ``"cookie-banner-v3"``, ``"privacy-page"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    user_id: RawUserId = Field(repr=False)
    personalisation: StrictBool | None = None
    learning: StrictBool | None = None
    source: ConsentSource

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if self.personalisation is None and self.learning is None:
            msg = "give personalisation, learning or both (true to give, false to withdraw)"
            raise ValueError(msg)
        return self


class ConsentLookup(BaseModel):
    """Name a person: whose consents to read, whose data to export or erase."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    user_id: RawUserId = Field(repr=False)


class EffectiveConsent(BaseModel):
    """What a person's consents allow now (absent ones take the configured default)."""

    model_config = ConfigDict(frozen=True)

    personalisation: bool
    learning: bool


class ConsentView(BaseModel):
    """A person's consents as recorded (None: never given nor refused), and their effect."""

    model_config = ConfigDict(frozen=True)

    personalisation: ConsentGrant | None
    learning: ConsentGrant | None
    effective: EffectiveConsent
