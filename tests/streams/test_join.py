"""The decision-reward join against a real Redis server; time is driven with ``now=``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from bandit.schemas import Activation, Decision, PolicySettings, RewardReported
from bandit.state import StateStore
from streams.join import Joined, JoinStore

T = TypeVar("T")

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
START = T0.timestamp()
WAIT = 10.0
DUE = START + WAIT


def _run(redis_url: str, body: Callable[[JoinStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(JoinStore(StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _decision(event_id: str = "e1", **changes: Any) -> Decision:
    data: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": T0,
        "policy": "p",
        "model_version": "1",
        "context": {"user": {"tier": "gold"}},
        "actions": [{"id": "a"}, {"id": "b"}],
        "ranking": [{"id": "a", "probability": 0.7}, {"id": "b", "probability": 0.3}],
        "chosen_action_id": "a",
        "chosen_index": 0,
        "probability": 0.7,
        "explored": False,
    }
    data.update(changes)
    return Decision.model_validate(data)


def _settings(**changes: Any) -> PolicySettings:
    return PolicySettings(spec="uniform", reward_wait_seconds=WAIT, **changes)


def _reward(
    reward: float, event_id: str = "e1", *, after: float = 1.0, reward_id: str | None = None
) -> RewardReported:
    return RewardReported(
        event_id=event_id,
        reward=reward,
        occurred_at=T0 + timedelta(seconds=after),
        reward_id=reward_id or uuid.uuid4().hex,
    )


async def _keys(join: JoinStore) -> set[str]:
    raw = await join.state.redis.keys(join.state.key("*"))
    return {key.decode() if isinstance(key, bytes) else key for key in raw}


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("sum", 3.75), ("earliest", 2.0), ("max", 2.5)],
)
def test_rewards_in_the_window_combine_by_the_aggregation(
    redis_url: str, aggregation: str, expected: float
) -> None:
    """Rewards within the wait combine by sum, earliest occurred_at, or max."""

    async def body(join: JoinStore) -> None:
        settings = _settings(reward_aggregation=aggregation)
        assert await join.add_decision(_decision(), settings) == "pending"
        # Arrival order differs from occurred_at order: "earliest" must use occurred_at.
        assert await join.add_reward(_reward(2.5, after=3.0), now=START + 3.5) == "pending"
        assert await join.add_reward(_reward(-0.75, after=5.0), now=START + 5.5) == "pending"
        assert await join.add_reward(_reward(2.0, after=1.0), now=START + 6.0) == "pending"
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert joined.example.reward == expected
        assert (joined.example.reward_count, joined.example.default_reward) == (3, False)
        assert joined.example.decision == _decision()
        assert joined.example.occurred_at == T0 + timedelta(seconds=WAIT)
        await join.complete([joined])
        counters = await join.state.counters("p")
        assert counters == {"decisions": 1, "rewards": 3, "joined": 1}

    _run(redis_url, body)


def test_earliest_breaks_occurred_at_ties_by_arrival(redis_url: str) -> None:
    """With equal occurred_at, "earliest" takes the reward that arrived first."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings(reward_aggregation="earliest"))
        await join.add_reward(_reward(7.0, after=2.0, reward_id="z"), now=START + 3)
        await join.add_reward(_reward(1.0, after=2.0, reward_id="a"), now=START + 4)
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert joined.example.reward == 7.0

    _run(redis_url, body)


