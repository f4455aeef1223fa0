"""The operations routes: liveness, readiness and Prometheus metrics.

Open, without a key: expose them on an internal network only (``settings.api.ops_port``,
:mod:`bandit.api.exposure`). They are never shed (:mod:`bandit.api.shedding`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from redis.exceptions import RedisError

from bandit.api.deps import Service, ServiceDep
from bandit.api.errors import json_response
from bandit.service.learning import LearningMonitor, LearningStatus
from bandit.service.liveeval import read_figures
from bandit.service.metrics import LiveReading, PolicyState

__all__ = ["OPS_PATHS", "Liveness", "Readiness", "router"]

router = APIRouter(tags=["operations"])

_STREAM_COUNTERS_SCOPE = "_streams"  # streams.deadletter.COUNTERS_NAME


OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Never shed, and logged at debug level."""


class Readiness(BaseModel):
    """``/readyz``: ready (200), or not ready (503) and why."""

    status: Literal["ready", "not ready"]
    reasons: list[str]


class Liveness(BaseModel):
    """``/healthz``: the process is alive."""

    status: Literal["alive"]


# -- operations --------------------------------------------------------------------------


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Response:
    """Say the process is alive (nothing else is checked)."""
    return json_response({"status": "alive"})


async def _learning(service: Service) -> list[LearningStatus] | None:
    """Whether each served policy's learning is stalled (bandit.service.learning); None: unknown."""
    monitor = LearningMonitor(service.store, service.settings.learner.stall_seconds)
    try:
        async with asyncio.timeout(1.0):
            return await monitor.status(service.engine.served)
    except (RedisError, OSError, TimeoutError):
        return None


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "Not ready, and why.", "model": Readiness}},
)
async def readyz(service: ServiceDep) -> Response:
    """Ready when broker and Redis answer, every served policy has a model, and learning goes on.

    Learning goes on while a stream worker consumes and no released example waits too
    long to be learned (:mod:`bandit.service.learning`).
    """

    async def redis_ok() -> str | None:
        try:
            async with asyncio.timeout(1.0):
                await service.control_redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return f"redis unreachable at {_redacted(service.settings.redis.url)}: {exc}"
        return None

    async def broker_ok() -> str | None:
        if await service.producer.ping(1.0):
            return None
        return (
            f"broker unreachable at {service.settings.kafka.broker} "
            f"({service.producer.buffered} records buffered)"
        )

    reasons = [reason for reason in await asyncio.gather(redis_ok(), broker_ok()) if reason]
    if not reasons:
        reasons += [s.reason for s in await _learning(service) or () if s.stalled]
    reasons += [
        f"policy {name!r} has no model loaded"
        for name in service.engine.served
        if service.engine.loaded(name) is None
    ]
    if reasons:
        return json_response({"status": "not ready", "reasons": reasons}, 503)
    return json_response({"status": "ready", "reasons": []})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics_endpoint(service: ServiceDep) -> Response:
    """Prometheus metrics; the stream workers' Redis counters are read now."""
    engine = service.engine
    counters: dict[str, dict[str, int]] | None = None
    if not engine.degraded:
        scopes = [*engine.served, _STREAM_COUNTERS_SCOPE]
        try:
            async with asyncio.timeout(0.5):
                found = await asyncio.gather(*(service.store.counters(s) for s in scopes))
            counters = dict(zip(scopes, found, strict=True))
        except (RedisError, OSError, TimeoutError):
            counters = None
    now = time.time()
    states = [
        PolicyState(
            name=loaded.name,
            model_version=loaded.version,
            model_age_seconds=max(now - loaded.saved_at, 0.0),
            learned_examples=loaded.policy.n_learned,
            settings_version=loaded.settings_version,
            baseline_forced=loaded.settings.baseline_forced,
        )
        for loaded in (engine.loaded(name) for name in engine.served)
        if loaded is not None
    ]
    if counters is not None:
        service.metrics.observe_live_evaluation(await _live_readings(service))
    learning = await _learning(service) if counters is not None else None
    if learning is not None:
        service.metrics.observe_learning({s.policy: s.stalled for s in learning})
    service.metrics.observe_state(
        states,
        degraded=engine.degraded,
        buffered=service.producer.buffered,
        broker_available=service.producer.available,
        stream_counters=counters,
        model_rejections=engine.rejections,
    )
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _live_readings(service: Service) -> list[LiveReading]:
    """Every served policy's live candidates' figures (none when Redis cannot be read)."""
    served = list(service.engine.served)
    try:
        async with asyncio.timeout(0.5):
            found = await asyncio.gather(*(read_figures(service.store, n) for n in served))
    except (RedisError, OSError, TimeoutError, ValueError):
        return []
    return [
        (name, row.candidate, row.estimate, row.lower, row.upper, row.n)
        for name, figures in zip(served, found, strict=True)
        if figures is not None
        for row in (figures.logged, *figures.candidates)
    ]


def _redacted(url: str) -> str:
    """Return a Redis URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
