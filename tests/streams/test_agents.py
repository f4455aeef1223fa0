"""The agents, driven with Faust's ``agent.test_context()`` against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bandit.settings import Settings
from bandit.state import StateStore
from policies import Policy
from streams.agents import register_agents
from streams.app import StreamBanditApp, create_app
from tests.streams.test_context import _event
from tests.streams.test_learner import _example


def _with_app(
    broker: str, redis_url: str, body: Callable[[StreamBanditApp, StateStore], Awaitable[None]]
) -> None:
    prefix = f"ag{uuid.uuid4().hex[:10]}"
    settings = Settings.model_validate(
        {
            "kafka": {"broker": broker, "topic_prefix": prefix},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "policies": {"p": "vw-squarecb"},
            "learner": {"snapshot_every_examples": 10, "snapshot_every_seconds": 0.1},
        }
    )

    async def main() -> None:
        app = create_app(settings)
        client = Redis.from_url(redis_url)
        try:
            await body(app, StateStore(client, prefix))
        finally:
            await client.aclose()
            await app.close_state_store()
            # A Faust consumer made for a test context is never started, so its thread's
            # event loop is never closed: close it here, not in a garbage collection.
            thread = getattr(app._consumer, "_thread", None)
            loop = getattr(thread, "thread_loop", None)
            if loop is not None and not loop.is_running():
                loop.close()

    asyncio.run(main())


async def _poll(check: Callable[[], Awaitable[Any]], deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("not seen before the deadline")


def test_context_agent_writes_session_features(broker: str, redis_url: str) -> None:
    """A behaviour event put on the context agent shows up as session features."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        async with app.agents["context"].test_context() as agent:
            await agent.put(_event("view", item_id="i1").model_dump_json().encode(), key=b"s1")
            features = await _poll(lambda: store.features("session", "s1"))
        assert features == {"events": 1, "views": 1, "last_kind": "view", "last_item": "i1"}

    _with_app(broker, redis_url, body)


def test_learner_learns_and_saves_each_example_once(broker: str, redis_url: str) -> None:
    """Training examples on the topic (one twice) are learned once by the learner and saved."""

    async def body(app: StreamBanditApp, store: StateStore) -> None:
        async def all_saved() -> bool:
            saved = await store.load_model("p")
            return saved is not None and Policy.restore(saved.snapshot).n_learned >= 25

        services = register_agents(create_app(app.settings, agents=False))
        consumer = services.consumers["learner"]
        running = asyncio.create_task(consumer.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
        await producer.start()
        try:
            examples = [_example(i) for i in range(25)]
            topic = app.bandit_topics.training.get_topic_name()
            for example in [*examples, examples[3]]:
                await producer.send_and_wait(topic, example.model_dump_json().encode(), key=b"p")
            await _poll(all_saved)
            await asyncio.sleep(0.3)  # a duplicate learned late would show by now
        finally:
            await producer.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await services.app.close_state_store()
        saved = await store.load_model("p")
        assert saved is not None
        assert Policy.restore(saved.snapshot).n_learned == 25
        counters = await store.counters("p")
        assert (counters["learned"], counters["learn_duplicates"]) == (25, 1)

    _with_app(broker, redis_url, body)