def test_default_reward_when_none_arrives(redis_url: str) -> None:
    """No reward by the due time: the default reward, flagged, with a count of 0."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings(default_reward=-0.5))
        assert await join.claim_due(now=DUE - 0.001) == []
        [joined] = await join.claim_due(now=DUE)
        assert joined == Joined("e1", "p", example=joined.example)
        assert joined.example is not None
        assert joined.example.reward == -0.5
        assert (joined.example.reward_count, joined.example.default_reward) == (0, True)
        await join.complete([joined])
        counters = await join.state.counters("p")
        assert counters == {"decisions": 1, "joined": 1, "default_rewards": 1}

    _run(redis_url, body)


def test_reward_before_decision_is_kept_until_it_arrives(redis_url: str) -> None:
    """A reward that beats its decision is kept and then joined with it."""

    async def body(join: JoinStore) -> None:
        assert await join.add_reward(_reward(1.5, reward_id="r1"), now=START) == "early"
        # A duplicate of the early reward is recognised and counted once the policy is known.
        assert await join.add_reward(_reward(9.0, reward_id="r1"), now=START) == "duplicate"
        assert await join.add_decision(_decision(), _settings(reward_aggregation="sum")) == (
            "pending"
        )
        assert await join.state.redis.zcard(join.orphans_key) == 0
        assert await join.state.redis.ttl(join.event_key("e1")) == -1  # no expiry now
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert (joined.example.reward, joined.example.reward_count) == (1.5, 1)
        counters = await join.state.counters("p")
        assert counters == {
            "decisions": 1,
            "rewards": 1,
            "rewards_early": 1,
            "rewards_duplicate": 1,
        }

    _run(redis_url, body)


def test_orphan_rewards_expire_and_are_counted(redis_url: str) -> None:
    """Rewards whose decision never comes are removed after the orphan TTL and counted."""

    async def body(join: JoinStore) -> None:
        await join.add_reward(_reward(1.0), now=START)
        await join.add_reward(_reward(2.0), now=START + 1)
        await join.add_activation(Activation(event_id="e1"), now=START + 2)
        assert await join.state.redis.ttl(join.event_key("e1")) > 0  # a backstop expiry
        assert await join.claim_due(now=START + join.orphan_ttl_seconds - 1) == []
        assert join.event_key("e1") in await _keys(join)
        assert await join.claim_due(now=START + join.orphan_ttl_seconds) == []
        assert await _keys(join) == {join.state.key("counters", JoinStore.ORPHANS)}
        counters = await join.state.counters(JoinStore.ORPHANS)
        assert counters == {"rewards_orphaned": 2, "activations_orphaned": 1}

    _run(redis_url, body)


def test_late_reward_is_counted_not_learned(redis_url: str) -> None:
    """A reward after the event was joined is counted as late and kept nowhere."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        await join.complete(await join.claim_due(now=DUE))
        assert await join.add_reward(_reward(1.0, after=20.0), now=DUE + 10) == "late"
        assert await _keys(join) == {join.done_key("e1"), join.state.key("counters", "p")}
        assert await join.claim_due(now=DUE + 1000) == []
        counters = await join.state.counters("p")
        assert counters["rewards_late"] == 1
        assert "rewards" not in counters

    _run(redis_url, body)


def test_reward_while_claimed_is_late_and_redelivery_is_unchanged(redis_url: str) -> None:
    """Once claimed the event is frozen: a reward during the lease is late."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings(reward_aggregation="sum"))
        await join.add_reward(_reward(1.0), now=START + 1)
        first = await join.claim_due(now=DUE, lease_seconds=30)
        assert await join.add_reward(_reward(5.0), now=DUE + 1) == "late"
        again = await join.claim_due(now=DUE + 30, lease_seconds=30)
        assert again == first
        assert first[0].example is not None
        assert first[0].example.reward == 1.0
        assert (await join.state.counters("p"))["rewards_late"] == 1

    _run(redis_url, body)


def test_duplicate_decision_changes_nothing(redis_url: str) -> None:
    """A decision seen again, pending or done, is counted and changes nothing."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings(default_reward=1.0))
        # The copy has other settings and a later time; neither must win.
        later = _decision(occurred_at=T0 + timedelta(seconds=100))
        assert await join.add_decision(later, _settings(default_reward=9.0)) == "duplicate"
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert (joined.example.reward, joined.example.decision.occurred_at) == (1.0, T0)
        await join.complete([joined])
        assert await join.add_decision(_decision(), _settings()) == "duplicate"
        assert await join.claim_due(now=DUE + 1000) == []
        counters = await join.state.counters("p")
        assert counters == {
            "decisions": 1,
            "decisions_duplicate": 2,
            "joined": 1,
            "default_rewards": 1,
        }

    _run(redis_url, body)


