"""Redis state against a real Redis server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.wire.schemas import PolicySettings

T = TypeVar("T")


def _run(redis_url: str, body: Callable[[StateStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(StateStore(client, prefix=f"t{uuid.uuid4().hex[:8]}"))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_policy_settings_round_trip_with_versions(redis_url: str) -> None:
    """Settings come back as stored; every change bumps the version."""

    async def body(store: StateStore) -> None:
        assert await store.policy_settings("p") is None
        assert await store.init_policy_settings("p", PolicySettings(spec="vw-epsilon"))
        assert not await store.init_policy_settings("p", PolicySettings(spec="uniform"))
        changed = PolicySettings(spec="vw-epsilon", exploration={"epsilon": 0.3})
        assert await store.set_policy_settings("p", changed) == 2
        assert await store.policy_settings("p") == (changed, 2)
        assert await store.policy_names() == ["p"]

    _run(redis_url, body)


def test_saved_model_holds_snapshot_version_offsets_and_learned_ids(redis_url: str) -> None:
    """A saved model comes back whole, and the ids it learned are remembered."""

    async def body(store: StateStore) -> None:
        assert await store.load_model("p") is None
        await store.save_model("p", b"\x00snap", 7, {0: 41, 3: 9}, ["e1", "e2"])
        record = await store.load_model("p")
        assert record is not None
        assert (record.snapshot, record.version, record.offsets) == (b"\x00snap", 7, {0: 41, 3: 9})
        assert await store.model_version("p") == 7
        assert await store.learned("p", ["e1", "x", "e2"]) == [True, False, True]

    _run(redis_url, body)


def test_features_merge_and_expire(redis_url: str) -> None:
    """Features merge per entity, keep their types, and vanish after their TTL."""

    async def body(store: StateStore) -> None:
        await store.put_features("session", "s1", {"views": 2.0, "last": "sports"}, ttl=1)
        await store.put_features("session", "s1", {"views": 3.0}, ttl=1)
        assert await store.features("session", "s1") == {"views": 3.0, "last": "sports"}
        await asyncio.sleep(1.2)
        assert await store.features("session", "s1") == {}

    _run(redis_url, body)


def test_counters_add_up(redis_url: str) -> None:
    """Counters accumulate per policy."""

    async def body(store: StateStore) -> None:
        await store.count("p", {"decisions": 2, "rewards_late": 1})
        await store.count("p", {"decisions": 3})
        assert await store.counters("p") == {"decisions": 5, "rewards_late": 1}

    _run(redis_url, body)


def test_a_save_over_a_model_saved_meanwhile_changes_nothing(redis_url: str) -> None:
    """A save expecting another stored version is refused, counters included."""

    async def body(store: StateStore) -> None:
        assert await store.save_model("p", b"v1", 1, {0: 5}, ["e1"], expected_version=0)
        stale = await store.save_model(
            "p", b"v1-again", 1, {0: 9}, ["e2"], counts={"learned": 1}, expected_version=0
        )
        assert not stale
        record = await store.load_model("p")
        assert record is not None
        assert (record.snapshot, record.offsets) == (b"v1", {0: 5})
        assert await store.learned("p", ["e1", "e2"]) == [True, False]
        assert await store.counters("p") == {}
        assert await store.save_model(
            "p", b"v2", 2, {0: 9}, counts={"learned": 4}, expected_version=1
        )
        assert await store.counters("p") == {"learned": 4}

    _run(redis_url, body)


def test_logged_ids_are_remembered_per_policy(redis_url: str) -> None:
    """Event ids recorded as logged are found again, for their policy only."""

    async def body(store: StateStore) -> None:
        assert await store.logged("p", ["e1"]) == [False]
        await store.mark_logged("p", ["e1", "e2"])
        assert await store.logged("p", ["e2", "e3", "e1"]) == [True, False, True]
        assert await store.logged("q", ["e1"]) == [False]

    _run(redis_url, body)


def test_thousands_of_ids_in_one_call_are_all_kept(redis_url: str) -> None:
    """A learner batch's worth of ids (more than one script chunk), odd ones included."""

    async def body(store: StateStore) -> None:
        ids = [f"evt-{i}" for i in range(2500)] + ['quote"d', "é-1", "back\\slash"]
        await store.mark_logged("p", ids)
        assert await store.logged("p", [*ids, "nope"]) == [True] * len(ids) + [False]
        assert await store.save_model("p", b"s", 1, {0: 1}, ids, expected_version=0)
        assert await store.learned("p", ["nope", *ids]) == [False] + [True] * len(ids)
        assert await store.redis.zcard(store.key("learned", "p")) == len(ids)

    _run(redis_url, body)
