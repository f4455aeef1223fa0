"""The decision engine against a real Redis: loading, hot swap, settings, features."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from bandit.errors import ConfigurationError
from bandit.ops.runtime import free_port
from bandit.service.engine import DecisionEngine, UnknownServedPolicyError
from bandit.service.state import StateStore
from bandit.settings import ApiSettings, RedisSettings, Settings
from bandit.wire.schemas import PolicySettings, RankRequest
from policies import Action, make_policy

T = TypeVar("T")

ACTIONS = [{"id": "a"}, {"id": "b"}, {"id": "c"}]


def _settings(redis_url: str, **policies: str) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(model_poll_seconds=0.05),
        policies=policies or {"main": "vw-epsilon"},
    )


@asynccontextmanager
async def _engine(settings: Settings) -> AsyncIterator[DecisionEngine]:
    client = Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout_seconds,
        socket_connect_timeout=settings.redis.socket_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    engine = DecisionEngine(settings, StateStore(client, settings.redis.key_prefix))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await client.aclose()


def _run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


USER = {"user": {"tier": "gold"}}


def _request(event_id: str = "evt-1", **extra: object) -> RankRequest:
    data = {"event_id": event_id, "context": USER, "actions": ACTIONS, **extra}
    return RankRequest.model_validate(data)


def _trained(best: str = "b", examples: int = 60) -> bytes:
    """A vw-epsilon snapshot that learned `best` is the only rewarding action."""
    policy = make_policy("vw-epsilon")
    actions = [Action(a["id"]) for a in ACTIONS]
    for i in range(examples):
        chosen = i % len(actions)
        reward = float(actions[chosen].id == best)
        policy.learn(USER, actions, chosen, reward, 1 / len(actions))
    return policy.snapshot()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until `check` holds, polling; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


def test_builds_from_spec_and_stores_initial_settings(redis_url: str) -> None:
    """Without a saved model a policy is built from its spec (version 0), settings stored."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            loaded = engine.loaded("main")
            assert loaded is not None
            assert (loaded.version, loaded.model_version, loaded.policy.name) == (0, "0", "vw")
            stored = await engine.store.policy_settings("main")
            assert stored == (PolicySettings(spec="vw-epsilon"), 1)
            outcome = await engine.rank(_request(), "main")
            assert outcome.decision.model_version == "0"
            assert outcome.consent.path == "personalise"
            assert outcome.consent.learn
            with pytest.raises(UnknownServedPolicyError, match="no policy named 'nope'"):
                await engine.rank(_request(), "nope")

    _run(body)


def test_same_event_id_same_decision(redis_url: str) -> None:
    """The draw is seeded by the event id: the same request decides the same way."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            first = (await engine.rank(_request("evt-7"), "main")).decision
            again = (await engine.rank(_request("evt-7"), "main")).decision
            assert (first.chosen_action_id, first.ranking) == (
                again.chosen_action_id,
                again.ranking,
            )

    _run(body)


def test_saved_model_is_restored_at_start_and_hot_swapped(redis_url: str) -> None:
    """A saved model is served at start, and a newer one replaces it within a few polls."""
    settings = _settings(redis_url)

    async def body() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, settings.redis.key_prefix)
        await store.save_model("main", _trained("b"), 3, {0: 10})
        try:
            async with _engine(settings) as engine:
                loaded = engine.loaded("main")
                assert loaded is not None
                assert (loaded.version, loaded.policy.n_learned) == (3, 60)
                decision = (await engine.rank(_request(), "main")).decision
                assert max(decision.ranking, key=lambda e: e.probability).id == "b"
                await store.save_model("main", _trained("c", 90), 4, {0: 20})

                async def swapped() -> bool:
                    current = engine.loaded("main")
                    return current is not None and current.version == 4

                await _until(swapped)
                decision = (await engine.rank(_request("evt-2"), "main")).decision
                assert decision.model_version == "4"
                assert max(decision.ranking, key=lambda e: e.probability).id == "c"
        finally:
            await client.aclose()

    _run(body)


def test_corrupt_snapshot_is_rejected_and_the_old_model_kept(redis_url: str) -> None:
    """A snapshot that does not restore is refused; the served model stays."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            await engine.store.save_model("main", b"not a snapshot", 9, {})
            loaded = await engine.refresh("main")
            assert loaded.version == 0
            assert (await engine.refresh("main")).version == 0

    _run(body)


def test_settings_change_reconfigures_without_rebuilding(redis_url: str) -> None:
    """New settings change exploration on the running model; what it learned stays."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            await engine.store.save_model("main", _trained("b"), 5, {})
            before = await engine.refresh("main")
            top = max((await engine.rank(_request(), "main")).decision.ranking, key=_probability)
            assert top.probability == pytest.approx(1 - 0.05 * 2 / 3)
            tuned = PolicySettings(spec="vw-epsilon", exploration={"epsilon": 0.6})
            await engine.check_settings("main", tuned)
            await engine.store.set_policy_settings("main", tuned)
            after = await engine.refresh("main")
            assert after.policy is before.policy  # configured in place, not rebuilt
            assert (after.version, after.policy.n_learned, after.settings) == (5, 60, tuned)
            top = max((await engine.rank(_request(), "main")).decision.ranking, key=_probability)
            assert top.probability == pytest.approx(1 - 0.6 * 2 / 3)

    _run(body)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"spec": "uniform"}, r"`spec` must stay 'vw-epsilon'"),
        ({"exploration": {"gamma_scale": 3.0}}, r"cannot change 'gamma_scale' while running"),
        ({"exploration": {"epsilon": 2.0}}, r"epsilon"),
        ({"exploration": {"floor": 0.1}}, r"set `exploration_floor` instead"),
    ],
)
def test_settings_that_cannot_apply_are_refused(
    redis_url: str, changes: dict[str, object], match: str
) -> None:
    """Settings checks name the parameter and the rule, and change nothing."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            proposed = PolicySettings.model_validate({"spec": "vw-epsilon", **changes})
            with pytest.raises(ConfigurationError, match=match):
                await engine.check_settings("main", proposed)
            loaded = engine.loaded("main")
            assert loaded is not None
            assert loaded.settings == PolicySettings(spec="vw-epsilon")

    _run(body)


