"""Redis memory is bounded: every per-decision key or entry expires (docs/redis-memory.md).

Against the real Redis of the test session: TTLs are read from the server, entries
past the dedup window are shown trimmed, and the embedded server is shown to run with
a memory bound that never evicts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from bandit.service.state import RECENT_SECONDS, StateStore
from bandit.settings import RedisSettings, Settings
from bandit.wire.schemas import Decision, PolicySettings, RewardReported
from streams.agents import register_agents
from streams.app import create_app
from streams.join import JoinStore

T = TypeVar("T")
WINDOW = 600


def _run(redis_url: str, body: Callable[[StateStore, Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            store = StateStore(
                client, prefix=f"t{uuid.uuid4().hex[:12]}", dedup_window_seconds=WINDOW
            )
            return await body(store, client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _decision(event_id: str, occurred_at: float) -> Decision:
    return Decision.model_validate(
        {
            "event_id": event_id,
            "occurred_at": datetime.fromtimestamp(occurred_at, UTC),
            "policy": "p",
            "model_version": "1",
            "context": {"user": {"tier": "gold"}},
            "actions": [{"id": "a"}, {"id": "b"}],
            "ranking": [{"id": "a", "probability": 0.5}, {"id": "b", "probability": 0.5}],
            "chosen_action_id": "a",
            "chosen_index": 0,
            "probability": 0.5,
            "explored": False,
        }
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize(("wait", "kept"), [(10.0, WINDOW), (900.0, 1800)])
def test_a_done_decision_leaves_only_a_marker_that_expires(
    redis_url: str, wait: float, kept: int
) -> None:
    """Once joined, a decision's state is gone but a done marker living max(window, 2 x wait)."""

    async def body(store: StateStore, redis: Redis) -> None:
        join = JoinStore(store, done_ttl_seconds=WINDOW)
        now = time.time()
        settings = PolicySettings(spec="uniform", reward_wait_seconds=wait)
        assert await join.add_decision(_decision("e1", now - wait - 5), settings) == "pending"
        reward = RewardReported(event_id="e1", reward=1.0)
        assert await join.add_reward(reward) == "pending"
        assert await redis.ttl(join.event_key("e1")) == -1  # pending: held until due
        claimed = await join.claim_due(now=now + 1)
        assert [item.event_id for item in claimed] == ["e1"]
        await join.complete(claimed)
        assert not await redis.exists(join.event_key("e1"))
        assert await redis.zscore(join.due_key, "e1") is None
        assert kept - 5 <= await redis.ttl(join.done_key("e1")) <= kept

    _run(redis_url, body)


def test_ids_learned_and_logged_are_forgotten_past_the_dedup_window(redis_url: str) -> None:
    """Entries older than the dedup window leave the learned and logged sets on the next write."""

    async def body(store: StateStore, redis: Redis) -> None:
        await store.save_model("p", b"snapshot", 1, {}, ["old-1", "old-2"])
        await store.mark_logged("p", ["old-1", "old-2"])
        past = time.time() - WINDOW - 1
        for family in ("learned", "logged"):  # as if they were written a window ago
            await redis.zadd(store.key(family, "p"), {"old-1": past, "old-2": past}, xx=True)
        await store.save_model("p", b"snapshot", 2, {}, ["new-1"])
        await store.mark_logged("p", ["new-1"])
        for family in ("learned", "logged"):
            members = await redis.zrange(store.key(family, "p"), 0, -1)
            assert members == [b"new-1"], family
        assert await store.learned("p", ["old-1", "new-1"]) == [False, True]
        assert await store.logged("p", ["old-2", "new-1"]) == [False, True]

    _run(redis_url, body)


def test_a_persons_decision_ids_expire_with_the_join_not_after_a_week(redis_url: str) -> None:
    """The ids kept for erasure live `ttl` (the join's reach); the page's last ten, a week."""

    async def body(store: StateStore, redis: Redis) -> None:
        ttl = 3_660
        await store.note_decision(
            "person", "e1", ttl, recent=b'{"event_id": "e1"}', started_at=time.time()
        )
        decisions = await redis.ttl(store.key("user", "person", "decisions"))
        assert ttl - 5 <= decisions <= ttl
        recent = await redis.ttl(store.key("user", "person", "recent"))
        assert RECENT_SECONDS - 5 <= recent <= RECENT_SECONDS

    _run(redis_url, body)


def test_the_workers_store_takes_the_configured_window(redis_url: str) -> None:
    """`redis.dedup_window_seconds` reaches the stream app's state store and its join."""
    settings = Settings(redis=RedisSettings(url=redis_url, dedup_window_seconds=1234))
    app = create_app(settings, agents=False)
    services = register_agents(app)
    assert app.state_store().dedup_window_seconds == 1234
    assert services.join.done_ttl_seconds == 1234
    asyncio.run(app.close_state_store())


def test_the_embedded_redis_is_bounded_and_never_evicts(redis_url: str) -> None:
    """The session's redis-server runs with maxmemory from settings and noeviction."""

    async def body(store: StateStore, redis: Redis) -> None:
        found = {_text(k): _text(v) for k, v in (await redis.config_get("maxmemory*")).items()}
        limit = Settings().redis.max_memory_mb
        assert limit > 0
        assert int(found["maxmemory"]) == limit * 1024 * 1024
        assert found["maxmemory-policy"] == "noeviction"

    _run(redis_url, body)
