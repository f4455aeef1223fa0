"""The agents, driven with Faust's ``agent.test_context()`` against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.settings import Settings
from bandit.wire.schemas import PolicySettings, RewardReported
from policies import Policy
from streams.agents import (
    WATERMARK_HEADER,
    register_agents,
    release_due_once,
    send_watermark_markers,
)
from streams.app import StreamBanditApp, create_app
from streams.join import JoinStore
from tests.streams.test_context import _event
from tests.streams.test_learner import _example


def _with_app(
    broker: str, redis_url: str, body: Callable[[StreamBanditApp, StateStore], Awaitable[None]]
) -> None:
    prefix = f"ag{uuid.uuid4().hex[:10]}"
    settings = Settings.model_validate(
        {
            "kafka": {"broker": broker, "topic_prefix": prefix},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "policies": {"p": "vw-squarecb"},
            "learner": {"snapshot_every_examples": 10, "snapshot_every_seconds": 0.1},
            # The training consumer keeps the decision log too: not in the working folder.
            "decision_log": {"directory": tempfile.mkdtemp(prefix="sb-test-log-")},
        }
    )

    async def main() -> None:
        app = create_app(settings)
        client = Redis.from_url(redis_url)
        try:
            await body(app, StateStore(client, prefix))
        finally:
            await client.aclose()
            await app.close_state_store()
            # A Faust consumer made for a test context is never started, so its thread's
            # event loop is never closed: close it here, not in a garbage collection.
            thread = getattr(app._consumer, "_thread", None)
            loop = getattr(thread, "thread_loop", None)
            if loop is not None and not loop.is_running():
                loop.close()

    asyncio.run(main())


async def _poll(check: Callable[[], Awaitable[Any]], deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("not seen before the deadline")


def test_context_agent_writes_session_features(broker: str, redis_url: str) -> None:
    """A behaviour event put on the context agent shows up as session features."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        async with app.agents["context"].test_context() as agent:
            await agent.put(_event("view", item_id="i1").model_dump_json().encode(), key=b"s1")
            features = await _poll(lambda: store.features("session", "s1"))
        assert features == {"events": 1, "views": 1, "last_kind": "view", "last_item": "i1"}

    _with_app(broker, redis_url, body)


def test_learner_learns_and_saves_each_example_once(broker: str, redis_url: str) -> None:
    """Training examples on the topic (one twice) are learned once by the learner and saved."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        async def all_saved() -> bool:
            saved = await store.load_model("p")
            return saved is not None and Policy.restore(saved.snapshot).n_learned >= 25

        services = register_agents(create_app(app.settings, agents=False))
        consumer = services.consumers["learner"]
        running = asyncio.create_task(consumer.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
        await producer.start()
        try:
            examples = [_example(i) for i in range(25)]
            topic = app.bandit_topics.training.get_topic_name()
            for example in [*examples, examples[3]]:
                await producer.send_and_wait(topic, example.model_dump_json().encode(), key=b"p")
            await _poll(all_saved)
            await asyncio.sleep(0.3)  # a duplicate learned late would show by now
        finally:
            await producer.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await services.app.close_state_store()
        saved = await store.load_model("p")
        assert saved is not None
        assert Policy.restore(saved.snapshot).n_learned == 25
        counters = await store.counters("p")
        assert (counters["learned"], counters["learn_duplicates"]) == (25, 1)

    _with_app(broker, redis_url, body)


def test_join_rewards_agent_moves_each_partitions_watermark(broker: str, redis_url: str) -> None:
    """A reward or a dead-lettered record moves its partition's watermark to its timestamp;
    a marker, to its time."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        join = JoinStore(store)
        stamp = time.time() - 30
        reward = RewardReported(event_id="e1", reward=1.0)
        marker = [(WATERMARK_HEADER, repr(stamp + 1).encode())]

        async def all_moved() -> dict[int, float] | None:
            marks = await join.watermarks()
            return marks if len(marks) == 3 else None

        await app.producer.start()  # for the dead letter
        try:
            async with app.agents["join-rewards"].test_context() as agent:
                value = reward.model_dump_json().encode()
                await agent.put(value, key=b"e1", partition=2, timestamp=stamp)
                await agent.put(b"", partition=3, timestamp=stamp + 5, headers=marker)
                await agent.put(b"{not json", key=b"e2", partition=1, timestamp=stamp + 2)
                marks = await _poll(all_moved)
        finally:
            await app.producer.stop()
        assert marks == {1: stamp + 2, 2: stamp, 3: stamp + 1}  # a marker: its own time
        assert await store.redis.exists(join.event_key("e1"))  # the reward is kept (early)
        assert (await store.counters("_streams"))["dead_letters"] == 1

    _with_app(broker, redis_url, body)


