"""The decision log's claims: each decision in exactly one worker's files, kills included.

A kill is played by stopping a worker's work between two steps (claimed, written,
confirmed) and starting a new writer on the same directory, as a restarted worker does;
everything runs against the session's real Redis.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bandit.service.logging import configure_logging
from bandit.service.state import StateStore
from streams.agents import log_batch
from streams.ledger import DecisionLog
from streams.sink import DecisionLogWriter, LogEntry


def _entries(n: int, *, policy: str = "default", start: int = 0) -> list[LogEntry]:
    return [
        LogEntry(
            policy, f"evt-{i}", True, json.dumps({"EventId": f"evt-{i}", "n": i}).encode() + b"\n"
        )
        for i in range(start, start + n)
    ]


def _logged(root: Path) -> Counter[str]:
    return Counter(
        json.loads(line)["EventId"]
        for path in sorted(root.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    )


def _run(redis_url: str, body: Callable[[StateStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = Redis.from_url(redis_url)
        try:
            return await body(StateStore(client, prefix=f"lg{uuid.uuid4().hex[:8]}"))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_directory_keeps_its_writer_id(tmp_path: Path) -> None:
    """A new writer on the same directory has the same id; another directory another."""
    with DecisionLogWriter(tmp_path / "a", 1 << 20) as first:
        first_id = first.writer_id
    with DecisionLogWriter(tmp_path / "a", 1 << 20) as again:
        assert again.writer_id == first_id
    with DecisionLogWriter(tmp_path / "b", 1 << 20) as other:
        assert other.writer_id != first_id
    assert len(first_id) >= 16


def test_claims_are_taken_once_and_kept_for_a_retry(redis_url: str) -> None:
    """Only one writer gets an id; the same writer asking again (a lost reply) gets it again."""

    async def body(store: StateStore) -> None:
        pairs = [(f"e{i}", b"line\n") for i in range(3)]
        assert await store.claim_log("w1", "p", pairs[:2]) == [True, True]
        assert await store.claim_log("w1", "p", pairs) == [True, True, True]
        assert await store.claim_log("w2", "p", pairs) == [False, False, False]
        assert await store.logged("p", ["e0", "e2", "e9"]) == [True, True, False]
        assert await store.claim_log("w2", "q", pairs[:1]) == [True]  # per policy
        assert [c[:2] for c in await store.log_claims("w1")] == [
            ("p", "e0"),
            ("p", "e1"),
            ("p", "e2"),
        ]
        await store.confirm_log("w1", [("p", "e0"), ("p", "e1")])
        assert await store.log_claims("w1") == [("p", "e2", b"line\n")]
        assert await store.claim_log("w1", "p", pairs[:1]) == [False]  # confirmed: logged

    _run(redis_url, body)


@pytest.mark.parametrize("killed_after", ["claimed", "written"])
def test_a_worker_killed_mid_batch_leaves_each_line_once(
    tmp_path: Path, redis_url: str, killed_after: str
) -> None:
    """Killed after claiming (nothing written) or after writing (nothing confirmed).

    The batch is redelivered to a second worker, which writes none of the claimed
    lines; the first worker's restart writes what was claimed and not written, and only
    that. Every line ends up in the files once.
    """
    batch = _entries(6)

    async def body(store: StateStore) -> tuple[int, int, int]:
        first = DecisionLogWriter(tmp_path / "worker-1", 1 << 20)
        pairs = [(e.event_id, e.line) for e in batch[:4]]
        assert await store.claim_log(first.writer_id, "default", pairs) == [True] * 4
        if killed_after == "written":
            first.write(batch[:4])
        first.close()  # the kill: no confirmation
        with DecisionLogWriter(tmp_path / "worker-2", 1 << 20) as second:
            by_second = await log_batch(store, second, batch)  # the redelivery
        with DecisionLogWriter(tmp_path / "worker-1", 1 << 20) as restarted:
            recovered = await DecisionLog(store, restarted).recover()
            left = len(await store.log_claims(restarted.writer_id))
        return by_second, recovered, left

    by_second, recovered, left = _run(redis_url, body)
    assert by_second == 2  # the two the first worker never claimed
    assert recovered == (4 if killed_after == "claimed" else 0)
    assert left == 0
    assert _logged(tmp_path) == Counter(e.event_id for e in batch)


def test_a_failed_write_is_written_by_the_next_batch(tmp_path: Path, redis_url: str) -> None:
    """Lines claimed by a batch whose write failed are not lost: the next batch writes them."""
    directory = tmp_path / "worker-1"

    async def body(store: StateStore) -> int:
        with DecisionLogWriter(directory, 1 << 20) as writer:
            log = DecisionLog(store, writer)
            broken = writer.write

            def fail(entries: Any) -> int:
                raise OSError(28, "No space left on device")

            writer.write = fail  # type: ignore[method-assign]
            with pytest.raises(OSError, match="No space left"):
                await log.write(_entries(3))
            writer.write = broken  # type: ignore[method-assign]
            return await log.write(_entries(2, start=3))

    assert _run(redis_url, body) == 2
    assert _logged(tmp_path) == Counter(f"evt-{i}" for i in range(5))


def test_redis_away_writes_the_batch_rather_than_lose_it(tmp_path: Path) -> None:
    """With Redis unreachable the batch is written whole (claims impossible), never dropped."""
    configure_logging("json")  # the console renderer's tracebacks take seconds each

    async def body() -> int:
        client = Redis.from_url(
            "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        try:
            with DecisionLogWriter(tmp_path, 1 << 20) as writer:
                return await DecisionLog(StateStore(client, "x"), writer).write(_entries(3))
        finally:
            await client.aclose()

    assert asyncio.run(body()) == 3
    assert _logged(tmp_path) == Counter(f"evt-{i}" for i in range(3))
