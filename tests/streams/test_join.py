"""The decision-reward join against a real Redis server; time is driven with ``now=``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import pytest
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.settings import Limits
from bandit.wire.schemas import (
    Activation,
    Decision,
    PolicySettings,
    RewardReported,
    TrainingExample,
)
from streams.join import Joined, JoinStore
from streams.trusted import TrustedDecision

T = TypeVar("T")

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
START = T0.timestamp()
WAIT = 10.0
DUE = START + WAIT


def _run(redis_url: str, body: Callable[[JoinStore], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            state = StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")
            return await body(JoinStore(state, **options))
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


WIDE = Limits(min_reward=-1e9, max_reward=1e9)  # the widest reward range there is


def _settings(**changes: Any) -> PolicySettings:
    return PolicySettings(spec="uniform", reward_wait_seconds=WAIT, **changes)


def _reward(
    reward: float, event_id: str = "e1", *, after: float = 1.0, reward_id: str | None = None
) -> RewardReported:
    fields = {
        "event_id": event_id,
        "reward": reward,
        "occurred_at": T0 + timedelta(seconds=after),
        "reward_id": reward_id or uuid.uuid4().hex,
    }
    if abs(reward) > WIDE.max_reward:  # past any range: as state of an older version held
        return RewardReported.model_construct(**fields)
    return RewardReported.model_validate(fields, context={"limits": WIDE})


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
        assert joined == Joined("e1", "p", value=joined.value, default_reward=True)
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


# -- watermarks: an event waits until every rewards partition is read past its deadline --

SLACK = 0.25  # exact in binary, so DUE + SLACK - SLACK == DUE
WATCHED = {"rewards_partitions": 2, "watermark_slack_seconds": SLACK}


def test_due_event_waits_until_every_rewards_partition_is_read_past_it(redis_url: str) -> None:
    """Past its deadline, an event is claimed only once each partition's watermark passes it."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        later = DUE + 60
        assert await join.claim_due(now=later) == []  # no partition has a watermark yet
        await join.advance_watermark(0, DUE + 50, now=later)
        assert await join.claim_due(now=later) == []  # partition 1 has none
        await join.advance_watermark(1, DUE + SLACK / 2, now=later)
        assert await join.claim_due(now=later) == []  # within the slack
        await join.advance_watermark(1, DUE + SLACK, now=later)
        [joined] = await join.claim_due(now=later)
        assert joined.event_id == "e1"
        assert joined.example is not None
        assert joined.example.default_reward

    _run(redis_url, body, **WATCHED)


def test_watermarks_past_the_deadline_do_not_beat_the_clock(redis_url: str) -> None:
    """Watermarks never release an event before its deadline by the clock."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        for partition in (0, 1):
            await join.advance_watermark(partition, DUE + 5, now=DUE + 5)
        assert await join.claim_due(now=DUE - 0.001) == []
        assert len(await join.claim_due(now=DUE)) == 1

    _run(redis_url, body, **WATCHED)


async def _reward_read_after_a_stall(join: JoinStore) -> tuple[str, Joined]:
    """The kill -9 case, step by step, on `join`.

    The reward is appended to partition 1 a second before the deadline, but the worker
    reading partition 1 died before it got there; partition 0 is read promptly.
    Returns the reward's outcome when it is finally read, and the joined event.
    """
    await join.add_decision(_decision(), _settings())
    await join.add_reward(_reward(1.0, "other"), now=START + 1, partition=1, record_time=START + 1)
    await join.advance_watermark(0, DUE + 30, now=DUE + 30)
    released = await join.claim_due(now=DUE + 30)
    if join.rewards_partitions is not None:
        assert released == []  # held: partition 1 is read only up to START + 1
        assert await join.lagging_partitions(now=DUE + 30) == [1]
    # A new worker owns partition 1 and reads the reward, stamped before the deadline.
    outcome = await join.add_reward(
        _reward(2.0, after=WAIT - 1), now=DUE + 31, partition=1, record_time=DUE - 1
    )
    assert await join.claim_due(now=DUE + 31) == []  # released already, or still held
    await join.advance_watermark(1, DUE + 31, now=DUE + 31)  # its watermark marker
    [joined] = released or await join.claim_due(now=DUE + 31)
    return outcome, joined


def test_reward_appended_in_time_but_read_after_a_stall_is_joined(redis_url: str) -> None:
    """A reward stamped before the deadline, read late from a stalled partition, is joined."""

    async def body(join: JoinStore) -> None:
        outcome, joined = await _reward_read_after_a_stall(join)
        assert outcome == "pending"
        assert joined.example is not None
        assert (joined.example.reward, joined.example.reward_count) == (2.0, 1)
        assert "rewards_late" not in await join.state.counters("p")

    _run(redis_url, body, **WATCHED)


def test_by_the_clock_alone_the_stalled_reward_would_be_late(redis_url: str) -> None:
    """Without watermarks the same reward comes after the release: late, default reward learned."""

    async def body(join: JoinStore) -> None:
        outcome, joined = await _reward_read_after_a_stall(join)
        assert outcome == "late"
        assert joined.example is not None
        assert joined.example.default_reward
        assert (await join.state.counters("p"))["rewards_late"] == 1

    _run(redis_url, body)


def test_records_move_their_partition_watermark_forward_only(redis_url: str) -> None:
    """A reward or activation read moves its partition's watermark: never back, never past now."""

    async def body(join: JoinStore) -> None:
        assert await join.watermarks() == {}
        early = _reward(1.0, "e9")  # no decision: kept early, still read
        assert await join.add_reward(early, now=START + 6, partition=0, record_time=START + 5) == (
            "early"
        )
        assert await join.watermarks() == {0: START + 5}
        activation = Activation(event_id="e9")
        await join.add_activation(activation, now=START + 7, partition=0, record_time=START + 3)
        assert await join.watermarks() == {0: START + 5}  # an older stamp changes nothing
        # A stamp ahead of the clock counts as the clock.
        await join.add_reward(_reward(1.0, "e8"), now=START + 7, partition=1, record_time=DUE + 99)
        assert await join.advance_watermark(1, START + 6, now=START + 8) == START + 7
        assert await join.watermarks() == {0: START + 5, 1: START + 7}
        # A record read from nowhere in particular (no partition given) moves nothing.
        await join.add_reward(_reward(1.0, "e7"), now=START + 9)
        assert await join.watermarks() == {0: START + 5, 1: START + 7}

    _run(redis_url, body, **WATCHED)


