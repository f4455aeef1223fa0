"""Session-wide real servers: the local Kafka-protocol broker and a Redis server.

They are started once per test session on free loopback ports (or taken from
STREAMBANDIT_KAFKA__BROKER / STREAMBANDIT_REDIS__URL) and stopped at the end; ``make
test`` runs the suite in parallel processes (pytest-xdist), each with its own pair. Tests never
skip for want of a server: if one cannot start, the fixture fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bandit.ops.runtime import LocalServices
from bandit.settings import Settings


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    """The broker and Redis every integration test talks to."""
    with LocalServices(Settings(), workdir=tmp_path_factory.mktemp("services")) as running:
        yield running


@pytest.fixture(scope="session")
def broker(services: LocalServices) -> str:
    """``host:port`` of the Kafka-protocol broker."""
    return services.broker


@pytest.fixture(scope="session")
def redis_url(services: LocalServices) -> str:
    """URL of the Redis server."""
    return services.redis_url


def worker_consumes(redis_url: str, prefix: str) -> None:
    """Write the heartbeat of a stream worker that consumes, as a worker's timer does.

    ``/readyz`` is ready only while some worker consumes (bandit/service/learning.py); tests of
    the API alone, without a worker, stand in for one with this.
    """
    import asyncio

    from redis.asyncio import Redis

    from bandit.service.learning import LearningMonitor
    from bandit.service.state import StateStore

    async def beat() -> None:
        client = Redis.from_url(redis_url)
        try:
            await LearningMonitor(StateStore(client, prefix), 30.0).beat("test", consuming=True)
        finally:
            await client.aclose()

    asyncio.run(beat())
