"""Settings: one pydantic-settings object, read from ``STREAMBANDIT_*`` variables.

Nested fields use ``__``: ``STREAMBANDIT_LIMITS__MAX_ACTIONS=100``. Build it with
:func:`get_settings`, never at import time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings", "Limits", "RedisSettings", "Settings", "get_settings"]


class Limits(BaseModel):
    """Size limits every request and event is validated against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_actions: int = Field(default=50, ge=1, le=10_000)
    max_namespaces: int = Field(default=16, ge=1, le=256)
    max_features_per_namespace: int = Field(default=64, ge=1, le=4096)
    max_key_length: int = Field(default=64, ge=1, le=256)
    max_string_length: int = Field(default=256, ge=1, le=65_536)
    max_id_length: int = Field(default=128, ge=8, le=1024)


class KafkaSettings(BaseModel):
    """Where the Kafka-protocol broker is; empty means start the embedded one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = ""


class RedisSettings(BaseModel):
    """Where Redis is; empty means start the embedded ``redis-server``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = ""


class Settings(BaseSettings):
    """Everything streambandit can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMBANDIT_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    limits: Limits = Limits()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    exploration_floor: float = Field(
        default=1e-3,
        gt=0.0,
        le=1.0,
        description="Smallest probability any offered action gets (capped at 1/n actions).",
    )
    log_format: Literal["auto", "json", "console"] = "auto"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()
