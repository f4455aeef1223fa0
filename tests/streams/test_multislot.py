"""Multi-slot decisions through the stream: per-slot rewards joined, learned, logged as CCB DSJSON.

A real Redis; the decisions are made by the engine's rank path; the log line is read
back by VW's own DSJSON parser (pyvw, ``--dsjson --ccb_explore_adf``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import orjson
import pytest
import vowpalwabbit
from redis.asyncio import Redis
from vowpalwabbit import pyvw

from bandit.errors import StructureError
from bandit.service.engine import DecisionEngine
from bandit.service.state import StateStore
from bandit.settings import RedisSettings, Settings
from bandit.wire.schemas import (
    LENIENT_IDS,
    Decision,
    MultiSlotRankRequest,
    PolicySettings,
    RewardReported,
)
from policies import Policy
from policies.vwccb import VWCCBPolicy
from streams.deadletter import RawRecord
from streams.join import JoinStore
from streams.learner import Learner
from streams.training import TrainingRecord, decode_training
from streams.trusted import TrustedDecision

T = TypeVar("T")
WAIT = 10.0

REQUEST: dict[str, Any] = {
    "context": {"user": {"tier": "gold"}},
    "actions": [
        {"id": "a", "features": {"item": {"kind": "news"}}},
        {"id": "b b", "features": {"item": {"kind": "sport"}}},
        {"id": "c", "features": {"item": {"kind": "music"}}},
        {"id": "d"},
    ],
    "slots": [
        {"id": "Main Article", "features": {"default": {"size": "Large"}}, "baseline_action": "c"},
        {"id": "side", "excluded_actions": ["a"]},
        {"id": "footer"},
    ],
}


def _run(redis_url: str, body: Callable[[StateStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}"))
        finally:
            await client.aclose()

    return asyncio.run(main())


async def _decisions(store: StateStore, redis_url: str, n: int) -> list[Decision]:
    """`n` multi-slot decisions of a vw-ccb policy, by the engine's rank path."""
    settings = Settings(policies={"p": "vw-ccb"}, redis=RedisSettings(url=redis_url))
    engine = DecisionEngine(settings, store)
    await engine.start()
    try:
        decided = []
        for i in range(n):
            request = MultiSlotRankRequest.model_validate(
                {**REQUEST, "event_id": f"ms-{i}"}, context=LENIENT_IDS
            )
            decided.append((await engine.rank(request, "p")).decision)
        return decided
    finally:
        await engine.stop()


def _reward(decision: Decision, value: float, slot: str | None) -> RewardReported:
    return RewardReported.model_validate(
        {
            "event_id": decision.event_id,
            "reward": value,
            "slot_id": slot,
            "occurred_at": decision.occurred_at + timedelta(seconds=1),
        },
        context=LENIENT_IDS,
    )


async def _joined(store: StateStore, decisions: list[Decision]) -> list[TrainingRecord]:
    """Join `decisions` with rewards for some slots, one without a slot, one for no slot."""
    join = JoinStore(store)
    settings = PolicySettings(
        spec="vw-ccb", reward_wait_seconds=WAIT, default_reward=-0.5, reward_aggregation="sum"
    )
    for decision in decisions:
        assert await join.add_decision(decision, settings) == "pending"
    first = decisions[0]
    now = first.occurred_at.timestamp() + 2
    for reward in (
        _reward(first, 1.0, "Main Article"),
        _reward(first, 2.0, None),  # no slot named: the first slot's
        _reward(first, 0.5, "side"),
        _reward(first, 0.25, "side"),
        _reward(first, 9.0, "nope"),  # a slot the decision has not: left out
    ):
        assert await join.add_reward(reward, now=now) == "pending"
    due = max(d.occurred_at.timestamp() for d in decisions) + WAIT
    joined = await join.claim_due(now=due, limit=len(decisions))
    await join.complete(joined)
    records = []
    for offset, item in enumerate(sorted(joined, key=lambda j: int(j.event_id[3:]))):
        assert item.value is not None, item
        record = decode_training(RawRecord("t.training", 0, offset, b"k", item.value))
        assert isinstance(record, TrainingRecord), record
        records.append(record)
    return records


