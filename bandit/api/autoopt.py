"""Personalizer's automatic optimisation: periodic offline evaluations, the best one applied.

A :class:`AutoOptimizer` runs in each API process (the app's lifespan). Every
``evaluations.auto_check_seconds`` it reads each served policy's settings; a run is due
at start + k x frequency (k >= 1, :class:`~bandit.wire.schemas.PolicySettings`). The
first process to set the run's Redis key (``SET NX``, kept for two frequencies) runs it,
so several processes, and one restarted, run each due run once. A run evaluates the
last frequency's window of the decision log with offline experimentation, through the
route's own path (:func:`bandit.api.personalizer.start_evaluation`), and applies the
optimal policy through the learning-policy path when
:func:`~bandit.service.evaluation.optimisation_verdict` says so. Its record (the
native ``GET /v1/policies/{name}/auto-optimization``) and one ``autooptimization.ran``
log line say what it did and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from bandit.api.admin import check_admin, live_settings
from bandit.api.deps import (
    CONTROL_TIMEOUT,
    Caller,
    CallerDep,
    Service,
    ServiceDep,
    redis_or_503,
    resolve_policy,
)
from bandit.api.errors import ERROR_RESPONSES, POLICY_ERRORS, model_response
from bandit.api.personalizer import apply_learning_policy, start_evaluation
from bandit.errors import RefusedRequestError
from bandit.service.evaluation import optimisation_verdict
from bandit.settings import ApiKey
from bandit.wire.personalizer import PersonalizerEvaluationRequest
from bandit.wire.schemas import PolicySettings

__all__ = ["AutoOptimization", "AutoOptimizationRun", "AutoOptimizer", "due_run", "router"]

_log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["native"], responses=ERROR_RESPONSES)


class AutoOptimizationRun(BaseModel):
    """What a policy's last automatic optimisation run did (``GET .../auto-optimization``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    due_time: datetime = Field(alias="dueTime", description="When the run was due.")
    ran_at: datetime = Field(alias="ranAt", description="When it finished.")
    evaluation_id: str = Field(alias="evaluationId", description="Its evaluation's id.")
    applied: bool = Field(description="Whether a learning policy was applied.")
    policy_name: str | None = Field(
        default=None, alias="policyName", description="The optimal policy, when one applies."
    )
    arguments: str | None = Field(default=None, description="The VW arguments applied.")
    reason: str = Field(description="Why it was applied or not, in words.")


class AutoOptimization(BaseModel):
    """A policy's automatic optimisation: whether it runs, when next, its last run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(description="Whether automatic optimisation runs.")
    next_due_time: datetime | None = Field(
        alias="nextDueTime", description="When the next run is due (null when disabled)."
    )
    last_run: AutoOptimizationRun | None = Field(
        alias="lastRun", description="What the last run did (null before the first)."
    )


def _key(service: Service, name: str, suffix: str) -> str:
    """Return the Redis key `suffix` (``last``, ``run:...``) of policy `name`'s optimisation."""
    return f"{service.jobs.store.prefix}:autoopt:{name}:{suffix}"


def _start(settings: PolicySettings) -> float:
    """Return when the runs are counted from, in Unix seconds (unset: the epoch)."""
    found = settings.auto_optimization_start
    return 0.0 if found is None else found.timestamp()


def due_run(settings: PolicySettings, now: float) -> tuple[int, float] | None:
    """Return the latest due run of `settings` at `now` (its k, its time), or None.

    >>> from datetime import UTC, datetime
    >>> on = PolicySettings(spec="vw-epsilon", auto_optimization=True,
    ...     auto_optimization_seconds=3600.0,
    ...     auto_optimization_start=datetime(2026, 1, 1, tzinfo=UTC))
    >>> start = on.auto_optimization_start.timestamp()
    >>> due_run(on, start + 7300.0) == (2, start + 7200.0)
    True
    >>> due_run(on, start + 10.0) is None
    True
    """
    if not settings.auto_optimization:
        return None
    every = settings.auto_optimization_seconds
    start = _start(settings)
    k = math.floor((now - start) / every)
    return None if k < 1 else (k, start + k * every)


