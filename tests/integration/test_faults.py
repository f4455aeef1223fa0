"""Faults on the whole loop: workers killed under load, duplicated and malformed records.

Everything runs as real processes (API, stream workers, broker, Redis) through the
`stack` fixture of ``conftest.py``. Traffic goes through the API, or straight to the
topics with aiokafka as the API or a misbehaving app would write it; the outcome is
read back from Redis, the decision logs and the dead-letter topic. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from bandit.client import AsyncClient, Client
from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import DeadLetter, Decision, PolicySettings, RankRequest, RewardReported
from policies import decide_ranking, make_policy
from streams.app import topic_names
from streams.deadletter import DEAD_LETTER_MAX_BYTES
from tests.integration.conftest import (
    ACTIONS,
    best_action,
    logged_event_ids,
    n_learned,
    read_counters,
    wait_for,
)

# A killed worker is back in about 6 s on the local broker: 2-3 s to start, then the
# consumer groups' JoinGroup, which the broker holds for a couple of seconds. A kill
# every 2.5 s would keep the groups rebalancing for good, so nothing would be processed.
KILL_EVERY_SECONDS = 6.0
MIN_KILLS = 5
SEND_SECONDS = 30.0  # the events are spread over this long, so kills land mid-stream


def _logged_lines(stack: LocalStack) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(stack.decision_logs.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


async def _produce(
    broker: str, records: Sequence[tuple[str, bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Produce (topic, key, value) records in order, as a plain app would.

    Returns the partition and offset of each.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=broker,
        enable_idempotence=False,
        max_request_size=4 * DEAD_LETTER_MAX_BYTES,
    )
    await producer.start()
    try:
        offsets = []
        for topic, key, value in records:
            sent = await producer.send_and_wait(topic, value, key=key)
            offsets.append((sent.partition, sent.offset))
        return offsets
    finally:
        await producer.stop()


async def _read_topic(broker: str, topic: str, until: int, timeout: float) -> list[bytes]:
    """Read `topic` from the start until `until` records are in or `timeout` passes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(values) < until:
            fetched = await consumer.getmany(timeout_ms=500)
            values += [record.value for records in fetched.values() for record in records]
        return values
    finally:
        await consumer.stop()


def _decision(event_id: str, segment: int) -> Decision:
    """A decision built the way the API builds it (uniform draw, seeded by the event id)."""
    request = RankRequest.model_validate(
        {"event_id": event_id, "context": {"user": {"segment": f"s{segment}"}}, "actions": ACTIONS}
    )
    context, actions = request.policy_inputs()
    choice = decide_ranking(make_policy("uniform").pmf(context, actions), event_id)
    return Decision.from_choice(choice, request=request, policy="default", model_version="0")


