"""Telling the APIs that the broker lost its log: the generation in Redis, and its watcher."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bandit.service.learning import LearningMonitor
from bandit.service.producer import BufferedProducer
from bandit.service.recovery import (
    announce_restart,
    create_topics,
    generation_key,
    produce_held,
    watch_restarts,
)
from bandit.service.state import StateStore
from bandit.settings import KafkaSettings, RedisSettings, Settings


def test_announce_restart_counts_the_generations(broker: str, redis_url: str) -> None:
    """Each announcement bumps ``<prefix>:broker:generation`` by one."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker), redis=RedisSettings(url=redis_url, key_prefix=prefix)
    )
    assert [announce_restart(settings), announce_restart(settings)] == [1, 2]


def test_watcher_resends_on_each_new_generation_and_not_at_start(
    broker: str, redis_url: str
) -> None:
    """The generation found at start is the baseline; each change resends the window."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    name = f"{prefix}.decisions"

    async def body() -> list[int]:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix)
        await client.set(generation_key(store), 7)  # restarts before this API started
        producer = BufferedProducer(broker, capacity=10, resend_seconds=60.0, resend_bytes=2**20)
        await producer.start()
        counts: list[int] = []
        watcher = asyncio.create_task(watch_restarts(store, producer, 0.02, counts.append))
        try:
            await producer.send(name, b"e1", b"{}")
            await producer.send(name, b"e2", b"{}")
            await asyncio.sleep(0.2)
            assert counts == []
            await client.incr(generation_key(store))
            async with asyncio.timeout(5):
                while not counts:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # one resend per change
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await producer.stop()
            await client.aclose()
        assert producer.resent == 2
        return counts

    assert asyncio.run(body()) == [2]


def test_every_held_example_is_produced_again_a_page_at_a_time(broker: str, redis_url: str) -> None:
    """2,500 held examples (more than a page): each produced once to ``training``."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
    )
    held = [(f"e{i}", f'{{"event_id": "e{i}"}}'.encode()) for i in range(2_500)]

    async def hold() -> None:
        client = Redis.from_url(redis_url)
        try:
            monitor = LearningMonitor(StateStore(client, prefix), 30.0)
            await monitor.hold({"p": held[:1_200], "q": held[1_200:]})
        finally:
            await client.aclose()

    async def read() -> list[tuple[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            settings.kafka.topic("training"),
            bootstrap_servers=broker,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        found: list[tuple[bytes, bytes]] = []
        try:
            async with asyncio.timeout(30):
                while len(found) < len(held):
                    batches = await consumer.getmany(timeout_ms=200)
                    found += [(r.key, r.value) for b in batches.values() for r in b]
        finally:
            await consumer.stop()
        return found

    asyncio.run(hold())
    assert create_topics(settings)
    assert produce_held(settings) == len(held)
    found = asyncio.run(read())
    assert sorted(found) == sorted(
        [(b"p", value) for _, value in held[:1_200]] + [(b"q", value) for _, value in held[1_200:]]
    )
