"""Azure AI Personalizer-compatible requests and responses, mapped to streambandit's.

A Personalizer client ports by changing its endpoint to the streambandit API: the
routes are Personalizer's paths (``/personalizer/v1.0/``, ``/personalizer/v1.1-preview.1``,
``.2`` and ``.3``, and ``/personalizer/...?api-version=2022-09-01-preview``:
:mod:`bandit.api.personalizer`), the bodies are its JSON shapes, and the key it sends
in ``Ocp-Apim-Subscription-Key`` is accepted as an API key. The table names the v1.0
paths; every version serves the same.

==================================================  ====================================
Personalizer                                        streambandit
==================================================  ====================================
``POST /personalizer/v1.0/rank`` (201)              :class:`~bandit.wire.schemas.RankRequest`
``POST /personalizer/v1.0/events/{id}/reward``      :class:`~bandit.wire.schemas.RewardReported`
``POST /personalizer/v1.0/events/{id}/activate``    :class:`~bandit.wire.schemas.Activation`
``POST .../multislot/rank`` (201)                   ``MultiSlotRankRequest``
``POST .../multislot/events/{id}/reward``           a ``RewardReported`` a slot
``POST .../multislot/events/{id}/activate``         :class:`~bandit.wire.schemas.Activation`
==================================================  ====================================

How features map
----------------
``contextFeatures`` is a list of JSON objects, and so is each action's ``features``.
Within each object:

- a key whose value is an object names a **namespace**: ``{"user": {"tier": "gold"}}``
  becomes namespace ``user``, feature ``tier``;
- a key whose value is a string, number or boolean is a feature of the namespace
  :data:`DEFAULT_NAMESPACE` (``"default"``): ``{"timeOfDay": "Morning"}`` becomes
  ``default.timeOfDay``;
- nested objects and arrays inside a namespace are flattened with ``.``:
  ``{"user": {"profile": {"age": 31}, "emb": [0.1, 0.2]}}`` gives ``profile.age``,
  ``emb.0`` and ``emb.1`` in namespace ``user`` (an array at the top level goes to the
  default namespace the same way);
- several objects naming the same namespace are merged; the same feature twice is an
  error (400) naming both places.

Personalizer's own decision log held the same request in VW's DSJSON layout:
:func:`logged_rank_request` rebuilds the body from a logged line, so a model trained on
Personalizer's logs (``streambandit import-personalizer``) sees what the served policy
sees from the same client.

Differences from Personalizer
-----------------------------
- **Which policy serves**: the key's first served policy (the first served policy for
  a key allowed ``*``), unless ``?policy=NAME`` names another the key may use.
  Rewards and activations are not tied to a policy on the wire; ``?policy=`` is
  checked when given, and a key scoped to some policies may not reward or activate
  another policy's decision (403 when the decision is known, refused by the join
  otherwise: docs/live-loop.md, "Keys scoped to policies").
- **Validation**: the rules of :mod:`bandit.wire.schemas` apply (namespace and feature name
  syntax, the configured size limits, finite numbers, printable strings), with the
  lenient id rule: event and action ids are any printable string of at most 256
  characters, as Personalizer took them (``"ice cream"``, ``"a/b"``), kept exactly
  (the native routes keep the strict rule, ``[A-Za-z0-9][A-Za-z0-9_.:-]*``). An event
  id with a ``/`` goes in the path URL-encoded or not: ``events/a/b/reward`` rewards
  ``a/b``.
  Feature names that are not valid (e.g. array indices at the top level, or names with
  spaces) are rejected. As Personalizer did, a ``null`` feature value (or a ``null``
  list of feature objects) is taken as no feature, and request fields it did not know
  are ignored. An empty context is allowed.
- **Errors**: Personalizer's error envelope ``{"error": {"code", "message",
  "details"}}``; invalid input is 400, as Personalizer answered it, each detail naming
  the field in the Personalizer body (``target``, e.g. ``actions[1].features[0].price``)
  and the rule. A missing or unknown key is 401, a key not allowed the policy or
  action 403, an unavailable broker with a full buffer 503.
- **Ranking**: the actions offered to the policy are ranked, the chosen action
  (``rewardActionId``) first, the rest by decreasing probability; each probability is in
  (0, 1] and they sum to 1. The excluded actions follow, in the request's order, with
  probability 0, as Personalizer ranked them (the decision log holds only the actions
  the policy was offered).
  The response also carries the headers ``X-Streambandit-Policy`` and
  ``X-Streambandit-Model-Version``.
- **Rewards**: a number within ``limits.min_reward`` and ``limits.max_reward``
  (default [-1000, 1000], docs/limits.md; Personalizer asked for [-1, 1]), else 400
  naming ``value``; several rewards per event are aggregated by the policy's
  ``reward_aggregation`` within its ``reward_wait_seconds``. A reward is accepted
  (204) once it is on the ``rewards`` topic, before any join, so an event id without
  a decision is not an error here; the join agent decides what such a reward means
  (DESIGN.md, contract 4). Activations likewise: any valid event id is accepted and
  goes to the ``rewards`` topic.
- Rank, reward and activate are served at every version's path, and so is the model:
  ``GET /model`` (the VW model file ``vw -i`` loads; ``signed=true`` archives are
  refused, 400 naming ``signed``), ``PUT /model`` (a VW model file, checked in a child
  process before it is served: 400 naming ``body`` when the policy cannot learn on from
  it), ``DELETE /model`` (a fresh model) and ``GET /model/properties`` (404 until the
  policy saved a model). Exporting, importing and resetting need an ``admin`` key.
  ``GET``/``PUT /configurations/service`` read and change the policy's live settings
  (:func:`service_configuration`, :func:`configured_settings`); ``GET /logs/properties``
  says the dates of the decision log's files, and ``DELETE /logs`` deletes them (an
  ``admin`` key allowed every policy; 204 once every running worker has deleted its
  files, as ``DELETE /v1/log``: :mod:`streams.ledger`); ``GET``/``PUT``/``DELETE
  /configurations/policy`` read and apply a VW command line (:class:`PersonalizerPolicy`,
  :func:`learning_policy_settings`). Evaluations: :mod:`bandit.service.evaluations`.
- **Multi-slot**: ``POST /multislot/rank`` (:func:`to_multi_slot_rank_request`: slots
  with ``id``, ``features``, ``excludedActions``, ``baselineAction``) fills the slots in
  order, no action twice, and answers each slot's ``rewardActionId``;
  ``/multislot/events/{id}/reward`` takes one reward per slot
  (:func:`to_slot_rewards`), ``.../activate`` activates the decision. The decision
  logged holds every slot's distribution (:class:`~bandit.wire.schemas.SlotDecision`);
  ``docs/migrating-from-personalizer.md`` has the rules.
- **Learning modes**: ``learningMode`` ``Apprentice`` and ``LoggingOnly`` serve the
  baseline action (the first offered, or a slot's ``baselineAction``) with the policy's
  exploration floor on the others, not always the baseline as Personalizer did: a
  logged probability is never 0, so the log stays fit for off-policy evaluation
  (:mod:`bandit.service.apprentice`; docs/migrating-from-personalizer.md, "Learning
  modes"). ``latestApprenticeModeMetrics`` has no ``lastBatchMetrics``.
- **The log is one for every policy**: a Personalizer resource had its own log; here
  the decision log holds every policy's decisions. ``logRetentionDays`` is therefore the
  deployment's ``decision_log.retention_days`` (``STREAMBANDIT_DECISION_LOG__RETENTION_DAYS``,
  set alike where the workers and the API run; -1 when unset), the same in every
  policy's configuration, and ``PUT /configurations/service`` cannot change it: any
  other value is refused with 400 naming ``logRetentionDays``. ``DELETE /logs`` deletes
  every policy's lines.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self, get_args

import pydantic
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    WithJsonSchema,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bandit.settings import Limits
from bandit.wire.schemas import (
    LENIENT_IDS,
    Activation,
    Aggregation,
    Decision,
    LearningMode,
    MultiSlotRankRequest,
    PolicySettings,
    RankRequest,
    RewardReported,
)
from policies import format_spec
from policies.errors import ConfigurationError
from policies.vw import VWPolicy
from policies.vwargs import ARGUMENTS_MAX_LENGTH, LEARNING_PARAMS, parse_arguments
from policies.vwargs import USES as VW_USES

__all__ = [
    "DEFAULT_NAMESPACE",
    "EVALUATION_BUILT_IN",
    "MAX_EVALUATION_POLICIES",
    "MODEL_RESET_HEADER",
    "PersonalizerApplyFromEvaluation",
    "PersonalizerApprenticeMetrics",
    "PersonalizerDateRange",
    "PersonalizerError",
    "PersonalizerErrorDetail",
    "PersonalizerErrorResponse",
    "PersonalizerEvaluationPolicy",
    "PersonalizerEvaluationRequest",
    "PersonalizerFeatureImportanceRequest",
    "PersonalizerLogProperties",
    "PersonalizerModelProperties",
    "PersonalizerMultiSlotRankRequest",
    "PersonalizerMultiSlotRankResponse",
    "PersonalizerMultiSlotRewardRequest",
    "PersonalizerPolicy",
    "PersonalizerRankRequest",
    "PersonalizerRankResponse",
    "PersonalizerRankableAction",
    "PersonalizerRankedAction",
    "PersonalizerRewardRequest",
    "PersonalizerServiceConfiguration",
    "PersonalizerSlot",
    "PersonalizerSlotResponse",
    "PersonalizerSlotReward",
    "configured_settings",
    "error_target",
    "learning_policy_settings",
    "logged_multi_slot_rank_request",
    "logged_rank_request",
    "service_configuration",
    "to_activation",
    "to_multi_slot_rank_request",
    "to_rank_request",
    "to_reward",
    "to_slot_rewards",
]

DEFAULT_NAMESPACE = "default"
"""Namespace of the features given at the top level of a ``contextFeatures`` object."""

_LOGGED_CONTEXT = "FromUrl"  # where Personalizer's log keeps a request's contextFeatures
_LOGGED_FEATURES = "j"  # ... an action's features
_LOGGED_ID = "i"  # ... an action's id, as {"constant": 1, "id": <id>}

_MAX_DEPTH = 8
_TITLE = "PersonalizerRankRequest"

Loc = tuple[str | int, ...]


class _Camel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)


class _Request(_Camel):
    """A request body: fields Personalizer did not know are ignored, as it ignored them."""

    model_config = ConfigDict(extra="ignore")


def _no_null(value: Any) -> Any:
    return [] if value is None else value


FeatureObjects = Annotated[list[dict[str, Any]], BeforeValidator(_no_null)]
"""A list of feature objects; ``null`` is taken as none, as Personalizer took it."""


class PersonalizerRankableAction(_Request):
    """One action of a Personalizer rank request: an id and a list of feature objects."""

    id: str
    features: FeatureObjects = Field(default_factory=list)


class PersonalizerRankRequest(_Request):
    """Personalizer's rank request body (``POST /personalizer/v1.0/rank``)."""

    context_features: FeatureObjects = Field(default_factory=list, alias="contextFeatures")
    actions: list[PersonalizerRankableAction]
    excluded_actions: list[str] = Field(default_factory=list, alias="excludedActions")
    event_id: str | None = Field(default=None, alias="eventId")
    defer_activation: StrictBool = Field(default=False, alias="deferActivation")


