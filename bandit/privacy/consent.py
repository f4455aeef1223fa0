"""Pseudonyms and consent: who may be personalised, and whose decisions may be learned.

A person is known to the service only by a pseudonym: their raw user id, hashed with
a secret key (``settings.privacy.pseudonym_key``) where it enters the service, before it
is stored, logged or produced (:func:`pseudonymise`). Each pseudonym holds two separate
consents, each with where it was given (its source) and when:

personalisation
    Whether rank may choose for this person with the served policy and their features.
    Without it the request is served by the baseline policy (uniform by default), whose
    probabilities are logged like any other, so replay stays unbiased.
learning
    Whether the decision and its rewards may be learned from and kept. Without it the
    decision is produced stripped of every feature and marked ``learn=False``: the join
    counts it and its rewards, the learner and the decision log skip it.

A person without a consent record gets ``settings.privacy.consent_default`` for both
(denied by default); a request naming no person gets ``settings.privacy.anonymous``
(granted by default: the app manages consent itself). When consent cannot be read
(Redis away), the request is served as without consent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bandit.settings import PrivacySettings
from bandit.wire.consent import (
    CONSENT_KINDS,
    ConsentGrant,
    ConsentKind,
    ConsentLookup,
    ConsentRecord,
    ConsentSource,
    ConsentUpdate,
    ConsentView,
    EffectiveConsent,
    RawUserId,
)
from policies.dsjson import log_files, read_file

__all__ = [
    "CONSENT_DENIED",
    "CONSENT_GRANTED",
    "CONSENT_KINDS",
    "CONSENT_SECRET_FIELD",
    "Consent",
    "ConsentGrant",
    "ConsentKind",
    "ConsentLookup",
    "ConsentRecord",
    "ConsentSource",
    "ConsentUpdate",
    "ConsentView",
    "EffectiveConsent",
    "PageToken",
    "RawUserId",
    "effective_consent",
    "find_logged",
    "page_token",
    "pseudonymise",
    "read_page_token",
    "subject_token",
]


_PSEUDONYM_PREFIX = "p"
_PSEUDONYM_HEX = 32  # 128 bits of the HMAC


def pseudonymise(user_id: str, key: bytes) -> str:
    """Return the pseudonym of a raw user id: ``p`` + 128 bits of HMAC-SHA-256, in hex.

    The same id and key always give the same pseudonym; without the key, a pseudonym
    cannot be linked back to the id, nor an id to its pseudonym.

    Examples
    --------
    >>> a = pseudonymise("alice@example.com", b"0123456789abcdef")
    >>> a == pseudonymise("alice@example.com", b"0123456789abcdef"), len(a)
    (True, 33)
    >>> a == pseudonymise("alice@example.com", b"another key, 16+")
    False
    """
    digest = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return _PSEUDONYM_PREFIX + digest[:_PSEUDONYM_HEX]


CONSENT_SECRET_FIELD = "secret"  # noqa: S105  (a field name, not a secret)
"""The field of a person's consent hash holding their secret (see :func:`subject_token`)."""


