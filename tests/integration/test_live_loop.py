"""The whole loop on real servers: API, stream workers, broker and Redis as processes.

These tests start ``python -m bandit api`` and ``python -m bandit worker`` as child
processes against the session's broker and Redis (each test with its own topic and key
prefix), send traffic through the Python client, and read the outcome back from Redis
and the decision logs. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bandit.client import Client
from bandit.runtime import LocalStack
from bandit.schemas import PolicySettings
from bandit.settings import ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.state import StateStore
from policies import Policy

ACTIONS = [{"id": f"item-{i}", "features": {"item": {"kind": f"k{i}"}}} for i in range(3)]


def _best(segment: int) -> str:
    return f"item-{(segment * 2) % 3}"


@pytest.fixture
def stack(
    broker: str, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[LocalStack]:
    """A running API and stream workers on the session's servers, with fresh prefixes."""
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
        "STREAMBANDIT_POLICIES": json.dumps({"default": "vw-epsilon"}),
        "STREAMBANDIT_LOG_FORMAT": "json",
    }
    with LocalStack(
        settings, workers=workers, workdir=tmp_path / "stack", extra_env=env
    ) as running:
        running.prefix = prefix  # type: ignore[attr-defined]
        yield running


def _counters(stack: LocalStack, redis_url: str) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = Redis.from_url(redis_url)
        try:
            return await StateStore(client, stack.prefix).counters("default")  # type: ignore[attr-defined]
        finally:
            await client.aclose()

    return asyncio.run(read())


def _saved_policy(stack: LocalStack, redis_url: str) -> Policy:
    async def read() -> Policy:
        client = Redis.from_url(redis_url)
        try:
            record = await StateStore(client, stack.prefix).load_model("default")  # type: ignore[attr-defined]
        finally:
            await client.aclose()
        assert record is not None
        return Policy.restore(record.snapshot)

    return asyncio.run(read())


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def _logged_event_ids(stack: LocalStack) -> list[str]:
    return [
        json.loads(line)["EventId"]
        for path in sorted(stack.decision_logs.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def _traffic(client: Client, n: int, rng: random.Random) -> list[str]:
    event_ids = []
    for _ in range(n):
        segment = rng.randrange(2)
        result = client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
        event_ids.append(result.event_id)
        if result.action_id == _best(segment):
            client.reward(result.event_id, 1.0)
    return event_ids


def test_the_loop_learns_from_live_traffic(stack: LocalStack, redis_url: str) -> None:
    """Ranked and rewarded traffic is joined, learned once each, logged, and served back."""
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings(
            "default",
            PolicySettings(
                spec="vw-epsilon", reward_wait_seconds=1.0, exploration={"epsilon": 0.3}
            ),
        )
    n = 400
    with Client(stack.api_url, api_key=stack.app_key) as client:
        event_ids = _traffic(client, n, random.Random(1))
        _wait_for(lambda: _counters(stack, redis_url).get("joined", 0) >= n, 90, "the join")
        _wait_for(lambda: _saved_policy(stack, redis_url).n_learned >= n, 60, "the learner")
        assert _saved_policy(stack, redis_url).n_learned == n
        _wait_for(lambda: sorted(set(_logged_event_ids(stack))) == sorted(event_ids), 30, "the log")
        served = {p.name: p for p in client.list_policies()}["default"]
        _wait_for(lambda: client.list_policies()[0].learned_examples == n, 10, "the API's hot swap")
        assert served.spec == "vw-epsilon"
        for segment in range(2):
            result = client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
            best = {r.id: r.probability for r in result.ranking}[_best(segment)]
            assert best > 0.7
    _wait_for(lambda: _counters(stack, redis_url)["decisions"] == n + 2, 30, "the last decisions")
    assert _counters(stack, redis_url)["joined"] >= n