class PersonalizerSlot(_Request):
    """One slot of a Personalizer multi-slot rank request."""

    id: str
    features: FeatureObjects = Field(default_factory=list)
    excluded_actions: list[str] = Field(default_factory=list, alias="excludedActions")
    baseline_action: str | None = Field(default=None, alias="baselineAction")


class PersonalizerMultiSlotRankRequest(_Request):
    """Personalizer's multi-slot rank request body (``POST .../multislot/rank``)."""

    context_features: FeatureObjects = Field(default_factory=list, alias="contextFeatures")
    actions: list[PersonalizerRankableAction]
    slots: list[PersonalizerSlot]
    event_id: str | None = Field(default=None, alias="eventId")
    defer_activation: StrictBool = Field(default=False, alias="deferActivation")


class PersonalizerSlotResponse(_Camel):
    """One slot of Personalizer's multi-slot rank response: its id and the action it shows."""

    id: str
    reward_action_id: str = Field(alias="rewardActionId")


class PersonalizerMultiSlotRankResponse(_Camel):
    """Personalizer's multi-slot rank response: each slot's action, and the event id."""

    slots: list[PersonalizerSlotResponse]
    event_id: str = Field(alias="eventId")

    @classmethod
    def from_decision(cls, decision: Decision) -> Self:
        """Build the response for the multi-slot `decision`: each slot's chosen action."""
        return cls(
            slots=[
                PersonalizerSlotResponse(id=slot.id, rewardActionId=slot.chosen_action_id)
                for slot in decision.slots or ()
            ],
            eventId=decision.event_id,
        )


