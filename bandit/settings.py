"""Settings: one pydantic-settings object, read from ``STREAMBANDIT_*`` variables.

Nested fields use ``__``: ``STREAMBANDIT_LIMITS__MAX_ACTIONS=100``. Build it with
:func:`get_settings`, never at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policies._base import REWARD_LIMIT

__all__ = [
    "ApiKey",
    "ApiSettings",
    "EvaluationSettings",
    "ExplainSettings",
    "KafkaSettings",
    "LearnerSettings",
    "Limits",
    "LogSettings",
    "PrivacySettings",
    "RedisSettings",
    "Settings",
    "get_settings",
]


MIN_AUTO_OPTIMIZATION_SECONDS = 1.0
"""The shortest automatic optimisation frequency any deployment allows (``PolicySettings``);
a deployment's own is ``limits.min_auto_optimization_seconds``."""
MAX_AUTO_OPTIMIZATION_SECONDS = 90 * 24 * 3600.0
"""The longest automatic optimisation frequency (``PolicySettings``): 90 days."""


class Limits(BaseModel):
    """Size limits and the reward range every request and event is validated against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_actions: int = Field(default=50, ge=1, le=10_000)
    max_slots: int = Field(
        default=10,
        ge=1,
        le=256,
        description="Most slots one multi-slot rank may fill (Personalizer's /multislot/rank).",
    )
    max_namespaces: int = Field(default=16, ge=1, le=256)
    max_features_per_namespace: int = Field(default=64, ge=1, le=4096)
    max_features_per_rank: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description=(
            "Most features one rank may carry, its context's and all its actions' together: "
            "the policy crosses the context with every action, on the API's event loop."
        ),
    )
    max_key_length: int = Field(default=64, ge=1, le=256)
    max_string_length: int = Field(default=256, ge=1, le=65_536)
    max_id_length: int = Field(default=128, ge=8, le=1024)
    min_reward: float = Field(
        default=-1000.0,
        ge=-REWARD_LIMIT,
        le=REWARD_LIMIT,
        allow_inf_nan=False,
        description=(
            "Smallest reward (and default reward) accepted; outside [min_reward, "
            "max_reward] a reward is refused (422, or a dead letter). docs/limits.md."
        ),
    )
    max_reward: float = Field(
        default=1000.0,
        ge=-REWARD_LIMIT,
        le=REWARD_LIMIT,
        allow_inf_nan=False,
        description="Largest reward (and default reward) accepted. docs/limits.md.",
    )
    min_auto_optimization_seconds: float = Field(
        default=3600.0,
        ge=MIN_AUTO_OPTIMIZATION_SECONDS,
        le=MAX_AUTO_OPTIMIZATION_SECONDS,
        description=(
            "The shortest automatic optimisation frequency a policy's settings may ask for "
            "(Personalizer's ``autoOptimizationFrequency``)."
        ),
    )

    @model_validator(mode="after")
    def _check_reward_range(self) -> Limits:
        if not self.min_reward < self.max_reward:
            msg = (
                f"`min_reward` must be below `max_reward`, got {self.min_reward!r} "
                f">= {self.max_reward!r}"
            )
            raise ValueError(msg)
        return self


class EvaluationSettings(BaseModel):
    """Bounds on offline evaluations and feature importances (Personalizer's ``/evaluations``).

    Each is a job over the decision log, run in a helper process and kept in Redis
    (:mod:`bandit.service.evaluations`; docs/migrating-from-personalizer.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_kept: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description=(
            "Most evaluations kept for the whole deployment, and as many feature "
            "importances: a create beyond it is refused until one is deleted."
        ),
    )
    auto_check_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        description=(
            "How often each API process checks whether a policy's automatic "
            "optimisation run is due."
        ),
    )
    max_rows: int = Field(
        default=200_000,
        ge=1,
        le=100_000_000,
        description=(
            "Most decision log lines one job reads, the earliest of its window (its "
            "result says where it was cut)."
        ),
    )
    max_features: int = Field(
        default=32,
        ge=0,
        le=1_000,
        description=(
            "Most single features one feature importance scores, the most frequent "
            "first (each costs a replay of its window; 0: namespaces only)."
        ),
    )