def test_duplicate_reward_id_counts_once(redis_url: str) -> None:
    """A reward id seen twice is aggregated once (first value wins) and counted."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings(reward_aggregation="sum"))
        assert await join.add_reward(_reward(1.0, reward_id="r1"), now=START + 1) == "pending"
        assert await join.add_reward(_reward(4.0, reward_id="r1"), now=START + 2) == "duplicate"
        assert await join.add_reward(_reward(2.0, reward_id="r2"), now=START + 3) == "pending"
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert (joined.example.reward, joined.example.reward_count) == (3.0, 2)
        counters = await join.state.counters("p")
        assert (counters["rewards"], counters["rewards_duplicate"]) == (2, 1)

    _run(redis_url, body)


def test_deferred_decision_activated_in_time_is_learned(redis_url: str) -> None:
    """A deferred decision activated before the join is learned with its rewards."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(deferred=True), _settings())
        await join.add_reward(_reward(1.0), now=START + 1)
        assert await join.add_activation(Activation(event_id="e1"), now=START + 2) == "pending"
        second = await join.add_activation(Activation(event_id="e1"), now=START + 3)
        assert second == "duplicate"
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert joined.example.reward == 1.0
        assert joined.example.decision.deferred

    _run(redis_url, body)


def test_deferred_decision_activated_before_it_arrives_is_learned(redis_url: str) -> None:
    """An activation that beats its decision still counts for it."""

    async def body(join: JoinStore) -> None:
        assert await join.add_activation(Activation(event_id="e1"), now=START) == "early"
        await join.add_decision(_decision(deferred=True), _settings())
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert (await join.state.counters("p"))["activations_early"] == 1

    _run(redis_url, body)


def test_deferred_decision_never_activated_is_dropped(redis_url: str) -> None:
    """A deferred decision not activated in time is dropped; a later activation is late."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(deferred=True), _settings())
        await join.add_reward(_reward(1.0), now=START + 1)
        [joined] = await join.claim_due(now=DUE)
        assert joined == Joined("e1", "p", dropped="unactivated")
        await join.complete([joined])
        assert await join.add_activation(Activation(event_id="e1"), now=DUE + 1) == "late"
        counters = await join.state.counters("p")
        assert counters["dropped_unactivated"] == 1
        assert counters["activations_late"] == 1
        assert "joined" not in counters

    _run(redis_url, body)


def test_not_learned_decision_leaves_only_counters(redis_url: str) -> None:
    """A learn=False decision keeps nothing in Redis but counters, and is never joined."""

    async def body(join: JoinStore) -> None:
        await join.add_reward(_reward(1.0), now=START)  # waiting for the decision
        assert await join.add_decision(_decision(learn=False), _settings()) == "not_learned"
        assert await _keys(join) == {join.state.key("counters", "p")}
        assert await join.claim_due(now=DUE + 10_000) == []
        assert await join.state.counters("p") == {"decisions": 1, "not_learned": 1}

    _run(redis_url, body)


def test_lease_redelivers_the_same_event_after_a_crash(redis_url: str) -> None:
    """Claimed but not completed: handed out again, identical, once the lease is over."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        await join.add_reward(_reward(0.5), now=START + 1)
        first = await join.claim_due(now=DUE, lease_seconds=30)
        assert len(first) == 1
        # The worker "crashes" here: it never calls complete().
        assert await join.claim_due(now=DUE + 29.9, lease_seconds=30) == []
        second = await join.claim_due(now=DUE + 30, lease_seconds=30)
        assert second == first
        await join.complete(second)
        await join.complete(first)  # the crashed worker's late completion changes nothing
        assert await join.claim_due(now=DUE + 1000) == []
        assert await _keys(join) == {join.done_key("e1"), join.state.key("counters", "p")}
        assert (await join.state.counters("p"))["joined"] == 1

    _run(redis_url, body)


