"""The Faust app: its configuration, and a worker run against the real broker and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.settings import Settings
from bandit.wire.schemas import (
    BehaviourEvent,
    DeadLetter,
    Decision,
    PolicySettings,
    RankRequest,
    RewardReported,
)
from policies import Policy, decide_ranking, make_policy
from streams.app import _ConsumerThread, create_app, topic_names

DEADLINE_SECONDS = 60.0
N_DECISIONS = 300


def _settings(
    broker: str = "127.0.0.1:9", redis_url: str = "redis://127.0.0.1:9/0", **kafka: Any
) -> Settings:
    return Settings.model_validate(
        {"kafka": {"broker": broker, **kafka}, "redis": {"url": redis_url}}
    )


def _build(settings: Settings, *, agents: bool = True) -> Any:
    """Build an app inside a running loop, so Faust does not create (and leak) one."""

    async def build() -> Any:
        return create_app(settings, agents=agents)

    return asyncio.run(build())


def test_app_is_configured_for_the_local_broker() -> None:
    """Raw JSON bytes, at-least-once, no web server, short session timeout, our topics."""
    settings = _settings(partitions=3, session_timeout_seconds=4.0, heartbeat_seconds=0.5)
    app = _build(settings)
    conf = app.conf
    assert [str(url) for url in conf.broker] == ["kafka://127.0.0.1:9"]
    assert (conf.value_serializer, conf.key_serializer) == ("raw", "raw")
    assert conf.processing_guarantee.value == "at_least_once"
    assert not conf.web_enabled
    assert conf.topic_partitions == 3
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval) == (4.0, 0.5)
    assert conf.consumer_auto_offset_reset == "earliest"
    assert not app.tables
    assert set(app.agents) == {"context", "join-decisions", "join-rewards"}
    # The training topic is read in batches, outside Faust's per-record path.
    # the release-due loop, the training consumer, the decision log's recovery and its
    # timer (deletions asked for, retention), the learning beat (bandit/service/learning.py)
    assert len(app._app_tasks) == 5
    names = topic_names(settings)
    assert app.bandit_topics.training.get_topic_name() == names.training == "streambandit.training"


def test_apps_are_independent() -> None:
    """Two apps built from different settings share nothing (no app at import time)."""
    one = _build(_settings(topic_prefix="one"), agents=False)
    two = _build(_settings(topic_prefix="two"), agents=False)
    assert one.conf.id != two.conf.id
    assert one.bandit_topics.events.get_topic_name() == "one.events"


def test_faust_keeps_its_files_in_the_worker_data_folder(tmp_path: Path) -> None:
    """Faust's data folder is the settings' worker folder, so two stacks never share one."""
    folders = [tmp_path / "stack-1" / "worker-data", tmp_path / "stack-2" / "worker-data"]
    apps = [
        _build(_settings(topic_prefix="same").model_copy(update={"worker_data": folder}))
        for folder in folders
    ]
    assert [Path(app.conf.datadir) for app in apps] == [folder / "faust" for folder in folders]
    assert Settings().worker_data == Path("streambandit-data") / "worker"


def test_the_consumer_fetch_wait_comes_from_the_settings(broker: str) -> None:
    """Faust's hard-coded 1500 ms fetch wait is replaced by kafka.fetch_max_wait_ms."""

    async def main() -> None:
        app = create_app(_settings(broker, fetch_max_wait_ms=25), agents=False)
        thread = app.consumer._thread
        assert isinstance(thread, _ConsumerThread)
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.start()
        try:
            assert consumer._fetcher._fetch_max_wait_ms == 25
        finally:
            await consumer.stop()
            thread.thread_loop.close()  # made by the consumer thread, which never ran

    asyncio.run(main())


# -- a worker against the real broker and Redis ---------------------------------------------


