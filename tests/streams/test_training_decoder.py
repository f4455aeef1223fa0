"""Large training batches are decoded in helper processes, to what the worker decodes.

Real helper processes (spawned, as the worker starts them), real records as the join
writes them: learnable examples, one without learning consent, one the one-pass writer
leaves alone, and records that are dead letters.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator

import orjson
import pytest

from bandit.wire.schemas import DeadLetter
from streams.deadletter import RawRecord
from streams.training import Decoded, TrainingDecoder, TrainingRecord, decode_training
from tests.streams.test_training import _data


def _batch(n: int) -> list[RawRecord]:
    """`n` training records: mostly learnable, and one of each other kind every 50."""
    records = []
    for i in range(n):
        data = _data(i)
        if i % 50 == 1:  # no learning consent: read for whose it is only
            data["decision"].update(learn=False, actions="(none kept)", context=None)
        elif i % 50 == 2:  # a name needing escapes: the general path
            data["decision"]["context"]["user"]["odd name"] = 2.0
        value = orjson.dumps(data)
        if i % 50 == 3:
            value = b"{}"  # a dead letter naming the missing fields
        elif i % 50 == 4:
            value = b"not json"
        records.append(RawRecord("sb.training", i % 3, i, b"p", value))
    return records


def _same(found: Decoded, expected: Decoded) -> None:
    """What the learner and the log read of both is the same."""
    assert type(found) is type(expected)
    if isinstance(expected, DeadLetter):  # (each has the time it was made)
        assert found.model_dump(exclude={"occurred_at"}) == expected.model_dump(
            exclude={"occurred_at"}
        )
        return
    assert isinstance(found, TrainingRecord)
    fields = ("partition", "offset", "policy", "event_id", "learnable", "written")
    assert [getattr(found, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert found.values == expected.values
    assert found.log_entry() == expected.log_entry()
    if expected.learnable:
        assert found.learn_inputs() == expected.learn_inputs()


@pytest.fixture
def decoder() -> Iterator[TrainingDecoder]:
    made = TrainingDecoder(2, shared_from=40)
    yield made
    made.close()


async def _until_shared(decoder: TrainingDecoder, records: list[RawRecord]) -> list[Decoded]:
    """Decode `records` until the helpers have started and decoded them."""
    deadline = time.monotonic() + 60
    while True:
        before = decoder.shared
        decoded = await decoder.decode(records)
        if decoder.shared > before:
            return decoded
        assert time.monotonic() < deadline, "the helpers did not start within 60 s"
        await asyncio.sleep(0.05)


def test_a_large_batch_is_decoded_in_the_helpers_to_what_the_worker_decodes(
    decoder: TrainingDecoder,
) -> None:
    records = _batch(120)
    expected = [decode_training(record) for record in records]

    async def body() -> tuple[list[Decoded], list[Decoded]]:
        first = await decoder.decode(records)  # the helpers start: decoded here meanwhile
        assert decoder.shared == 0
        return first, await _until_shared(decoder, records)

    first, shared = asyncio.run(body())
    assert decoder.shared == len(records)
    for found in (first, shared):
        assert len(found) == len(expected)
        for one, other in zip(found, expected, strict=True):
            _same(one, other)
    kinds = {type(outcome).__name__ for outcome in shared}
    assert kinds == {"TrainingRecord", "DeadLetter"}
    # the learnable examples came back without their values: read again when asked
    compact = [r for r in shared if isinstance(r, TrainingRecord) and r.written is not None]
    assert compact
    assert all(r.read is None for r in compact)


def test_small_batches_and_no_helpers_stay_in_the_worker() -> None:
    records = _batch(30)
    expected = [decode_training(record) for record in records]
    before = set(multiprocessing.active_children())
    for decoder in (TrainingDecoder(2, shared_from=40), TrainingDecoder(0, shared_from=1)):
        try:
            found = asyncio.run(decoder.decode(records))
        finally:
            decoder.close()
        assert decoder.shared == 0
        for one, other in zip(found, expected, strict=True):
            _same(one, other)
    assert set(multiprocessing.active_children()) == before  # none was started


def test_a_helper_killed_means_the_batch_is_decoded_in_the_worker_and_helpers_restart(
    decoder: TrainingDecoder,
) -> None:
    records = _batch(60)
    expected = [decode_training(record) for record in records]

    async def body() -> None:
        await decoder.decode(records)
        await _until_shared(decoder, records)
        helpers = [p for p in multiprocessing.active_children() if p.pid is not None]
        assert len(helpers) >= 2
        for helper in helpers:
            assert helper.pid is not None
            os.kill(helper.pid, signal.SIGKILL)
        for helper in helpers:
            helper.join(10)
        shared = decoder.shared
        found = await decoder.decode(records)  # the pool is broken: decoded here
        assert decoder.shared == shared
        for one, other in zip(found, expected, strict=True):
            _same(one, other)
        again = await _until_shared(decoder, records)  # new helpers, same result
        for one, other in zip(again, expected, strict=True):
            _same(one, other)

    asyncio.run(body())


def test_the_decoder_refuses_a_negative_process_count() -> None:
    with pytest.raises(ValueError, match="`processes` must be >= 0"):
        TrainingDecoder(-1)
