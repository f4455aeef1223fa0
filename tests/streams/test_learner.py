"""The learner's batch logic against a real Redis server, without Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.settings import Settings
from bandit.wire.schemas import Decision, PolicySettings, RankRequest, TrainingExample
from policies import Policy, decide_ranking, make_policy
from streams.deadletter import RawRecord
from streams.learner import Learner, TrainingRecord
from streams.training import decode_training

T = TypeVar("T")

SETTINGS = Settings(policies={"p": "vw-squarecb", "q": "vw-epsilon"})


def _run(redis_url: str, body: Callable[[StateStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}"))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _example(i: int, policy: str = "p", **changes: Any) -> TrainingExample:
    request = RankRequest.model_validate(
        {
            "event_id": f"evt-{i}",
            "context": {"user": {"x": float(i % 3), "tier": "gold" if i % 2 else "free"}},
            "actions": [{"id": "a"}, {"id": "b"}, {"id": "c", "features": {"item": {"y": 1.0}}}],
        }
    )
    context, actions = request.policy_inputs()
    choice = decide_ranking(make_policy("uniform").pmf(context, actions), request.event_id)
    decision = Decision.from_choice(choice, request=request, policy=policy, model_version="0")
    if changes:
        decision = decision.model_copy(update=changes)
    reward = 1.0 if decision.chosen_action_id == "a" else 0.0
    return TrainingExample(
        event_id=decision.event_id,
        decision=decision,
        reward=reward,
        reward_count=1,
        default_reward=False,
    )


def record_of(partition: int, offset: int, example: TrainingExample) -> TrainingRecord:
    """`example` as the worker reads it from ``training`` at `partition` and `offset`."""
    value = example.model_dump_json().encode()
    record = decode_training(RawRecord("t.training", partition, offset, b"k", value))
    assert isinstance(record, TrainingRecord), record
    return record


def _records(n: int, *, start: int = 0, partition: int = 0, policy: str = "p") -> list[Any]:
    return [record_of(partition, i, _example(i, policy)) for i in range(start, start + n)]


async def _n_learned(store: StateStore, policy: str = "p") -> int:
    saved = await store.load_model(policy)
    assert saved is not None
    return Policy.restore(saved.snapshot).n_learned


def test_the_same_batch_twice_is_learned_once(redis_url: str) -> None:
    """Feeding a batch again (a redelivery) learns nothing and saves nothing new."""

    async def body(store: StateStore) -> None:
        learner = Learner(store, SETTINGS)
        records = _records(40)
        first = await learner.process(records)
        again = await learner.process(records)
        assert (first.learned, first.saved) == (40, {"p": 1})
        assert (again.learned, again.replayed, again.saved) == (0, 40, {})
        assert await _n_learned(store) == 40
        assert (await store.counters("p"))["learned"] == 40

    _run(redis_url, body)


def test_a_restarted_learner_skips_offsets_its_snapshot_covers(redis_url: str) -> None:
    """After a crash, records up to the saved offset are skipped, later ones learned."""

    async def body(store: StateStore) -> None:
        await Learner(store, SETTINGS).process(_records(50))
        restarted = Learner(store, SETTINGS)  # a new process: nothing in memory
        result = await restarted.process(_records(80))  # redelivered from offset 0
        assert (result.learned, result.replayed) == (30, 50)
        assert await _n_learned(store) == 80
        saved = await store.load_model("p")
        assert saved is not None
        assert (saved.version, saved.offsets) == (2, {0: 79})

    _run(redis_url, body)


def test_new_records_at_offsets_a_lost_log_had_reached_are_learned(redis_url: str) -> None:
    """After the saved offsets are forgotten (a lost log), the new log's records are learned.

    The saved offsets (up to 49) belong to the old log. While they stand, records 0-19
    of a new log count as covered (contract 3: a covered record is never applied twice,
    however long ago it was learned); once recovery forgets them, the new records are
    learned, and the old ones still are not (their ids were learned).
    """

    async def body(store: StateStore) -> None:
        await Learner(store, SETTINGS).process(_records(50))
        new_log = [record_of(0, offset, _example(1000 + offset)) for offset in range(20)]
        covered = await Learner(store, SETTINGS).process(new_log)
        assert (covered.learned, covered.replayed) == (0, 20)
        assert await store.forget_offsets() == ["p"]
        result = await Learner(store, SETTINGS).process(new_log)
        assert (result.learned, result.replayed) == (20, 0)
        again = await Learner(store, SETTINGS).process(_records(50))  # the old ones
        assert (again.learned, again.replayed, again.duplicates) == (0, 20, 30)
        assert await _n_learned(store) == 70

    _run(redis_url, body)


def test_work_not_saved_before_a_crash_is_learned_after_it(redis_url: str) -> None:
    """Examples applied but not saved are lost with the process and learned once later."""

    async def body(store: StateStore) -> None:
        crashed = Learner(store, SETTINGS)
        await crashed.process(_records(10))
        await crashed.apply(_records(20, start=10))  # crash before the checkpoint
        result = await Learner(store, SETTINGS).process(_records(30))
        assert (result.learned, result.replayed) == (20, 10)
        assert await _n_learned(store) == 30

    _run(redis_url, body)


def test_duplicate_event_ids_are_learned_once(redis_url: str) -> None:
    """An example produced twice (new offsets, same event id) is learned once."""

    async def body(store: StateStore) -> None:
        learner = Learner(store, SETTINGS)
        records = _records(10)
        in_batch = record_of(0, 10, _example(3))
        await learner.process([*records, in_batch])
        later = [record_of(0, 11 + i, _example(i)) for i in range(5)]
        restarted = Learner(store, SETTINGS)
        result = await restarted.process([*later, record_of(0, 16, _example(99))])
        assert (result.learned, result.duplicates) == (1, 5)
        assert await _n_learned(store) == 11
        counters = await store.counters("p")
        assert (counters["learned"], counters["learn_duplicates"]) == (11, 6)

    _run(redis_url, body)


def test_snapshot_holds_offsets_ids_and_the_policy(redis_url: str) -> None:
    """Each policy's model records its last offset per partition and the ids it learned."""

    async def body(store: StateStore) -> None:
        learner = Learner(store, SETTINGS)
        records = [
            *_records(5, partition=2),
            *_records(3, start=100, partition=1, policy="q"),
            *_records(5, start=5, partition=3),
        ]
        result = await learner.process(records)
        assert result.saved == {"p": 1, "q": 1}
        p, q = await store.load_model("p"), await store.load_model("q")
        assert p is not None
        assert q is not None
        assert p.offsets == {2: 4, 3: 9}
        assert q.offsets == {1: 102}
        assert Policy.restore(p.snapshot).name == make_policy("vw-squarecb").name
        assert Policy.restore(q.snapshot).params()["exploration"] == "epsilon"
        ids = [f"evt-{i}" for i in range(10)]
        assert await store.learned("p", ids) == [True] * 10
        assert await store.learned("q", ["evt-100", "evt-0"]) == [True, False]

    _run(redis_url, body)