def _decision(i: int) -> Decision:
    request = RankRequest.model_validate(
        {
            "event_id": f"evt-{i}",
            "context": {"user": {"x": float(i % 3)}},
            "actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
        }
    )
    context, actions = request.policy_inputs()
    choice = decide_ranking(make_policy("uniform").pmf(context, actions), request.event_id)
    return Decision.from_choice(choice, request=request, policy="default", model_version="0")


def _behaviour(session: str, kind: str) -> BehaviourEvent:
    return BehaviourEvent.model_validate(
        {
            "kind": kind,
            "user_id": "pseudonym-1",
            "session_id": session,
            "item_id": "item-7",
            "device": {"type": "tablet", "os": "Android 15"},
        }
    )


class Worker:
    """A stream worker subprocess, stopped when the test ends."""

    def __init__(self, broker: str, redis_url: str, prefix: str, folder: Path) -> None:
        env = {
            **os.environ,
            "STREAMBANDIT_KAFKA__BROKER": broker,
            "STREAMBANDIT_KAFKA__TOPIC_PREFIX": prefix,
            "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
            "STREAMBANDIT_KAFKA__HEARTBEAT_SECONDS": "0.5",
            "STREAMBANDIT_REDIS__URL": redis_url,
            "STREAMBANDIT_REDIS__KEY_PREFIX": prefix,
            "STREAMBANDIT_POLICIES": json.dumps({"default": "vw-squarecb"}),
            "STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_EXAMPLES": "100",
            "STREAMBANDIT_LOG_FORMAT": "auto",  # as `up` runs it: JSON, not being a terminal
            "STREAMBANDIT_DECISION_LOG__DIRECTORY": str(folder / "decisions"),
            "STREAMBANDIT_WORKER_DATA": str(folder / "worker-data"),
        }
        self.data = folder / "worker-data"
        self.log_directory = folder / "decisions"
        self.log = log = folder / "worker.log"
        self._log_file = log.open("wb")
        code = "from bandit.settings import Settings; from streams.app import run_worker; "
        code += "run_worker(Settings())"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


@pytest.fixture
def prefix() -> str:
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker(broker: str, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Worker]:
    async def configure() -> None:
        client = Redis.from_url(redis_url)
        try:
            settings = PolicySettings(spec="vw-squarecb", reward_wait_seconds=3.0)
            await StateStore(client, prefix).set_policy_settings("default", settings)
        finally:
            await client.aclose()

    asyncio.run(configure())
    running = Worker(broker, redis_url, prefix, tmp_path)
    try:
        yield running
    finally:
        running.stop()


async def _until(what: str, check: Any, worker: Worker) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        found = await check()
        if found:
            return found
        if worker.process.poll() is not None or time.monotonic() > deadline:
            log = worker.log.read_text(errors="replace")[-4000:]
            pytest.fail(f"{what}: not seen within {DEADLINE_SECONDS:.0f} s; worker log:\n{log}")
        await asyncio.sleep(0.1)