def test_stored_features_join_the_context_and_request_features_win(redis_url: str) -> None:
    """Session and device features from Redis reach the policy and the log; the request wins."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            await engine.store.put_features("session", "s1", {"views": 3, "tier": "x"}, 60)
            await engine.store.put_features("device", "d1", {"os": "iOS"}, 60)
            request = _request(context={**USER, "session": {"tier": "gold"}})
            outcome = await engine.rank(request, "main", session_id="s1", device_id="d1")
            assert outcome.decision.context == {
                **USER,
                "session": {"tier": "gold", "views": 3},
                "device": {"os": "iOS"},
            }
            assert (outcome.stored_features, outcome.degraded) == (3, False)
            unknown = await engine.rank(_request(), "main", session_id="nobody")
            assert (unknown.decision.context, unknown.degraded) == (USER, False)
            await engine.store.put_features("session", "s2", {"bad name": 1}, 60)
            invalid = await engine.rank(_request(), "main", session_id="s2")
            assert invalid.decision.context == USER  # invalid stored features are left out

    _run(body)


def test_unreachable_redis_builds_from_spec_and_answers_degraded() -> None:
    """With Redis down the engine still serves: built from the spec, features skipped."""
    settings = _settings(f"redis://127.0.0.1:{free_port()}/0")

    async def body() -> None:
        async with _engine(settings) as engine:
            assert engine.degraded
            outcome = await engine.rank(_request(), "main", session_id="s1")
            assert outcome.degraded
            assert outcome.decision.context == USER
            await engine.poll_once()
            assert engine.degraded

    _run(body)


def _probability(entry: object) -> float:
    return float(getattr(entry, "probability", 0.0))


def test_the_kill_switch_serves_the_baseline_and_logs_it(redis_url: str) -> None:
    """`baseline_forced` from Redis: baseline served and logged as such, model kept, logged."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            await engine.store.save_model("main", _trained("b"), 5, {})
            await engine.refresh("main")
            forced = PolicySettings(spec="vw-epsilon", baseline_forced=True)
            await engine.store.set_policy_settings("main", forced)
            with capture_logs() as logs:
                loaded = await engine.refresh("main")
            assert [e["event"] for e in logs] == ["settings.applied", "policy.baseline_forced"]
            assert logs[1]["policy"] == "main"
            assert logs[1]["model_version"] == 5
            assert (loaded.version, loaded.policy.n_learned) == (5, 60)
            outcome = await engine.rank(_request("evt-forced"), "main")
            assert outcome.baseline_forced
            assert outcome.consent.personalise  # the person's consent is unchanged
            assert outcome.decision.consent == "baseline"
            assert [r.probability for r in outcome.decision.ranking] == pytest.approx([1 / 3] * 3)
            assert outcome.decision.context == USER  # kept, so the model goes on learning
            assert outcome.inputs is not None
            assert outcome.inputs[0] == {}  # the baseline saw no context
        async with _engine(settings) as restarted:  # persisted: a new process starts forced
            outcome = await restarted.rank(_request("evt-restarted"), "main")
            assert outcome.decision.consent == "baseline"
            await restarted.store.set_policy_settings("main", PolicySettings(spec="vw-epsilon"))
            with capture_logs() as logs:
                await restarted.refresh("main")
            assert [e["event"] for e in logs] == ["settings.applied", "policy.resumed"]
            outcome = await restarted.rank(_request("evt-resumed"), "main")
            assert not outcome.baseline_forced
            assert outcome.decision.consent == "personalise"
            top = max(outcome.decision.ranking, key=_probability)
            assert (top.id, top.probability) == ("b", pytest.approx(1 - 0.05 * 2 / 3))

    _run(body)


def test_the_kill_switch_applies_even_beside_settings_that_cannot(redis_url: str) -> None:
    """Stored settings the policy refuses still carry the kill switch: the baseline serves."""
    settings = _settings(redis_url)

    async def body() -> None:
        async with _engine(settings) as engine:
            broken = PolicySettings(
                spec="vw-epsilon", exploration={"gamma_scale": 3.0}, baseline_forced=True
            )
            await engine.store.set_policy_settings("main", broken)  # bypassing the API's check
            with capture_logs() as logs:
                loaded = await engine.refresh("main")
            assert [e["event"] for e in logs] == ["settings.rejected", "policy.baseline_forced"]
            assert loaded.settings.exploration == {}  # the refused part is not applied
            outcome = await engine.rank(_request("evt-broken"), "main")
            assert outcome.decision.consent == "baseline"

    _run(body)