def test_markers_to_lagging_partitions_release_a_due_decision(broker: str, redis_url: str) -> None:
    """Due decisions, no watermarks: every partition gets one marker; once read, they are
    released, a claim at a time while the tick has time left; and a partition whose
    marker was read gets the next one as soon as a later decision is due."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        services = register_agents(create_app(app.settings, agents=False))
        join = services.join
        decided = datetime.now(UTC) - timedelta(seconds=60)
        settings = PolicySettings(spec="uniform", reward_wait_seconds=1.0)
        for i in range(3):
            await join.add_decision(_example(i, occurred_at=decided).decision, settings)
        partitions = list(range(app.settings.kafka.partitions))
        await services.app.producer.start()
        try:
            assert await release_due_once(services) == 0  # held: no partition is read yet
            assert await send_watermark_markers(services) == partitions
            assert await send_watermark_markers(services) == []  # one in flight at a time
            records = await _read(broker, app.bandit_topics.rewards.get_topic_name(), partitions)
            assert [(r.key, r.value) for r in records] == [(None, b"")] * len(partitions)
            async with app.agents["join-rewards"].test_context() as agent:  # the same Redis
                for record in records:
                    await agent.put(
                        record.value,
                        partition=record.partition,
                        timestamp=record.timestamp / 1000,
                        headers=list(record.headers),
                    )
                await _poll(lambda: _none_lagging(join))
            now = asyncio.get_running_loop().time()
            assert await release_due_once(services, limit=1, until=now) == 1  # time is up
            assert await release_due_once(services, limit=1) == 2  # then one claim at a time
            # Markers just sent and read: the next ones go at once, then wait to be read.
            sent = time.time() - 0.05
            for partition in partitions:
                await join.advance_watermark(partition, sent)
            services.markers_sent.update(dict.fromkeys(partitions, sent))
            later = datetime.fromtimestamp(sent - 1.0 + 0.01, UTC)  # due just after them
            await join.add_decision(_example(3, occurred_at=later).decision, settings)
            await asyncio.sleep(2 * join.watermark_slack_seconds)  # due by now, less the slack
            assert await send_watermark_markers(services) == partitions
            assert await send_watermark_markers(services) == []  # not read yet
        finally:
            await services.app.producer.stop()
            await services.app.close_state_store()
        counters = await store.counters("p")
        assert (counters["joined"], counters["default_rewards"]) == (3, 3)

    _with_app(broker, redis_url, body)


async def _none_lagging(join: JoinStore) -> bool:
    return await join.lagging_partitions() == []


async def _read(broker: str, topic: str, partitions: list[int]) -> list[Any]:
    """One record from each of `partitions` of `topic`, in partition order."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: dict[int, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while set(found) != set(partitions) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.update((record.partition, record) for record in records)
    finally:
        await consumer.stop()
    return [found[partition] for partition in sorted(found)]


def test_a_training_record_that_is_a_dead_letter_is_no_longer_held(
    broker: str, redis_url: str
) -> None:
    """A held example whose record fails to decode is dead-lettered and released, not stalled."""
    from streams.agents import AppServices, train_batch
    from streams.deadletter import DeadLetters, RawRecord

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        services = AppServices(app)
        sent: list[bytes] = []

        async def send(key: bytes | None, value: bytes) -> None:  # the topic is not the point
            sent.append(value)

        services._dead_letters = DeadLetters(send, store, limits=app.settings.limits)
        learning = services.learning
        await learning.hold({"p": [("bad-1", b"{}"), ("kept", b"{}")]})
        broken = RawRecord(
            app.bandit_topics.training.get_topic_name(), 0, 0, b"p", b'{"event_id": "bad-1"}'
        )
        unreadable = RawRecord(app.bandit_topics.training.get_topic_name(), 0, 1, b"p", b"{")
        result = await train_batch(services, None, [broken, unreadable])
        assert result.learned == 0
        assert [event_id for event_id, _ in await learning.held("p")] == ["kept"]
        assert len(sent) == 2

    _with_app(broker, redis_url, body)


def test_a_decision_due_sooner_wakes_the_release_loop(broker: str, redis_url: str) -> None:
    """The loop sleeps until its planned look; a decision due before that wakes it, one
    due later does not, and none does while the loop is looking."""
    from streams.agents import AppServices, _wake_release

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        services = AppServices(app)
        settings = PolicySettings(spec="uniform", reward_wait_seconds=1.0)
        now = time.time()
        services.release_at = now + 5.0
        _wake_release(services, now + 10.0, settings)
        assert not services.release_wake.is_set()
        _wake_release(services, now, settings)
        assert services.release_wake.is_set()
        services.release_wake.clear()
        services.release_at = -math.inf  # looking: it reads the due set when done
        _wake_release(services, now, settings)
        assert not services.release_wake.is_set()

    _with_app(broker, redis_url, body)