class PersonalizerSlotReward(_Request):
    """One slot's reward: ``{"slotId": "Main Article", "value": 1.0}``."""

    slot_id: str = Field(alias="slotId")
    value: StrictFloat = Field(allow_inf_nan=False)


class PersonalizerMultiSlotRewardRequest(_Request):
    """Personalizer's multi-slot reward body: ``{"reward": [{"slotId", "value"}, ...]}``."""

    reward: list[PersonalizerSlotReward]


class PersonalizerRankedAction(_Camel):
    """One entry of a Personalizer ranking."""

    id: str
    probability: float


class PersonalizerRankResponse(_Camel):
    """Personalizer's rank response: the ranking, the event id, the action to reward."""

    ranking: list[PersonalizerRankedAction]
    event_id: str = Field(alias="eventId")
    reward_action_id: str = Field(alias="rewardActionId")

    @classmethod
    def from_decision(cls, decision: Decision, excluded: Sequence[str] = ()) -> Self:
        """Build the response for `decision`: its ranking, chosen action first.

        The `excluded` actions (the request's ``excludedActions``) follow, in the
        request's order, with probability 0, as Personalizer ranked them.
        """
        return cls(
            ranking=[
                *(
                    PersonalizerRankedAction(id=entry.id, probability=entry.probability)
                    for entry in decision.ranking
                ),
                *(PersonalizerRankedAction(id=action, probability=0.0) for action in excluded),
            ],
            eventId=decision.event_id,
            rewardActionId=decision.chosen_action_id,
        )


class PersonalizerRewardRequest(_Request):
    """Personalizer's reward body: ``{"value": 1.0}``."""

    value: StrictFloat = Field(allow_inf_nan=False)  # strict: false is no reward of 0.0


class PersonalizerModelProperties(_Camel):
    """Personalizer's model properties: when the model was created and last changed."""

    creation_time: datetime = Field(alias="creationTime")
    last_modified_time: datetime = Field(alias="lastModifiedTime")


Duration = Annotated[
    timedelta,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^P(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$",
            "description": "An ISO 8601 duration, e.g. PT10M.",
        }
    ),
]
"""An ISO 8601 duration, fractions of seconds allowed (``PT0.25S``: RFC 3339's has none)."""


class PersonalizerApprenticeMetrics(_Request):
    """Personalizer's apprentice figures (``latestApprenticeModeMetrics``), read-only.

    From :class:`bandit.service.apprentice.ApprenticeMetrics`; the native
    ``GET /v1/policies/{name}/apprentice`` adds baseline rewards, the off-policy
    estimates and the recommendation to switch.
    """

    start_time: datetime | None = Field(alias="startTime")
    last_processed_event_time: datetime | None = Field(alias="lastProcessedEventTime")
    number_of_events: int = Field(alias="numberOfEvents")
    number_of_imitated_events: int = Field(alias="numberOfImitatedEvents")
    sum_of_rewards: float = Field(alias="sumOfRewards")
    sum_of_imitated_rewards: float = Field(alias="sumOfImitatedRewards")


class PersonalizerServiceConfiguration(_Request):
    """Personalizer's service configuration (``GET``/``PUT /configurations/service``).

    Durations are ISO 8601 (``PT10M``). What each field does here:
    :func:`service_configuration` (read) and :func:`configured_settings` (write).
    """

    reward_wait_time: Duration = Field(alias="rewardWaitTime")
    default_reward: float = Field(alias="defaultReward", allow_inf_nan=False)
    reward_aggregation: str = Field(alias="rewardAggregation", max_length=64)
    exploration_percentage: float | None = Field(
        default=None, alias="explorationPercentage", ge=0.0, le=1.0
    )
    model_export_frequency: Duration | None = Field(default=None, alias="modelExportFrequency")
    log_mirror_enabled: bool | None = Field(default=None, alias="logMirrorEnabled")
    log_mirror_sas_uri: str | None = Field(default=None, alias="logMirrorSasUri", max_length=2048)
    log_retention_days: int = Field(default=-1, alias="logRetentionDays")
    last_configuration_edit_date: datetime | None = Field(
        default=None, alias="lastConfigurationEditDate"
    )
    learning_mode: LearningMode = Field(default="Online", alias="learningMode")
    is_auto_optimization_enabled: bool | None = Field(
        default=None, alias="isAutoOptimizationEnabled"
    )
    auto_optimization_frequency: Duration | None = Field(
        default=None, alias="autoOptimizationFrequency"
    )
    auto_optimization_start_date: datetime | None = Field(
        default=None, alias="autoOptimizationStartDate"
    )
    latest_apprentice_mode_metrics: PersonalizerApprenticeMetrics | None = Field(
        default=None, alias="latestApprenticeModeMetrics"
    )


def service_configuration(
    settings: PolicySettings,
    *,
    epsilon: float | None,
    snapshot_seconds: float,
    edited_at: datetime | None,
    apprentice: PersonalizerApprenticeMetrics | None = None,
    retention_days: int | None = None,
) -> PersonalizerServiceConfiguration:
    """Say a policy's settings as Personalizer's service configuration.

    Parameters
    ----------
    settings
        The policy's live settings.
    epsilon
        Its exploration percentage: the epsilon of an epsilon-greedy policy; None for a
        policy that explores otherwise (``explorationPercentage`` is then null).
    snapshot_seconds
        How often the learner saves the model the API serves (``modelExportFrequency``).
    edited_at
        When an admin last changed the settings.
    apprentice
        The apprentice figures, in Apprentice mode (read-only; ignored when written).
    retention_days
        The decision log's retention (``decision_log.retention_days``): the whole log's,
        not the policy's; None (-1, ``logRetentionDays``'s "never deleted") keeps it.

    Examples
    --------
    >>> config = service_configuration(
    ...     PolicySettings(spec="vw-epsilon", reward_wait_seconds=600.0),
    ...     epsilon=0.05, snapshot_seconds=0.25, edited_at=None,
    ... )
    >>> config.model_dump(mode="json", by_alias=True, include={"reward_wait_time", "learning_mode"})
    {'rewardWaitTime': 'PT10M', 'learningMode': 'Online'}
    """
    return PersonalizerServiceConfiguration.model_validate(
        {
            "rewardWaitTime": timedelta(seconds=settings.reward_wait_seconds),
            "defaultReward": settings.default_reward,
            "rewardAggregation": settings.reward_aggregation,
            "explorationPercentage": epsilon,
            "modelExportFrequency": timedelta(seconds=snapshot_seconds),
            "logMirrorEnabled": False,
            "logRetentionDays": -1 if retention_days is None else retention_days,
            "lastConfigurationEditDate": edited_at,
            "learningMode": settings.learning_mode,
            "isAutoOptimizationEnabled": settings.auto_optimization,
            "autoOptimizationFrequency": timedelta(seconds=settings.auto_optimization_seconds),
            "autoOptimizationStartDate": settings.auto_optimization_start,
            "latestApprenticeModeMetrics": apprentice,
        }
    )