def test_worker_learns_each_decision_once_and_dead_letters_bad_records(
    broker: str,
    redis_url: str,
    prefix: str,
    worker: Worker,
    record_property: Callable[[str, object], None],
) -> None:
    """Decisions and rewards (some twice) are learned exactly once; bad records are
    dead-lettered with the reason while the worker goes on; events become features."""
    names = topic_names(_settings(topic_prefix=prefix))

    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix)
        producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
        await producer.start()
        try:
            first = _behaviour("s-first", "view")
            await producer.send_and_wait(
                names.events, first.model_dump_json().encode(), key=b"s-first"
            )

            async def first_seen() -> bool:
                return bool(await store.features("session", "s-first"))

            await _until("the first behaviour event", first_seen, worker)
            record_property("first_event_seconds", round(time.monotonic() - worker.started, 2))

            decisions = [_decision(i) for i in range(N_DECISIONS)]
            sends = []
            for decision in decisions:
                value, key = decision.model_dump_json().encode(), decision.event_id.encode()
                sends.append(await producer.send(names.decisions, value, key=key))
            await producer.send_and_wait(names.decisions, b'{"event_id": "broken', key=b"k-1")
            for decision in decisions[:20]:  # redelivered decisions change nothing
                value, key = decision.model_dump_json().encode(), decision.event_id.encode()
                sends.append(await producer.send(names.decisions, value, key=key))
            for i, decision in enumerate(decisions):
                reward = RewardReported(
                    event_id=decision.event_id,
                    reward=1.0 if decision.chosen_action_id == "a" else 0.0,
                    reward_id=f"r-{i}",
                )
                value, key = reward.model_dump_json().encode(), decision.event_id.encode()
                copies = 2 if i % 10 == 0 else 1  # some rewards twice
                sends += [await producer.send(names.rewards, value, key=key) for _ in range(copies)]
            bad_reward = b'{"event_id": "evt-1", "type": "reward", "reward": "lots"}'
            sends.append(await producer.send(names.rewards, bad_reward, key=b"evt-1"))
            second = _behaviour("s-first", "click")
            await producer.send_and_wait(
                names.events, second.model_dump_json().encode(), key=b"s-first"
            )
            await asyncio.gather(*sends)

            async def all_learned() -> Any:
                saved = await store.load_model("default")
                if saved is None:
                    return None
                policy = Policy.restore(saved.snapshot)
                return policy if policy.n_learned >= N_DECISIONS else None

            policy = await _until("every decision learned", all_learned, worker)
            record_property("all_learned_seconds", round(time.monotonic() - worker.started, 2))
            await asyncio.sleep(1.5)  # time for anything learned twice to show
            saved = await store.load_model("default")
            assert saved is not None
            assert Policy.restore(saved.snapshot).n_learned == N_DECISIONS == policy.n_learned
            counters = await store.counters("default")
            assert counters["learned"] == counters["joined"] == N_DECISIONS
            assert counters["decisions"] == N_DECISIONS
            assert counters["decisions_duplicate"] == 20
            assert counters["rewards_duplicate"] == N_DECISIONS // 10
            assert "rewards_late" not in counters
            assert "default_rewards" not in counters
            ids = [d.event_id for d in decisions]
            assert all(await store.learned("default", ids))

            async def all_logged() -> bool:
                lines = [
                    line
                    for path in worker.log_directory.glob("*.dsjson")
                    for line in path.read_text().splitlines()
                ]
                return len(lines) >= N_DECISIONS and len(lines)

            logged = await _until("every decision in the decision log", all_logged, worker)
            assert logged == N_DECISIONS

            letters = await _read_dead_letters(broker, names.dead_letters, expected=2)
            reasons = {letter.source_topic: letter.reason for letter in letters}
            assert "json_invalid" in reasons[names.decisions]
            assert reasons[names.rewards].startswith(
                "reward.reward: Input should be a valid number"
            )
            assert "lots" not in reasons[names.rewards]  # the input is not echoed
            assert (await store.counters("_streams"))["dead_letters"] == 2

            async def clicked() -> bool:
                return (await store.features("session", "s-first")).get("clicks") == 1

            await _until("the second behaviour event", clicked, worker)
            features = await store.features("session", "s-first")
            assert (features["events"], features["views"], features["last_kind"]) == (
                2,
                1,
                "click",
            )
            assert await store.features("device", "s-first") == {
                "type": "tablet",
                "os": "Android 15",
            }
            assert worker.process.poll() is None  # still running
            assert (worker.data / "faust" / "v1").is_dir()  # Faust's folder, in the worker's
        finally:
            await producer.stop()
            await client.aclose()

    asyncio.run(main())
    worker.stop()  # a clean stop logs too
    lines = worker.log.read_text().splitlines()
    assert lines
    assert not [line for line in lines if "\x1b" in line], "terminal escape codes"
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert "overlapping" not in record["event"], record


async def _read_dead_letters(broker: str, topic: str, *, expected: int) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(letters) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                letters.extend(DeadLetter.model_validate_json(m.value) for m in messages)
    finally:
        await consumer.stop()
    assert len(letters) == expected, letters
    return letters