class AutoOptimizer:
    """Check every served policy's automatic optimisation, run what is due (module doc)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        key = ApiKey(key=secrets.token_hex(16), role="admin")
        self._caller = Caller(key=key, fingerprint="auto-optimization")
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        """How many times every served policy has been checked (tests wait on it)."""

    def _key(self, name: str, suffix: str) -> str:
        return _key(self.service, name, suffix)

    def start(self) -> None:
        """Start checking, in a task of the running loop."""
        self._task = asyncio.create_task(self._loop(), name="auto-optimization")

    async def stop(self) -> None:
        """Stop checking; a run in flight is abandoned (its evaluation reads ``Failed``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        every = self.service.settings.evaluations.auto_check_seconds
        while True:
            for name in self.service.engine.served:
                try:
                    await self.check(name)
                except Exception:  # noqa: BLE001  # Redis away, a refused apply: next check
                    _log.exception("autooptimization.failed", policy=name)
            self.rounds += 1
            await asyncio.sleep(every)

    async def record(self, name: str) -> AutoOptimizationRun | None:
        """Return the record of policy `name`'s last run, or None."""
        raw = await self.service.jobs.store.redis.get(self._key(name, "last"))
        return None if raw is None else AutoOptimizationRun.model_validate_json(raw)

    async def check(self, name: str) -> None:
        """Run policy `name`'s automatic optimisation when due and not yet run anywhere."""
        redis = self.service.jobs.store.redis
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, _ = await live_settings(self.service, name)
        due = due_run(settings, time.time())
        if due is None:
            return
        k, at = due
        every = settings.auto_optimization_seconds
        claim = self._key(name, f"run:{every:g}:{at:.3f}")
        ttl = max(1, math.ceil(2 * every))
        async with asyncio.timeout(CONTROL_TIMEOUT):
            if not await redis.set(claim, "1", nx=True, ex=ttl):
                return
            previous = await self.record(name)
        end = datetime.fromtimestamp(at, UTC)
        body = PersonalizerEvaluationRequest.model_validate(
            {
                "name": f"auto-optimization {end.isoformat()}",
                "startTime": end - timedelta(seconds=every),
                "endTime": end,
                "enableOfflineExperimentation": True,
            }
        )
        job_id = f"auto-{name}-{k}-{secrets.token_hex(4)}"
        if previous is not None:  # one kept per policy
            await self.service.jobs.store.delete("evaluations", previous.evaluation_id)
        outcome: dict[str, Any] = {"dueTime": end.isoformat(), "evaluationId": job_id}
        try:
            _, task = await start_evaluation(self.service, name, job_id, body)
            await task
            found = await self.service.jobs.store.get("evaluations", job_id)
            if found is None or found["status"] != "Succeeded":
                status = "deleted" if found is None else found["status"]
                why = "" if found is None else found.get("description", "")
                outcome |= {"applied": False, "reason": f"the evaluation {status}: {why}"}
            else:
                outcome |= await self._apply(name, found)
        except RefusedRequestError as exc:
            outcome |= {"applied": False, "reason": exc.message}
        outcome["ranAt"] = datetime.now(UTC).isoformat()
        run = AutoOptimizationRun.model_validate(outcome)
        await redis.set(self._key(name, "last"), run.model_dump_json(by_alias=True))
        _log.info("autooptimization.ran", policy=name, **outcome)

    async def _apply(self, name: str, found: dict[str, Any]) -> dict[str, Any]:
        chosen, reason = optimisation_verdict(found["result"])
        if chosen is None:
            return {"applied": False, "reason": reason}
        arguments = next(p["arguments"] for p in found["policies"] if p["name"] == chosen)
        request = Request({"type": "http", "headers": []})  # the settings path notes into it
        await apply_learning_policy(request, self.service, self._caller, name, arguments)
        return {"applied": True, "policyName": chosen, "arguments": arguments, "reason": reason}


@router.get(
    "/policies/{name}/auto-optimization",
    response_model=AutoOptimization,
    responses=POLICY_ERRORS,
    name="get_auto_optimization",
)
async def auto_optimization_route(service: ServiceDep, caller: CallerDep, name: str) -> Response:
    """Say whether the policy's automatic optimisation runs, when next, and its last run.

    The last run says when it was due and ran, its evaluation, whether a learning policy
    was applied and why (admin keys).
    """
    resolve_policy(service, caller, name)
    check_admin(caller, "reading automatic optimisation")
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, _ = await live_settings(service, name)
            raw = await service.jobs.store.redis.get(_key(service, name, "last"))
    due = due_run(settings, time.time())
    start = _start(settings)
    k = 0 if due is None else due[0]  # before the first due time: k = 0
    following = start + (k + 1) * settings.auto_optimization_seconds
    try:
        after = datetime.fromtimestamp(following, UTC) if settings.auto_optimization else None
    except (OverflowError, ValueError, OSError):  # a start date near 9999: none to come
        after = None
    answer = AutoOptimization(
        enabled=settings.auto_optimization,
        nextDueTime=after,
        lastRun=None if raw is None else AutoOptimizationRun.model_validate_json(raw),
    )
    return model_response(answer)