def test_examples_without_learning_consent_are_skipped(redis_url: str) -> None:
    """A decision logged with learn=False is not learned."""

    async def body(store: StateStore) -> None:
        learner = Learner(store, SETTINGS)
        result = await learner.process([record_of(0, 0, _example(1, learn=False))])
        assert (result.learned, result.not_learnable) == (0, 1)

    _run(redis_url, body)


def test_unknown_policies_and_impossible_examples_are_rejected(redis_url: str) -> None:
    """Records no policy can learn come back with the reason; the rest is learned."""

    async def body(store: StateStore) -> None:
        learner = Learner(store, SETTINGS)
        unknown = record_of(0, 0, _example(1, policy="nobody"))
        result = await learner.process([unknown, *_records(3, start=1)])
        assert result.learned == 3
        [(record, reason)] = result.rejected
        assert record is unknown
        assert "'nobody' has no stored settings and is not in settings.policies" in reason

    _run(redis_url, body)


def test_stored_settings_build_the_policy_and_live_changes_apply(redis_url: str) -> None:
    """The policy starts from its stored spec; a new settings version is configured live."""

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("r", PolicySettings(spec="vw-epsilon"))
        learner = Learner(store, SETTINGS)
        await learner.process(_records(5, policy="r"))
        assert (await learner.policy("r")).params()["epsilon"] == pytest.approx(0.05)
        changed = PolicySettings(
            spec="vw-epsilon", exploration={"epsilon": 0.3}, exploration_floor=0.01
        )
        await store.set_policy_settings("r", changed)
        await learner.process(_records(5, start=5, policy="r"))
        saved = await store.load_model("r")
        assert saved is not None
        restored = Policy.restore(saved.snapshot)
        assert restored.params()["epsilon"] == pytest.approx(0.3)
        assert (restored.floor, restored.n_learned) == (0.01, 10)

    _run(redis_url, body)


def test_a_model_saved_by_another_learner_is_reloaded_not_overwritten(redis_url: str) -> None:
    """A learner whose model in memory is stale reloads it and learns only what is new."""

    async def body(store: StateStore) -> None:
        stale = Learner(store, SETTINGS)
        await stale.process(_records(10))
        other = Learner(store, SETTINGS)  # the partition moved to another worker
        await other.process(_records(10, start=10))
        result = await stale.process(_records(30))  # and back, redelivered from 0
        assert (result.learned, result.replayed) == (10, 20)
        assert await _n_learned(store) == 30
        assert await store.model_version("p") == 3

    _run(redis_url, body)


def test_a_checkpoint_refuses_to_overwrite_a_newer_model(redis_url: str) -> None:
    """A save is refused when another learner saved since; the stale policy is dropped."""

    async def body(store: StateStore) -> None:
        stale = Learner(store, SETTINGS)
        await stale.apply(_records(10))  # not saved, so not acknowledged either
        await Learner(store, SETTINGS).process(_records(15))  # redelivered elsewhere
        with pytest.raises(RuntimeError, match="saved by another learner"):
            await stale.checkpoint()
        assert await _n_learned(store) == 15
        result = await stale.process(_records(20))  # reloaded: only the new five
        assert (result.learned, result.replayed) == (5, 15)
        assert await _n_learned(store) == 20

    _run(redis_url, body)


def test_process_applies_the_batch_again_when_a_save_conflicts(redis_url: str) -> None:
    """A model saved elsewhere between learning and saving makes process() learn again."""

    class Interrupted(Learner):
        async def _apply_grouped(self, by_policy: Any) -> Any:
            result = await super()._apply_grouped(by_policy)
            if not interrupted:
                interrupted.append(True)
                await Learner(self.store, SETTINGS).process(_records(3))
            return result

    interrupted: list[bool] = []

    async def body(store: StateStore) -> None:
        result = await Interrupted(store, SETTINGS).process(_records(8))
        assert (result.learned, result.replayed) == (5, 3)
        assert await _n_learned(store) == 8
        assert await store.model_version("p") == 2

    _run(redis_url, body)
