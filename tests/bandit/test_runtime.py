"""The embedded runtime starts a real broker and a real Redis, and stops them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis as AsyncRedis

from bandit.errors import RuntimeServiceError
from bandit.ops.runtime import LocalServices, ModelArchive, ServiceProcess, _Backoff, free_port
from bandit.service.state import KeptModel, StateStore, model_keys
from bandit.settings import KafkaSettings, RedisSettings, Settings
from bandit.wire.answers import ModelSource


def test_redis_answers(redis_url: str) -> None:
    """The session's Redis stores and returns a value."""
    client = redis.Redis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, b"v", ex=60)
    assert client.get(key) == b"v"


def test_broker_round_trips_a_record(broker: str) -> None:
    """A record produced to the local broker is consumed back by a consumer group."""
    topic = f"t-{uuid.uuid4().hex[:8]}"

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker,
            group_id=f"g-{topic}",
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=15_000, max_records=1)
            return [record.value for records in batch.values() for record in records]
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == [b"hello"]


def test_configured_servers_are_used_not_started(tmp_path: object) -> None:
    """With both servers configured, the runtime starts no process."""
    settings = Settings(
        kafka=KafkaSettings(broker="127.0.0.1:1"), redis=RedisSettings(url="redis://127.0.0.1:2/0")
    )
    with LocalServices(settings) as services:
        assert services.processes == {}
        assert (services.broker, services.redis_url) == ("127.0.0.1:1", "redis://127.0.0.1:2/0")


def test_a_process_that_dies_on_start_is_reported(tmp_path: pytest.TempPathFactory) -> None:
    """A server that exits at once gives an error naming it and its exit code."""
    process = ServiceProcess("false-server", ["false"], free_port(), tmp_path / "log")  # type: ignore[operator]
    with pytest.raises(RuntimeServiceError, match="false-server exited with code 1 on start"):
        process.start()


def test_stop_ends_the_processes(tmp_path: pytest.TempPathFactory) -> None:
    """After the context ends, the servers it started are no longer running."""
    services = LocalServices(Settings(), workdir=tmp_path / "svc")  # type: ignore[operator]
    with services:
        started = list(services.processes.values())
        assert all(p.running for p in started)
    assert started
    assert not any(p.running for p in started)


def test_a_process_started_from_an_ended_thread_keeps_running(tmp_path: Path) -> None:
    """A child started from a thread that has since ended is not killed with that thread."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = ServiceProcess("sleeper", sleeper, None, tmp_path / "log")
    starter = threading.Thread(target=process.start)
    starter.start()
    starter.join()
    try:
        assert process.process is not None
        with pytest.raises(subprocess.TimeoutExpired):  # still alive a second later
            process.process.wait(timeout=1.0)
        assert process.running
    finally:
        process.stop()


def test_a_child_that_keeps_failing_waits_longer_each_time() -> None:
    """Restarts wait 1, 2, 4 ... up to 60 s; a child that ran a minute starts over at 1 s."""
    backoff = _Backoff()
    assert backoff.due(0.0)
    pauses = []
    now = 0.0
    for _ in range(8):
        backoff.failed(now)
        pauses.append(backoff.not_before - now)
        assert not backoff.due(now)
        now = backoff.not_before
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    backoff.running(now + 61.0)
    backoff.failed(now + 61.0)
    assert backoff.not_before - (now + 61.0) == 1.0


def test_kept_versions_copied_to_the_folder_come_back_with_their_model(
    redis_url: str, tmp_path: Path
) -> None:
    """The archive copies each kept snapshot once, drops those no longer kept, and puts
    the kept versions back with the model, as they were."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    archive = ModelArchive(tmp_path / "models", prefix)
    history = tmp_path / "models" / "history" / "p"

    async def save(version: int, source: ModelSource = "learner") -> None:
        client = AsyncRedis.from_url(redis_url)
        try:
            store = StateStore(client, prefix, model_history=3, model_history_seconds=0)
            await store.save_model("p", b"snapshot-%d" % version, version, {0: version},
                                   new_lineage=source != "learner", source=source)  # fmt: skip
        finally:
            await client.aclose()

    async def kept() -> tuple[list[KeptModel], list[bytes | None]]:
        client = AsyncRedis.from_url(redis_url)
        try:
            store = StateStore(client, prefix)
            versions = await store.model_versions("p")
            found = [await store.kept_model("p", v.version) for v in versions]
            return versions, [None if f is None else f[1] for f in found]
        finally:
            await client.aclose()

    client = redis.Redis.from_url(redis_url)
    try:
        for version in (1, 2):
            asyncio.run(save(version))
        assert archive.save(redis_url) == ["p"]
        copied = (history / "2.snapshot").stat().st_mtime_ns
        asyncio.run(save(3, "import"))
        asyncio.run(save(4))
        assert archive.save(redis_url) == ["p"]
        assert sorted(path.name for path in history.glob("*.snapshot")) == [
            "2.snapshot", "3.snapshot", "4.snapshot",
        ]  # fmt: skip
        assert (history / "2.snapshot").read_bytes() == b"snapshot-2"
        assert (history / "2.snapshot").stat().st_mtime_ns == copied  # not written again
        before = asyncio.run(kept())
        assert [entry.version for entry in before[0]] == [4, 3, 2]

        keys = model_keys(prefix, "p")
        client.delete(keys.model, keys.versions, keys.snapshots)  # Redis lost them
        assert archive.restore(redis_url) == ["p"]
        assert asyncio.run(kept()) == before
    finally:
        keys = model_keys(prefix, "p")
        client.delete(keys.model, keys.versions, keys.snapshots)
        client.close()


def test_models_copied_to_the_folder_come_back_to_a_redis_that_lost_them(
    redis_url: str, tmp_path: Path
) -> None:
    """The archive keeps the newest model; restore writes it only where Redis is older."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    archive = ModelArchive(tmp_path / "models", prefix)
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:model:p"
    try:
        client.hset(key, mapping={"snapshot": b"\x00\xffmodel", "version": "3", "offsets": "{}"})
        assert archive.save(redis_url) == ["p"]
        assert archive.save(redis_url) == []  # unchanged: not written again
        client.delete(key)
        assert archive.restore(redis_url) == ["p"]
        assert client.hget(key, "snapshot") == b"\x00\xffmodel"
        client.hset(key, "version", "4")  # Redis newer than the copy: left alone
        assert archive.restore(redis_url) == []
        assert client.hget(key, "version") == b"4"
    finally:
        client.delete(key)
        client.close()
