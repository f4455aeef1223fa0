"""Erasure is final: events, ranks and rewards racing an erasure bring nothing back.

Real Redis, the real decision engine, context aggregator and join. Each round a
consented person has a session with features, a pending decision with a reward, and
then, all accepted before their erasure, more behaviour events, ranks naming them and
rewards; these are handled after the erasure (even rounds: the erasure runs first, the
case of a worker behind) or interleaved with it at random (odd rounds). Afterwards
nothing about the person is in Redis (no session or device features, no list of
sessions or decisions, no consent, no secret) and none of their decisions is learned.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from bandit.privacy.consent import ConsentRecord
from bandit.service.engine import DecisionEngine
from bandit.service.state import StateStore
from bandit.settings import ApiSettings, RedisSettings, Settings
from bandit.wire.schemas import BehaviourEvent, PolicySettings, RankRequest, RewardReported
from streams.context import ContextAggregator
from streams.join import JoinStore

ROUNDS = 50
ACTIONS = [{"id": "a"}, {"id": "b"}]
JOIN_SETTINGS = PolicySettings(spec="uniform", reward_wait_seconds=1.0)
REMEMBER = 3600


def _event(person: str, session: str, at: float) -> BehaviourEvent:
    return BehaviourEvent.model_validate(
        {
            "kind": "click",
            "user_id": person,
            "session_id": session,
            "device": {"type": "mobile", "os": "iOS 17"},
            "item_id": "i1",
            "occurred_at": datetime.fromtimestamp(at, UTC),
        }
    )


def _rank_request(event_id: str) -> RankRequest:
    return RankRequest.model_validate(
        {"event_id": event_id, "context": {"page": {"n": 1}}, "actions": ACTIONS}
    )


async def _jittered(work: Awaitable[Any], rng: random.Random) -> Any:
    await asyncio.sleep(rng.uniform(0, 0.003))
    return await work


async def _round(
    index: int, engine: DecisionEngine, store: StateStore, rng: random.Random
) -> tuple[str, str, set[str], int]:
    """Play one round; return the person, their session, their event ids, events dropped."""
    join = JoinStore(store)
    context = ContextAggregator(store, ttl_seconds=600, slack_seconds=0.0)
    person = f"p{uuid.uuid4().hex[:32]}"
    session = f"s{index}-{uuid.uuid4().hex[:6]}"
    grant = ConsentRecord().with_changes({"personalisation": True, "learning": True}, "test")
    await store.update_consent(person, grant)
    assert await context.apply([_event(person, session, time.time())]) == 1
    earlier = await engine.rank(_rank_request(f"e{index}-0-{session}"), "main", user=person)
    assert earlier.decision.learn
    assert earlier.decision.subject is not None
    await join.add_decision(earlier.decision, JOIN_SETTINGS)
    ids = {earlier.decision.event_id}

    # Accepted before the erasure: three events, two ranks (started now), rewards.
    accepted = time.time()
    events = [_event(person, session, accepted) for _ in range(3)]
    ranks = [
        asyncio.ensure_future(
            engine.rank(_rank_request(f"e{index}-{k}-{session}"), "main", user=person)
        )
        for k in (1, 2)
    ]
    ids.update(f"e{index}-{k}-{session}" for k in (1, 2))
    rewards = [RewardReported(event_id=event_id, reward=1.0) for event_id in sorted(ids)]

    async def decisions() -> None:
        for outcome in await asyncio.gather(*ranks):
            await join.add_decision(outcome.decision, JOIN_SETTINGS)

    async def feedback() -> None:
        for reward in rewards:
            await join.add_reward(reward)

    folded: list[int] = []

    async def fold() -> None:
        folded.append(await context.apply(events, [accepted] * len(events)))

    if index % 2 == 0:  # the worker is behind: all of it is read after the erasure
        await asyncio.gather(*ranks)
        await store.erase(person, REMEMBER)
        await asyncio.gather(fold(), decisions(), feedback())
        # a rank that read their consent before the erasure notes nothing after it
        late = await store.note_decision(person, f"e{index}-9", 60, started_at=accepted)
        assert late is None
    else:
        await asyncio.gather(
            _jittered(store.erase(person, REMEMBER), rng),
            *(_jittered(work, rng) for work in (fold(), decisions(), feedback())),
        )
    return person, session, ids, len(events) - folded[0]


async def _nothing_left(store: StateStore, person: str, session: str) -> list[str]:
    """Say what is still held about the person, if anything."""
    checks: dict[str, Awaitable[Any]] = {
        "session features": store.features("session", session),
        "device features": store.features("device", session),
        **{
            f"list of {name}": store.redis.exists(store.key("user", person, name))
            for name in ("sessions", "decisions", "recent")
        },
    }
    found = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    record, secret = await store.consent_and_secret(person)
    found.update(consent=record is not None, secret=secret is not None)
    return [name for name, held in found.items() if held]


def test_nothing_accepted_before_an_erasure_comes_back(redis_url: str) -> None:
    """50 rounds of events, ranks and rewards racing an erasure: nothing is recreated."""

    async def main() -> None:
        prefix = f"er{uuid.uuid4().hex[:8]}"
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=prefix),
            api=ApiSettings(model_poll_seconds=0.05),
            policies={"main": "uniform"},
            watermark_slack_seconds=0.0,
        )
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix)
        engine = DecisionEngine(settings, store)
        await engine.start()
        rng = random.Random(7)
        try:
            played = [await _round(i, engine, store, rng) for i in range(ROUNDS)]
            join = JoinStore(store)
            released = await join.claim_due(now=time.time() + 3600, limit=10_000)
            learned = {j.event_id for j in released if j.example is not None}
            for person, session, ids, _ in played:
                assert await _nothing_left(store, person, session) == [], person
                assert not ids & learned
                held = await store.held(person, None, None)
                assert (held["sessions"], held["pending_decisions"]) == ({}, [])
            # The behind-worker rounds did drop every event read after the erasure.
            assert all(dropped == 3 for _, _, _, dropped in played[::2])
        finally:
            await engine.stop()
            await client.aclose()

    asyncio.run(main())


def test_a_rank_that_began_before_an_erasure_keeps_nothing(redis_url: str) -> None:
    """A rank whose note meets a later erasure is produced unlearned, stripped, unlinked."""

    async def main() -> None:
        prefix = f"er{uuid.uuid4().hex[:8]}"
        settings = Settings(
            redis=RedisSettings(url=redis_url, key_prefix=prefix),
            policies={"main": "uniform"},
            watermark_slack_seconds=0.0,
        )
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix)
        engine = DecisionEngine(settings, store)
        await engine.start()
        try:
            person = f"p{uuid.uuid4().hex}"
            # The erasure lands after this rank began (its time is ahead of the rank's),
            # and the rank still reads a consent: the one it read before the erasure.
            await store.erase(person, REMEMBER, now=time.time() + 60)
            grant = ConsentRecord().with_changes({"personalisation": True, "learning": True}, "t")
            await store.update_consent(person, grant)
            outcome = await engine.rank(_rank_request("e-late"), "main", user=person)
            decision = outcome.decision
            assert (decision.learn, decision.subject, decision.context) == (False, None, {})
            assert outcome.consent.personalise
            assert not outcome.consent.learn
            _, secret = await store.consent_and_secret(person)
            assert secret is None
            assert not await store.redis.exists(store.key("user", person, "decisions"))
        finally:
            await engine.stop()
            await client.aclose()

    asyncio.run(main())