def test_per_slot_rewards_are_joined_learned_and_logged_in_vws_ccb_form(redis_url: str) -> None:
    """Each slot gets its own aggregated reward; the CCB policy learns; VW reads the line."""

    async def body(store: StateStore) -> None:
        decisions = await _decisions(store, redis_url, 3)
        records = await _joined(store, decisions)
        first = records[0].values
        assert first["slot_rewards"] == [3.0, 0.75, -0.5]  # sum; none for the footer
        assert first["slot_reward_counts"] == [2, 2, 0]
        assert (first["reward"], first["reward_count"], first["default_reward"]) == (3.0, 2, False)
        assert records[1].values["slot_rewards"] == [-0.5, -0.5, -0.5]

        learner = Learner(store, Settings(policies={"p": "vw-ccb"}))
        result = await learner.process(records)
        assert (result.learned, result.rejected) == (3, [])
        saved = await store.load_model("p")
        assert saved is not None
        policy = Policy.restore(saved.snapshot)
        assert isinstance(policy, VWCCBPolicy)
        assert policy.n_learned == 3

        for record, decision in zip(records, decisions, strict=True):
            _check_line(record.log_entry().line, decision, record.values["slot_rewards"])

    _run(redis_url, body)


def _check_line(line: bytes, decision: Decision, rewards: list[float]) -> None:
    """VW's DSJSON parser reads the line as the decision: each slot's label and actions."""
    assert line.endswith(b"\n")
    assert decision.slots is not None
    vw = pyvw.Workspace("--dsjson --ccb_explore_adf --quiet", enable_logging=False)
    examples = vw.parse(line.decode())
    kinds = [e.get_label(vowpalwabbit.LabelType.CONDITIONAL_CONTEXTUAL_BANDIT) for e in examples]
    assert [k.type for k in kinds] == [0] + [1] * len(decision.actions) + [2] * len(decision.slots)
    for label, slot, reward in zip(
        kinds[-len(decision.slots) :], decision.slots, rewards, strict=True
    ):
        assert label.outcome.cost == pytest.approx(-reward)
        chosen = label.outcome.action_probs[0]
        assert chosen.action == slot.chosen_index
        assert chosen.score == pytest.approx(slot.probability, rel=1e-6)
        assert sorted(label.explicit_included_actions) == sorted(slot.include)
        assert sum(p.score for p in label.outcome.action_probs) == pytest.approx(1.0, rel=1e-6)
    vw.learn(examples)  # and learns from it
    vw.finish_example(examples)
    vw.finish()
    record = orjson.loads(line)
    assert record["EventId"] == decision.event_id
    assert [s["_id"] for s in record["c"]["_slots"]] == [s.id for s in decision.slots]
    assert record["_sb"]["policy"] == "p"


def _decision_line(**slot_changes: Any) -> bytes:
    slot = {
        "id": "s", "features": {}, "include": [0, 1], "chosen_index": 0, "probability": 0.5,
        "ranking": [{"id": "a", "probability": 0.5}, {"id": "b", "probability": 0.5}],
        "explored": False, **slot_changes,
    }  # fmt: skip
    return orjson.dumps(
        {
            "schema_version": 1, "event_id": "e", "policy": "p", "model_version": "0",
            "occurred_at": "2026-11-27T23:15:00Z", "actions": [{"id": "a"}, {"id": "b"}],
            "ranking": [{"id": "a", "probability": 0.5}, {"id": "b", "probability": 0.5}],
            "chosen_action_id": "a", "chosen_index": 0, "probability": 0.5, "explored": False,
            "slots": [slot, {**slot, "id": "t", "include": [1], "chosen_index": 1,
                             "ranking": [{"id": "b", "probability": 1.0}], "probability": 1.0}],
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"include": [0, 5]}, "slots.0.include: must be indices of the 2 actions"),
        ({"include": [0]}, "slots.0.ranking: must hold each of the slot's actions once"),
        ({"chosen_index": 1}, "slots.1.chosen_index: must be one of the slot's actions"),
        ({"id": 3}, "slots.0.id: must be str"),
    ],
)
def test_a_broken_multi_slot_decision_is_refused_naming_the_field(
    change: dict[str, Any], reason: str
) -> None:
    """What the learner and the log read of each slot is checked where the decision comes in."""
    assert TrustedDecision.read(_decision_line()).slots == ("s", "t")
    with pytest.raises(StructureError, match=reason.replace("(", r"\(")):
        TrustedDecision.read(_decision_line(**change))