def subject_token(secret: bytes, event_id: str) -> str:
    """Return the token linking one decision to its person, through their secret.

    A decision the person allowed to be kept carries ``HMAC-SHA-256(secret, event_id)``
    (128 bits, hex): whoever holds the secret can tell which logged decisions are the
    person's (export); two decisions' tokens tell nothing of each other; once the
    secret is deleted (erasure) nobody can link them again (crypto-shredding), while
    their propensities and rewards stay usable for replay.

    Examples
    --------
    >>> a = subject_token(b"s" * 32, "evt-1")
    >>> a == subject_token(b"s" * 32, "evt-1"), a == subject_token(b"s" * 32, "evt-2")
    (True, False)
    """
    return hmac.new(secret, event_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


_PAGE_TOKEN_KEY = b"streambandit privacy page tokens"


@dataclass(frozen=True, slots=True)
class PageToken:
    """What a valid privacy-page token says: whose page, issued when (epoch seconds)."""

    pseudonym: str
    issued_at: float


def page_token(key: bytes, pseudonym: str, expires_at: int, issued_at: float) -> str:
    """Return a token that opens a person's privacy page until `expires_at` (epoch s).

    ``<pseudonym>.<issued_at in ms>.<expires_at>.<HMAC>``, signed with a key derived
    from the pseudonym key: it names the person only by pseudonym, and cannot be forged
    or extended. It says when it was issued, so that an erasure after that time revokes
    it (the API checks the person's erasure marker on every page call).

    Examples
    --------
    >>> token = page_token(b"k" * 16, "p0123", 2_000_000_000, 1_999_996_400.5)
    >>> read_page_token(b"k" * 16, token, now=1_999_999_999)
    PageToken(pseudonym='p0123', issued_at=1999996400.5)
    >>> read_page_token(b"k" * 16, token, now=2_000_000_001) is None  # expired
    True
    >>> read_page_token(b"k" * 16, token.replace("p0123", "p9999"), now=0) is None
    True
    """
    body = f"{pseudonym}.{round(issued_at * 1000)}.{expires_at}"
    return f"{body}.{_page_mac(key, body)}"


def read_page_token(key: bytes, token: str, *, now: float) -> PageToken | None:
    """Return what a valid, unexpired page token says; None otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    pseudonym, issued, expires, mac = parts
    if not token.isascii():  # (compare_digest refuses non-ASCII text)
        return None
    if not hmac.compare_digest(mac, _page_mac(key, f"{pseudonym}.{issued}.{expires}")):
        return None
    if int(expires) <= now:
        return None
    return PageToken(pseudonym, int(issued) / 1000)


def _page_mac(key: bytes, body: str) -> str:
    derived = hmac.new(key, _PAGE_TOKEN_KEY, hashlib.sha256).digest()
    return hmac.new(derived, body.encode(), hashlib.sha256).hexdigest()


def find_logged(directory: Path, secret: bytes) -> list[dict[str, object]]:
    """Return the decisions in a DSJSON decision log that are the secret's person's.

    Reads every decision log file under `directory` (a worker's folder, or the folder of
    several) with the log's one reader (:func:`policies.dsjson.read_file`); a line is the
    person's when its ``_sb.subject`` is :func:`subject_token` of its ``EventId``. What is
    returned is what the line says of the decision: event id, time, policy, chosen
    action (its id as the app gave it), its probability, reward.
    """
    found: list[dict[str, object]] = []
    for path in log_files(directory):
        try:
            found += _logged_in(path, secret)
        except FileNotFoundError:  # deleted meanwhile (DELETE /v1/log, the retention)
            continue
    return found


def _logged_in(path: Path, secret: bytes) -> list[dict[str, object]]:
    """Return the decisions in one log file that are the secret's person's."""
    found: list[dict[str, object]] = []
    # Only lines with a subject can be anyone's; a line being written is not theirs yet.
    for row in read_file(path, skip_bad=True, containing=b'"subject":"'):
        subject = row.extra.get("subject")
        if row.event_id is None or not isinstance(subject, str):
            continue
        if not hmac.compare_digest(subject, subject_token(secret, row.event_id)):
            continue
        found.append(
            {
                "event_id": row.event_id,
                "timestamp": row.timestamp,
                "policy": row.extra.get("policy"),
                "chosen_action_id": row.chosen_action_id,
                "probability": row.propensity,
                "reward": row.reward,
                "file": path.name,
            }
        )
    return found


@dataclass(frozen=True, slots=True)
class Consent:
    """What a request may do: be personalised, be learned from (and kept)."""

    personalise: bool
    learn: bool

    @property
    def path(self) -> Literal["personalise", "baseline"]:
        """Which policy serves the request: the served one, or the baseline."""
        return "personalise" if self.personalise else "baseline"


CONSENT_GRANTED = Consent(personalise=True, learn=True)
CONSENT_DENIED = Consent(personalise=False, learn=False)


def effective_consent(record: ConsentRecord | None, settings: PrivacySettings) -> Consent:
    """Return what a person's record allows; an absent consent takes the default.

    Examples
    --------
    >>> settings = PrivacySettings()  # consent_default "denied"
    >>> effective_consent(None, settings)
    Consent(personalise=False, learn=False)
    >>> given = ConsentRecord().with_changes({"personalisation": True}, "banner")
    >>> effective_consent(given, settings)
    Consent(personalise=True, learn=False)
    """
    default = settings.consent_default == "granted"
    if record is None:
        return CONSENT_GRANTED if default else CONSENT_DENIED
    personalise = record.personalisation.granted if record.personalisation else default
    learn = record.learning.granted if record.learning else default
    return Consent(personalise=personalise, learn=learn)