class ExplainSettings(BaseModel):
    """Bounds on explanations (``explain: true`` on a rank; the privacy page).

    An explanation asks the policy again once per feature it saw, each time over every
    offered action, so its cost grows with features times actions. A rank asking for
    one beyond `max_features` or `max_actions` is refused (422); one within them is
    computed in a helper process, at most `concurrency` at once, and if it is not done
    `deadline_seconds` after it was asked for, the answer comes without it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_features: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description=(
            "Most features an explained rank may carry, its context's and all its actions' "
            "together (session and device features the service adds come on top)."
        ),
    )
    max_actions: int = Field(
        default=20, ge=1, le=10_000, description="Most actions an explained rank may offer."
    )
    deadline_seconds: float = Field(
        default=1.0,
        gt=0.0,
        le=60.0,
        description=(
            "How long a rank (or the privacy page) waits for its explanations, queueing "
            "included; past it the answer comes without them."
        ),
    )
    concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Explanations computed at once, each in a helper process of its own (started "
            "with the API); more wait for a free one. Each takes a core "
            "while it runs: keep it below the API's cores."
        ),
    )


class KafkaSettings(BaseModel):
    """The Kafka-protocol broker; an empty `broker` means start the embedded one.

    Topics are ``<topic_prefix>.<name>`` for events, decisions, rewards, training and
    dead-letters. Decisions and rewards are keyed by event id and share
    `partitions`, so the join sees both sides of an event in one partition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = ""
    topic_prefix: str = Field(default="streambandit", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, le=1024)
    session_timeout_seconds: float = Field(default=6.0, gt=0.0)
    heartbeat_seconds: float = Field(default=1.0, gt=0.0)
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    producer_buffer: int = Field(
        default=100_000, ge=0, description="Decisions held while the broker is away."
    )
    await_acks: bool = Field(
        default=False,
        description="Answer rank and reward only once the broker acknowledged the record.",
    )
    linger_ms: int = Field(
        default=5,
        ge=0,
        le=1_000,
        description=(
            "How long the API's producer may hold a record to send it with others: "
            "fewer, larger requests cost the API less CPU per record."
        ),
    )
    resend_window_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=3600.0,
        description=(
            "How long the API keeps a copy of each decision, reward and event it produced, "
            "to produce it again when the broker lost its log (docs/live-loop.md, "
            "'Restarts'); 0 keeps none."
        ),
    )
    resend_window_mb: int = Field(
        default=64,
        ge=0,
        le=65_536,
        description="Most memory the API's resend window holds; the oldest copies go first.",
    )

    def topic(self, name: str) -> str:
        """Return the full name of topic `name`: ``<topic_prefix>.<name>``.

        Examples
        --------
        >>> KafkaSettings().topic("decisions")
        'streambandit.decisions'
        """
        return f"{self.topic_prefix}.{name}"


class RedisSettings(BaseModel):
    """Redis; an empty `url` means start the embedded ``redis-server``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = ""
    key_prefix: str = Field(default="sb", pattern=r"^[A-Za-z0-9._-]+$")
    socket_timeout_seconds: float = Field(default=0.05, gt=0.0)
    feature_ttl_seconds: int = Field(default=1800, ge=1)
    dedup_window_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 24 * 3600,
        description=(
            "How long event ids are remembered to drop a duplicate decision or training "
            "example (done markers of the join, at least twice a policy's reward wait; "
            "ids learned; ids logged). Redis holds about 400 bytes per decision for this "
            "long (docs/redis-memory.md)."
        ),
    )
    max_memory_mb: int = Field(
        default=1024,
        ge=0,
        description=(
            "maxmemory of the embedded redis-server (`streambandit up`, tests), with the "
            "noeviction policy: a full Redis refuses writes (the API degrades, learning "
            "stalls) rather than evicting state; 0: no limit (docs/redis-memory.md)."
        ),
    )


class ApiKey(BaseModel):
    """One API key: an app key may use its policies; an admin key may change settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=16, repr=False)
    role: Literal["app", "admin"] = "app"
    policies: tuple[str, ...] = ("*",)


