"""Deleting the decision log and its retention, by the writer that owns the files.

Real files written by the real sink (:class:`streams.sink.DecisionLogWriter`), and, for
the deletion asked through Redis, the real ledger (:class:`streams.ledger.DecisionLog`)
on the real Redis: a deletion asked for while batches are being written takes every line
written before it and none written after it; one asked while the worker is stopped is
applied when it starts, before it writes, and lines it had claimed do not come back.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.wire.schemas import TrainingExample
from policies import make_policy
from streams.deadletter import DEAD_LETTER_COUNTERS
from streams.ledger import DecisionLog
from streams.sink import DecisionLogWriter, LogEntry
from tests.streams.test_sink import START, _joined

T = TypeVar("T")


def _examples(seed: int, n: int, at: datetime) -> list[TrainingExample]:
    """`n` joined decisions (ids ``evt-<seed>-<i>``) made from `at` on, a second apart."""
    made = _joined(make_policy("uniform"), n, seed=seed)
    return [
        example.model_copy(
            update={
                "decision": example.decision.model_copy(
                    update={"occurred_at": at + timedelta(seconds=index)}
                )
            }
        )
        for index, example in enumerate(made)
    ]


def _ids(directory: Path) -> list[str]:
    """Every ``EventId`` in the decision log files under `directory`."""
    return [
        json.loads(line)["EventId"]
        for path in sorted(directory.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
    ]


def _on_redis(redis_url: str, body: Callable[[StateStore], Awaitable[T]]) -> T:
    async def run() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await body(StateStore(client, prefix=f"ld{uuid.uuid4().hex[:8]}"))
        finally:
            await client.aclose()

    return asyncio.run(run())


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_deleting_takes_every_file_the_open_one_too_and_the_next_line_starts_anew(
    tmp_path: Path,
) -> None:
    """Deleted files stay deleted; what is written after goes to a new file."""
    before = _examples(1, 30, START)
    with DecisionLogWriter(tmp_path, 2048) as writer:
        writer.write(before)
        files = writer.files()
        assert len(files) > 1
        assert writer.current == files[-1]  # one file still open
        size = sum(path.stat().st_size for path in files)
        deleted = writer.delete_all(1234.5)
        assert (deleted.files, deleted.bytes) == (len(files), size)
        assert writer.files() == []
        assert writer.current is None
        assert writer.deleted_at == 1234.5
        assert writer.write(before[:3]) == 0  # a copy of a deleted line is still skipped
        after = _examples(2, 3, START)
        assert writer.write(after) == 3
    assert _ids(tmp_path) == [e.event_id for e in after]
    assert DecisionLogWriter(tmp_path, 2048).deleted_at == 1234.5  # kept across restarts


def test_retention_deletes_only_closed_files_whose_last_decision_is_older(
    tmp_path: Path,
) -> None:
    """Old closed files go; a newer one and the open one stay; the open one rolls over."""
    clock = _Clock(START + timedelta(days=10))
    old, recent, open_old = (
        _examples(1, 5, START),
        _examples(2, 5, START + timedelta(days=9)),
        _examples(3, 5, START + timedelta(days=1)),
    )
    with DecisionLogWriter(tmp_path, 1 << 20, clock=clock) as writer:
        writer.write(old)
        writer.close()
        writer.write(recent)
        writer.close()
        writer.write(open_old)  # still open: never deleted while written to
        first, second, third = writer.files()
        size = first.stat().st_size
        gone = writer.expire(timedelta(days=7))
        assert (gone.files, gone.bytes) == (1, size)
        assert writer.files() == [second, third]
        clock.now += timedelta(minutes=59)
        assert writer.expire(timedelta(days=7)).files == 0
        assert writer.current == third
        clock.now += timedelta(minutes=1)  # open an hour: closed, then old enough to go
        assert writer.expire(timedelta(days=7)).files == 1
        assert writer.current is None
        assert writer.files() == [second]
        assert writer.expire(timedelta(days=1, hours=1)).files == 0  # 10 days: last at 9
        clock.now += timedelta(days=1)
        assert writer.expire(timedelta(days=1, hours=1)).files == 1
    assert _ids(tmp_path) == []


def test_retention_reads_a_file_without_dates_by_its_time(tmp_path: Path) -> None:
    """A closed file whose last line has no Timestamp expires by its modification time."""
    clock = _Clock(START)
    with DecisionLogWriter(tmp_path, 1 << 20, clock=clock) as writer:
        writer.write([LogEntry("main", "e-1", learn=True, line=b'{"EventId":"e-1"}\n')])
        writer.close()
        [path] = writer.files()
        clock.now = datetime.fromtimestamp(path.stat().st_mtime, UTC) + timedelta(days=2)
        assert writer.expire(timedelta(days=3)).files == 0
        clock.now += timedelta(days=1, seconds=1)
        assert writer.expire(timedelta(days=3)).files == 1


def test_a_deletion_asked_while_batches_are_written_loses_no_line_written_after_it(
    tmp_path: Path, redis_url: str
) -> None:
    """Every batch written before the request is gone; every one after the answer stays."""
    batches = [_examples(seed, 8, START) for seed in range(400)]

    async def body(store: StateStore) -> None:
        writer = DecisionLogWriter(tmp_path, 4096)
        log = DecisionLog(store, writer)
        done: list[tuple[float, float, set[str]]] = []  # (started, ended, ids) per batch
        stop = asyncio.Event()

        async def write() -> None:
            for batch in batches:
                if stop.is_set():
                    return
                started = time.monotonic()
                assert await log.write(batch) == len(batch)
                done.append((started, time.monotonic(), {e.event_id for e in batch}))
                await asyncio.sleep(0.002)

        async def tend() -> None:
            while not stop.is_set():
                await log.tend()
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(write()), asyncio.create_task(tend())]
        while len(done) < 20:
            await asyncio.sleep(0.01)
        asked = time.monotonic()
        requested = await store.request_log_deletion()
        while (await store.log_writers())[writer.writer_id].deleted_at < requested:
            await asyncio.sleep(0.005)
        confirmed = time.monotonic()
        written_then = len(done)
        while len(done) < written_then + 20:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*tasks)
        writer.close()

        kept = set(_ids(tmp_path))
        assert kept, "nothing was written after the deletion"
        assert len(kept) == len(_ids(tmp_path))  # no line twice
        for started, ended, ids in done:
            assert ids <= kept or not ids & kept  # a batch is never cut in two
            if ended <= asked:
                assert not ids & kept  # written before it was asked for: deleted
            if started >= confirmed:
                assert ids <= kept  # written after it was confirmed: kept
        [told] = (await store.log_writers()).values()
        assert told.files > 0
        counters = await store.counters(DEAD_LETTER_COUNTERS)
        assert counters["log_files_deleted.request"] == told.files
        assert counters["log_bytes_deleted.request"] == told.bytes

    _on_redis(redis_url, body)


def test_a_stopped_writer_deletes_when_it_starts_and_its_claims_do_not_come_back(
    tmp_path: Path, redis_url: str
) -> None:
    """Asked while its worker is stopped, after a kill between writing and confirming."""
    first, claimed, later = (_examples(seed, 4, START) for seed in (1, 2, 3))

    async def body(store: StateStore) -> None:
        writer = DecisionLogWriter(tmp_path, 1 << 20)
        assert await DecisionLog(store, writer).write(first) == 4
        # Killed between writing a batch and confirming its claims:
        entries = [LogEntry.of(example) for example in claimed]
        pairs = [(entry.event_id, entry.line) for entry in entries]
        assert await store.claim_log(writer.writer_id, "main", pairs) == [True] * 4
        writer.write(entries)
        writer.close()
        requested = await store.request_log_deletion()  # while no worker runs there

        restarted = DecisionLogWriter(tmp_path, 1 << 20)
        log = DecisionLog(store, restarted)
        await log.tend()  # its timer first: the claims settled, then every file deleted
        assert _ids(tmp_path) == []
        assert restarted.deleted_at == requested
        assert await store.log_claims(writer.writer_id) == []
        restarted.close()  # killed again: the ids of the deleted lines are forgotten

        again = DecisionLogWriter(tmp_path, 1 << 20)
        log = DecisionLog(store, again)
        assert await log.recover() == 0  # nothing claimed comes back, nothing deleted twice
        assert await log.write(later) == 4
        again.close()
        assert await DecisionLog(store, DecisionLogWriter(tmp_path, 1 << 20)).recover() == 0
        assert _ids(tmp_path) == [e.event_id for e in later]

    _on_redis(redis_url, body)


def test_retention_is_applied_by_the_timer_and_counted(tmp_path: Path, redis_url: str) -> None:
    """:meth:`DecisionLog.tend` with a retention deletes old files and counts them."""
    clock = _Clock(START + timedelta(days=40))

    async def body(store: StateStore) -> None:
        writer = DecisionLogWriter(tmp_path, 1 << 20, clock=clock)
        log = DecisionLog(store, writer, retention=timedelta(days=30))
        await log.write(_examples(1, 4, START))
        writer.close()
        await log.write(_examples(2, 4, START + timedelta(days=39)))
        writer.close()
        size = writer.files()[0].stat().st_size
        await log.tend()
        assert _ids(tmp_path) == [f"evt-2-{i}" for i in range(4)]
        counters = await store.counters(DEAD_LETTER_COUNTERS)
        assert counters["log_files_deleted.retention"] == 1
        assert counters["log_bytes_deleted.retention"] == size
        assert writer.writer_id in await store.log_writers()  # it beat

    _on_redis(redis_url, body)