def configured_settings(
    config: PersonalizerServiceConfiguration,
    current: PolicySettings,
    *,
    epsilon: float | None,
    snapshot_seconds: float,
    limits: Limits,
    retention_days: int | None = None,
) -> PolicySettings:
    """Return `current` changed as `config` asks; refuse what cannot be done here.

    ``rewardWaitTime``, ``defaultReward`` and ``rewardAggregation`` (``earliest``,
    ``sum``, ``max``) set the policy's; ``explorationPercentage`` its epsilon when it is
    epsilon-greedy (`epsilon` is its current one); ``learningMode`` the policy's
    (:data:`~bandit.wire.schemas.LearningMode`); ``isAutoOptimizationEnabled``,
    ``autoOptimizationFrequency`` (within ``limits.min_auto_optimization_seconds`` and
    90 days) and
    ``autoOptimizationStartDate`` (with its offset) the policy's automatic optimisation,
    each kept when absent. Fields that would ask for what this service does not do are
    refused, each naming itself: log mirroring, a log retention other than the
    deployment's (`retention_days`, the whole log's; None is -1, never deleted), a model
    export frequency other than the learner's.

    Raises
    ------
    pydantic.ValidationError
        Naming each field asked for what cannot be done.
    """
    errors: list[InitErrorDetails] = []

    def refuse(field: str, message: str) -> None:
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError("configuration_not_provided", message),
                loc=(field,),
                input=None,
            )
        )

    changes: dict[str, Any] = {
        "reward_wait_seconds": config.reward_wait_time.total_seconds(),
        "default_reward": config.default_reward,
    }
    if config.reward_aggregation in get_args(Aggregation):
        changes["reward_aggregation"] = config.reward_aggregation
    else:
        refuse(
            "rewardAggregation",
            f"reward aggregation must be one of {list(get_args(Aggregation))}, "
            f"got {config.reward_aggregation[:64]!r}",
        )
    percentage = config.exploration_percentage
    if percentage is not None and percentage != epsilon:
        if epsilon is None:
            refuse(
                "explorationPercentage",
                "the served policy does not explore epsilon-greedily: set its exploration "
                "with PUT /v1/policies/{name}/settings",
            )
        else:
            changes["exploration"] = {**current.exploration, "epsilon": percentage}
    changes["learning_mode"] = config.learning_mode
    changes |= _auto_optimization(config)
    if config.log_mirror_enabled:
        refuse("logMirrorEnabled", "log mirroring is not provided: the decision log is files")
    kept = -1 if retention_days is None else retention_days
    if config.log_retention_days != kept:
        what = "-1 (kept until deleted)" if retention_days is None else f"{kept} days"
        refuse(
            "logRetentionDays",
            f"the decision log's retention is {what}, one for every policy's lines: "
            "set STREAMBANDIT_DECISION_LOG__RETENTION_DAYS where the workers and the API run",
        )
    frequency = config.model_export_frequency
    if frequency is not None and abs(frequency.total_seconds() - snapshot_seconds) > 1e-6:
        refuse(
            "modelExportFrequency",
            f"the learner saves the model every {snapshot_seconds:g} s "
            "(STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_SECONDS), set where it runs",
        )
    if errors:
        raise pydantic.ValidationError.from_exception_data(
            "PersonalizerServiceConfiguration", errors
        )
    try:  # validated as the native settings route validates them: the reward range too
        return PolicySettings.model_validate(
            {**current.model_dump(), **changes}, context={"limits": limits}
        )
    except pydantic.ValidationError as exc:
        raise _relocated(exc, _CONFIGURED) from None


def _auto_optimization(config: PersonalizerServiceConfiguration) -> dict[str, Any]:
    """Return the automatic optimisation settings `config` asks for (absent ones kept)."""
    asked = {
        "auto_optimization": config.is_auto_optimization_enabled,
        "auto_optimization_seconds": None
        if config.auto_optimization_frequency is None
        else config.auto_optimization_frequency.total_seconds(),
        "auto_optimization_start": config.auto_optimization_start_date,
    }
    return {name: value for name, value in asked.items() if value is not None}


_CONFIGURED: dict[Loc, Loc] = {
    ("reward_wait_seconds",): ("rewardWaitTime",),
    ("default_reward",): ("defaultReward",),
    ("reward_aggregation",): ("rewardAggregation",),
    ("exploration",): ("explorationPercentage",),
    ("auto_optimization_seconds",): ("autoOptimizationFrequency",),
    ("auto_optimization_start",): ("autoOptimizationStartDate",),
}
"""Where in Personalizer's configuration each policy setting it changes came from."""


# -- the learning policy ------------------------------------------------------------------


MODEL_RESET_HEADER = "X-Streambandit-Model-Reset"
"""Set on the learning policy's answers: ``true`` when the change served a fresh model."""


class PersonalizerPolicy(_Request):
    """Personalizer's learning policy (``GET``/``PUT``/``DELETE /configurations/policy``).

    `arguments` is a VW command line (``--cb_explore_adf --epsilon 0.2 ...``), read by
    :func:`policies.vwargs.parse_arguments` and applied by :func:`learning_policy_settings`.
    `name` is a label: the answers name the served policy.
    """

    name: str = Field(max_length=256)
    arguments: str = Field(max_length=ARGUMENTS_MAX_LENGTH)


# -- evaluations and feature importances ---------------------------------------------------

EVALUATION_BUILT_IN = ("online", "baseline", "random")
"""The names of the policies every evaluation holds (a custom policy takes another)."""
MAX_EVALUATION_POLICIES = 8
"""The most custom policies one evaluation trains along the log."""


