"""Training records decoded once: what pydantic decides, written in VW's formats, anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from pydantic import TypeAdapter
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.settings import Limits, Settings
from bandit.wire.schemas import DeadLetter, TrainingExample
from policies import Policy
from policies.vw import dsjson_line
from streams.agents import register_agents
from streams.app import create_app
from streams.deadletter import RawRecord, decode_record
from streams.sink import training_record
from streams.training import TrainingDecoder, TrainingRecord, _Helper, decode_training
from tests.bandit.test_fastpath import _break, _example

LIMITS = Limits()
ADAPTER = TypeAdapter(TrainingExample)


def _records(n: int, *, broken: bool = True) -> list[RawRecord]:
    """`n` records: valid examples, with every kind of broken or unusual one among them."""
    records = []
    for i in range(n):
        data = _example(i)
        if broken and i % 3 == 1:
            data = _break(data, i % 21)
        if broken and i % 10 == 4:
            data["decision"]["learn"] = False
        records.append(RawRecord("sb.training", 0, i, b"default", json.dumps(data).encode()))
    if broken:
        records[2] = RawRecord("sb.training", 0, 2, b"default", b"not json")
        records[3] = RawRecord("sb.training", 0, 3, b"default", None)
    return records


def _same(found: TrainingRecord | DeadLetter, expected: TrainingRecord | DeadLetter) -> None:
    if isinstance(expected, DeadLetter):
        assert isinstance(found, DeadLetter)
        assert found.reason == expected.reason
        return
    assert isinstance(found, TrainingRecord)
    keys = ("partition", "offset", "policy", "event_id", "learnable", "written")
    assert [getattr(found, k) for k in keys] == [getattr(expected, k) for k in keys]
    assert found.learn_inputs() == expected.learn_inputs()
    assert found.log_entry() == expected.log_entry()


def test_decode_training_decides_as_pydantic_does() -> None:
    """Every record: pydantic's dead letter, or pydantic's values, written as VW does."""
    for record in _records(60):
        found = decode_training(record, limits=LIMITS)
        expected = decode_record(ADAPTER, record, limits=LIMITS)
        if isinstance(expected, DeadLetter):
            assert isinstance(found, DeadLetter)
            assert found.reason == expected.reason
            continue
        assert isinstance(found, TrainingRecord)
        assert (found.policy, found.event_id) == (expected.decision.policy, expected.event_id)
        assert found.learnable == expected.decision.learn
        context, actions, chosen, reward, probability = found.learn_inputs()
        decision = expected.decision
        assert context == decision.context
        assert [(a.id, dict(a.features)) for a in actions] == [
            (a.id, a.features) for a in decision.actions
        ]
        assert (chosen, reward, probability) == (
            decision.chosen_index,
            expected.reward,
            decision.probability,
        )
        if found.learnable:
            assert found.written is not None  # nothing unusual here: the one-pass writer
            assert found.log_entry().line == dsjson_line(training_record(expected))
        else:
            assert found.written is None
            assert found.log_entry().line == b""


def test_a_record_kept_as_json_reads_back_its_values() -> None:
    """A record decoded in a helper keeps only its JSON; its values are read when needed."""
    raw = orjson.dumps(_example(5))
    decoded = decode_training(RawRecord("t", 0, 5, b"k", raw), limits=LIMITS)
    assert isinstance(decoded, TrainingRecord)
    kept = TrainingRecord(0, 5, decoded.policy, decoded.event_id, True, value=raw)
    assert kept.learn_inputs() == decoded.learn_inputs()
    assert kept.log_entry().line == decoded.log_entry().line


def test_helpers_decode_exactly_what_this_process_decodes() -> None:
    """A large batch split with a helper process: the same records, in the same order."""
    records = _records(300)
    expected = [decode_training(record, limits=LIMITS) for record in records]

    async def main() -> None:
        decoder = TrainingDecoder(LIMITS, processes=1, threshold=10)
        try:
            await decoder.wait_ready()
            for _ in range(3):  # the helper's share moves between batches
                found = await decoder.decode(records)
                assert len(found) == len(expected)
                for got, want in zip(found, expected, strict=True):
                    _same(got, want)
                assert 0.25 <= decoder.share <= 0.95
            assert len(decoder.helper_pids()) == 1
        finally:
            pids = decoder.helper_pids()
            await decoder.close()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    asyncio.run(main())


def test_helpers_started_ahead_serve_the_first_large_batch() -> None:
    """start() runs the helpers before any batch; until one says it is ready, large
    batches are decoded here rather than waiting for its imports; then it takes them."""
    records = _records(50)
    expected = [decode_training(record, limits=LIMITS) for record in records]

    async def main() -> None:
        decoder = TrainingDecoder(LIMITS, processes=1, threshold=10)
        try:
            decoder.start()
            (pid,) = decoder.helper_pids()
            decoder.start()  # already running: no second one
            assert decoder.helper_pids() == [pid]
            calls: list[int] = []
            sent = _Helper.start

            def counted(self: Any, request: Any) -> asyncio.Future[bytes]:
                calls.append(len(request[2]))
                return sent(self, request)

            _Helper.start = counted  # type: ignore[method-assign]
            try:
                assert len(await decoder.decode(records)) == 50  # not ready yet: here
                assert calls == []
                await decoder.wait_ready()
                found = await decoder.decode(records)
                assert [n > 0 for n in calls] == [True]  # the helper took its share
            finally:
                _Helper.start = sent  # type: ignore[method-assign]
            for got, want in zip(found, expected, strict=True):
                _same(got, want)
            assert decoder.helper_pids() == [pid]
        finally:
            await decoder.close()
        assert TrainingDecoder(LIMITS, processes=0).helper_pids() == []

    asyncio.run(main())


def test_small_batches_are_decoded_here() -> None:
    """Live traffic (batches under the threshold) never waits for a helper to start."""

    async def main() -> None:
        decoder = TrainingDecoder(LIMITS, processes=1, threshold=50)
        found = await decoder.decode(_records(20, broken=False))
        assert len(found) == 20
        assert decoder.helper_pids() == []
        await decoder.close()

    asyncio.run(main())


def test_a_helper_that_dies_is_replaced_and_its_batch_decoded_here() -> None:
    """Killing a helper costs nothing but time: the batch is decoded here, a new one starts."""
    records = _records(120)
    expected = [decode_training(record, limits=LIMITS) for record in records]

    async def main() -> None:
        decoder = TrainingDecoder(LIMITS, processes=1, threshold=10)
        try:
            await decoder.wait_ready()
            await decoder.decode(records)
            (pid,) = decoder.helper_pids()
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.1)
            found = await decoder.decode(records)  # the dead helper fails; decoded here
            for got, want in zip(found, expected, strict=True):
                _same(got, want)
            await decoder.wait_ready()
            again = await decoder.decode(records)  # a new helper
            for got, want in zip(again, expected, strict=True):
                _same(got, want)
            (new_pid,) = decoder.helper_pids()
            assert new_pid != pid
        finally:
            await decoder.close()

    asyncio.run(main())


def test_a_helper_that_fails_mid_batch_costs_nothing_but_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An answer that never comes whole: the helper's part is decoded here, same records."""
    records = _records(150)
    expected = [decode_training(record, limits=LIMITS) for record in records]

    def broken(self: Any, request: Any) -> asyncio.Future[bytes]:
        failed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        failed.set_exception(EOFError("the decoding helper stopped before answering"))
        return failed

    async def main() -> None:
        decoder = TrainingDecoder(LIMITS, processes=1, threshold=10)
        try:
            await decoder.wait_ready()
            with monkeypatch.context() as patch:
                patch.setattr(_Helper, "start", broken)
                found = await decoder.decode(records)
            for got, want in zip(found, expected, strict=True):
                _same(got, want)
            assert decoder.helper_pids() == []
        finally:
            await decoder.close()

    asyncio.run(main())


