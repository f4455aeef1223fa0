"""Keys scoped to policies: the join refuses their rewards for another policy's decision.

A reward or activation carries the policies of the key that sent it (``scope``); the
join applies it only to a decision of one of them, whether it arrives before the
decision, while it waits, or after it is done. Real Redis; time driven with ``now=``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.wire.schemas import Activation, Decision, PolicySettings, RewardReported
from streams.app import StreamBanditApp
from streams.join import JoinStore
from tests.streams.test_agents import _poll, _with_app

T = TypeVar("T")

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
START = T0.timestamp()
WAIT = 10.0
DUE = START + WAIT
Arrival = Literal["before", "pending", "done"]


def _run(redis_url: str, body: Callable[[JoinStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(JoinStore(StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _decision(policy: str, *, deferred: bool = False) -> Decision:
    return Decision.model_validate(
        {
            "event_id": "e1",
            "occurred_at": T0,
            "policy": policy,
            "model_version": "1",
            "actions": [{"id": "a"}, {"id": "b"}],
            "ranking": [{"id": "a", "probability": 0.7}, {"id": "b", "probability": 0.3}],
            "chosen_action_id": "a",
            "chosen_index": 0,
            "probability": 0.7,
            "explored": False,
            "deferred": deferred,
        }
    )


SETTINGS = PolicySettings(spec="uniform", reward_wait_seconds=WAIT, default_reward=0.0)


def _reward(scope: tuple[str, ...] | None, reward: float = 5.0) -> RewardReported:
    return RewardReported(
        event_id="e1",
        reward=reward,
        occurred_at=T0 + timedelta(seconds=1),
        reward_id=uuid.uuid4().hex,
        scope=scope,
    )


@pytest.mark.parametrize("arrival", ["before", "pending"])
@pytest.mark.parametrize(
    ("scope", "decided_by", "learned"),
    [
        (("a",), "b", 0.0),  # another policy's decision: the default reward is learned
        (("a", "c"), "b", 0.0),
        (("a",), "a", 5.0),  # its own policy's: learned
        (("c", "a"), "a", 5.0),
        (None, "b", 5.0),  # no scope (a '*' key, or produced to the topic directly)
    ],
)
def test_a_scoped_reward_changes_only_its_policies_decisions(
    redis_url: str,
    arrival: Arrival,
    scope: tuple[str, ...] | None,
    decided_by: str,
    learned: float,
) -> None:
    """Before or after its decision, a reward counts only if its key may use the policy."""

    async def body(join: JoinStore) -> None:
        refused = learned == 0.0
        decision = _decision(decided_by)
        if arrival == "before":
            assert await join.add_reward(_reward(scope), now=START + 0.5) == "early"
            assert await join.add_decision(decision, SETTINGS) == "pending"
        else:
            assert await join.add_decision(decision, SETTINGS) == "pending"
            expected = "forbidden" if refused else "pending"
            assert await join.add_reward(_reward(scope), now=START + 1.5) == expected
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert joined.example.reward == learned
        assert joined.example.default_reward is refused
        await join.complete([joined])
        counters = await join.state.counters(decided_by)
        assert counters.get("rewards_forbidden", 0) == int(refused)
        assert counters.get("rewards", 0) == int(not refused)

    _run(redis_url, body)


def test_a_scoped_reward_after_the_decision_is_done_is_refused_not_late(redis_url: str) -> None:
    """Once the decision is done, another policy's key is refused (forbidden), not late."""

    async def body(join: JoinStore) -> None:
        await join.add_decision(_decision("b"), SETTINGS)
        await join.complete(await join.claim_due(now=DUE))
        assert await join.add_reward(_reward(("a",)), now=DUE + 1) == "forbidden"
        assert await join.add_reward(_reward(("b",)), now=DUE + 1) == "late"
        assert await join.state.decision_policy("e1") == "b"
        counters = await join.state.counters("b")
        assert (counters["rewards_forbidden"], counters["rewards_late"]) == (1, 1)

    _run(redis_url, body)


@pytest.mark.parametrize("arrival", ["before", "pending"])
def test_another_policys_key_cannot_activate_a_deferred_decision(
    redis_url: str, arrival: Arrival
) -> None:
    """An activation from a key of another policy leaves the decision unactivated."""

    async def body(join: JoinStore) -> None:
        activation = Activation(event_id="e1", scope=("a",))
        if arrival == "before":
            assert await join.add_activation(activation, now=START) == "early"
            await join.add_decision(_decision("b", deferred=True), SETTINGS)
        else:
            await join.add_decision(_decision("b", deferred=True), SETTINGS)
            assert await join.add_activation(activation, now=START + 1) == "forbidden"
        [joined] = await join.claim_due(now=DUE)
        assert joined.dropped == "unactivated"
        assert (await join.state.counters("b"))["activations_forbidden"] == 1

    _run(redis_url, body)


def test_a_wrong_keys_early_records_do_not_shadow_the_right_ones(redis_url: str) -> None:
    """The same reward id or an activation from the wrong key first: the right one wins."""

    async def body(join: JoinStore) -> None:
        wrong = _reward(("a",), reward=-100.0)
        right = wrong.model_copy(update={"scope": ("b",), "reward": 3.0})
        early = Activation(event_id="e1", scope=("a",))
        assert await join.add_activation(early, now=START) == "early"
        assert await join.add_reward(wrong, now=START) == "early"
        assert await join.add_reward(right, now=START) == "early"
        assert await join.add_activation(Activation(event_id="e1"), now=START) == "early"
        await join.add_decision(_decision("b", deferred=True), SETTINGS)
        [joined] = await join.claim_due(now=DUE)
        assert joined.example is not None
        assert (joined.example.reward, joined.example.reward_count) == (3.0, 1)
        counters = await join.state.counters("b")
        assert counters["rewards_forbidden"] == counters["activations_forbidden"] == 1
        assert counters["rewards"] == counters["activations"] == 1

    _run(redis_url, body)


def test_the_join_agent_dead_letters_a_reward_from_another_policys_key(
    broker: str, redis_url: str
) -> None:
    """The agent dead-letters a refused reward, the reason naming the decision's policy."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        join = JoinStore(store)
        await join.add_decision(_decision("p"), SETTINGS)
        await app.producer.start()  # for the dead letter
        try:
            async with app.agents["join-rewards"].test_context() as agent:
                value = _reward(("q",)).model_dump_json().encode()
                await agent.put(value, key=b"e1", partition=0, timestamp=START + 1)
                await _poll(lambda: _forbidden(store))
        finally:
            await app.producer.stop()
        consumer = AIOKafkaConsumer(
            app.bandit_topics.dead_letters.get_topic_name(),
            bootstrap_servers=broker,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            letter = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        assert b"key not allowed for policy 'p'" in letter.value
        assert (await store.counters("_streams"))["dead_letters"] == 1

    async def _forbidden(store: StateStore) -> bool:
        return (await store.counters("p")).get("rewards_forbidden") == 1

    _with_app(broker, redis_url, body)