class PersonalizerEvaluationPolicy(_Request):
    """A custom learning policy of an evaluation: a name and a VW command line."""

    name: str = Field(min_length=1, max_length=256)
    arguments: str = Field(max_length=ARGUMENTS_MAX_LENGTH)

    @pydantic.field_validator("arguments")
    @classmethod
    def _mapped(cls, arguments: str) -> str:
        """Refuse what :func:`policies.vwargs.parse_arguments` refuses, with its message."""
        try:
            parse_arguments(arguments)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return arguments


class _Window(_Request):
    """A job over the decision log between two dates (a date without a zone is UTC)."""

    name: str = Field(min_length=1, max_length=256)
    start_time: datetime = Field(alias="startTime")
    end_time: datetime = Field(alias="endTime")

    @pydantic.field_validator("start_time", "end_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_time <= self.start_time:
            msg = f"`endTime` must be after `startTime` ({self.start_time.isoformat()})"
            raise ValueError(msg)
        return self


class PersonalizerEvaluationRequest(_Window):
    """An offline evaluation to run (``PUT /evaluations/{id}``, ``POST /evaluations``).

    The online, baseline and random policies are always evaluated; `policies` adds
    custom VW command lines (names other than those three, each once);
    ``enableOfflineExperimentation`` (v1.1) or ``enablePolicyOptimization`` (2022-09)
    adds a grid of exploration rates.
    """

    policies: list[PersonalizerEvaluationPolicy] = Field(
        default_factory=list, max_length=MAX_EVALUATION_POLICIES
    )
    enable_offline_experimentation: StrictBool = Field(
        default=False, alias="enableOfflineExperimentation"
    )
    enable_policy_optimization: StrictBool = Field(default=False, alias="enablePolicyOptimization")

    @pydantic.field_validator("policies")
    @classmethod
    def _names(
        cls, policies: list[PersonalizerEvaluationPolicy]
    ) -> list[PersonalizerEvaluationPolicy]:
        seen: set[str] = set()
        for policy in policies:
            folded = policy.name.casefold()
            if folded in EVALUATION_BUILT_IN or folded.startswith("epsilon-") or folded in seen:
                msg = (
                    f"policy name {policy.name!r} is taken: names are unique, and "
                    f"{', '.join(EVALUATION_BUILT_IN)} and epsilon-* name the built-in ones"
                )
                raise ValueError(msg)
            seen.add(folded)
        return policies

    @property
    def experiment(self) -> bool:
        """Whether the grid of exploration rates is evaluated too."""
        return self.enable_offline_experimentation or self.enable_policy_optimization


class PersonalizerFeatureImportanceRequest(_Window):
    """A feature importance to compute (``PUT /featureImportances/{id}``)."""


class PersonalizerApplyFromEvaluation(_Request):
    """Which evaluated policy to learn with (``POST /configurations/applyFromEvaluation``)."""

    evaluation_id: str = Field(alias="evaluationId", min_length=1, max_length=256)
    policy_name: str = Field(alias="policyName", min_length=1, max_length=256)


def _defaults(kind: type[VWPolicy]) -> dict[str, Any]:
    """Return the parameters' defaults of VW policy class `kind` (its own over VWPolicy's)."""
    return {
        name: list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
        for cls in (VWPolicy, kind)
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def learning_policy_settings(
    arguments: str, current: PolicySettings, served: VWPolicy
) -> tuple[PolicySettings, bool]:
    """Map a VW command line onto the settings of the served VW policy.

    A multi-slot policy (``vw-ccb``) takes a ``--ccb_explore_adf`` command line and keeps
    its kind; any other VW policy a ``--cb_explore_adf`` one
    (:func:`policies.vwargs.parse_arguments`). A command line that learns as the served
    policy does, but for exploration
    hyperparameters VW changes on a live model (:meth:`policies.vw.VWPolicy.tunable_params`,
    e.g. ``--epsilon``), changes those settings and keeps the model. Any other (another
    exploration algorithm, ``--cb_type``, interactions, ``-l``, ``--l1``, ``--l2``,
    ``--power_t``, ``--ignore``, ``--noconstant``, ``-b``) gives a new spec
    (``vw:...``): the model must be reset, as VW freezes those options into it. The
    random seed is kept unless ``--random_seed`` is given.

    Returns
    -------
    tuple[PolicySettings, bool]
        The new settings, and whether they need a new model.

    Raises
    ------
    pydantic.ValidationError
        Naming ``arguments``: an option refused, a value out of its range.

    Examples
    --------
    >>> served = VWPolicy(exploration="epsilon", epsilon=0.05, interactions=[])
    >>> current = PolicySettings(spec="vw-epsilon:interactions=[]")
    >>> live, reset = learning_policy_settings("--cb_explore_adf --epsilon 0.2", current, served)
    >>> reset, live.spec, live.exploration
    (False, 'vw-epsilon:interactions=[]', {'epsilon': 0.2})
    >>> new, reset = learning_policy_settings(
    ...     "--cb_explore_adf --epsilon 0.2 --cb_type ips -l 0.5 --l1 1E-07", current, served
    ... )
    >>> reset, new.spec
    (True, 'vw:cb_type="ips",epsilon=0.2,exploration="epsilon",interactions=[],l1=1e-07')
    """
    defaults = _defaults(type(served))
    try:
        parsed = parse_arguments(arguments, multi_slot=served.multi_slot)
        wanted = {**defaults, "seed": served.seed, **parsed}
    except ConfigurationError as exc:
        raise _refused("PersonalizerPolicy", "arguments", str(exc)) from None
    had = served.params()
    tunable = served.tunable_params()
    relevant = LEARNING_PARAMS | set(VW_USES[wanted["exploration"]])
    if all(had[key] == wanted[key] for key in relevant - tunable):
        live = {key: wanted[key] for key in sorted(relevant & tunable) if had[key] != wanted[key]}
        changes: dict[str, Any] = {"exploration": {**current.exploration, **live}}
        reset = False
    else:
        kept = {
            key: wanted[key]
            for key in sorted(relevant)
            if key == "exploration" or wanted[key] != defaults[key]
        }
        changes = {"spec": format_spec(type(served).name, kept), "exploration": {}}
        reset = True
    try:
        settings = PolicySettings.model_validate({**current.model_dump(), **changes})
    except pydantic.ValidationError as exc:
        message = "; ".join(str(error["msg"]) for error in exc.errors())
        raise _refused("PersonalizerPolicy", "arguments", message) from None
    return settings, reset


def _refused(title: str, field: str, message: str) -> pydantic.ValidationError:
    """Return a validation error of `title` naming `field` with `message`."""
    error = InitErrorDetails(
        type=PydanticCustomError("value_not_applicable", message), loc=(field,), input=None
    )
    return pydantic.ValidationError.from_exception_data(title, [error])


class PersonalizerDateRange(_Camel):
    """A span of dates: from, to (null while the log is empty)."""

    from_: datetime | None = Field(alias="from")
    to: datetime | None


class PersonalizerLogProperties(_Camel):
    """Personalizer's log properties: the dates the decision log spans."""

    date_range: PersonalizerDateRange = Field(alias="dateRange")


class PersonalizerErrorDetail(_Camel):
    """One broken rule: its code, message and the field it is about (``target``)."""

    code: str
    message: str
    target: str | None = None


class PersonalizerError(_Camel):
    """Personalizer's error object."""

    code: str
    message: str
    details: list[PersonalizerErrorDetail] = Field(default_factory=list)


class PersonalizerErrorResponse(_Camel):
    """Personalizer's error envelope: ``{"error": {...}}``."""

    error: PersonalizerError


# -- mapping -----------------------------------------------------------------------------


def error_target(loc: Sequence[str | int]) -> str:
    """Render an error location the way a JSON path reads: ``actions[1].features[0].x``.

    Examples
    --------
    >>> error_target(("actions", 1, "features", 0, "price"))
    'actions[1].features[0].price'
    """
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class _Flattener:
    """Turns lists of Personalizer feature objects into namespaces, remembering origins."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.errors: list[InitErrorDetails] = []
        self.origins: dict[Loc, Loc] = {}
        self.full: set[Loc] = set()

    def error(self, kind: str, message: str, loc: Loc) -> None:
        self.errors.append(
            InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=None)
        )

    def namespaces(
        self, objects: Sequence[Mapping[str, Any]], ours: Loc, theirs: Loc
    ) -> dict[str, dict[str, Any]]:
        """Merge feature objects into namespaces; `ours`/`theirs` locate them."""
        result: dict[str, dict[str, Any]] = {}
        for index, obj in enumerate(objects):
            for key, value in obj.items():
                if isinstance(value, Mapping):
                    where: Loc = (*theirs, index, key)
                    self.origins.setdefault((*ours, key), where)
                    self.origins.setdefault((*ours, key, "[key]"), (*where, "[key]"))
                    features = result.setdefault(key, {})
                    for name, item in value.items():
                        self._flatten(
                            item,
                            str(name),
                            (*where, name),
                            out=features,
                            ours=(*ours, key),
                            depth=1,
                        )
                elif value is not None:  # (null: no feature, as Personalizer took it)
                    self.origins.setdefault((*ours, DEFAULT_NAMESPACE), (*theirs, index))
                    features = result.setdefault(DEFAULT_NAMESPACE, {})
                    namespace: Loc = (*ours, DEFAULT_NAMESPACE)
                    self._flatten(
                        value, key, (*theirs, index, key), out=features, ours=namespace, depth=1
                    )
        return result

    def _flatten(
        self, value: Any, name: str, where: Loc, *, out: dict[str, Any], ours: Loc, depth: int
    ) -> None:
        if isinstance(value, Mapping | list):
            if depth > _MAX_DEPTH:
                self.error(
                    "feature_too_deep",
                    f"features may nest at most {_MAX_DEPTH} levels deep",
                    where,
                )
                return
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                self._flatten(
                    item, f"{name}.{key}", (*where, key), out=out, ours=ours, depth=depth + 1
                )
            return
        if value is None:  # as Personalizer took it: no feature
            return
        if name in out:
            first = self.origins.get((*ours, name), ())
            self.error(
                "duplicate_feature",
                f"feature {name!r} of namespace {ours[-1]!r} is given twice, first at "
                f"{error_target(first)}",
                where,
            )
            return
        limit = self.limits.max_features_per_namespace
        if len(out) >= limit:
            if ours not in self.full:  # report once per namespace
                self.full.add(ours)
                self.error(
                    "too_many_features",
                    f"at most {limit} features per namespace allowed, got more in "
                    f"namespace {ours[-1]!r}",
                    where,
                )
            return
        out[name] = value
        self.origins[(*ours, name)] = where
        self.origins[(*ours, name, "[key]")] = (*where, "[key]")


def to_rank_request(body: bytes | str | Mapping[str, Any], limits: Limits) -> RankRequest:
    """Map a Personalizer rank body to a validated :class:`~bandit.wire.schemas.RankRequest`.

    Parameters
    ----------
    body
        The JSON body, or its parsed object.
    limits
        The limits to validate against.

    Returns
    -------
    RankRequest

    Raises
    ------
    pydantic.ValidationError
        With every broken rule, located in the *Personalizer* body.

    Examples
    --------
    >>> request = to_rank_request(
    ...     {
    ...         "contextFeatures": [{"timeOfDay": "Morning"}, {"user": {"tier": "gold"}}],
    ...         "actions": [{"id": "news", "features": [{"topic": {"kind": "news"}}]}],
    ...         "eventId": "evt-1",
    ...     },
    ...     Limits(),
    ... )
    >>> request.context
    {'default': {'timeOfDay': 'Morning'}, 'user': {'tier': 'gold'}}
    >>> request.actions[0].features
    {'topic': {'kind': 'news'}}
    """
    if isinstance(body, bytes | str):
        parsed = PersonalizerRankRequest.model_validate_json(body)
    else:
        parsed = PersonalizerRankRequest.model_validate(body)
    flat = _Flattener(limits)
    data = _rank_data(parsed, flat)
    data["excluded_actions"] = parsed.excluded_actions
    if flat.errors:
        raise pydantic.ValidationError.from_exception_data(_TITLE, flat.errors)
    try:
        return RankRequest.model_validate(data, context={"limits": limits, **LENIENT_IDS})
    except pydantic.ValidationError as exc:
        raise _relocated(exc, flat.origins) from None


def _rank_data(
    parsed: PersonalizerRankRequest | PersonalizerMultiSlotRankRequest, flat: _Flattener
) -> dict[str, Any]:
    """Map the fields a rank and a multi-slot rank share: context, actions, event id."""
    context = flat.namespaces(parsed.context_features, ("context",), ("contextFeatures",))
    actions = []
    for index, action in enumerate(parsed.actions):
        ours: Loc = ("actions", index, "features")
        features = flat.namespaces(action.features, ours, ("actions", index, "features"))
        actions.append({"id": action.id, "features": features})
    data: dict[str, Any] = {
        "context": context,
        "actions": actions,
        "defer_activation": parsed.defer_activation,
    }
    if parsed.event_id is not None:
        data["event_id"] = parsed.event_id
    return data


def to_multi_slot_rank_request(
    body: bytes | str | Mapping[str, Any], limits: Limits
) -> MultiSlotRankRequest:
    """Map a Personalizer multi-slot rank body to a validated ``MultiSlotRankRequest``.

    Context and action features map as for :func:`to_rank_request`; each slot's
    ``features`` list likewise, into the slot's namespaces (the policy sees them as
    ``<namespace>.<name>`` in one slot namespace: ``{"size": "Large"}`` becomes
    ``default.size``).

    Raises
    ------
    pydantic.ValidationError
        With every broken rule, located in the *Personalizer* body
        (``slots[1].excludedActions``...).

    Examples
    --------
    >>> request = to_multi_slot_rank_request(
    ...     {
    ...         "actions": [{"id": "news"}, {"id": "sports"}, {"id": "music"}],
    ...         "slots": [
    ...             {"id": "Main Article", "features": [{"size": "Large"}],
    ...              "baselineAction": "news"},
    ...             {"id": "Side Bar", "excludedActions": ["news"]},
    ...         ],
    ...     },
    ...     Limits(),
    ... )
    >>> [(slot.id, slot.policy_features(), slot.excluded_actions) for slot in request.slots]
    [('Main Article', {'default.size': 'Large'}, []), ('Side Bar', {}, ['news'])]
    """
    if isinstance(body, bytes | str):
        parsed = PersonalizerMultiSlotRankRequest.model_validate_json(body)
    else:
        parsed = PersonalizerMultiSlotRankRequest.model_validate(body)
    flat = _Flattener(limits)
    data = _rank_data(parsed, flat)
    slots = []
    for index, slot in enumerate(parsed.slots):
        where: Loc = ("slots", index)
        features = flat.namespaces(slot.features, (*where, "features"), (*where, "features"))
        flat.origins[(*where, "excluded_actions")] = (*where, "excludedActions")
        flat.origins[(*where, "baseline_action")] = (*where, "baselineAction")
        slots.append(
            {
                "id": slot.id,
                "features": features,
                "excluded_actions": slot.excluded_actions,
                "baseline_action": slot.baseline_action,
            }
        )
    data["slots"] = slots
    if flat.errors:
        raise pydantic.ValidationError.from_exception_data(_TITLE, flat.errors)
    try:
        return MultiSlotRankRequest.model_validate(data, context={"limits": limits, **LENIENT_IDS})
    except pydantic.ValidationError as exc:
        raise _relocated(exc, flat.origins) from None


def to_slot_rewards(
    event_id: str, body: bytes | str | Mapping[str, Any], limits: Limits
) -> list[RewardReported]:
    """Map ``POST /multislot/events/{eventId}/reward`` to one reward per slot.

    Each is a :class:`~bandit.wire.schemas.RewardReported` of the event naming its slot
    (``slot_id``); at most ``limits.max_slots`` of them.

    Raises
    ------
    pydantic.ValidationError
        Located at ``reward[i].value``, ``reward[i].slotId`` or ``path.eventId``.

    Examples
    --------
    >>> [(r.slot_id, r.reward) for r in to_slot_rewards(
    ...     "evt-1", '{"reward": [{"slotId": "Main Article", "value": 1}]}', Limits())]
    [('Main Article', 1.0)]
    """
    if isinstance(body, bytes | str):
        parsed = PersonalizerMultiSlotRewardRequest.model_validate_json(body)
    else:
        parsed = PersonalizerMultiSlotRewardRequest.model_validate(body)
    if not 1 <= len(parsed.reward) <= limits.max_slots:
        message = f"1 to {limits.max_slots} slot rewards allowed, got {len(parsed.reward)}"
        raise _refused("PersonalizerMultiSlotRewardRequest", "reward", message)
    rewards = []
    errors: list[InitErrorDetails] = []
    for index, slot in enumerate(parsed.reward):
        try:
            rewards.append(
                RewardReported.model_validate(
                    {"event_id": event_id, "reward": slot.value, "slot_id": slot.slot_id},
                    context={"limits": limits, **LENIENT_IDS},
                )
            )
        except pydantic.ValidationError as exc:
            moved = _relocated(
                exc,
                {
                    ("event_id",): ("path", "eventId"),
                    ("reward",): ("reward", index, "value"),
                    ("slot_id",): ("reward", index, "slotId"),
                },
            )
            errors.extend(
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"]), loc=e["loc"], input=None
                )
                for e in moved.errors(include_input=False)
            )
    if errors:
        raise pydantic.ValidationError.from_exception_data(
            "PersonalizerMultiSlotRewardRequest", errors
        )
    return rewards


def logged_rank_request(record: Mapping[str, Any], action_ids: Sequence[str]) -> dict[str, Any]:
    """Rebuild the Personalizer rank body that a decision of Personalizer's log was ranked on.

    Personalizer logged each decision as a line of VW's DSJSON (``DSJSONReader`` reads
    its labels): the request's ``contextFeatures`` list under ``c.FromUrl``, and each
    offered action under ``c._multi`` with its ``features`` list under ``j`` and its id
    as ``_tag`` and as the namespace ``i`` (``{"constant": 1, "id": <id>}``, VW's
    per-action feature, which the request did not hold). This gives the body back, so
    that :func:`to_rank_request` maps it exactly as it maps the same request sent to
    the Personalizer routes: a model trained on these bodies sees the features the
    served policy will see from the same client.

    Any other key of ``c`` or of an action (a namespace of another writer) is taken as a
    feature object of its own, ``{key: value}``; keys starting with ``_`` are VW's
    fields (``_multi``, ``_tag``, ``_slots``...), not features.

    Parameters
    ----------
    record
        The decoded line (a single-slot decision: its ``c`` an object with ``_multi``).
    action_ids
        The offered actions' ids, in ``_multi``'s order (as ``DSJSONReader`` read them).

    Returns
    -------
    dict
        ``{"contextFeatures": [...], "actions": [{"id", "features"}, ...]}``.

    Examples
    --------
    >>> latte = {"_tag": "Latte", "i": {"constant": 1, "id": "Latte"}, "j": [{"roast": "dark"}]}
    >>> line = {
    ...     "c": {
    ...         "FromUrl": [{"timeofday": "Afternoon"}, {"user": {"tier": "gold"}}],
    ...         "_multi": [latte, {"_tag": "Tea", "i": {"constant": 1, "id": "Tea"}}],
    ...     }
    ... }
    >>> body = logged_rank_request(line, ["Latte", "Tea"])
    >>> body["contextFeatures"]
    [{'timeofday': 'Afternoon'}, {'user': {'tier': 'gold'}}]
    >>> body["actions"]
    [{'id': 'Latte', 'features': [{'roast': 'dark'}]}, {'id': 'Tea', 'features': []}]
    >>> to_rank_request(body, Limits()).context
    {'default': {'timeofday': 'Afternoon'}, 'user': {'tier': 'gold'}}
    """
    shared: Mapping[str, Any] = record["c"]
    context: list[Any] = []
    for key, value in shared.items():
        if key[:1] == "_":
            continue
        if key == _LOGGED_CONTEXT and _objects(value):
            context.extend(value)
        else:
            context.append({key: value})
    actions = [
        {"id": action_id, "features": _logged_features(item, action_id)}
        for action_id, item in zip(action_ids, shared["_multi"], strict=True)
    ]
    return {"contextFeatures": context, "actions": actions}


def logged_multi_slot_rank_request(
    record: Mapping[str, Any], action_ids: Sequence[str], slot_ids: Sequence[str]
) -> dict[str, Any]:
    """Rebuild the multi-slot rank body that a multi-slot decision of Personalizer's log had.

    As :func:`logged_rank_request` rebuilds a rank body, for VW's CCB DSJSON line:
    ``contextFeatures`` and ``actions`` as there, and ``slots`` from ``c._slots``, each
    slot read as an action is (its ``features`` list under ``j``; any other key not
    starting with ``_`` a feature object of its own; ``_id``, ``_inc`` are VW's
    fields), so that :func:`to_multi_slot_rank_request` maps it as the multi-slot route
    maps the same request.

    Parameters
    ----------
    record
        The decoded line (``c`` an object with ``_multi`` and ``_slots``).
    action_ids
        The offered actions' ids, in ``_multi``'s order.
    slot_ids
        The slots' ids, in ``_slots``' order (as ``DSJSONReader.read_slots`` read them).

    Examples
    --------
    >>> line = {
    ...     "c": {
    ...         "FromUrl": [{"tier": "gold"}],
    ...         "_multi": [{"_tag": "news", "j": [{"topic": "news"}]}, {"_tag": "tea"}],
    ...         "_slots": [{"_id": "hero", "j": [{"size": "Large"}], "_inc": [0, 1]}],
    ...     }
    ... }
    >>> body = logged_multi_slot_rank_request(line, ["news", "tea"], ["hero"])
    >>> body["slots"]
    [{'id': 'hero', 'features': [{'size': 'Large'}]}]
    >>> to_multi_slot_rank_request(body, Limits()).slots[0].policy_features()
    {'default.size': 'Large'}
    """
    body = logged_rank_request(record, action_ids)
    body["slots"] = [
        {"id": slot_id, "features": _logged_features(item, None)}
        for slot_id, item in zip(slot_ids, record["c"]["_slots"], strict=True)
    ]
    return body


def _logged_features(item: Mapping[str, Any], item_id: str | None) -> list[Any]:
    """Rebuild the features list of a logged action (`item_id`: its id) or slot (None)."""
    features: list[Any] = []
    for key, value in item.items():
        if key[:1] == "_" or (
            item_id is not None and key == _LOGGED_ID and _id_namespace(value, item_id)
        ):
            continue
        if key == _LOGGED_FEATURES and _objects(value):
            features.extend(value)
        else:
            features.append({key: value})
    return features


def _objects(value: Any) -> bool:
    """Whether `value` is a list of JSON objects (a request's list of feature objects)."""
    return isinstance(value, list) and all(isinstance(item, Mapping) for item in value)


def _id_namespace(value: Any, action_id: str) -> bool:
    """Whether `value` is the id namespace Personalizer's log adds to an action."""
    return (
        isinstance(value, Mapping)
        and value.get("id") == action_id
        and set(value) <= {"constant", "id"}
    )


_RENAMED: dict[str, str] = {
    "context": "contextFeatures",
    "excluded_actions": "excludedActions",
    "event_id": "eventId",
    "defer_activation": "deferActivation",
}


def _relocated(
    exc: pydantic.ValidationError, origins: Mapping[Loc, Loc]
) -> pydantic.ValidationError:
    """Relocate errors from our request to the Personalizer body they came from."""
    errors: list[InitErrorDetails] = []
    for error in exc.errors(include_input=False):
        loc = tuple(error["loc"])
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in origins:
                new: Loc = (*origins[loc[:cut]], *loc[cut:])
                break
        else:
            head = loc[0]
            new = (_RENAMED.get(head, head) if isinstance(head, str) else head, *loc[1:])
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError(error["type"], error["msg"]), loc=new, input=None
            )
        )
    return pydantic.ValidationError.from_exception_data(_TITLE, errors)