def test_duplicate_and_late_records_move_the_watermark_too(redis_url: str) -> None:
    """A record that changes nothing else was still read: its partition's watermark moves."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        kept = _reward(1.0, reward_id="r1")
        await join.add_reward(kept, now=START + 1, partition=0, record_time=START + 1)
        assert await join.add_reward(kept, now=START + 2, partition=0, record_time=START + 2) == (
            "duplicate"
        )
        assert await join.watermarks() == {0: START + 2}
        for partition in (0, 1):
            await join.advance_watermark(partition, DUE + 1, now=DUE + 1)
        await join.complete(await join.claim_due(now=DUE + 1))
        late = _reward(1.0, after=WAIT + 2)
        assert await join.add_reward(late, now=DUE + 3, partition=1, record_time=DUE + 2) == "late"
        assert await join.watermarks() == {0: DUE + 1, 1: DUE + 2}

    _run(redis_url, body, **WATCHED)


def test_lagging_partitions_are_those_holding_back_the_oldest_due_event(redis_url: str) -> None:
    """A partition lags when it has no watermark or one before the oldest due deadline (+ slack)."""

    async def body(join: JoinStore) -> None:
        assert await join.lagging_partitions(now=DUE + 100) == []  # nothing due
        await join.add_decision(_decision(), _settings())
        await join.add_decision(_decision("e2", occurred_at=T0 + timedelta(seconds=5)), _settings())
        assert await join.lagging_partitions(now=DUE + SLACK / 2) == []  # not due by the slack
        assert await join.lagging_partitions(now=DUE + SLACK) == [0, 1]  # none has a watermark
        await join.advance_watermark(0, DUE + SLACK, now=DUE + SLACK)
        await join.advance_watermark(1, DUE, now=DUE + SLACK)
        assert await join.lagging_partitions(now=DUE + SLACK) == [1]
        await join.advance_watermark(1, DUE + SLACK, now=DUE + SLACK)
        assert await join.lagging_partitions(now=DUE + 10) == []  # e2 is due only at DUE + 5
        [joined] = await join.claim_due(now=DUE + 10)
        await join.complete([joined])
        assert await join.lagging_partitions(now=DUE + 10) == [0, 1]  # now e2 is held

    _run(redis_url, body, **WATCHED)


def test_lease_hands_out_again_under_the_watermarks(redis_url: str) -> None:
    """An event whose worker died holding it is handed out again once lease and watermarks pass."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        for partition in (0, 1):
            await join.advance_watermark(partition, DUE + 1, now=DUE + 1)
        first = await join.claim_due(now=DUE + 1, lease_seconds=30)
        assert len(first) == 1
        assert await join.claim_due(now=DUE + 40) == []  # lease over, watermarks not
        for partition in (0, 1):
            await join.advance_watermark(partition, DUE + 40, now=DUE + 40)
        assert await join.claim_due(now=DUE + 40) == first

    _run(redis_url, body, **WATCHED)


def test_orphans_expire_by_the_clock_whatever_the_watermarks(redis_url: str) -> None:
    """Early rewards whose decision never came expire by the clock; watermarks do not hold them."""

    async def body(join: JoinStore) -> None:
        await join.add_reward(_reward(1.0), now=START, partition=0, record_time=START)
        assert await join.claim_due(now=START + join.orphan_ttl_seconds) == []
        counters = await join.state.counters(JoinStore.ORPHANS)
        assert counters == {"rewards_orphaned": 1}

    _run(redis_url, body, **WATCHED)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rewards_partitions": 0}, "`rewards_partitions` must be None or an int >= 1, got 0"),
        (
            {"watermark_slack_seconds": -1.0},
            "`watermark_slack_seconds` must be a finite number >= 0",
        ),
        (
            {"watermark_slack_seconds": float("nan")},
            "`watermark_slack_seconds` must be a finite number",
        ),
    ],
)
def test_bad_watermark_settings_are_refused(
    redis_url: str, options: dict[str, Any], message: str
) -> None:
    """A partition count below 1, or a negative or NaN slack, is refused."""

    async def body(join: JoinStore) -> None:
        with pytest.raises(ValueError, match=message):
            JoinStore(join.state, **options)

    _run(redis_url, body)


