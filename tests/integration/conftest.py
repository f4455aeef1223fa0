"""The `stack` fixture and helpers shared by the end-to-end tests.

A :class:`~bandit.ops.runtime.LocalStack` runs ``python -m bandit api`` and ``python -m
bandit worker`` as child processes against the session's broker and Redis, each test
with its own topic and key prefix. Helpers read the outcome back from Redis and the
decision logs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bandit.ops.runtime import LocalStack
from bandit.service.state import StateStore
from bandit.settings import ApiSettings, KafkaSettings, RedisSettings, Settings
from policies import Policy

ACTIONS = [{"id": f"item-{i}", "features": {"item": {"kind": f"k{i}"}}} for i in range(3)]


def best_action(segment: int) -> str:
    """The action that earns a reward for users of `segment`."""
    return f"item-{(segment * 2) % 3}"


@pytest.fixture
def stack(
    broker: str, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LocalStack]:
    """A running API and stream workers on the session's servers, with fresh prefixes.

    Parametrize it indirectly with the number of workers (1 when not parametrized). A
    test module's ``POLICIES`` (name to spec) are served instead of ``vw-epsilon``.
    """
    prefix = f"it{uuid.uuid4().hex[:8]}"
    workers = getattr(request, "param", 1)
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(port=0),
    )
    env = {
        "STREAMBANDIT_KAFKA__TOPIC_PREFIX": prefix,
        "STREAMBANDIT_REDIS__KEY_PREFIX": prefix,
        "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
        "STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_SECONDS": "0.5",
        "STREAMBANDIT_POLICIES": json.dumps(
            getattr(request.module, "POLICIES", {"default": "vw-epsilon"})
        ),
        "STREAMBANDIT_LOG_FORMAT": "json",
    }
    with LocalStack(
        settings, workers=workers, workdir=tmp_path / "stack", extra_env=env
    ) as running:
        running.prefix = prefix  # type: ignore[attr-defined]
        yield running


def read_counters(stack: LocalStack, redis_url: str, name: str = "default") -> dict[str, int]:
    """The counters of `name` (a policy, or a pseudo-policy such as ``_streams``)."""

    async def read() -> dict[str, int]:
        client = Redis.from_url(redis_url)
        try:
            return await StateStore(client, stack.prefix).counters(name)  # type: ignore[attr-defined]
        finally:
            await client.aclose()

    return asyncio.run(read())


def n_learned(stack: LocalStack, redis_url: str) -> int:
    """How many examples the saved model of ``default`` learned (0 before the first save)."""

    async def read() -> int:
        client = Redis.from_url(redis_url)
        try:
            record = await StateStore(client, stack.prefix).load_model("default")  # type: ignore[attr-defined]
        finally:
            await client.aclose()
        return 0 if record is None else Policy.restore(record.snapshot).n_learned

    return asyncio.run(read())


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def logged_event_ids(stack: LocalStack) -> list[str]:
    """Every ``EventId`` in the workers' DSJSON decision logs, duplicates included."""
    return [
        json.loads(line)["EventId"]
        for path in sorted(stack.decision_logs.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
