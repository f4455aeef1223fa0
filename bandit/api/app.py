"""The HTTP API: Personalizer-compatible and native routes, auth, health and metrics.

Build the app with :func:`create_app` (or run ``uvicorn --factory
bandit.api.app:app_from_environment``). OpenAPI is served at ``/openapi.json``, the
interactive documentation at ``/docs``.

=========================================================  ================================
route                                                      does
=========================================================  ================================
``POST /personalizer/v1.0/rank``                           Personalizer rank (201)
``POST /personalizer/v1.0/events/{eventId}/reward``        Personalizer reward (204)
``POST /personalizer/v1.0/events/{eventId}/activate``      Personalizer activate (204)
``POST /v1/rank``                                          rank a :class:`NativeRankRequest`
``POST /v1/reward``                                        a ``RewardReported``
``POST /v1/activate``                                      an ``Activation``
``POST /v1/events``                                        a ``BehaviourEvent``
``GET /v1/policies``                                       served policies and their models
``GET /v1/policies/{name}/settings``                       a policy's settings (``PolicySettings``)
``PUT /v1/policies/{name}/settings``                       change them, live (admin keys)
``GET /healthz``                                           the process is alive
``GET /readyz``                                            broker, Redis, models, learning: else 503
``GET /metrics``                                           Prometheus
=========================================================  ================================

The Personalizer routes and how they differ from Personalizer are described in
:mod:`bandit.wire.personalizer`.

Auth
    Every ``/v1`` and ``/personalizer`` route needs a key from ``settings.api.keys``,
    sent as ``Ocp-Apim-Subscription-Key`` (what Personalizer clients send),
    ``X-API-Key`` or ``Authorization: Bearer``. No key or an unknown key: 401. A key
    may rank, reward, activate, send events and read settings for its own policies
    (``"*"``: all served); only ``admin`` keys may change settings. A key not allowed
    the policy or the action: 403, the body naming what is missing. Rewards and
    activations carry the key's policies (``scope``), and the join refuses them for
    another policy's decision (docs/live-loop.md, "Keys scoped to policies"). Health,
    readiness, metrics and the documentation are open: expose them on an internal
    network only (``settings.api.ops_port`` serves metrics and documentation on a port
    of their own: :mod:`bandit.api.exposure`).
Rank
    Validated with the configured limits (``RankRequest.model_validate(..., context=)``),
    decided by the :class:`~bandit.service.engine.DecisionEngine`, and the decision produced to
    the ``decisions`` topic (keyed by event id) *before* the answer: acknowledged
    within a short timeout, or buffered while the broker is away (see
    :mod:`bandit.service.producer`); with the buffer full the answer is 503 and nothing is
    served. Rewards, activations and events go to their topics the same way.
Errors
    Native routes answer FastAPI-style: ``{"detail": "message"}``, or for invalid
    input (422) ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``, one entry
    per broken rule, never echoing the input. Personalizer routes answer
    ``{"error": {"code", "message", "details": [{"code", "message", "target"}]}}``.
Logging
    One structlog line per request when it ends: ``decision.made``,
    ``reward.received``, ``activation.received``, ``event.received``,
    ``settings.changed``, ``request.rejected`` (4xx), ``request.failed`` (5xx) or
    ``request.handled``, with route, status and latency. By default
    (``settings.api.request_log = "errors"``) only refused and failed requests and
    settings changes write theirs: at thousands of decisions a second a line per
    decision would cost a tenth of the API's CPU and repeat the decision log; with
    ``"all"`` every request writes one. Health, readiness and metrics requests log at
    debug level. Every request is counted in the metrics either way.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bandit.api import admin, autoopt, liveeval, native, ops, personalizer, privacy
from bandit.api.apidocs import add_docs
from bandit.api.deps import CONTROL_TIMEOUT, Service, fingerprint
from bandit.api.errors import add_error_handlers, on_http_error
from bandit.api.exposure import PortSplit, limit_server_lines
from bandit.api.hot import HotRoute
from bandit.api.openapi import openapi_document
from bandit.api.requestlog import RequestLog
from bandit.api.shedding import Shedding
from bandit.errors import ConfigurationError
from bandit.service.engine import DecisionEngine
from bandit.service.evaluations import EvaluationRunner, EvaluationStore
from bandit.service.explainer import Explainer
from bandit.service.logging import LineLimiter, configure_logging
from bandit.service.metrics import ApiMetrics
from bandit.service.process import die_with_parent, stop_task, tune_gc
from bandit.service.producer import BufferedProducer
from bandit.service.recovery import watch_restarts
from bandit.service.state import StateStore
from bandit.settings import Settings, get_settings

__all__ = ["APP_FACTORY", "app_from_environment", "check_settings", "create_app", "rank_redis"]

_log = structlog.get_logger("bandit.api.app")


def _redis(url: str, timeout: float | None, connect_timeout: float) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


def rank_redis(settings: Settings) -> Redis:
    """Return the client of the rank path's Redis calls: consent, stored features, notes.

    It has no socket timeout: each of its callers bounds the whole call instead
    (``asyncio.timeout`` of twice ``settings.redis.socket_timeout_seconds``, connecting
    included; :class:`~bandit.service.engine.DecisionEngine`, the reward's scope check).
    With a socket timeout redis-py wraps every command's write in ``asyncio.wait_for``,
    which on Python 3.11 starts a task per command: its bytes leave a loop turn later,
    and its caller resumes a turn after that, behind every other request in flight.
    Connecting keeps its own timeout.
    """
    timeout = settings.redis.socket_timeout_seconds
    return _redis(settings.redis.url, None, timeout)


def check_settings(settings: Settings) -> None:
    """Refuse settings the API cannot start with.

    Raises
    ------
    bandit.errors.ConfigurationError
        If the broker or Redis is not named.
    """
    if not settings.kafka.broker or not settings.redis.url:
        msg = (
            "the API needs a broker and Redis: set STREAMBANDIT_KAFKA__BROKER and "
            "STREAMBANDIT_REDIS__URL (or start local ones with bandit.ops.runtime.LocalServices)"
        )
        raise ConfigurationError(msg)


def create_app(
    settings: Settings | None = None,
    *,
    metrics: ApiMetrics | None = None,
    shutdown_flush_seconds: float = 5.0,
    tune: bool = False,
) -> FastAPI:
    """Build the API for `settings` (default: :func:`~bandit.settings.get_settings`).

    Connections are made when the app starts (its lifespan): the producer connects
    (or starts buffering), the engine loads every served policy and starts polling.

    Parameters
    ----------
    settings
        Service settings; the broker (``kafka.broker``) and Redis (``redis.url``)
        must be named: start the embedded ones with :class:`bandit.ops.runtime.LocalServices`.
    metrics
        Where to count; a fresh registry by default.
    shutdown_flush_seconds
        How long shutdown waits for buffered records to reach the broker.
    tune
        Tune the process's garbage collector once started (:func:`bandit.service.process.tune_gc`)
        and start the explanation helpers at once rather than with the first
        explanation (:class:`bandit.service.explainer.Explainer`): for a process that serves
        this app alone.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    bandit.errors.ConfigurationError
        If the broker or Redis is not named.
    """
    settings = settings or get_settings()
    check_settings(settings)
    metrics = metrics or ApiMetrics()
    control_timeout = max(CONTROL_TIMEOUT, settings.redis.socket_timeout_seconds)
    control_redis = _redis(settings.redis.url, control_timeout, control_timeout)
    features_redis = rank_redis(settings)
    store = StateStore(
        control_redis,
        settings.redis.key_prefix,
        model_history=settings.learner.model_history,
        model_history_seconds=settings.learner.model_history_seconds,
    )
    features_store = StateStore(features_redis, settings.redis.key_prefix)
    service = Service(
        settings=settings,
        keys={fingerprint(key.key): key for key in settings.api.keys},
        control_redis=control_redis,
        features_redis=features_redis,
        store=store,
        engine=DecisionEngine(settings, store, features_store=features_store),
        producer=BufferedProducer(
            settings.kafka.broker,
            capacity=settings.kafka.producer_buffer,
            acknowledged=settings.kafka.await_acks,
            linger_ms=settings.kafka.linger_ms,
            on_drop=metrics.producer_dropped.inc,
            resend_seconds=settings.kafka.resend_window_seconds,
            resend_bytes=settings.kafka.resend_window_mb * 2**20,
        ),
        metrics=metrics,
        shutdown_flush_seconds=shutdown_flush_seconds,
        explainer=Explainer(settings.explain, metrics),
        jobs=EvaluationRunner(
            EvaluationStore(control_redis, settings.redis.key_prefix, settings.evaluations.max_kept)
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.producer.start()
        watcher = asyncio.create_task(
            watch_restarts(
                store,
                service.producer,
                settings.api.model_poll_seconds,
                metrics.producer_resent.inc,
            ),
            name="broker-restarts",
        )
        try:
            await service.engine.start()
            if tune:
                tune_gc()  # the app, its schemas and the policies live as long as the process
                service.explainer.start()  # importing while the first requests come
            _log.info(
                "api.started",
                policies=service.engine.served,
                broker_available=service.producer.available,
                degraded=service.engine.degraded,
            )
            optimizer = app.state.optimizer = autoopt.AutoOptimizer(service)
            optimizer.start()
            try:
                yield
            finally:
                await optimizer.stop()
                await service.engine.stop()
        finally:
            await stop_task(watcher)
            await service.jobs.close()
            await service.producer.stop(service.shutdown_flush_seconds)
            await control_redis.aclose()
            await features_redis.aclose()
            service.explainer.close()
            _log.info("api.stopped")

    app = FastAPI(
        title="streambandit",
        summary="Contextual bandits: rank, reward, learn online; Personalizer-compatible.",
        version="0.1.0",
        description=__doc__ or "",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: bandit.api.apidocs
        redoc_url=None,
        # No OpenTelemetry here (metrics: /metrics; logs: structlog): FastAPI's own
        # check for a configured provider costs every request more than the hot route's
        # middleware together.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    for router in (
        native.router,
        privacy.router,
        admin.router,
        personalizer.router,
        autoopt.router,
        liveeval.router,
    ):
        app.include_router(router)
    app.include_router(privacy.page_router)
    app.include_router(ops.router)
    add_docs(app)
    add_error_handlers(app)
    app.add_middleware(HotRoute, owner=app, path="/v1/rank")  # innermost (bandit.api.hot)
    api = settings.api
    if api.ops_port is not None:
        app.add_middleware(PortSplit, ops_port=api.ops_port, on_refused=on_http_error)
    app.add_middleware(
        Shedding,
        on_refused=on_http_error,
        max_in_flight=api.max_in_flight,
        max_queue_seconds=api.max_queue_seconds,
        max_body_bytes=api.max_body_bytes,
        body_timeout_seconds=api.body_timeout_seconds,
        exempt=ops.OPS_PATHS,
        binary=admin.takes_model_file,
        shed=metrics.requests_shed,
    )
    app.add_middleware(
        RequestLog,
        metrics=metrics,
        quiet_paths=ops.OPS_PATHS,
        log_all=service.log_all,
        limiter=LineLimiter(api.log_lines_per_second),
    )
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """Build the API from ``STREAMBANDIT_*`` variables, with this process's logging set up.

    What each API process of ``streambandit api`` runs (each of its ``--workers``), and
    ``uvicorn --factory bandit.api.app:app_from_environment``.
    """
    if multiprocessing.parent_process() is not None:  # a worker of `--workers N`
        die_with_parent()  # a supervisor killed outright leaves no worker behind
    settings = get_settings()
    configure_logging(settings.log_format)
    limit_server_lines(settings.api)
    return create_app(settings, tune=True)


APP_FACTORY = f"{__name__}:{app_from_environment.__name__}"
""":func:`app_from_environment` as uvicorn names a factory (``module:function``)."""
