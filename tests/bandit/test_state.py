"""Redis state against a real Redis server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from bandit.service.state import StateStore, model_keys
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


def _history(redis_url: str, body: Callable[[StateStore], Awaitable[T]], **kept: float) -> T:
    """Run `body` against a store keeping model versions as `kept` says."""

    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            prefix = f"t{uuid.uuid4().hex[:8]}"
            return await body(StateStore(client, prefix, **kept))  # type: ignore[arg-type]
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_kept_versions_are_trimmed_to_the_newest_n_in_the_save(redis_url: str) -> None:
    """With every version kept, the list holds the last N, newest first, with their bytes."""

    async def body(store: StateStore) -> None:
        assert await store.model_versions("p") == []
        for version in range(1, 6):
            assert await store.save_model("p", b"s" * version, version, {0: version})
        kept = await store.model_versions("p")
        assert [entry.version for entry in kept] == [5, 4, 3]
        assert [entry.size for entry in kept] == [5, 4, 3]
        assert {entry.source for entry in kept} == {"learner"}
        assert kept[0].created_at < kept[0].saved_at  # the lineage began at version 1
        found = await store.kept_model("p", 4)
        assert found is not None
        assert found[1] == b"ssss"
        assert await store.kept_model("p", 2) is None  # dropped with its snapshot
        raw = await store.redis.hkeys(model_keys(store.prefix, "p").snapshots)
        assert sorted(raw) == [b"3", b"4", b"5"]

    _history(redis_url, body, model_history=3, model_history_seconds=0)


def test_the_learner_s_versions_are_kept_at_most_one_per_interval(redis_url: str) -> None:
    """A version the learner saves soon after the last kept one is not kept; a reset is,
    and so is the version it replaced; the offsets-only save of a version adds nothing."""

    async def body(store: StateStore) -> None:
        await store.save_model("p", b"v1", 1, {0: 1})
        await store.save_model("p", b"v2", 2, {0: 2})
        await store.save_model("p", b"v2", 2, {0: 3})  # offsets moved only
        await store.save_model("p", b"v3", 3, {0: 4})
        assert [entry.version for entry in await store.model_versions("p")] == [1]
        assert await store.save_model(
            "p", b"fresh", 4, {0: 4}, expected_version=3, new_lineage=True, source="reset"
        )
        kept = await store.model_versions("p")
        assert [(e.version, e.source) for e in kept] == [
            (4, "reset"),
            (3, "learner"),
            (1, "learner"),
        ]
        assert kept[0].created_at == kept[0].saved_at  # a new lineage
        assert kept[1].created_at == kept[2].created_at  # the first save's
        found = await store.kept_model("p", 3)
        assert found is not None
        assert found[1] == b"v3"

    _history(redis_url, body, model_history=10, model_history_seconds=3600)


def test_a_rollback_is_kept_with_the_version_it_restores_and_its_lineage(
    redis_url: str,
) -> None:
    """A rollback's version names what it restored and keeps that version's creation time."""

    async def body(store: StateStore) -> None:
        await store.save_model("p", b"v1", 1, {})
        await store.save_model("p", b"v2", 2, {}, new_lineage=True, source="import")
        first = (await store.model_versions("p"))[-1]
        assert await store.save_model(
            "p",
            b"v1",
            3,
            {},
            expected_version=2,
            created_at=first.created_at,
            source="rollback",
            restored_from=1,
        )
        newest = (await store.model_versions("p"))[0]
        assert (newest.version, newest.source, newest.restored_from) == (3, "rollback", 1)
        record = await store.load_model("p")
        assert record is not None
        assert (record.version, record.created_at) == (3, first.created_at)

    _history(redis_url, body, model_history=10, model_history_seconds=3600)


def test_no_versions_are_kept_when_history_is_off(redis_url: str) -> None:
    """model_history 0 keeps nothing, and drops what was kept before at the next save."""

    async def body(store: StateStore) -> None:
        await store.save_model("p", b"v1", 1, {})
        assert len(await store.model_versions("p")) == 1
        store.model_history = 0
        await store.save_model("p", b"v2", 2, {}, new_lineage=True, source="import")
        assert await store.model_versions("p") == []
        assert await store.redis.exists(model_keys(store.prefix, "p").snapshots) == 0

    _history(redis_url, body, model_history=5, model_history_seconds=0)
