"""Issue 10, finding 2, end to end: one reward of 1e308 no longer breaks a policy.

Before: ``POST /v1/reward`` with ``reward: 1e308`` answered 202; once learned, every rank
on ``vw-squarecb`` answered 500 (``weights[0] must be finite ... got nan``) and the
broken model was the saved snapshot. Here the API and a stream worker run as processes
on the session's broker and Redis; the reward is sent through the API, straight to the
rewards topic and, as a training example, straight to the training topic (apps may
produce to topics): each is refused with its reason, and the model keeps learning from
the rest and keeps serving finite distributions.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.settings import ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import Decision, PolicySettings, RankRequest, TrainingExample
from policies import decide_ranking, make_policy
from tests.integration.conftest import ACTIONS, n_learned, read_counters, wait_for

N = 40


@pytest.fixture
def squarecb(broker: str, redis_url: str, tmp_path: Path) -> Iterator[LocalStack]:
    """An API and one stream worker serving ``default`` with ``vw-squarecb``."""
    prefix = f"it{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(port=0),
    )
    env = {
        "STREAMBANDIT_KAFKA__TOPIC_PREFIX": prefix,
        "STREAMBANDIT_REDIS__KEY_PREFIX": prefix,
        "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
        "STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_SECONDS": "0.5",
        "STREAMBANDIT_POLICIES": json.dumps({"default": "vw-squarecb"}),
        "STREAMBANDIT_LOG_FORMAT": "json",
    }
    with LocalStack(settings, workdir=tmp_path / "stack", extra_env=env) as running:
        running.prefix = prefix  # type: ignore[attr-defined]
        yield running


def _attack_example() -> bytes:
    """A training example with reward 1e308, as an app producing to the topic might send."""
    request = RankRequest.model_validate(
        {"event_id": "attack-1", "context": {"user": {"segment": "s0"}}, "actions": ACTIONS}
    )
    context, actions = request.policy_inputs()
    choice = decide_ranking(make_policy("uniform").pmf(context, actions), request.event_id)
    decision = Decision.from_choice(choice, request=request, policy="default", model_version="0")
    example = TrainingExample(
        event_id="attack-1", decision=decision, reward=1e308, reward_count=1, default_reward=False
    )
    return example.model_dump_json().encode()


async def _produce(broker: str, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _dead_letters(broker: str, topic: str, wanted: int) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[dict[str, object]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(found) < wanted and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            found.extend(json.loads(r.value) for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return found


def test_a_reward_of_1e308_no_longer_breaks_vw_squarecb(
    squarecb: LocalStack, broker: str, redis_url: str
) -> None:
    """Refused at the API (422), dead-lettered from Kafka; ranks stay 200 and finite."""
    prefix = squarecb.prefix  # type: ignore[attr-defined]
    with Client(squarecb.api_url, api_key=squarecb.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-squarecb", reward_wait_seconds=1.0))
    with (
        Client(squarecb.api_url, api_key=squarecb.app_key) as client,
        httpx.Client(base_url=squarecb.api_url, timeout=10) as http,
    ):
        app = {"X-API-Key": squarecb.app_key}
        event_ids = []
        for i in range(N):
            result = client.rank({"user": {"segment": f"s{i % 2}"}}, ACTIONS)
            event_ids.append(result.event_id)
            if i % 3 == 0:
                client.reward(result.event_id, 1.0)
        # the finding's request: refused, naming the field and the rule
        refused = http.post(
            "/v1/reward", json={"event_id": event_ids[1], "reward": 1e308}, headers=app
        )
        assert refused.status_code == 422, refused.text
        (detail,) = refused.json()["detail"]
        assert detail["loc"] == ["reward"]
        assert "rewards must be within [-1000.0, 1000.0]" in detail["msg"]
        # the same reward produced to the topics directly
        asyncio.run(
            _produce(
                broker,
                [
                    (
                        f"{prefix}.rewards",
                        event_ids[2].encode(),
                        json.dumps(
                            {"type": "reward", "event_id": event_ids[2], "reward": 1e308}
                        ).encode(),
                    ),
                    (f"{prefix}.training", b"default", _attack_example()),
                ],
            )
        )
        wait_for(lambda: n_learned(squarecb, redis_url) >= N, 90, "the learner")
        letters = asyncio.run(_dead_letters(broker, f"{prefix}.dead-letters", 2))
        reasons = {str(letter["source_topic"]): str(letter["reason"]) for letter in letters}
        assert "rewards must be within [-1000.0, 1000.0]" in reasons[f"{prefix}.rewards"]
        assert "`reward` must be finite and within [-1e+09, 1e+09]" in reasons[f"{prefix}.training"]
        assert n_learned(squarecb, redis_url) == N  # the attack was learned by nothing
        wait_for(lambda: client.list_policies()[0].learned_examples == N, 15, "the hot swap")
        for i in range(20):
            answer = http.post(
                "/v1/rank",
                json={"context": {"user": {"segment": f"s{i % 2}"}}, "actions": ACTIONS},
                headers=app,
            )
            assert answer.status_code == 200, answer.text
            probabilities = [r["probability"] for r in answer.json()["ranking"]]
            assert all(math.isfinite(p) and 0 < p <= 1 for p in probabilities)
            assert answer.json()["model_version"] != "0"
    counters = read_counters(squarecb, redis_url)
    assert not any(name.startswith("model_rejected.") for name in counters)
    streams = read_counters(squarecb, redis_url, "_streams")
    assert streams[f"dead_letters.{prefix}.rewards"] == 1
    assert streams[f"dead_letters.{prefix}.training"] == 1
