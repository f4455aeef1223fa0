"""After a broker lost its log: create the topics again and produce the held examples again.

The embedded broker (``tansu``, memory storage) starts empty when it restarts. What it
held and nobody had read yet is gone; what matters most, the training examples the join
released and the learner had not applied (nor the decision log written), is still in
Redis (:class:`bandit.service.learning.LearningMonitor`). :func:`produce_held` produces those
again; the learner and the decision log deduplicate by event id, so an example that did
get through is not learned or logged twice. What the API had produced and the broker
acknowledged, unread, is still in each API's resend window
(:class:`bandit.service.producer.BufferedProducer`): :func:`announce_restart` bumps the broker's
generation in Redis (``<prefix>:broker:generation``), and each API, watching it
(:func:`watch_restarts`), produces its window again; the join deduplicates decisions by
event id and rewards by reward id, the context agent events by event id.
``streambandit up`` calls these functions after it restarts the broker
(docs/live-loop.md, "Restarts").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bandit.service.learning import LearningMonitor
from bandit.service.producer import BufferedProducer
from bandit.service.state import StateStore
from bandit.settings import Settings

__all__ = [
    "TOPICS",
    "announce_restart",
    "create_topics",
    "forget_offsets",
    "generation_key",
    "produce_held",
    "watch_restarts",
]

TOPICS = ("events", "decisions", "rewards", "training", "dead-letters")
"""The topics of docs/live-loop.md, without their prefix."""

_BATCH = 1000
_log = structlog.get_logger("bandit.service.recovery")


def generation_key(store: StateStore) -> str:
    """Return the key of the broker's generation: a count of restarts that lost its log."""
    return store.key("broker", "generation")


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
    """Produce every training example still held in Redis to ``training``; return how many.

    A page of ``_BATCH`` examples at a time, each within `timeout` seconds (a backlog of
    any size is read a page at a time, never all at once).
    """
    return asyncio.run(_produce_held(settings, timeout))


async def _produce_held(settings: Settings, timeout: float) -> int:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    client = Redis.from_url(settings.redis.url)
    store = StateStore(client, settings.redis.key_prefix)
    monitor = LearningMonitor(store, settings.learner.stall_seconds)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.broker, enable_idempotence=False)
    topic = settings.kafka.topic("training")
    sent = 0

    async def page(policy: str, start: int) -> int:
        chunk = await monitor.held(policy, limit=_BATCH, start=start)
        waiting = [await producer.send(topic, value, key=policy.encode()) for _, value in chunk]
        await asyncio.gather(*waiting)
        return len(chunk)

    await asyncio.wait_for(producer.start(), timeout)
    try:
        for policy in await monitor.held_policies():
            start = 0
            while count := await asyncio.wait_for(page(policy, start), timeout):
                start += count
                sent += count
    finally:
        await producer.stop()
        await client.aclose()
    return sent


def announce_restart(settings: Settings, timeout: float = 10.0) -> int:
    """Tell the APIs the broker lost its log (they produce their resend windows again).

    Call it once the topics exist again. Returns the broker's new generation.
    """
    return asyncio.run(asyncio.wait_for(_announce_restart(settings), timeout))


async def _announce_restart(settings: Settings) -> int:
    client = Redis.from_url(settings.redis.url)
    try:
        store = StateStore(client, settings.redis.key_prefix)
        return int(await client.incr(generation_key(store)))
    finally:
        await client.aclose()


async def watch_restarts(
    store: StateStore,
    producer: BufferedProducer,
    interval: float,
    on_resent: Callable[[int], None] | None = None,
) -> None:
    """Watch the broker's generation; on each change, produce the resend window again.

    Runs until cancelled (the API runs it beside its model poller). The generation
    seen first is the baseline: an API started after a restart has nothing to resend.
    Redis away: tried again at the next interval.

    Parameters
    ----------
    store
        Where the generation is read (:func:`generation_key`).
    producer
        The API's producer.
    interval
        Seconds between two reads (``settings.api.model_poll_seconds``).
    on_resent
        Called with how many records were produced again (e.g. a metric).
    """
    key = generation_key(store)
    seen: bytes | str | None = None
    known = False
    while True:
        try:
            found = await store.redis.get(key)
        except (RedisError, OSError, TimeoutError):
            found, fresh = seen, False
        else:
            fresh = known and found != seen
            seen, known = found, True
        if fresh:
            count = producer.resend()
            _log.info(
                "producer.records_resent",
                records=count,
                generation=None if seen is None else int(seen),
                reason="the broker lost its log",
            )
            if on_resent is not None:
                on_resent(count)
        await asyncio.sleep(interval)
