"""Learning progress in Redis (bandit.service.learning), and what /readyz and /metrics say of it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from redis.asyncio import Redis

from bandit.api.app import create_app
from bandit.service.learning import LearningMonitor
from bandit.service.state import StateStore
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, RedisSettings, Settings

T = TypeVar("T")
STALL = 30.0


def _run(redis_url: str, body: Callable[[LearningMonitor], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            store = StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")
            return await body(LearningMonitor(store, STALL))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_learning_is_stalled_until_a_worker_consumes(redis_url: str) -> None:
    """No worker, or one without partitions, or one silent too long: stalled, with why."""

    async def body(monitor: LearningMonitor) -> None:
        now = time.time()
        (never,) = await monitor.status(["p"], now)
        assert never.stalled
        assert "no stream worker has consumed ever" in never.reason
        await monitor.beat("w1", consuming=False, now=now)
        assert (await monitor.status(["p"], now))[0].stalled
        await monitor.beat("w1", consuming=True, now=now)
        assert not (await monitor.status(["p"], now))[0].stalled
        (silent,) = await monitor.status(["p"], now + STALL + 5)
        assert silent.stalled
        assert "for 35 s" in silent.reason

    _run(redis_url, body)


def test_an_example_unlearned_too_long_stalls_its_policy_until_learned(redis_url: str) -> None:
    """Held examples older than stall_seconds stall their policy only; learning clears it."""

    async def body(monitor: LearningMonitor) -> None:
        now = time.time()
        await monitor.beat("w1", consuming=True, now=now)
        await monitor.hold({"p": [("e1", b"one"), ("e2", b"two")]}, now=now - STALL - 10)
        await monitor.hold({"q": [("e3", b"three")]}, now=now)
        p, q = await monitor.status(["p", "q"], now)
        assert p.stalled
        assert "2 training examples of policy 'p'" in p.reason
        assert "oldest 40 s" in p.reason
        assert not q.stalled
        assert await monitor.held("p") == [("e1", b"one"), ("e2", b"two")]
        assert await monitor.held_policies() == ["p", "q"]
        await monitor.learned({"p": ["e1", "e2"]})
        assert not (await monitor.status(["p"], now))[0].stalled
        assert await monitor.held("p") == []

    _run(redis_url, body)


def test_readyz_and_the_metric_say_learning_is_stalled(broker: str, redis_url: str) -> None:
    """/readyz answers 503 naming the stalled policy; the gauge is 1 for it, then 0."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key="k" * 20, role="admin"),)),
        policies={"main": "vw-epsilon"},
    )

    async def body() -> None:
        client = Redis.from_url(redis_url)
        monitor = LearningMonitor(StateStore(client, prefix), STALL)
        app = create_app(settings, shutdown_flush_seconds=1.0)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                    await monitor.beat("w1", consuming=True)
                    await monitor.hold({"main": [("e1", b"{}")]}, now=time.time() - 60)
                    ready = await http.get("/readyz")
                    assert ready.status_code == 503
                    assert any("policy 'main'" in r for r in ready.json()["reasons"])
                    metrics = (await http.get("/metrics")).text
                    assert 'streambandit_learning_stalled{policy="main"} 1.0' in metrics
                    await monitor.learned({"main": ["e1"]})
                    assert (await http.get("/readyz")).status_code == 200
                    metrics = (await http.get("/metrics")).text
                    assert 'streambandit_learning_stalled{policy="main"} 0.0' in metrics
        finally:
            await client.aclose()

    asyncio.run(body())
