"""Settings come from STREAMBANDIT_ variables, nested with __, and are validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bandit.settings import Settings, get_settings


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, the embedded broker and Redis are used and limits are sane."""
    for key in ("STREAMBANDIT_KAFKA__BROKER", "STREAMBANDIT_REDIS__URL"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert settings.kafka.broker == ""
    assert settings.redis.url == ""
    assert settings.limits.max_actions == 50


def test_nested_values_come_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """STREAMBANDIT_LIMITS__MAX_ACTIONS sets limits.max_actions."""
    monkeypatch.setenv("STREAMBANDIT_LIMITS__MAX_ACTIONS", "7")
    monkeypatch.setenv("STREAMBANDIT_EXPLORATION_FLOOR", "0.01")
    settings = Settings()
    assert settings.limits.max_actions == 7
    assert settings.exploration_floor == 0.01


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("STREAMBANDIT_LIMITS__MAX_ACTIONS", "0", "max_actions"),
        ("STREAMBANDIT_EXPLORATION_FLOOR", "0", "exploration_floor"),
        ("STREAMBANDIT_LOG_FORMAT", "xml", "log_format"),
        ("STREAMBANDIT_WATERMARK_SLACK_SECONDS", "-1", "watermark_slack_seconds"),
        ("STREAMBANDIT_DECISION_LOG__RETENTION_DAYS", "0", "retention_days"),
        ("STREAMBANDIT_DECISION_LOG__RETENTION_DAYS", "3651", "retention_days"),
        ("STREAMBANDIT_DECISION_LOG__RETENTION_DAYS", "-2", "retention_days"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    """A bad value is refused with an error that names the setting."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


@pytest.mark.parametrize(("value", "days"), [("30", 30), ("-1", None), ("3650", 3650)])
def test_the_log_retention_is_days_or_minus_one_for_ever(
    monkeypatch: pytest.MonkeyPatch, value: str, days: int | None
) -> None:
    """-1 (Personalizer's "never deleted") reads as no retention, as unset does."""
    monkeypatch.setenv("STREAMBANDIT_DECISION_LOG__RETENTION_DAYS", value)
    assert Settings().decision_log.retention_days == days


def test_get_settings_is_built_once() -> None:
    """get_settings returns the same object on every call."""
    get_settings.cache_clear()
    assert get_settings() is get_settings()
    get_settings.cache_clear()
