"""The native API's answers: one declaration that the server sends and the client reads.

The rank answer (:class:`RankResponse`, with its :class:`Explanation` when asked for), the
acknowledgement of a reward, activation or event (:class:`Accepted`) and the served
policies (:class:`PoliciesResponse`). The Personalizer-compatible answers have their own
shapes, in :mod:`bandit.wire.personalizer`. Fields a reader does not know are ignored
(pydantic's default), so an older client reads a newer server's answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bandit.wire.schemas import RankedAction

__all__ = [
    "Accepted",
    "ExplainedRankResponse",
    "Explanation",
    "FeatureEffect",
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