def test_no_helpers_decodes_everything_here() -> None:
    """With ``processes=0`` nothing is started."""

    records = _records(30)

    async def main() -> list[Any]:
        decoder = TrainingDecoder(LIMITS, processes=0, threshold=1)
        found = await decoder.decode(records)
        assert decoder.helper_pids() == []
        await decoder.close()
        return found

    found = asyncio.run(main())
    for got, record in zip(found, records, strict=True):
        _same(got, decode_training(record, limits=LIMITS))


def test_the_training_consumer_learns_and_logs_each_example_once(
    broker: str, redis_url: str, tmp_path: Path
) -> None:
    """A backlog (large batches, a helper decoding) with a duplicate, a broken record and
    one no policy can learn: each example learned once, logged once; the broken one and
    the unlearnable one dead-lettered, with their reasons."""
    prefix = f"tr{uuid.uuid4().hex[:10]}"
    settings = Settings.model_validate(
        {
            "kafka": {"broker": broker, "topic_prefix": prefix},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "policies": {"default": "vw-squarecb"},
            "learner": {"snapshot_every_examples": 400, "snapshot_every_seconds": 0.5},
            "decision_log": {"directory": str(tmp_path / "log")},
        }
    )
    values = [json.dumps(_example(i)).encode() for i in range(600)]
    nobody = _example(600)
    nobody["decision"]["policy"] = "nobody"  # not in settings.policies
    sent = [*values[:300], values[7], b'{"event_id": "broken"}', json.dumps(nobody).encode()]
    sent += values[300:]

    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix)
        services = register_agents(create_app(settings, agents=False))
        topic = services.app.bandit_topics.training.get_topic_name()
        producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
        await producer.start()
        try:
            batch = [await producer.send(topic, value, key=b"default") for value in sent]
            await asyncio.gather(*batch)
        finally:
            await producer.stop()
        await services.app.producer.start()  # for the dead letter
        running = asyncio.create_task(services.consumers["learner"].run())
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                saved = await store.load_model("default")
                if saved is not None and Policy.restore(saved.snapshot).n_learned >= 600:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a duplicate learned late would show by now
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await services.app.producer.stop()
            await services.app.close_state_store()
        saved = await store.load_model("default")
        assert saved is not None
        assert Policy.restore(saved.snapshot).n_learned == 600
        counters = await store.counters("default")
        assert (counters["learned"], counters["learn_duplicates"]) == (600, 1)
        assert (await store.counters("_streams"))["dead_letters"] == 2
        await client.aclose()

    asyncio.run(main())
    lines = [
        orjson.loads(line)
        for path in sorted((tmp_path / "log").glob("*.dsjson"))
        for line in path.read_bytes().splitlines()
    ]
    # The log keeps every joined decision, the one no policy could learn included.
    assert sorted(line["EventId"] for line in lines) == sorted(f"evt-{i}" for i in range(601))


def test_the_helpers_share_moves_toward_equal_work_on_both_sides() -> None:
    """A worker busy learning hands the helper more; a slow helper gets less; in bounds."""
    decoder = TrainingDecoder(LIMITS, processes=1)
    first = decoder.share
    decoder._balance(10.0, 0.02, 0.08, 800, 200)  # the first split: nothing to compare
    assert decoder.share == first
    # Since: 0.1 s of CPU learning here, 0.1 ms a record either side: give it more.
    decoder._balance(10.12, 0.02, 0.08, 800, 200)
    assert decoder.share > first
    more = decoder.share
    # The helper now takes 1 ms a record, the worker's own share 0.1 ms: give it less.
    decoder._balance(10.2, 0.02, 0.8, 800, 200)
    assert decoder.share < more
    for _ in range(20):
        decoder._balance(10.2, 0.02, 80.0, 800, 200)
    assert decoder.share == pytest.approx(0.25, abs=1e-3)
