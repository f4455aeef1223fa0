"""After a broker lost its log: create the topics again and produce the held examples again.

The embedded broker (``tansu``, memory storage) starts empty when it restarts. What it
held and nobody had read yet is gone; what matters most, the training examples the join
released and the learner had not applied (nor the decision log written), is still in
Redis (:class:`bandit.learning.LearningMonitor`). :func:`produce_held` produces those
again; the learner and the decision log deduplicate by event id, so an example that did
get through is not learned or logged twice. ``streambandit up`` calls both functions
after it restarts the broker (docs/live-loop.md, "Restarts").
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from bandit.learning import LearningMonitor
from bandit.settings import Settings
from bandit.state import StateStore

__all__ = ["TOPICS", "create_topics", "forget_offsets", "produce_held"]

TOPICS = ("events", "decisions", "rewards", "training", "dead-letters")
"""The topics of docs/live-loop.md, without their prefix."""

_BATCH = 1000


def create_topics(settings: Settings, timeout: float = 10.0) -> list[str]:
    """Create the service's topics with ``settings.kafka.partitions``; return those created.

    Topics that exist already are left as they are.
    """
    return asyncio.run(asyncio.wait_for(_create_topics(settings), timeout))


async def _create_topics(settings: Settings) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]

    kafka = settings.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.broker)
    await admin.start()
    created = []
    try:
        for name in TOPICS:
            full = kafka.topic(name)
            try:
                await admin.create_topics([NewTopic(full, kafka.partitions, 1)])
            except TopicAlreadyExistsError:
                continue
            except KafkaError as exc:
                if "already" in str(exc).lower():
                    continue
                raise
            created.append(full)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return created


def forget_offsets(settings: Settings, timeout: float = 10.0) -> list[str]:
    """Forget the training offsets every saved model covers; return the policies changed.

    The offsets name records of the log the broker lost: the new log numbers its records
    from 0 again, and a learner that kept the old offsets would skip them as learned.
    Call it after the workers are stopped and before they start again.
    """
    return asyncio.run(asyncio.wait_for(_forget_offsets(settings), timeout))


async def _forget_offsets(settings: Settings) -> list[str]:
    client = Redis.from_url(settings.redis.url)
    store = StateStore(client, settings.redis.key_prefix)
    try:
        return await store.forget_offsets()
    finally:
        await client.aclose()


def produce_held(settings: Settings, timeout: float = 60.0) -> int:
    """Produce every training example still held in Redis to ``training``; return how many."""
    return asyncio.run(asyncio.wait_for(_produce_held(settings), timeout))


async def _produce_held(settings: Settings) -> int:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    client = Redis.from_url(settings.redis.url)
    store = StateStore(client, settings.redis.key_prefix)
    monitor = LearningMonitor(store, settings.learner.stall_seconds)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.broker, enable_idempotence=False)
    topic = settings.kafka.topic("training")
    sent = 0
    await producer.start()
    try:
        for policy in await monitor.held_policies():
            examples = await monitor.held(policy, limit=10**9)
            for start in range(0, len(examples), _BATCH):
                chunk = examples[start : start + _BATCH]
                waiting = [
                    await producer.send(topic, value, key=policy.encode()) for _, value in chunk
                ]
                await asyncio.gather(*waiting)
                sent += len(chunk)
    finally:
        await producer.stop()
        await client.aclose()
    return sent
