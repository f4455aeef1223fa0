"""Batch consumers: a topic read in batches by a plain aiokafka consumer, in the worker.

Faust hands records to agents one at a time: each goes through the consumer's flow
control, the conductor, a channel and the stream's processors before a ``take`` buffer
sees it, about 110 µs of CPU per record and per agent on the project's 2-core machines,
whatever the agent does with it. That caps a Faust agent near 5,000 records/s, below
what the learner must reach (half of raw Vowpal Wabbit's text learning rate, 7,000 or
more). The ``training`` topic is therefore read by :class:`BatchConsumer`: an
``AIOKafkaConsumer`` running as a task of the worker's Faust app, on its event loop,
that fetches records in batches (about 12 µs a record) and hands each batch to a
coroutine.

Each consumer has a consumer group of its own (``<app id>-<name>``). A consumer may
*prepare* each batch (the worker's training consumer reads it:
:func:`streams.training.decode_training`) as soon as the batch is fetched: it then
fetches and prepares up to ``ahead`` batches while the current one is handled, so the
fetching and the handler's waits on Redis overlap; batches are still handled, and
committed, one at a time and in order. The guarantees are the agents' ones:

- at least once: a batch's offsets are committed only after its handler returned (for
  the learner: after the snapshot covering it is in Redis); a handler that raises
  stops the consumer without committing, and the worker with it;
- partition changes: ``on_assigned`` is called with the partitions assigned after
  every rebalance (the learner forgets its policies and reloads them from Redis); a
  commit refused because the group rebalanced meanwhile is logged and skipped, the
  records go to the new owner, which skips what the saved snapshots cover (so do
  batches fetched ahead of a rebalance: they are handled, and only the partitions still
  assigned are committed);
- the fetch wait is ``settings.kafka.fetch_max_wait_ms`` and the group timeouts those of
  ``settings.kafka``, as for the Faust consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import CommitFailedError, KafkaError  # type: ignore[import-untyped]

from streams.deadletter import RawRecord

__all__ = ["BatchConsumer"]

_log = structlog.get_logger("streams.batch")

Handler = Callable[[Any], Awaitable[Any]]

_PARTITION_FETCH_BYTES = 8 * 1024 * 1024  # most bytes one fetch takes from a partition


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, name: str, on_assigned: Callable[[], None] | None) -> None:
        self.name = name
        self.on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        _log.info("partitions.revoked", consumer=self.name, partitions=_partitions(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        _log.info("partitions.assigned", consumer=self.name, partitions=_partitions(assigned))
        if self.on_assigned is not None:
            self.on_assigned()


def _partitions(tps: Any) -> list[int]:
    return sorted(tp.partition for tp in tps)


@dataclass
class BatchConsumer:
    """Consume `topic` in batches of at most `max_records`, one every `within` seconds.

    A batch is handed to `handle` as soon as `max_records` records are in, or once
    `within` seconds have passed since the previous one, whichever comes first (a
    record after a quiet spell goes at once).

    Parameters
    ----------
    app
        The worker's :class:`~streams.app.StreamBanditApp` (broker, settings, group id).
    topic
        The app's Faust topic to read (declared with its partitions before reading).
    name
        Names the consumer group (``<app id>-<name>``) and the log lines.
    handle
        Coroutine function taking the batch's :class:`~streams.deadletter.RawRecord` s
        (or, with `prepare`, what `prepare` made of them).
    max_records, within
        Batch size and time limits.
    on_assigned
        Called after every rebalance, once partitions are assigned.
    on_stop
        Called when the consumer stops (a coroutine function may be given).
    prepare
        Coroutine function started on each batch's records as soon as they are
        fetched; `handle` gets its result.
    ahead
        Most batches fetched (and being prepared) while one is handled.
    """

    app: Any
    topic: Any
    name: str
    handle: Handler
    max_records: int
    within: float
    on_assigned: Callable[[], None] | None = None
    on_stop: Callable[[], Any] | None = None
    prepare: Callable[[list[RawRecord]], Awaitable[Any]] | None = None
    ahead: int = 1
    _handed_off: float = field(default=-math.inf, init=False, repr=False)
    _running: AIOKafkaConsumer | None = field(default=None, init=False, repr=False)

    @property
    def assigned(self) -> bool:
        """Whether the consumer runs and has partitions assigned."""
        return self._running is not None and bool(self._running.assignment())

    @property
    def group_id(self) -> str:
        """The consumer group: ``<app id>-<name>``."""
        return f"{self.app.conf.id}-{self.name}"

    def _consumer(self) -> AIOKafkaConsumer:
        kafka = self.app.settings.kafka
        session_ms = int(kafka.session_timeout_seconds * 1000)
        return AIOKafkaConsumer(
            bootstrap_servers=kafka.broker,
            group_id=self.group_id,
            client_id=f"{self.group_id}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            max_poll_records=self.max_records,
            # A whole batch from one partition (a policy's) in one fetch, not 1 MiB ones.
            max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=int(kafka.heartbeat_seconds * 1000),
            rebalance_timeout_ms=max(2 * session_ms, 10_000),
            max_poll_interval_ms=max(2 * session_ms, 300_000),
        )

    async def _declare(self, name: str) -> None:
        """Create the topic with the app's partitions, as Faust declares an agent's topic."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

        kafka = self.app.settings.kafka
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.broker)
        try:
            await admin.start()
            await admin.create_topics([NewTopic(name, kafka.partitions, 1)])
        except (KafkaError, OSError) as exc:  # already there, most likely
            _log.debug("topic.not_created", topic=name, reason=str(exc))
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()

    async def run(self) -> None:
        """Consume until cancelled (the worker stopping)."""
        name = self.topic.get_topic_name()
        await self._declare(name)
        consumer = self._consumer()
        consumer.subscribe([name], listener=_Listener(self.name, self.on_assigned))
        await consumer.start()
        self._running = consumer
        _log.info("consumer.started", consumer=self.name, topic=name, group=self.group_id)
        fetched: asyncio.Queue[tuple[list[Any], asyncio.Future[Any]]] = asyncio.Queue(
            max(self.ahead, 1)
        )
        fetching = asyncio.create_task(self._fetch(consumer, fetched))
        try:
            while True:
                batch, prepared = await _next(fetched, fetching)
                await self.handle(await prepared)
                await self._commit(consumer, batch)
        finally:
            self._running = None
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetching
            while not fetched.empty():
                fetched.get_nowait()[1].cancel()
            with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
                await consumer.stop()
            if self.on_stop is not None:
                stopped = self.on_stop()
                if asyncio.iscoroutine(stopped):
                    await stopped
            _log.info("consumer.stopped", consumer=self.name)

    async def _fetch(
        self,
        consumer: AIOKafkaConsumer,
        fetched: asyncio.Queue[tuple[list[Any], asyncio.Future[Any]]],
    ) -> None:
        """Take batches and start preparing them, up to `ahead` before they are handled."""
        while True:
            batch = await self._take(consumer)
            if not batch:
                continue
            records = [_raw(record) for record in batch]
            prepared: asyncio.Future[Any]
            if self.prepare is None:
                prepared = asyncio.get_running_loop().create_future()
                prepared.set_result(records)
            else:
                prepared = asyncio.ensure_future(self.prepare(records))
            await fetched.put((batch, prepared))

    async def _take(self, consumer: AIOKafkaConsumer) -> list[Any]:
        """Up to `max_records` records, handed off at most once every `within` seconds.

        A record arriving after a quiet spell is handed off at once (with whatever came
        with it); under steady traffic batches fill for up to `within` seconds.
        """
        loop = asyncio.get_running_loop()
        batch: list[Any] = []
        fetched = await consumer.getmany(timeout_ms=1000, max_records=self.max_records)
        for records in fetched.values():
            batch.extend(records)
        deadline = max(loop.time(), self._handed_off + self.within)
        while batch and len(batch) < self.max_records:
            left = deadline - loop.time()
            if left <= 0:
                break
            fetched = await consumer.getmany(
                timeout_ms=max(int(left * 1000), 1), max_records=self.max_records - len(batch)
            )
            for records in fetched.values():
                batch.extend(records)
        if batch:
            self._handed_off = loop.time()
        return batch

    async def _commit(self, consumer: AIOKafkaConsumer, batch: list[Any]) -> None:
        from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

        offsets: dict[Any, int] = {}
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, -1), record.offset + 1)
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group rebalanced meanwhile: the new owner gets these records again and
            # skips what the saved snapshots cover.
            reason = f"{type(exc).__name__}: {exc}"
            _log.warning("commit.skipped", consumer=self.name, reason=reason)


async def _next(
    fetched: asyncio.Queue[tuple[list[Any], asyncio.Future[Any]]], fetching: asyncio.Task[None]
) -> tuple[list[Any], asyncio.Future[Any]]:
    """Return the next batch fetched; raise what stopped the fetching task, if it stopped."""
    if not fetched.empty():
        return fetched.get_nowait()
    getting = asyncio.ensure_future(fetched.get())
    try:
        await asyncio.wait({getting, fetching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getting.done():
            getting.cancel()
    if getting.done() and not getting.cancelled():
        return getting.result()
    fetching.result()  # raises what stopped it
    msg = "the batch consumer's fetching task ended"
    raise RuntimeError(msg)


def _raw(record: Any) -> RawRecord:
    return RawRecord(
        topic=str(record.topic),
        partition=int(record.partition),
        offset=int(record.offset),
        key=record.key,
        value=record.value,
    )
