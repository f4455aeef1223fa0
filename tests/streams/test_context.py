"""Context aggregation: behaviour events become session and device features in Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.wire.schemas import BehaviourEvent
from streams.context import ContextAggregator, device_features, session_features


def _event(kind: str, session: str = "s1", **changes: Any) -> BehaviourEvent:
    data: dict[str, Any] = {
        "kind": kind,
        "user_id": "pseudonym-1",
        "session_id": session,
        "device": {"type": "mobile", "os": "iOS 17.4", "app_version": "3.2"},
    }
    data.update(changes)
    return BehaviourEvent.model_validate(data)


def test_session_features_count_kinds_and_remember_the_last_event() -> None:
    """Each kind has its counter; purchases sum their value; the last item is kept."""
    features: dict[str, float | str] = {}
    for event in [
        _event("view", item_id="i1"),
        _event("add_to_cart", item_id="i1"),
        _event("purchase", item_id="i1", value=12.5),
        _event("purchase", value=2.5),
    ]:
        features.update(session_features(features, event))
    assert features == {
        "events": 4,
        "views": 1,
        "cart_adds": 1,
        "purchases": 2,
        "purchase_value": 15.0,
        "last_kind": "purchase",
        "last_item": "i1",
    }


def test_device_features_name_the_device_not_the_user() -> None:
    """Device features hold its type, OS and app version, and no user id."""
    assert device_features(_event("view")) == {
        "type": "mobile",
        "os": "iOS 17.4",
        "app_version": "3.2",
    }


def test_features_reach_redis_once_per_event_with_a_ttl(redis_url: str) -> None:
    """Batches fold into Redis; a redelivered event is not counted again; keys expire."""

    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")
        try:
            aggregator = ContextAggregator(store, ttl_seconds=600)
            view, click = _event("view", item_id="i1"), _event("click", item_id="i2")
            other = _event("view", session="s2", device={"type": "desktop", "os": "Linux"})
            assert await aggregator.apply([view, other, click, view]) == 3
            assert await aggregator.apply([click]) == 0  # redelivered
            session = await store.features("session", "s1")
            assert (session["events"], session["views"], session["clicks"]) == (2, 1, 1)
            assert session["last_item"] == "i2"
            assert (await store.features("session", "s2"))["views"] == 1
            assert await store.features("device", "s2") == {"type": "desktop", "os": "Linux"}
            ttl = await client.ttl(store.key("features", "session", "s1"))
            assert 0 < ttl <= 600
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_batch_of_hundreds_of_sessions_is_folded_whole(redis_url: str) -> None:
    """500 events over 300 sessions in one batch: every one folded (the pool holds 100)."""

    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")
        try:
            aggregator = ContextAggregator(store, ttl_seconds=600)
            events = [_event("view", session=f"s{i % 300}") for i in range(500)]
            assert await aggregator.apply(events) == 500
            assert (await store.features("session", "s0"))["views"] == 2
            assert (await store.features("session", "s299"))["views"] == 1
        finally:
            await client.aclose()

    asyncio.run(main())
