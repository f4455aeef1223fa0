"""Erasure is final through the whole loop: what was accepted before it never comes back.

Fifty people, one after the other, consent, send behaviour events, are ranked and
rewarded through the API, and are erased the moment the API has accepted all of it,
while the stream worker is still reading it. Once the worker has read every event and
decision, each person's export is empty (no session or device features, no consent,
no secret, nothing pending), and none of their decisions is in the decision log.
"""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import PolicySettings
from tests.integration.conftest import ACTIONS, logged_event_ids, read_counters, wait_for

ROUNDS = 50


def _all_seen(redis_url: str, prefix: str, event_ids: list[str]) -> bool:
    async def read() -> bool:
        redis = Redis.from_url(redis_url)
        try:
            keys = [f"{prefix}:seen:event:{event_id}" for event_id in event_ids]
            return bool(await redis.exists(*keys) == len(keys))
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_events_ranks_and_rewards_racing_an_erasure_recreate_nothing(
    stack: LocalStack, redis_url: str
) -> None:
    """Erase each person right after the API took their events, ranks and rewards."""
    prefix: str = stack.prefix  # type: ignore[attr-defined]
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=0.5))
    people: list[tuple[str, str]] = []
    events: list[str] = []
    ranked: list[str] = []
    with Client(stack.api_url, api_key=stack.app_key) as client:
        for i in range(ROUNDS):
            user = f"racer-{i}-{uuid.uuid4().hex[:6]}@example.org"
            session = f"race-{i}-{uuid.uuid4().hex[:6]}"
            client.set_consent(user, personalisation=True, learning=True, source="test")
            events.extend(
                client.event(
                    kind="click",
                    user_id=user,
                    session_id=session,
                    device={"type": "mobile", "os": "iOS 17"},
                    item_id=item,
                )
                for item in ("item-1", "item-2")
            )
            result = client.rank({"page": {"n": i}}, ACTIONS, user_id=user, session_id=session)
            client.reward(result.event_id, 1.0)
            ranked.append(result.event_id)
            client.erase(user)  # all of the above was accepted (202) before this
            people.append((user, session))
        # A last, anonymous decision: once it is logged, every decision before it is.
        sentinel = client.rank({"page": {"n": -1}}, ACTIONS)
        client.reward(sentinel.event_id, 1.0)
        wait_for(lambda: _all_seen(redis_url, prefix, events), 60, "the worker to read the events")
        wait_for(lambda: sentinel.event_id in logged_event_ids(stack), 90, "the decision log")
        recreated = []
        for user, session in people:
            held = client.export(user)
            if held["sessions"] or held["consent"] or held["has_secret"]:
                recreated.append((session, held))
            assert held["pending_decisions"] == []
        assert recreated == []
    learned = set(ranked) & set(logged_event_ids(stack))
    assert learned == set()
    counters = read_counters(stack, redis_url)
    assert counters["decisions"] + counters.get("decisions_duplicate", 0) >= ROUNDS
