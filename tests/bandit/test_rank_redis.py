"""The rank path's Redis client: no task per command, and a Redis that hangs still degrades.

A rank naming a person reads their consent and notes the decision for them in Redis
(:meth:`bandit.service.engine.DecisionEngine.rank`). Through a client with a socket
timeout, redis-py wraps every command's write in ``asyncio.wait_for``, which on
Python 3.11 starts a task per command: the bytes leave a loop turn later and the rank
resumes a turn after that, behind every other request in flight. The client the API
uses for that path (:func:`bandit.api.app.rank_redis`) has none; its callers bound
each whole call instead.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Coroutine, Generator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from bandit.api.app import rank_redis
from bandit.privacy.consent import pseudonymise
from bandit.service.engine import DecisionEngine, RankOutcome
from bandit.service.state import StateStore
from bandit.settings import RedisSettings, Settings
from bandit.wire.consent import ConsentRecord
from bandit.wire.schemas import RankRequest

PERSON = pseudonymise("reader@example.com", b"0123456789abcdef")


def _settings(redis_url: str) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        redis=RedisSettings(url=redis_url, key_prefix=prefix), policies={"main": "vw-epsilon"}
    )


def _request() -> RankRequest:
    return RankRequest.model_validate(
        {
            "event_id": uuid.uuid4().hex,
            "context": {"user": {"tier": "gold"}},
            "actions": [{"id": "a"}, {"id": "b"}],
        }
    )


@asynccontextmanager
async def _engine(settings: Settings, features_url: str) -> AsyncIterator[DecisionEngine]:
    """An engine as the API builds it: control calls on one client, the rank path's on another."""
    control = Redis.from_url(settings.redis.url)
    features = rank_redis(settings.model_copy(update={"redis": RedisSettings(url=features_url)}))
    engine = DecisionEngine(
        settings,
        StateStore(control, settings.redis.key_prefix),
        features_store=StateStore(features, settings.redis.key_prefix),
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await features.aclose()
        await control.aclose()


def _counting_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Count the tasks started on `loop` from now on (their coroutines' names)."""
    started: list[str] = []

    def factory(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        started.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return started


def test_a_named_rank_starts_no_task_for_its_redis_calls(redis_url: str) -> None:
    """Consent read and decision note go out at once: no task (no loop turn) per command."""
    settings = _settings(redis_url)

    async def body() -> tuple[RankOutcome, list[str]]:
        async with _engine(settings, redis_url) as engine:
            given = ConsentRecord().with_changes(
                {"personalisation": True, "learning": True}, "test"
            )
            await engine.store.update_consent(PERSON, given)
            await engine.rank(_request(), "main", user=PERSON)  # connections made
            started = _counting_tasks(asyncio.get_running_loop())
            outcome = await engine.rank(_request(), "main", user=PERSON)
            asyncio.get_running_loop().set_task_factory(None)
            return outcome, started

    outcome, started = asyncio.run(body())
    # both calls were made: consent read (personalised, learned) and the note (subject)
    assert (outcome.degraded, outcome.consent.personalise, outcome.consent.learn) == (
        False,
        True,
        True,
    )
    assert outcome.decision.subject is not None
    assert started == []


def test_a_redis_that_never_answers_still_degrades_a_named_rank(redis_url: str) -> None:
    """Without a socket timeout the caller's deadline ends the call: denied, degraded."""
    settings = _settings(redis_url)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers
    port = silent.getsockname()[1]

    async def body() -> tuple[RankOutcome, bool]:
        async with _engine(settings, f"redis://127.0.0.1:{port}/0") as engine:
            async with asyncio.timeout(30):  # a guard against a hang, not a measure
                outcome = await engine.rank(_request(), "main", user=PERSON)
            return outcome, engine.degraded

    try:
        outcome, degraded = asyncio.run(body())
    finally:
        silent.close()
    assert degraded
    assert outcome.degraded
    assert (outcome.consent.personalise, outcome.consent.learn) == (False, False)
    assert outcome.decision.subject is None