def test_done_marker_outlives_twice_the_wait(redis_url: str) -> None:
    """The done marker's TTL is at least the configured one and twice the reward wait."""

    async def body(join: JoinStore) -> None:
        long_wait = PolicySettings(spec="uniform", reward_wait_seconds=86_400.0)
        await join.add_decision(_decision(), long_wait)
        await join.complete(await join.claim_due(now=START + 86_400))
        ttl = await join.state.redis.ttl(join.done_key("e1"))
        assert 2 * 86_400 - 60 < ttl <= 2 * 86_400

    _run(redis_url, body)


def test_server_time_is_used_when_now_is_omitted(redis_url: str) -> None:
    """Without `now`, the Redis server's clock decides what is due."""

    async def body(join: JoinStore) -> None:
        past = datetime(2020, 1, 1, tzinfo=UTC)
        future = datetime(2100, 1, 1, tzinfo=UTC)
        await join.add_decision(_decision("old", occurred_at=past), _settings())
        await join.add_decision(_decision("new", occurred_at=future), _settings())
        assert [joined.event_id for joined in await join.claim_due()] == ["old"]

    _run(redis_url, body)


def test_unreadable_state_is_dropped_not_stuck(redis_url: str) -> None:
    """A sum that overflows is handed out as dropped ("invalid"), not left to block."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings(reward_aggregation="sum"))
        await join.add_reward(_reward(1e308), now=START + 1)
        await join.add_reward(_reward(1e308), now=START + 2)
        [joined] = await join.claim_due(now=DUE)
        assert (joined.example, joined.dropped) == (None, "invalid")
        assert "OverflowError" in joined.detail
        await join.complete([joined])
        assert (await join.state.counters("p"))["dropped_invalid"] == 1

    _run(redis_url, body)


def test_many_events_in_batches_are_joined_exactly_once(redis_url: str) -> None:
    """2,000 events claimed in batches by two concurrent workers: each joined once."""

    async def body(join: JoinStore) -> None:
        other = JoinStore(join.state)
        ids = [f"e{i}" for i in range(2000)]
        settings = _settings(reward_aggregation="sum")
        for index, event_id in enumerate(ids):
            await join.add_decision(
                _decision(event_id, occurred_at=T0 + timedelta(milliseconds=index)), settings
            )
            if index % 2 == 0:
                await join.add_reward(_reward(float(index), event_id), now=START + 1)

        async def worker(store: JoinStore) -> list[Joined]:
            seen: list[Joined] = []
            while batch := await store.claim_due(now=DUE + 5, limit=300):
                seen.extend(batch)
                await store.complete(batch)
            return seen

        first, second = await asyncio.gather(worker(join), worker(other))
        joined = first + second
        assert sorted(item.event_id for item in joined) == sorted(ids)
        rewards = {item.event_id: item.example.reward for item in joined if item.example}
        assert rewards["e1998"] == 1998.0
        assert rewards["e1999"] == 0.0
        counters = await join.state.counters("p")
        assert (counters["joined"], counters["default_rewards"]) == (2000, 1000)
        assert await join.state.redis.zcard(join.due_key) == 0

    _run(redis_url, body)


def test_bad_arguments_are_refused(redis_url: str) -> None:
    """Non-positive TTLs, limits and leases, and a non-finite `now`, are refused."""

    async def body(join: JoinStore) -> None:
        with pytest.raises(ValueError, match="`orphan_ttl_seconds` must be a finite number > 0"):
            JoinStore(join.state, orphan_ttl_seconds=0)
        with pytest.raises(ValueError, match="`limit` must be >= 1, got 0"):
            await join.claim_due(now=DUE, limit=0)
        with pytest.raises(ValueError, match="`lease_seconds` must be a finite number > 0"):
            await join.claim_due(now=DUE, lease_seconds=float("nan"))
        with pytest.raises(ValueError, match="`now` must be a finite number"):
            await join.add_reward(_reward(1.0), now=float("inf"))

    _run(redis_url, body)