class ApiSettings(BaseModel):
    """The HTTP API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65_535)
    keys: tuple[ApiKey, ...] = ()
    model_poll_seconds: float = Field(
        default=0.1,
        gt=0.0,
        description=(
            "How often the API looks for a newer model or settings of each policy it "
            "serves (one Redis round trip per policy; the model is loaded only when it "
            "changed). Half of it, on average, is in the freshness of a served model."
        ),
    )
    request_log: Literal["all", "errors"] = Field(
        default="errors",
        description=(
            "Which requests write a log line: 'errors' (refused or failed requests, and "
            "settings changes) or 'all' (one line per request; costs about a tenth of a "
            "rank's CPU). Every request is counted in the metrics either way, and every "
            "decision is in the decision log."
        ),
    )
    ops_port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description=(
            "A second port for the routes that need no key besides health and readiness "
            "(/metrics, /docs, /openapi.json): when set, `streambandit api` serves them "
            "there only (the main port answers 404), and nothing else there "
            "(bandit/api/exposure.py)."
        ),
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description=(
            "Requests in flight at once (received and not answered, those waiting to "
            "start included; not health, readiness and metrics, nor requests waiting for "
            "their body's bytes); more are refused at once with 503 and Retry-After, "
            "before their body is read (bandit/api/shedding.py, docs/load-shedding.md)."
        ),
    )
    max_queue_seconds: float = Field(
        default=0.5,
        gt=0.0,
        le=60.0,
        description=(
            "Longest a request may wait, from its headers' arrival until the API starts "
            "it; a request that waited longer is refused at once with 503 and Retry-After "
            "(under overload: bounds the latency of the requests served)."
        ),
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest request body: refused with 413 by its Content-Length before it is "
            "read, or as soon as a chunked body passes it."
        ),
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        description=(
            "Time from a request's start by which its body must be complete; a slower "
            "body is refused with 408 and its connection closed."
        ),
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        description=(
            "Time from a connection's first byte (or a request's) by which the request's "
            "headers must be complete; a slower connection is closed."
        ),
    )
    keep_alive_seconds: float = Field(
        default=5.0,
        gt=0.0,
        le=600.0,
        description="How long an idle keep-alive connection is kept open.",
    )
    shutdown_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        description=(
            "On SIGTERM, how long requests in flight have to finish before the API closes "
            "their connections and stops (uvicorn's graceful shutdown timeout): a stop is "
            "bounded whatever a client holds open."
        ),
    )
    log_lines_per_second: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description=(
            "Log lines written per second for each kind of refused or failed request (its "
            "event and status); the rest are counted, and the next line of that kind says "
            "how many (`suppressed`)."
        ),
    )


class LearnerSettings(BaseModel):
    """When the learner snapshots its models to Redis, and which versions are kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    snapshot_every_examples: int = Field(default=1000, ge=1)
    snapshot_every_seconds: float = Field(
        default=0.25,
        gt=0.0,
        description=(
            "Longest time the learner gathers a batch before it learns it and saves a "
            "snapshot (sooner when `snapshot_every_examples` are in, at once after a quiet "
            "spell). Under steady traffic, half of it on average is in the freshness of a "
            "served model; each snapshot costs the worker tens of milliseconds."
        ),
    )
    decode_processes: int = Field(
        default=1,
        ge=0,
        le=16,
        description=(
            "Helper processes that decode large batches of training records (a backlog) "
            "while the worker learns the one before: decoding costs about three times "
            "VW's learning step. 0 decodes everything in the worker "
            "(streams.training.TrainingDecoder)."
        ),
    )
    stall_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description=(
            "Learning counts as stalled (/readyz 503, streambandit_learning_stalled 1) when "
            "no worker has consumed for this long, or an example released this long ago "
            "is not learned yet (bandit/service/learning.py)."
        ),
    )
    model_history: int = Field(
        default=10,
        ge=0,
        le=100,
        description=(
            "Model versions kept per policy to roll back to (GET /v1/policies/{name}/model/"
            "versions, `streambandit model rollback`), each a whole snapshot in Redis; the "
            "oldest goes in the transaction that keeps one more; 0 keeps none. Kept: every "
            "import, reset and rollback and the version each replaced, and the learner's "
            "versions at most one per `model_history_seconds` (docs/runbook.md)."
        ),
    )
    model_history_seconds: float = Field(
        default=3600.0,
        ge=0.0,
        le=7 * 24 * 3600,
        description=(
            "Least time between two kept versions for a version the learner saved to be "
            "kept (it saves every `snapshot_every_seconds`); 0 keeps every one."
        ),
    )