@pytest.mark.parametrize("stack", [2], indirect=True)
def test_killing_workers_loses_and_repeats_nothing(stack: LocalStack, redis_url: str) -> None:
    """kill -9 of a worker, again and again under load, as `up` runs them: answered vs
    logged vs learned. Every answered decision with learning consent is learned once and
    logged once, in one worker's files; none without it is learned or logged.

    And no reward is taken for late because a worker died: every reward the API accepted
    before its decision's reward wait was over is joined, whoever owned its partition.
    """
    wait = 1.0
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=wait))
    n, batch = 2000, 50
    stop = threading.Event()
    kills: list[str] = []
    in_time: set[str] = set()  # rewarded, and the API had the reward before the deadline
    after_deadline: set[str] = set()
    consenting: set[str] = set()  # anonymous: learning consent is the app's (granted)
    refusing: set[str] = set()  # naming a person with no consent record: denied

    def killer() -> None:
        while not stop.wait(KILL_EVERY_SECONDS):
            victim = stack.processes[f"worker-{1 + len(kills) % 2}"]
            victim.kill()  # SIGKILL: no shutdown, no commit, no leave-group
            victim.stop()
            victim.start()
            kills.append(victim.name)

    async def send() -> list[str]:
        rng = random.Random(7)
        async with AsyncClient(stack.api_url, api_key=stack.app_key) as client:

            async def one(i: int) -> str:
                segment = rng.randrange(2)
                context = {"user": {"segment": f"s{segment}"}}
                if i % 10 == 0:  # a person who never consented: served, not kept
                    result = await client.rank(context, ACTIONS, user_id=f"person-{i}")
                    refusing.add(result.event_id)
                    return result.event_id
                # The API decides after this, so the deadline is no earlier than this + wait.
                deadline = time.time() + wait
                result = await client.rank(context, ACTIONS)
                consenting.add(result.event_id)
                if result.action_id == best_action(segment):
                    await client.reward(result.event_id, 1.0)  # answered once the broker has it
                    on_time = time.time() < deadline
                    (in_time if on_time else after_deadline).add(result.event_id)
                return result.event_id

            ids: list[str] = []
            started = asyncio.get_running_loop().time()
            for i in range(n // batch):
                ids += await asyncio.gather(*(one(i * batch + j) for j in range(batch)))
                due = started + (i + 1) * SEND_SECONDS * batch / n
                await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
            return ids

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        event_ids = asyncio.run(send())
        wait_for(lambda: len(kills) >= MIN_KILLS, 10 * KILL_EVERY_SECONDS, "enough kills")
    finally:
        stop.set()
        thread.join()
    assert len(set(event_ids)) == n == len(consenting) + len(refusing)
    learnable = len(consenting)
    wait_for(lambda: read_counters(stack, redis_url).get("joined", 0) >= learnable, 150, "the join")
    wait_for(lambda: n_learned(stack, redis_url) >= learnable, 90, "the learner")
    wait_for(lambda: set(logged_event_ids(stack)) >= consenting, 60, "the log")
    time.sleep(2)  # anything learned, joined or logged twice would show by now
    counters = read_counters(stack, redis_url)
    assert counters["joined"] == learnable
    # A decision without learning consent is counted (again when redelivered), not kept.
    assert counters["decisions"] - counters["not_learned"] == learnable
    assert counters["not_learned"] >= len(refusing)
    assert n_learned(stack, redis_url) == learnable  # learned once each
    # "Late" means late: a reward that reached the broker before its deadline is joined,
    # although the worker owning its partition may have been killed before it read it,
    # and a reward read twice (redelivered after a kill) is a duplicate, never late.
    assert in_time, "no reward was sent in time: the test proves nothing"
    late = counters.get("rewards_late", 0)
    rewarded = {line["EventId"] for line in _logged_lines(stack) if line["_sb"]["reward_count"]}
    missed = sorted(in_time - rewarded)
    assert not missed, f"{len(missed)} of {len(in_time)} rewards sent in time came too late"
    assert late == len(after_deadline - rewarded), (
        f"{late} rewards counted late; of {len(after_deadline)} sent after their deadline, "
        f"{len(after_deadline - rewarded)} were not joined ({len(in_time)} sent in time)"
    )
    assert counters["rewards"] == len(rewarded) == len(in_time) + len(after_deadline) - late
    # Logged exactly once, across every worker's files: a kill between claiming a batch,
    # writing it and confirming it neither loses a line nor writes one twice.
    logged = Counter(logged_event_ids(stack))
    assert set(logged) == consenting
    twice = sorted(event_id for event_id, times in logged.items() if times > 1)
    assert not twice, f"{len(twice)} decisions logged more than once after {len(kills)} kills"
    # Each worker keeps Faust's folder in its own, inside this stack's work folder.
    for name in ("worker-1", "worker-2"):
        assert (stack.workdir / "worker-data" / name / "faust").is_dir()
    for log in stack.workdir.glob("worker-*.log"):
        assert "is overlapping" not in log.read_text(errors="replace")


def test_duplicated_decisions_and_rewards_change_nothing_twice(
    stack: LocalStack, redis_url: str, broker: str
) -> None:
    """Decisions and rewards produced twice, pending and after the join, count once.

    A copy read after the join is a duplicate too, not a late reward; a new reward for a
    joined decision is late.
    """
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings(
            "default",
            PolicySettings(spec="vw-epsilon", reward_wait_seconds=5.0, reward_aggregation="sum"),
        )
    topics = topic_names(stack.settings)
    decisions = [_decision(uuid.uuid4().hex, i % 2) for i in range(40)]
    rewards = [
        RewardReported(event_id=d.event_id, reward=1.0 + i, reward_id=uuid.uuid4().hex)
        for i, d in enumerate(decisions[::2])
    ]
    n, n_rewards = len(decisions), len(rewards)
    records = [
        (topics.decisions, d.event_id.encode(), d.model_dump_json().encode()) for d in decisions
    ]
    records += [
        (topics.rewards, r.event_id.encode(), r.model_dump_json().encode()) for r in rewards
    ]
    copies = [record for record in records for _ in range(2)]  # each one twice in a row
    asyncio.run(_produce(broker, copies))
    wait_for(lambda: read_counters(stack, redis_url).get("joined", 0) >= n, 90, "the join")
    wait_for(lambda: n_learned(stack, redis_url) >= n, 60, "the learner")
    wait_for(lambda: len(logged_event_ids(stack)) >= n, 30, "the log")

    late = [
        RewardReported(event_id=r.event_id, reward=100.0, reward_id=uuid.uuid4().hex)
        for r in rewards
    ]
    late_records = [
        (topics.rewards, r.event_id.encode(), r.model_dump_json().encode()) for r in late
    ]
    asyncio.run(_produce(broker, records + late_records))  # once more, after the join
    wait_for(
        lambda: (
            read_counters(stack, redis_url).get("rewards_late", 0) >= n_rewards
            and read_counters(stack, redis_url).get("rewards_duplicate", 0) >= 2 * n_rewards
            and read_counters(stack, redis_url).get("decisions_duplicate", 0) >= 2 * n
        ),
        60,
        "the second copies",
    )
    time.sleep(2)  # anything joined, learned or logged twice would show by now
    counters = read_counters(stack, redis_url)
    assert counters["decisions"] == counters["joined"] == n
    assert counters["decisions_duplicate"] == 2 * n
    assert counters["rewards"] == n_rewards
    assert counters["rewards_duplicate"] == 2 * n_rewards  # the second copies, then the third
    assert counters["rewards_late"] == n_rewards  # only the new rewards
    assert counters["default_rewards"] == n - n_rewards
    assert counters.get("learn_duplicates", 0) == 0  # the join produced each example once
    assert n_learned(stack, redis_url) == n
    lines = _logged_lines(stack)
    assert sorted(line["EventId"] for line in lines) == sorted(d.event_id for d in decisions)
    reward_of = {r.event_id: r.reward for r in rewards}
    for line in lines:
        reward = reward_of.get(line["EventId"])
        assert line["_label_cost"] == -(reward if reward is not None else 0.0)
        assert line["_sb"]["reward_count"] == (0 if reward is None else 1)


def test_bad_records_become_dead_letters_and_good_ones_flow(
    stack: LocalStack, redis_url: str, broker: str
) -> None:
    """Bad records on every input topic are dead-lettered with the reason; good ones go on."""
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=3.0))
    topics = topic_names(stack.settings)
    oversized = b'{"pad": "' + b"x" * DEAD_LETTER_MAX_BYTES + b'"}'
    # decisions is the service's own topic: its structure is checked, not the API's rules
    unranked = _decision(uuid.uuid4().hex, 0).model_dump(mode="json")
    unranked["actions"] = [{"id": f"a{i}"} for i in range(stack.settings.limits.max_actions + 1)]
    bad = [
        (topics.decisions, b"d1", b"{not json", "[json_invalid]"),
        (topics.decisions, b"d2", b'{"event_id": "d2"}', "policy: Field required [missing]"),
        (topics.decisions, b"d3", json.dumps(unranked).encode(), "ranking: must hold each"),
        (topics.decisions, b"d4", oversized, "[record_too_large]"),
        (
            topics.rewards,
            b"r1",
            b'{"event_id": "r1", "type": "reward", "reward": "x"}',
            "[float_type]",
        ),
        (topics.rewards, b"r2", b"\xff\xfe\x00", "[json_invalid]"),
        (topics.rewards, b"r3", oversized, "[record_too_large]"),
        (topics.events, b"s1", b"[]", "[model_type]"),
        (topics.events, b"s2", b'{"kind": "teleport"}', "kind:"),
        (topics.events, b"s3", oversized, "[record_too_large]"),
    ]
    offsets = asyncio.run(_produce(broker, [(topic, key, value) for topic, key, value, _ in bad]))
    with Client(stack.api_url, api_key=stack.app_key) as client:
        for _ in range(5):
            client.reward(client.rank({"user": {"segment": "s1"}}, ACTIONS).event_id, 1.0)
        client.event(
            kind="view",
            user_id="pseudonym-1",
            session_id="session-after-bad-records",
            device={"type": "mobile", "os": "iOS 17.4"},
        )
    wait_for(lambda: read_counters(stack, redis_url).get("joined", 0) >= 5, 90, "the join")
    wait_for(lambda: n_learned(stack, redis_url) >= 5, 60, "the learner")

    values = asyncio.run(_read_topic(broker, topics.dead_letters, len(bad), 60))
    letters = [DeadLetter.model_validate_json(value) for value in values]
    by_source = {(d.source_topic, d.partition, d.offset): d for d in letters}
    for (topic, key, _, rule), (partition, offset) in zip(bad, offsets, strict=True):
        letter = by_source.get((topic, partition, offset))
        assert letter is not None, f"no dead letter for {topic} {partition}/{offset}"
        assert rule in letter.reason, (topic, key, letter.reason)
        assert letter.key == key.decode()
    assert read_counters(stack, redis_url, "_streams")["dead_letters"] >= len(bad)
    assert read_counters(stack, redis_url)["rewards"] == 5
    wait_for(
        lambda: "session-after-bad-records" in _session_ids(stack, redis_url),
        30,
        "the context agent",
    )


def _session_ids(stack: LocalStack, redis_url: str) -> set[str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        prefix = f"{stack.prefix}:features:session:"  # type: ignore[attr-defined]
        return {key.decode()[len(prefix) :] for key in client.scan_iter(match=prefix + "*")}
    finally:
        client.close()
