"""Producing to Kafka, with a bounded in-memory buffer for when the broker is away.

The API produces every decision, reward, activation and behaviour event through one
:class:`BufferedProducer`: librdkafka (``confluent-kafka``), ``acks=all``, one request in
flight per connection (retried records keep their order), Kafka's murmur2 partitioner (a
key lands in the partition Java clients and aiokafka pick for it: a decision and its
rewards share a partition number whoever produced them). librdkafka batches and retries
in its own threads; the event loop pays a few microseconds per record. It is not an
idempotent producer (the embedded broker loses producer state when it restarts, which
such a producer takes as fatal): a retried record may arrive twice, and every consumer
deduplicates by event id and reward id.

What happens to a record
------------------------
1. **Broker reachable**: the record is queued in librdkafka, which sends it within
   ``linger_ms`` (batched with its neighbours). By default the caller answers at once
   (:data:`Delivery` ``"sent"``); with ``settings.kafka.await_acks`` it answers only once
   the broker acknowledged the record (waiting at most `send_timeout` seconds), which
   closes the few milliseconds in which a crash of the process could lose an answered
   decision, at a cost in CPU per request (see bench/service.py).
2. **Broker away** (no acknowledgement for `send_timeout` seconds, or librdkafka reports
   every broker down): the record stays queued (``"buffered"``) and the caller answers
   at once. librdkafka retries it, in order, for as long as the process runs
   (``message.timeout.ms=0``), reconnecting as the broker comes and goes.
3. **`capacity` records wait unacknowledged** (``settings.kafka.producer_buffer``):
   :meth:`BufferedProducer.send` raises :class:`ProducerUnavailableError` and the API
   answers 503 with that reason. A decision that cannot be logged is never served, and
   nothing accepted is dropped to make room. With `capacity` 0 there is no buffer: a
   record is refused while the broker is away.

The buffer lives in the process: records still queued when the process ends (after a
bounded final flush on :meth:`~BufferedProducer.stop`) are lost, and counted and logged
as such (``producer.records_lost``). Durability beyond the process is the broker's
job; the buffer only bridges broker outages while the API runs. A record refused
before it is queued (e.g. too large) is raised to the caller; one the broker rejects
for good later is dropped with an error log (``producer.record_dropped``) and counted,
so one bad record cannot block the rest.

The resend window
-----------------
A broker that loses its log when it restarts (the embedded one keeps records in memory)
also loses what it had acknowledged and nobody had read yet. With `resend_seconds` > 0
the producer keeps a copy of each record sent with ``resend=True``, as the bytes already
built (topic, key, value and the time it was sent), for `resend_seconds` and within
`resend_bytes` (the oldest go first; while the broker is away nothing leaves by age,
so the copies from before an outage wait for its end). :meth:`BufferedProducer.resend`
produces every copy again, with its first timestamp, once told the broker lost its log
(:func:`bandit.service.recovery.watch_restarts`); consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bandit.errors import ProducerUnavailableError
from bandit.settings import Settings

__all__ = ["BufferedProducer", "Delivery", "ProducerUnavailableError", "TopicName", "topic"]

Delivery = Literal["sent", "buffered"]
"""How :meth:`BufferedProducer.send` took a record: acknowledged, or buffered."""

TopicName = Literal["events", "decisions", "rewards", "training", "dead-letters"]
"""The topics of docs/live-loop.md, without their prefix."""

_log = structlog.get_logger("bandit.service.producer")
_STATS_MS = 250
"""How often librdkafka reports its statistics (unacknowledged sends judge the broker by them)."""
_POLL_SECONDS = 0.05
"""How long the delivery thread waits in librdkafka for delivery reports at a time."""
_RECORD_OVERHEAD = 100
"""About what a copy in the resend window costs besides its key and value (tuple, float)."""
_BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE})


def topic(settings: Settings, name: TopicName) -> str:
    """Return the full name of a topic: ``<kafka.topic_prefix>.<name>``.

    Examples
    --------
    >>> topic(Settings(), "decisions")
    'streambandit.decisions'
    """
    return settings.kafka.topic(name)


class _LibrdkafkaLog:
    """Where librdkafka's own log lines go: structlog, at debug level.

    Outages are reported once, by :class:`BufferedProducer`, not by every reconnection
    attempt librdkafka logs.
    """

    def log(self, level: int, message: str, *args: object) -> None:
        _log.debug("producer.librdkafka_logged", level=level, message=message % args)


class BufferedProducer:
    """A librdkafka producer for the event loop that keeps records while the broker is away.

    Parameters
    ----------
    bootstrap_servers
        ``host:port`` of the broker(s).
    capacity
        How many records may wait unacknowledged before :meth:`send` refuses; 0
        disables the buffer (a record is refused while the broker is away).
    acknowledged
        Whether :meth:`send` waits (at most `send_timeout`) for the broker's
        acknowledgement before returning; otherwise it returns once the record is
        queued.
    send_timeout
        Seconds to wait for an acknowledgement (`acknowledged`), or the age of the
        oldest unacknowledged record beyond which the broker counts as away.
    connect_timeout
        Seconds :meth:`start` and :meth:`ping` wait for the broker's metadata.
    linger_ms, acks
        Producer settings: how long librdkafka may hold a record to batch it with
        others, and who must acknowledge it (all in-sync replicas by default).
    retry_seconds
        Smallest and largest wait between two reconnection attempts.
    on_drop
        Called with the number of records dropped (rejected for good by the broker, or
        lost on stop), e.g. to count them in metrics; from the delivery thread.
    client_id
        How the broker names this client.
    resend_seconds, resend_bytes
        The resend window: how long, and within how many bytes (values, keys and about
        100 bytes of bookkeeping each), copies of the records sent with ``resend=True``
        are kept for :meth:`resend`; 0 seconds keeps none
        (``settings.kafka.resend_window_seconds`` and ``resend_window_mb``).

    Notes
    -----
    Delivery reports come from a daemon thread, the only one that polls librdkafka.
    When `acknowledged`, every record reports, and each round's reports are handed to
    the event loop in one callback, where the waiting records' futures resolve.
    Otherwise the reports only count records (the event loop pays one C call per
    record), and whether the broker answers is judged from librdkafka's statistics
    every 250 ms (a connection up, records going out). :attr:`buffered` counts records
    produced and not yet reported.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        capacity: int,
        acknowledged: bool = True,
        send_timeout: float = 0.25,
        connect_timeout: float = 2.0,
        linger_ms: int = 1,
        acks: Literal[0, 1, "all"] = "all",
        retry_seconds: tuple[float, float] = (0.05, 1.0),
        on_drop: Callable[[int], None] | None = None,
        client_id: str = "streambandit-api",
        resend_seconds: float = 0.0,
        resend_bytes: int = 0,
    ) -> None:
        if capacity < 0:
            msg = f"`capacity` must be >= 0, got {capacity!r}"
            raise ValueError(msg)
        if not (resend_seconds >= 0 and resend_bytes >= 0):  # also rejects NaN
            msg = (
                "`resend_seconds` and `resend_bytes` must be >= 0, got "
                f"{resend_seconds!r} and {resend_bytes!r}"
            )
            raise ValueError(msg)
        self.bootstrap_servers = bootstrap_servers
        self.capacity = capacity
        self.acknowledged = acknowledged
        self.send_timeout = send_timeout
        self.connect_timeout = connect_timeout
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "acks": acks,
            # Not idempotent: the embedded broker loses producer state when it restarts,
            # which an idempotent producer takes as fatal. One request in flight per
            # connection keeps retried records in order; consumers deduplicate.
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "partitioner": "murmur2_random",  # Kafka's (Java's, aiokafka's) for keyed records
            "linger.ms": linger_ms,
            "message.timeout.ms": 0,  # retry until delivered or the process stops
            # librdkafka's own bound, above ours: `send` refuses first, with our message;
            # room for a resend of the whole window (`resend`) besides
            "queue.buffering.max.messages": capacity + 1_000 + resend_bytes // _RECORD_OVERHEAD,
            "reconnect.backoff.ms": max(int(retry_seconds[0] * 1000), 1),
            "reconnect.backoff.max.ms": max(int(retry_seconds[1] * 1000), 1),
            "socket.connection.setup.timeout.ms": max(int(connect_timeout * 1000), 1000),
            "logger": _LibrdkafkaLog(),
            "error_cb": self._on_error,
        }
        if not acknowledged:
            # Whether the broker answers comes from librdkafka's statistics; reports
            # only count records (librdkafka's own count includes protocol requests).
            self._config |= {
                "on_delivery": self._count,
                "statistics.interval.ms": _STATS_MS,
                "stats_cb": self._on_stats,
            }
        self._on_drop = on_drop
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._transmitted = -1  # records sent so far, by the last statistics
        self._queued = 0  # records produced (written by the event loop only)
        self._settled = 0  # records reported (written by the delivery thread only)
        self._reports: list[tuple[asyncio.Future[None], KafkaError | None]] = []
        self.available = False
        """Whether the broker answers: its last report was a delivery, none is overdue."""
        self.dropped = 0
        """Records dropped: rejected for good by the broker, or lost on stop."""
        self.resend_seconds = resend_seconds if resend_bytes else 0.0
        self.resend_bytes = resend_bytes
        self._window: deque[tuple[float, str, bytes, bytes]] = deque()
        self._window_bytes = 0
        self.resent = 0
        """Records produced again by :meth:`resend`."""

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the producer, start its delivery thread, and look for the broker.

        An unreachable broker is not an error: records are buffered until it answers.
        """
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._stopping.clear()
        self._poller = threading.Thread(
            target=self._poll_forever, name="producer-deliveries", daemon=True
        )
        self._poller.start()
        self.available = await self.ping(self.connect_timeout)
        if not self.available:
            _log.warning("producer.broker_unavailable", reason="no answer at start")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most `flush_timeout` seconds), then stop."""
        producer = self._producer
        if producer is None:
            return
        if not await self.flush(flush_timeout):
            lost = self.buffered
            producer.purge()  # their reports (purged) are not counted as settled
            self._drop(lost)
            _log.error("producer.records_lost", records=lost, reason="queued at shutdown")
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
            self._poller = None
        self._producer = None

    # -- sending -------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """How many records wait for the broker's acknowledgement."""
        producer = self._producer
        return 0 if producer is None else self._queued - self._settled

    @property
    def window(self) -> tuple[int, int]:
        """The resend window now: records kept, and their bytes (bookkeeping included)."""
        return len(self._window), self._window_bytes

    async def send(self, topic: str, key: bytes, value: bytes, *, resend: bool = True) -> Delivery:
        """Queue a record; with `acknowledged`, wait for the broker's acknowledgement.

        With `resend` (and a resend window), a copy is kept for :meth:`resend`.

        Returns
        -------
        Delivery
            ``"sent"`` when acknowledged (or, not `acknowledged`, queued while the
            broker answers), ``"buffered"`` when kept for the broker's return.

        Raises
        ------
        ProducerUnavailableError
            If the buffer is full, or the record cannot be produced at all.
        """
        producer = self._producer
        loop = self._loop
        if producer is None or loop is None:
            msg = "the producer is not started"
            raise ProducerUnavailableError(msg)
        if self._queued - self._settled >= self.capacity and not (
            self.capacity == 0 and self.available
        ):
            raise ProducerUnavailableError(self._full())
        future: asyncio.Future[None] | None = None
        try:
            if self.acknowledged:
                future = loop.create_future()
                producer.produce(topic, value, key, on_delivery=partial(self._report, future))
            else:
                producer.produce(topic, value, key)
        except BufferError as exc:  # librdkafka's own queue bound
            raise ProducerUnavailableError(self._full()) from exc
        except KafkaException as exc:  # refused before queueing (e.g. too large)
            msg = f"the broker cannot take this record: {exc.args[0].str()}"
            raise ProducerUnavailableError(msg) from exc
        self._queued += 1
        if resend and self.resend_seconds:
            self._keep(topic, key, value)
        if future is None:
            return "sent" if self.available else "buffered"
        try:
            async with asyncio.timeout(self.send_timeout):
                await asyncio.shield(future)
        except TimeoutError:
            if self.available:
                self._unavailable(f"no acknowledgement within {self.send_timeout} s")
            return "buffered"
        except KafkaException as exc:  # rejected for good (see `_count`)
            msg = f"the broker rejected the record: {exc.args[0].str()}"
            raise ProducerUnavailableError(msg) from exc
        return "sent"

    def resend(self) -> int:
        """Produce again every record of the resend window, oldest first; return how many.

        Call it once the broker has lost its log (and has its topics again). Each copy
        keeps the timestamp of its first sending. Copies older than `resend_seconds`
        are left out, unless the broker is away (they wait for it). Records the queue
        cannot take (the producer's own bound) are not produced again: logged
        (``producer.resend_incomplete``) and left out of the count.
        """
        producer = self._producer
        if producer is None:
            return 0
        self._trim(time.time())
        sent = 0
        on_delivery = self._count if self.acknowledged else None
        for stamp, topic, key, value in list(self._window):
            try:
                if on_delivery is None:
                    producer.produce(topic, value, key, timestamp=int(stamp * 1000))
                else:
                    producer.produce(
                        topic, value, key, timestamp=int(stamp * 1000), on_delivery=on_delivery
                    )
            except (BufferError, KafkaException) as exc:
                _log.error(
                    "producer.resend_incomplete",
                    resent=sent,
                    left_out=len(self._window) - sent,
                    reason=str(exc),
                )
                break
            self._queued += 1
            sent += 1
        self.resent += sent
        return sent

    def _keep(self, topic: str, key: bytes, value: bytes) -> None:
        """Keep a copy of a record for :meth:`resend` (the hot path: a few operations)."""
        now = time.time()
        window = self._window
        window.append((now, topic, key, value))
        self._window_bytes += len(value) + len(key) + _RECORD_OVERHEAD
        if self._window_bytes > self.resend_bytes or window[0][0] < now - self.resend_seconds:
            self._trim(now)

    def _trim(self, now: float) -> None:
        """Forget copies beyond `resend_bytes`, and, while the broker answers, too old."""
        window = self._window
        oldest = now - self.resend_seconds if self.available else -math.inf
        while window and (self._window_bytes > self.resend_bytes or window[0][0] < oldest):
            _, _, key, value = window.popleft()
            self._window_bytes -= len(value) + len(key) + _RECORD_OVERHEAD

    async def flush(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds for every queued record; return whether all left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered and loop.time() < deadline:
            await asyncio.sleep(min(_POLL_SECONDS / 5, max(deadline - loop.time(), 0.0)))
        return not self.buffered

    async def ping(self, timeout: float = 1.0) -> bool:
        """Ask the broker for metadata; return whether it answered within `timeout`."""
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.to_thread(producer.list_topics, None, timeout)
        except KafkaException:
            self.available = False
            return False
        return True

    # -- internals -----------------------------------------------------------------------

    def _full(self) -> str:
        if self.capacity:
            return (
                f"the broker at {self.bootstrap_servers} is unavailable and the producer "
                f"buffer is full ({self.capacity} records, settings.kafka.producer_buffer)"
            )
        return (
            f"the broker at {self.bootstrap_servers} is unavailable and the producer "
            "buffer is disabled (settings.kafka.producer_buffer = 0)"
        )

    def _unavailable(self, reason: str) -> None:
        _log.warning("producer.broker_unavailable", reason=reason)
        self.available = False

    def _count(self, error: KafkaError | None, message: Message) -> None:
        """Count one delivery report (the delivery thread, inside librdkafka's poll)."""
        if error is not None and error.code() == KafkaError._PURGE_QUEUE:
            return  # purged on stop: counted as lost there
        self._settled += 1
        if error is None:
            if self.acknowledged and not self.available:
                self.available = True
                _log.info("producer.broker_available", buffered=self.buffered)
            return
        self._drop(1)
        _log.error(
            "producer.record_dropped",
            topic=message.topic(),
            key=(message.key() or b"").decode(errors="replace"),
            reason=error.str(),
        )

    def _report(
        self, future: asyncio.Future[None], error: KafkaError | None, message: Message
    ) -> None:
        """Count one delivery report, and keep it for the future waiting on it."""
        self._count(error, message)
        self._reports.append((future, error))

    def _poll_forever(self) -> None:
        """Poll librdkafka (the delivery thread); hand each round's reports to the loop."""
        producer, loop = self._producer, self._loop
        assert producer is not None
        assert loop is not None
        while not self._stopping.is_set():
            producer.poll(_POLL_SECONDS)
            if self._reports:
                reports, self._reports = self._reports, []
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits
                    loop.call_soon_threadsafe(_settle, reports)

    def _on_stats(self, stats: str) -> None:
        """Judge the broker from librdkafka's statistics (delivery thread, unacknowledged).

        Available: a broker connection is up, and records went out since the last
        statistics, or none waits.
        """
        data = orjson.loads(stats)
        up = any(broker.get("state") == "UP" for broker in data.get("brokers", {}).values())
        transmitted, waiting = int(data.get("txmsgs", 0)), int(data.get("msg_cnt", 0))
        moving = transmitted != self._transmitted or not waiting
        self._transmitted = transmitted
        if up and moving and not self.available:
            self.available = True
            _log.info("producer.broker_available", buffered=waiting)
        elif self.available and not (up and moving):
            self._unavailable("no broker connection" if not up else "no record sent")

    def _on_error(self, error: KafkaError) -> None:
        """Note outages reported by librdkafka (its error callback, delivery thread)."""
        if error.code() in _BROKER_DOWN and self.available:
            self._unavailable(error.str())

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)


def _settle(reports: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
    """On the event loop: resolve the futures of delivered (or rejected) records."""
    for future, error in reports:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        elif error.code() != KafkaError._PURGE_QUEUE:
            future.set_exception(KafkaException(error))
