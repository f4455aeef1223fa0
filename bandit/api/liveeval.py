"""The live evaluation route: candidate policies' anytime-valid estimates on live traffic.

``GET /v1/policies/{name}/evaluation/live`` reads what the learner saved with the
policy's model (:mod:`bandit.service.liveeval`); any key allowed the policy may read it,
as the apprentice figures. The bounds are a confidence sequence: they may be read as
often as one likes, and acted on whenever, at the stated error level.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from bandit.api.admin import live_settings
from bandit.api.deps import CONTROL_TIMEOUT, CallerDep, ServiceDep, redis_or_503, resolve_policy
from bandit.api.errors import ERROR_RESPONSES, POLICY_ERRORS, model_response
from bandit.service.liveeval import LOGGED, CandidateFigures, LiveFigures, read_figures
from bandit.wire.schemas import LiveEvaluationSettings

__all__ = ["CandidateEvaluation", "LiveEvaluationReport", "live_report", "router"]

router = APIRouter(prefix="/v1", tags=["native"], responses=ERROR_RESPONSES)


class CandidateEvaluation(BaseModel):
    """One candidate's live figures (or the served policy's own, ``logged``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidate: str = Field(description="Its policy spec, or 'logged' for the served policy.")
    n: int = Field(description="Decisions it was evaluated on.")
    estimate: float | None = Field(
        description="IPS estimate of its mean reward per decision (null before the first)."
    )
    lower: float = Field(description="Anytime-valid lower bound of that value.")
    upper: float = Field(description="Anytime-valid upper bound of that value.")
    clipped: int = Field(description="Rewards outside the reward range, clipped to it.")
    learn_failures: int = Field(description="Decisions it could not score or learn from.")
    started_at: datetime | None = Field(description="When its evaluation started.")
    updated_at: datetime | None = Field(description="When it last counted a decision.")


class LiveEvaluationReport(BaseModel):
    """A policy's candidates, evaluated live (``GET /v1/policies/{name}/evaluation/live``).

    With probability at least ``1 - alpha`` every candidate's value stays within its
    bounds at every moment at once (a confidence sequence per candidate, each at level
    ``alpha``): look as often as you like. A candidate set in the settings that the
    learner has not counted yet shows ``n`` 0 and the whole reward range. Without
    ``live_evaluation`` in the policy's settings, `enabled` is false and there are no
    figures.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    enabled: bool = Field(description="Whether the policy's settings name a live evaluation.")
    alpha: float | None = Field(description="The error level (null when not enabled).")
    reward_range: tuple[float, float] | None = Field(
        description="The rewards the bounds assume (null when not enabled)."
    )
    method: str = Field(
        default="betting confidence sequence (Waudby-Smith & Ramdas 2024; "
        "Karampatziakis, Mineiro & Ramdas 2021)",
        description="How the bounds are computed (replay/sequential.py).",
    )
    skipped: int = Field(description="Multi-slot decisions, which are not evaluated.")
    logged: CandidateEvaluation | None = Field(
        description="The served policy's own value, for comparison (null when not enabled)."
    )
    candidates: list[CandidateEvaluation]


def live_report(
    name: str, settings: LiveEvaluationSettings | None, figures: LiveFigures | None
) -> LiveEvaluationReport:
    """Lay out `figures` in the order of `settings`' candidates (not counted yet: n 0).

    Figures saved at another alpha or reward range (the settings changed and the
    learner has not caught up) count as not yet counted.
    """
    if settings is None:
        return LiveEvaluationReport(
            policy=name, enabled=False, alpha=None, reward_range=None, skipped=0, logged=None,
            candidates=[],
        )  # fmt: skip
    low, high = settings.reward_range
    current = (
        figures is not None
        and figures.alpha == settings.alpha
        and figures.reward_range == settings.reward_range
    )
    found = {f.candidate: f for f in figures.candidates} if figures and current else {}

    def row(spec: str, entry: CandidateFigures | None) -> CandidateEvaluation:
        if entry is None:
            return CandidateEvaluation(
                candidate=spec, n=0, estimate=None, lower=low, upper=high, clipped=0,
                learn_failures=0, started_at=None, updated_at=None,
            )  # fmt: skip
        return CandidateEvaluation(
            candidate=spec,
            n=entry.n,
            estimate=entry.estimate,
            lower=entry.lower,
            upper=entry.upper,
            clipped=entry.clipped,
            learn_failures=entry.learn_failures,
            started_at=entry.started_at,
            updated_at=entry.updated_at,
        )

    return LiveEvaluationReport(
        policy=name,
        enabled=True,
        alpha=settings.alpha,
        reward_range=settings.reward_range,
        skipped=figures.skipped if figures and current else 0,
        logged=row(LOGGED, figures.logged if figures and current else None),
        candidates=[row(spec, found.get(spec)) for spec in settings.candidates],
    )


@router.get(
    "/policies/{name}/evaluation/live",
    response_model=LiveEvaluationReport,
    responses=POLICY_ERRORS,
    name="get_policy_live_evaluation",
)
async def get_live_evaluation_route(service: ServiceDep, caller: CallerDep, name: str) -> Response:
    """Read the policy's candidates' live estimates and anytime-valid bounds.

    Candidates are set in the policy's settings (``live_evaluation``, ``PUT
    /v1/policies/{name}/settings``); 404 when the policy is not served.
    """
    resolve_policy(service, caller, name)
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, _ = await live_settings(service, name)
            figures = await read_figures(service.store, name)
    return model_response(live_report(name, settings.live_evaluation, figures))