def test_bad_read_positions_are_refused(redis_url: str) -> None:
    """A partition without a time, a negative partition or a non-finite time is refused."""

    async def body(join: JoinStore) -> None:
        with pytest.raises(ValueError, match="`partition` and `record_time` go together"):
            await join.add_reward(_reward(1.0), now=START, partition=0)
        with pytest.raises(ValueError, match="`partition` must be an int >= 0, got -1"):
            await join.advance_watermark(-1, START)
        with pytest.raises(ValueError, match="a record time must be a finite number"):
            await join.add_activation(
                Activation(event_id="e1"), partition=0, record_time=float("inf")
            )
        assert await join.watermarks() == {}

    _run(redis_url, body, **WATCHED)


def test_redelivered_rewards_after_the_join_are_duplicates_not_late(redis_url: str) -> None:
    """A reward id read again while claimed or after, joined or late before, is a duplicate."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(deferred=True), _settings())
        joined_reward, activation = _reward(1.0, reward_id="r1"), Activation(event_id="e1")
        late_while_claimed, late_after = _reward(5.0, reward_id="r2"), _reward(7.0, reward_id="r3")
        await join.add_reward(joined_reward, now=START + 1)
        await join.add_activation(activation, now=START + 2)
        claimed = await join.claim_due(now=DUE)
        assert await join.add_reward(joined_reward, now=DUE + 1) == "duplicate"
        assert await join.add_reward(late_while_claimed, now=DUE + 1) == "late"
        assert await join.add_reward(late_while_claimed, now=DUE + 1) == "duplicate"
        assert await join.claim_due(now=DUE + 30) == claimed  # the late one changed nothing
        await join.complete(claimed)
        for copy in (joined_reward, late_while_claimed):
            assert await join.add_reward(copy, now=DUE + 31) == "duplicate"
        assert await join.add_activation(activation, now=DUE + 31) == "duplicate"
        assert await join.add_reward(late_after, now=DUE + 32) == "late"
        assert await join.add_reward(late_after, now=DUE + 33) == "duplicate"
        counters = await join.state.counters("p")
        assert (counters["rewards"], counters["rewards_late"]) == (1, 2)  # each id once
        assert counters["rewards_duplicate"] == 5
        assert (counters["activations"], counters["activations_duplicate"]) == (1, 1)
        assert "activations_late" not in counters
        assert await join.state.redis.ttl(join.done_key("e1")) > 0  # a late one kept the TTL

    _run(redis_url, body)


def test_the_decision_bytes_are_spliced_into_the_training_record_unchanged(
    redis_url: str,
) -> None:
    """The decision's JSON as it came (key order, spacing) is inside the example's JSON,
    which reads back as the declared TrainingExample."""
    decision = _decision()
    raw = orjson.dumps(dict(reversed(orjson.loads(decision.model_dump_json()).items())))
    raw = raw.replace(b",", b", ")  # as another encoder might write it

    async def body(join: JoinStore) -> None:
        assert await join.add_decision(TrustedDecision.read(raw), _settings()) == "pending"
        await join.add_reward(_reward(1.0))
        [joined] = await join.claim_due(now=DUE)
        assert joined.value is not None
        assert b'"decision":' + raw + b"," in joined.value
        example = TrainingExample.model_validate_json(joined.value)
        assert example.decision == decision
        assert (example.reward, example.reward_count, example.default_reward) == (1.0, 1, False)
        assert example.occurred_at == T0 + timedelta(seconds=WAIT)

    _run(redis_url, body)


def test_next_due_says_how_long_until_the_first_event_is_due(redis_url: str) -> None:
    """None with nothing waiting; then the seconds to the first deadline (< 0: overdue)."""

    async def body(join: JoinStore) -> None:
        assert await join.next_due(now=START) is None
        await join.add_decision(_decision(), _settings())
        assert await join.next_due(now=START) == pytest.approx(WAIT)
        assert await join.next_due(now=DUE + 1) == pytest.approx(-1.0)
        await join.claim_due(now=DUE + 1, lease_seconds=30.0)
        assert await join.next_due(now=DUE + 1) == pytest.approx(30.0)  # its lease's end

    _run(redis_url, body)


def test_a_decision_kept_before_its_time_was_stored_apart_is_still_joined(
    redis_url: str,
) -> None:
    """State written by an older worker (no ``at`` field) gives the same example."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision(), _settings())
        await join.state.redis.hdel(join.event_key("e1"), "at")
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert joined.example.occurred_at == T0 + timedelta(seconds=WAIT)

    _run(redis_url, body)
