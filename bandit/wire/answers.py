"""The native API's answers: one declaration that the server sends and the client reads.

The rank answer (:class:`RankResponse`, with its :class:`Explanation` when asked for), the
acknowledgement of a reward, activation or event (:class:`Accepted`), the served
policies (:class:`PoliciesResponse`) and a policy's model (:class:`ModelProperties`) and
kept versions (:class:`ModelVersions`). The Personalizer-compatible answers have their own
shapes, in :mod:`bandit.wire.personalizer`. Fields a reader does not know are ignored
(pydantic's default), so an older client reads a newer server's answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from bandit.wire.schemas import RankedAction

__all__ = [
    "Accepted",
    "ExplainedRankResponse",
    "Explanation",
    "FeatureEffect",
    "ModelProperties",
    "ModelSource",
    "ModelVersion",
    "ModelVersions",
    "PoliciesResponse",
    "PolicyInfo",
    "RankResponse",
]


class FeatureEffect(BaseModel):
    """One feature's effect on the chosen action's probability.

    Attributes
    ----------
    feature
        Where it is and its value: ``context.page.section=sport``,
        ``action.item.topic=golf``, ``context.user.age=0.4``.
    effect
        Relative change of the chosen action's probability with the feature against
        without it: +0.35 means 35% more likely because of it.
    """

    model_config = ConfigDict(frozen=True)

    feature: str
    effect: float


class Explanation(BaseModel):
    """Why one decision chose its action.

    Attributes
    ----------
    kind
        ``"personalised"`` (the served policy's best guess, explained by features),
        ``"exploration"`` (a less likely action chosen on purpose) or ``"baseline"``
        (no personalisation consent: the baseline policy, no feature used).
    policy, model_version
        Who decided.
    chosen_action_id, probability
        What was chosen, and with which probability.
    for_it, against_it
        The features that made the chosen action most more likely, and most less
        likely (empty unless ``kind`` is ``"personalised"``).
    text
        The same in plain words.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["personalised", "exploration", "baseline"]
    policy: str
    model_version: str
    chosen_action_id: str
    probability: float
    for_it: list[FeatureEffect]
    against_it: list[FeatureEffect]
    text: str


class RankResponse(BaseModel):
    """The answer to ``POST /v1/rank``: the chosen action first, with every probability."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    policy: str
    model_version: str
    chosen_action_id: str
    probability: float
    ranking: list[RankedAction]
    deferred: bool


class ExplainedRankResponse(RankResponse):
    """The rank answer; with ``explain``, also why the action was chosen."""

    explanation: Explanation | None = None


class Accepted(BaseModel):
    """A reward, activation or event was accepted (produced, or buffered for the broker)."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    reward_id: str | None = None


class PolicyInfo(BaseModel):
    """One served policy: its spec, the model it serves and the settings applied."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec: str
    model_version: int = Field(description="Saved model version; 0 when built from its spec.")
    model_saved_at: datetime
    learned_examples: int
    settings_version: int


class PoliciesResponse(BaseModel):
    """The served policies the key may use."""

    model_config = ConfigDict(frozen=True)

    policies: list[PolicyInfo]


class ModelProperties(BaseModel):
    """A policy's saved model (``GET /v1/policies/{name}/model/properties``).

    Attributes
    ----------
    policy
        The served policy's name.
    policy_class
        The registered name of the policy class that learned it (``vw`` for every VW
        spec, ``vw-squarecb`` included).
    model_version
        The version served (it grows by one with each save).
    n_learned
        Examples the model learned.
    created_at, saved_at
        When the policy's first model was saved (the lineage this version learned on
        from), and when this version was.
    vw_model_bytes
        The size of its VW model file (``GET /v1/policies/{name}/model``); None for a
        policy that is not VW's.
    """

    model_config = ConfigDict(frozen=True)

    policy: str
    policy_class: str
    model_version: int
    n_learned: int
    created_at: datetime
    saved_at: datetime
    vw_model_bytes: int | None


ModelSource: TypeAlias = Literal["learner", "import", "reset", "rollback"]
"""What saved a model version: the learner's snapshot, an import, a reset, a rollback."""


class ModelVersion(BaseModel):
    """A kept version of a policy's model (``GET /v1/policies/{name}/model/versions``).

    Attributes
    ----------
    version
        Its model version.
    source
        What saved it: ``learner`` (the learner's snapshot), ``import``, ``reset`` or
        ``rollback``.
    saved_at, created_at
        When it was saved, and when the lineage it learned on from began.
    snapshot_bytes
        The size of its snapshot, as Redis keeps it.
    restored_from
        For a rollback, the version it served again; else null.
    """

    model_config = ConfigDict(frozen=True)

    version: int
    source: ModelSource
    saved_at: datetime
    created_at: datetime
    snapshot_bytes: int
    restored_from: int | None


class ModelVersions(BaseModel):
    """The kept versions of a policy's model, newest first, and what is kept.

    Attributes
    ----------
    policy
        The served policy's name.
    model_version
        The version saved last (the API serves it within ``api.model_poll_seconds``);
        null before the policy saved one.
    keep, keep_every_seconds
        ``learner.model_history`` and ``learner.model_history_seconds``: how many
        versions are kept, and how far apart the learner's kept versions are at least
        (imports, resets, rollbacks and the versions they replaced are always kept).
    versions
        The kept versions, newest first.
    """

    model_config = ConfigDict(frozen=True)

    policy: str
    model_version: int | None
    keep: int
    keep_every_seconds: float
    versions: list[ModelVersion]
