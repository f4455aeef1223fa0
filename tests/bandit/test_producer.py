"""The buffered producer against real brokers: a shared one, and private ones it loses."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaConsumer

from bandit.ops.runtime import LocalServices, ServiceProcess, free_port
from bandit.service.producer import BufferedProducer, ProducerUnavailableError, topic
from bandit.settings import RedisSettings, Settings

T = TypeVar("T")


def _run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


async def _consume(
    broker: str, name: str, count: int, timeout: float = 15.0
) -> list[tuple[bytes, bytes]]:
    """Read `count` records (key, value) from the start of a topic, or what came in time."""
    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            records.extend((r.key, r.value) for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def _private_broker(redis_url: str, workdir: Path) -> LocalServices:
    """A broker of this test's own (Redis is the session's, so only the broker starts)."""
    return LocalServices(Settings(redis=RedisSettings(url=redis_url)), workdir=workdir).start()


def _restart(process: ServiceProcess) -> ServiceProcess:
    again = ServiceProcess(process.name, process.args, process.port, process.log)
    again.start()
    return again


def test_topic_names_carry_the_prefix() -> None:
    """Topic names are ``<prefix>.<name>``."""
    assert topic(Settings(), "dead-letters") == "streambandit.dead-letters"


def test_send_is_acknowledged_and_readable(broker: str) -> None:
    """With the broker up, a record is sent (not buffered) and can be consumed back."""
    name = f"t{uuid.uuid4().hex[:8]}.decisions"

    async def body() -> list[tuple[bytes, bytes]]:
        producer = BufferedProducer(broker, capacity=10)
        await producer.start()
        try:
            assert await producer.send(name, b"evt-1", b"{}") == "sent"
            assert producer.buffered == 0
            assert producer.available
            assert await producer.ping()
        finally:
            await producer.stop()
        return await _consume(broker, name, 1)

    assert _run(body) == [(b"evt-1", b"{}")]


def test_broker_away_buffers_in_order_then_flushes_when_back(
    redis_url: str, tmp_path: Path
) -> None:
    """Records sent while the broker is down are buffered and reach it, in order, once back."""
    services = _private_broker(redis_url, tmp_path)
    process = services.processes["broker"]
    name = "p.decisions"
    restarted: ServiceProcess | None = None

    async def body() -> list[tuple[bytes, bytes]]:
        nonlocal restarted
        producer = BufferedProducer(services.broker, capacity=4, retry_seconds=(0.05, 0.5))
        await producer.start()
        try:
            assert await producer.send(name, b"key", b"0") == "sent"
            process.kill()  # as a crash would (SIGTERM makes tansu linger)
            deliveries = [await producer.send(name, b"key", b"%d" % i) for i in (1, 2, 3, 4)]
            assert deliveries == ["buffered"] * 4
            assert not await producer.ping(0.5)
            with pytest.raises(ProducerUnavailableError, match=r"buffer is full \(4 records"):
                await producer.send(name, b"key", b"5")
            restarted = _restart(process)
            assert await producer.flush(15.0)
            assert producer.available
        finally:
            await producer.stop()
        return await _consume(services.broker, name, 4)

    try:
        records = _run(body)
    finally:
        if restarted is not None:
            restarted.stop()
        services.stop()
    # The restarted broker kept nothing (memory storage): it holds what was buffered, in
    # order (one key, one partition); the send that timed out may arrive twice.
    assert list(dict.fromkeys(value for _, value in records)) == [b"1", b"2", b"3", b"4"]


def test_unacknowledged_sends_see_the_broker_go_and_come_back(
    redis_url: str, tmp_path: Path
) -> None:
    """Answering once queued (the API's default): an outage is noticed, nothing is lost."""
    services = _private_broker(redis_url, tmp_path)
    process = services.processes["broker"]
    name = "q.decisions"
    restarted: ServiceProcess | None = None

    async def body() -> list[tuple[bytes, bytes]]:
        nonlocal restarted
        producer = BufferedProducer(
            services.broker, capacity=6, acknowledged=False, retry_seconds=(0.05, 0.5)
        )
        await producer.start()
        try:
            assert await producer.send(name, b"key", b"0") == "sent"
            assert await producer.flush(10.0)
            process.kill()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while producer.available:  # librdkafka's statistics, every 250 ms
                assert loop.time() < deadline, "the outage went unnoticed"
                await asyncio.sleep(0.05)
            deliveries = [await producer.send(name, b"key", b"%d" % i) for i in range(1, 7)]
            assert deliveries == ["buffered"] * 6
            assert producer.buffered == 6
            with pytest.raises(ProducerUnavailableError, match=r"buffer is full \(6 records"):
                await producer.send(name, b"key", b"7")
            restarted = _restart(process)
            assert await producer.flush(15.0)
            deadline = loop.time() + 5
            while not producer.available:
                assert loop.time() < deadline, "the broker's return went unnoticed"
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()
        return await _consume(services.broker, name, 6)

    try:
        records = _run(body)
    finally:
        if restarted is not None:
            restarted.stop()
        services.stop()
    assert list(dict.fromkeys(value for _, value in records)) == [b"%d" % i for i in range(1, 7)]


def test_unreachable_broker_at_start_buffers_and_disabled_buffer_refuses() -> None:
    """No broker at start is not fatal: records are buffered; with no buffer they are refused."""
    address = f"127.0.0.1:{free_port()}"

    async def body() -> None:
        producer = BufferedProducer(address, capacity=2, connect_timeout=0.5)
        await producer.start()
        try:
            assert not producer.available
            assert await producer.send("x.decisions", b"k", b"v") == "buffered"
            assert not await producer.ping(0.2)
        finally:
            await producer.stop(flush_timeout=0.2)
        assert producer.dropped == 1  # lost at shutdown, and counted
        unbuffered = BufferedProducer(address, capacity=0, connect_timeout=0.5)
        await unbuffered.start()
        try:
            with pytest.raises(ProducerUnavailableError, match="buffer is disabled"):
                await unbuffered.send("x.decisions", b"k", b"v")
        finally:
            await unbuffered.stop(flush_timeout=0.2)

    _run(body)


def test_keys_land_where_kafkas_partitioner_puts_them(broker: str) -> None:
    """Records land in the partition aiokafka's (and Java's) default partitioner picks.

    The join needs a decision and its rewards in partitions of the same number whoever
    produced them: the API (librdkafka) or a stream worker (aiokafka).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
    from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]

    name = f"t{uuid.uuid4().hex[:8]}.rewards"
    keys = [f"evt-{i}-{uuid.uuid4().hex[: i % 17]}".encode() for i in range(200)]

    async def body() -> dict[bytes, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=7, replication_factor=1)])
        finally:
            await admin.close()
        producer = BufferedProducer(broker, capacity=1_000)
        await producer.start()
        try:
            assert set(await asyncio.gather(*(producer.send(name, k, b"v") for k in keys))) == {
                "sent"
            }
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            name, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        found: dict[bytes, int] = {}
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while len(found) < len(keys) and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                found.update((r.key, part.partition) for part, rs in batches.items() for r in rs)
        finally:
            await consumer.stop()
        return found

    found = _run(body)
    partitions = list(range(7))
    default = DefaultPartitioner()
    assert found == {key: default(key, partitions, partitions) for key in keys}
    assert len(set(found.values())) == 7  # the keys spread: the check is not vacuous


async def _consume_stamped(
    broker: str, name: str, count: int, timeout: float = 15.0
) -> list[tuple[bytes, int]]:
    """Read `count` records (value, timestamp in ms) from the start of a topic."""
    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[tuple[bytes, int]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            records.extend((r.value, r.timestamp) for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def test_resend_produces_the_window_again_with_its_first_timestamps(
    redis_url: str, tmp_path: Path
) -> None:
    """A broker that lost its log gets the window again; records sent without resend don't.

    As the API runs it: answered once queued, not acknowledged.
    """
    services = _private_broker(redis_url, tmp_path)
    process = services.processes["broker"]
    name = "p.rewards"
    restarted: ServiceProcess | None = None

    async def body() -> tuple[list[tuple[bytes, int]], list[tuple[bytes, int]], int]:
        nonlocal restarted
        producer = BufferedProducer(
            services.broker,
            capacity=10,
            acknowledged=False,
            retry_seconds=(0.05, 0.5),
            resend_seconds=60.0,
            resend_bytes=2**20,
        )
        await producer.start()
        try:
            await producer.send(name, b"key", b"a")
            await producer.send(name, b"key", b"b")
            await producer.send(name, b"key", b"no-consent", resend=False)
            assert await producer.flush(10.0)
            first = await _consume_stamped(services.broker, name, 3)
            process.kill()  # the broker's memory log goes with it
            restarted = _restart(process)
            resent = producer.resend()
            assert await producer.flush(15.0)
        finally:
            await producer.stop()
        return first, await _consume_stamped(services.broker, name, 2), resent

    try:
        first, again, resent = _run(body)
    finally:
        if restarted is not None:
            restarted.stop()
        services.stop()
    assert resent == 2
    assert [value for value, _ in first] == [b"a", b"b", b"no-consent"]
    assert again == first[:2]  # same values, same timestamps


def test_resend_window_keeps_the_newest_within_its_bytes_and_seconds(broker: str) -> None:
    """The window forgets its oldest copies beyond `resend_bytes`, and past `resend_seconds`."""
    name = f"t{uuid.uuid4().hex[:8]}.decisions"
    cost = len(b"k") + 10 + 100  # key, value, and the bookkeeping of one copy

    async def body() -> tuple[int, int, int]:
        producer = BufferedProducer(
            broker, capacity=100, resend_seconds=60.0, resend_bytes=3 * cost
        )
        aging = BufferedProducer(broker, capacity=100, resend_seconds=0.2, resend_bytes=2**20)
        await producer.start()
        await aging.start()
        try:
            for i in range(5):
                await producer.send(name, b"k", b"%010d" % i)
            by_bytes = producer.resend()
            await aging.send(name, b"k", b"old")
            await asyncio.sleep(0.4)
            await aging.send(name, b"k", b"new")
            by_age = aging.resend()
            disabled = BufferedProducer(broker, capacity=100, resend_seconds=60.0, resend_bytes=0)
            await disabled.start()
            try:
                await disabled.send(name, b"k", b"x")
                none = disabled.resend()
            finally:
                await disabled.stop()
            assert await producer.flush(10.0)
        finally:
            await aging.stop()
            await producer.stop()
        return by_bytes, by_age, none

    assert _run(body) == (3, 1, 0)


def test_resend_window_bounds_are_checked() -> None:
    """A negative or NaN bound is refused, naming both arguments."""
    for seconds, size in ((-1.0, 10), (float("nan"), 10), (1.0, -1)):
        with pytest.raises(ValueError, match="`resend_seconds` and `resend_bytes` must be >= 0"):
            BufferedProducer("127.0.0.1:1", capacity=1, resend_seconds=seconds, resend_bytes=size)