def to_reward(
    event_id: str, body: bytes | str | Mapping[str, Any], limits: Limits
) -> RewardReported:
    """Map ``POST /events/{eventId}/reward`` to a :class:`~bandit.wire.schemas.RewardReported`.

    Raises
    ------
    pydantic.ValidationError
        Located at ``value`` or ``path.eventId``.

    Examples
    --------
    >>> to_reward("evt-1", '{"value": 1}', Limits()).reward
    1.0
    """
    if isinstance(body, bytes | str):
        parsed = PersonalizerRewardRequest.model_validate_json(body)
    else:
        parsed = PersonalizerRewardRequest.model_validate(body)
    try:
        return RewardReported.model_validate(
            {"event_id": event_id, "reward": parsed.value},
            context={"limits": limits, **LENIENT_IDS},
        )
    except pydantic.ValidationError as exc:
        raise _relocated(
            exc, {("event_id",): ("path", "eventId"), ("reward",): ("value",)}
        ) from None


def to_activation(event_id: str, limits: Limits) -> Activation:
    """Map ``POST /events/{eventId}/activate`` to an :class:`~bandit.wire.schemas.Activation`.

    Raises
    ------
    pydantic.ValidationError
        Located at ``path.eventId``.
    """
    try:
        return Activation.model_validate(
            {"event_id": event_id}, context={"limits": limits, **LENIENT_IDS}
        )
    except pydantic.ValidationError as exc:
        raise _relocated(exc, {("event_id",): ("path", "eventId")}) from None