class LogSettings(BaseModel):
    """Where joined decisions are written as DSJSON, when files rotate, how long they stay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path = Path("streambandit-data") / "decisions"
    rotate_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description=(
            "Days the decision log keeps a file after its last decision: each worker "
            "deletes its older files (streams/sink.py, 'Retention'). Unset or -1: kept "
            "until deleted (DELETE /v1/log). One value for the whole log, every policy's "
            "lines: set it alike where the workers and the API run (the API reports it as "
            "Personalizer's logRetentionDays)."
        ),
    )

    @field_validator("retention_days", mode="before")
    @classmethod
    def _kept_forever(cls, value: object) -> object:
        """Read -1 (Personalizer's 'never deleted') as unset."""
        return None if value in (-1, "-1") else value


class PrivacySettings(BaseModel):
    """Pseudonymisation and consent (DESIGN.md contract 6; docs/privacy.md).

    A request naming a person carries their raw user id; the API replaces it with a
    keyed hash (:func:`bandit.privacy.consent.pseudonymise`) before anything is stored, logged
    or produced, and looks up that pseudonym's consents.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pseudonym_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description=(
            "The secret user ids are hashed with (HMAC-SHA-256). Without it, requests "
            "naming a user are refused (503). `streambandit up` makes one per data folder."
        ),
    )
    consent_default: Literal["granted", "denied"] = Field(
        default="denied",
        description=(
            "Consent of a named user who has no consent record: 'denied' serves them the "
            "baseline policy and neither learns from nor keeps their decisions."
        ),
    )
    anonymous: Literal["granted", "denied"] = Field(
        default="granted",
        description=(
            "How requests naming no user are served: 'granted' leaves consent to the app "
            "(personalised and learned), 'denied' treats them as without consent."
        ),
    )
    baseline_policy: str = Field(
        default="uniform",
        pattern=r"^(uniform|fixed)(:.*)?$",
        description=(
            "The policy spec serving requests without personalisation consent: uniform "
            "or fixed (a baseline that learns nothing and sees no context)."
        ),
    )
    personalizer_identifiers: Literal["drop", "refuse"] = Field(
        default="drop",
        description=(
            "Identifier-like features (an email, an IP address, a user_id...) in requests "
            "to the Personalizer routes: 'drop' leaves them out of what the policy sees "
            "and counts them (streambandit_features_dropped_total, reason identifier), as "
            "a Personalizer client sent them without being refused; 'refuse' answers 400 "
            "naming the feature, as the native routes always do."
        ),
    )
    erasure_memory_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=3600,
        le=400 * 24 * 3600,
        description=(
            "How long an erasure is remembered (the time of it, under a hash of the "
            "pseudonym): events, ranks, rewards, consent changes and privacy-page tokens "
            "accepted before it are dropped when read within this time. Set it to at least "
            "the retention of the events, decisions and rewards topics (Kafka's default: "
            "7 days); at least an hour, the life of a page token."
        ),
    )
    report_budget: float = Field(
        default=1.0,
        gt=0.0,
        allow_inf_nan=False,
        description=(
            "Total ε that noisy aggregate reports (POST /v1/privacy/reports) may spend; "
            "releases beyond it are refused (bandit.privacy.dp.PrivacyLedger)."
        ),
    )


class Settings(BaseSettings):
    """Everything streambandit can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMBANDIT_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    limits: Limits = Limits()
    explain: ExplainSettings = ExplainSettings()
    evaluations: EvaluationSettings = EvaluationSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    learner: LearnerSettings = LearnerSettings()
    decision_log: LogSettings = LogSettings()
    privacy: PrivacySettings = PrivacySettings()
    policies: dict[str, str] = Field(
        default_factory=lambda: {"default": "vw-squarecb"},
        description="Policies served, by name, with the spec each starts from.",
    )
    exploration_floor: float = Field(
        default=1e-3,
        gt=0.0,
        le=1.0,
        description="Smallest probability any offered action gets (capped at 1/n actions).",
    )
    worker_heartbeat: Path | None = Field(
        default=None,
        description=(
            "File a stream worker touches every few seconds while its event loop runs "
            "(`streambandit worker-health` reads its age); none when unset."
        ),
    )
    worker_data: Path = Field(
        default=Path("streambandit-data") / "worker",
        description=(
            "Folder of a stream worker's own files (Faust's data folder; no Faust tables "
            "are kept, state lives in Redis). One per stack and worker: `streambandit up` "
            "puts each worker's in its work folder."
        ),
    )
    watermark_slack_seconds: float = Field(
        default=0.1,
        ge=0.0,
        le=60.0,
        description=(
            "How late after its timestamp a record may still reach the broker (producer "
            "batching, clocks of the API and worker hosts disagreeing): the join waits this "
            "long past a reward wait for rewards on their way (streams/join.py, 'watermarks')."
        ),
    )
    log_format: Literal["auto", "json", "console"] = "auto"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()
