"""Pseudonyms and consent records, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pydantic
import pytest

from bandit.privacy.consent import (
    CONSENT_DENIED,
    CONSENT_GRANTED,
    Consent,
    ConsentRecord,
    ConsentUpdate,
    effective_consent,
    page_token,
    pseudonymise,
    read_page_token,
)
from bandit.settings import PrivacySettings

KEY = b"0123456789abcdef-test"


def test_pseudonyms_are_stable_keyed_and_carry_nothing_of_the_id() -> None:
    """One id, one key: one pseudonym; another key or id: another; the id is not in it."""
    ids = [f"user-{i}@example.com" for i in range(1000)]
    pseudonyms = [pseudonymise(user, KEY) for user in ids]
    assert len(set(pseudonyms)) == len(ids)
    assert pseudonyms == [pseudonymise(user, KEY) for user in ids]
    assert all(p.startswith("p") and len(p) == 33 for p in pseudonyms)
    assert all(int(p[1:], 16) >= 0 for p in pseudonyms)  # hex
    rotated = [pseudonymise(user, b"another-key-0123456789") for user in ids]
    assert not set(rotated) & set(pseudonyms)
    assert not any("user" in p or "example" in p for p in pseudonyms)


def test_an_absent_consent_takes_the_default() -> None:
    """No record, or a record without one of the consents, falls back to the setting."""
    denied, granted = PrivacySettings(), PrivacySettings(consent_default="granted")
    assert effective_consent(None, denied) == CONSENT_DENIED
    assert effective_consent(None, granted) == CONSENT_GRANTED
    only_learning = ConsentRecord().with_changes({"learning": True}, "banner")
    assert effective_consent(only_learning, denied) == Consent(personalise=False, learn=True)
    withdrawn = only_learning.with_changes({"learning": False}, "privacy-page")
    assert effective_consent(withdrawn, granted) == Consent(personalise=True, learn=False)
    assert CONSENT_DENIED.path == "baseline"
    assert CONSENT_GRANTED.path == "personalise"


def test_records_keep_source_and_time_and_survive_redis_encoding() -> None:
    """Each consent keeps where and when it was given; the Redis hash reads back equal."""
    when = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    record = ConsentRecord().with_changes(
        {"personalisation": True, "learning": False}, "cookie-banner-v3", at=when
    )
    assert record.personalisation is not None
    assert record.personalisation.source == "cookie-banner-v3"
    assert record.personalisation.at == when
    later = record.with_changes({"learning": True}, "privacy-page", at=when + timedelta(days=1))
    assert later.personalisation == record.personalisation
    assert later.learning is not None
    assert later.learning.source == "privacy-page"
    fields = later.to_redis()
    assert set(fields) == {"personalisation", "learning"}
    assert ConsentRecord.from_redis({k.encode(): v for k, v in fields.items()}) == later


def test_a_consent_update_names_what_is_wrong_without_echoing_the_id() -> None:
    """Nothing changed, a blank source, an overlong id: each error names its field."""
    with pytest.raises(pydantic.ValidationError, match="give personalisation, learning or both"):
        ConsentUpdate.model_validate({"user_id": "alice", "source": "banner"})
    with pytest.raises(pydantic.ValidationError, match="source"):
        ConsentUpdate.model_validate({"user_id": "alice", "learning": True, "source": "  "})
    secret = "alice-" + "x" * 300
    with pytest.raises(pydantic.ValidationError) as caught:
        ConsentUpdate.model_validate({"user_id": secret, "learning": True, "source": "banner"})
    assert "user_id" in str(caught.value)
    assert "alice" not in str(caught.value)
    assert "alice" not in repr(
        ConsentUpdate.model_validate({"user_id": "alice", "learning": True, "source": "b"})
    )


def test_page_tokens_refuse_tampering_and_odd_text() -> None:
    """A forged MAC, a changed pseudonym, non-ASCII text: no person, never an error."""
    key = b"0123456789abcdef-test"
    token = page_token(key, "p1234", 4_000_000_000, 3_999_996_400.25)
    read = read_page_token(key, token, now=0)
    assert read is not None
    assert (read.pseudonym, read.issued_at) == ("p1234", 3_999_996_400.25)
    moved = token.replace(".3999996400250.", ".3999999000000.")  # issued later: revokes less
    for bad in (
        token[:-1] + "0",
        token.replace("p1234", "p1235"),
        moved,
        "a.1.2.\u00e9",
        "a.1.\u00e9",
        "x",
        "",
    ):
        assert read_page_token(key, bad, now=0) is None


def test_a_malformed_consent_in_a_decision_is_refused_not_raised() -> None:
    """A consent that is not one of the paths is a validation error naming `consent`."""
    import pydantic

    from bandit.wire.schemas import Decision

    raw = {
        "event_id": "e1", "policy": "p", "model_version": "1", "actions": [{"id": "a"}],
        "ranking": [{"id": "a", "probability": 1.0}], "chosen_action_id": "a",
        "chosen_index": 0, "probability": 1.0, "explored": False, "consent": ["x"],
    }  # fmt: skip
    with pytest.raises(pydantic.ValidationError) as refused:
        Decision.model_validate(raw)
    assert [error["loc"] for error in refused.value.errors()] == [("consent",)]
    assert Decision.model_validate({**raw, "consent": "baseline"}).consent == "baseline"
