"""A model that is not finite is never saved (learner) nor served (engine), with real Redis.

The input checks of :meth:`policies.Policy.learn` keep every built-in policy finite; to
see what happens should something get past them, these tests lift the reward limit
(``monkeypatch``) so that a reward of 1e308 reaches VW, as it did before the limit.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from redis.asyncio import Redis

import policies._base
import policies.dsjson
import policies.vw
from bandit.service.engine import DecisionEngine
from bandit.service.metrics import ApiMetrics
from bandit.service.state import StateStore
from bandit.settings import ApiSettings, RedisSettings, Settings
from bandit.wire.schemas import Decision, RankRequest, TrainingExample
from policies import Action, Policy, decide_ranking, make_policy
from streams.learner import Learner, TrainingRecord
from tests.streams.test_learner import record_of

T = TypeVar("T")

CONTEXT = {"user": {"x": 1.0, "tier": "gold"}}
ACTIONS = [{"id": "a"}, {"id": "b"}, {"id": "c", "features": {"item": {"y": 1.0}}}]


def _settings(redis_url: str) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(model_poll_seconds=0.05),
        policies={"p": "vw-squarecb"},
    )


def _run(redis_url: str, settings: Settings, body: Callable[[StateStore], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(StateStore(client, settings.redis.key_prefix))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _request(i: int) -> RankRequest:
    return RankRequest.model_validate(
        {"event_id": f"evt-{i}", "context": CONTEXT, "actions": ACTIONS}
    )


def _record(i: int, reward: float) -> TrainingRecord:
    request = _request(i)
    context, actions = request.policy_inputs()
    choice = decide_ranking(make_policy("uniform").pmf(context, actions), request.event_id)
    decision = Decision.from_choice(choice, request=request, policy="p", model_version="0")
    example = TrainingExample(
        event_id=decision.event_id,
        decision=decision,
        reward=reward,
        reward_count=1,
        default_reward=False,
    )
    return record_of(0, i, example)


def _poisoned() -> bytes:
    """A vw-squarecb snapshot whose weights are NaN (learned past the input checks)."""
    policy = make_policy("vw-squarecb")
    actions = [Action("a"), Action("b"), Action("c")]
    for i in range(10):
        policy.learn(CONTEXT, actions, i % 3, 1.0, 1 / 3)
    policy._learn(CONTEXT, actions, 0, 1e308, 1 / 3)
    return policy.snapshot()


@pytest.fixture
def no_reward_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift REWARD_LIMIT everywhere it is read, as if the input check had a gap."""
    monkeypatch.setattr(policies._base, "REWARD_LIMIT", math.inf)
    monkeypatch.setattr(policies.dsjson, "REWARD_LIMIT", math.inf)


@pytest.mark.usefixtures("no_reward_limit")
def test_a_batch_that_poisons_the_model_is_not_saved_and_the_culprit_is_rejected(
    redis_url: str,
) -> None:
    """The batch is learned again record by record: the culprit alone is dead-lettered."""
    settings = _settings(redis_url)

    async def body(store: StateStore) -> None:
        learner = Learner(store, settings)
        first = await learner.process([_record(i, 1.0) for i in range(10)])
        assert first.saved == {"p": 1}
        batch = [_record(i, 1e308 if i == 15 else 0.5) for i in range(10, 30)]
        result = await learner.process(batch)
        assert (result.learned, result.saved) == (19, {"p": 2})
        ((rejected, reason),) = result.rejected
        assert rejected.event_id == "evt-15"
        assert "cannot learn it: the vw model is not finite: weight" in reason
        saved = await store.load_model("p")
        assert saved is not None
        model = Policy.restore(saved.snapshot)
        model.check_model()  # the saved model is finite
        assert model.n_learned == 29
        assert saved.offsets == {0: 29}
        served = model.pmf(*_request(99).policy_inputs())
        assert all(math.isfinite(p) for p in served)
        counters = await store.counters("p")
        assert counters["model_rejected.not_finite_after_learning"] == 1
        again = await learner.process([_record(i, 1.0) for i in range(30, 40)])
        assert (again.learned, again.rejected, again.saved) == (10, [], {"p": 3})

    _run(redis_url, settings, body)


def test_a_saved_model_that_is_not_finite_is_replaced(redis_url: str) -> None:
    """A NaN model saved before the checks is not learned on: learning starts over."""
    settings = _settings(redis_url)

    async def body(store: StateStore) -> None:
        await store.save_model("p", _poisoned(), 3, {0: 2})
        result = await Learner(store, settings).process([_record(i, 1.0) for i in range(3, 13)])
        assert (result.learned, result.saved) == (10, {"p": 4})
        saved = await store.load_model("p")
        assert saved is not None
        model = Policy.restore(saved.snapshot)
        model.check_model()
        assert model.n_learned == 10
        assert (await store.counters("p"))["model_rejected.saved_model_not_finite"] == 1

    _run(redis_url, settings, body)


def test_the_engine_never_serves_a_snapshot_that_is_not_finite(redis_url: str) -> None:
    """The served model stays; the refusal is counted by reason and exported as a metric."""
    settings = _settings(redis_url)

    async def body(store: StateStore) -> None:
        engine = DecisionEngine(settings, store)
        await engine.start()
        try:
            good = make_policy("vw-squarecb")
            await store.save_model("p", good.snapshot(), 1, {0: 0})
            assert (await engine.refresh("p")).version == 1
            await store.save_model("p", _poisoned(), 2, {0: 1})
            assert (await engine.refresh("p")).version == 1
            assert (await engine.refresh("p")).version == 1  # refused once, not retried
            assert engine.rejections == {("p", "snapshot_not_finite"): 1}
            outcome = await engine.rank(_request(1), "p")
            assert all(math.isfinite(r.probability) for r in outcome.decision.ranking)
            assert outcome.decision.model_version == "1"
        finally:
            await engine.stop()
        metrics = ApiMetrics()
        metrics.observe_state(
            [],
            degraded=False,
            buffered=0,
            broker_available=True,
            stream_counters={"p": {"model_rejected.not_finite_after_learning": 2, "learned": 5}},
            model_rejections=engine.rejections,
        )
        text = metrics.render().decode()
        assert (
            'streambandit_model_rejected_total{policy="p",reason="snapshot_not_finite"} 1.0' in text
        )
        assert (
            'streambandit_model_rejected_total{policy="p",reason="not_finite_after_learning"} 2.0'
            in text
        )

    _run(redis_url, settings, body)


def test_a_served_model_that_cannot_give_a_distribution_lets_the_baseline_decide(
    redis_url: str,
) -> None:
    """Rank never fails for a NaN model: the baseline's distribution is used and logged."""
    settings = _settings(redis_url)

    async def body(store: StateStore) -> None:
        engine = DecisionEngine(settings, store)
        await engine.start()
        try:
            loaded = engine.loaded("p")
            assert loaded is not None
            actions = [Action("a"), Action("b"), Action("c", {"item": {"y": 1.0}})]
            loaded.policy._learn(CONTEXT, actions, 0, 1e308, 1 / 3)  # poisoned in place
            outcome = await engine.rank(_request(2), "p")
            probabilities = [r.probability for r in outcome.decision.ranking]
            assert probabilities == pytest.approx([1 / 3] * 3)
            assert outcome.chooser is engine.baseline
            assert outcome.decision.consent == "baseline"  # logged as what decided
            assert engine.rejections == {("p", "pmf_not_finite"): 1}
        finally:
            await engine.stop()

    _run(redis_url, settings, body)
