"""The agents and timers of the stream worker, registered on an app by :func:`register_agents`.

Agents are thin: they decode records through :class:`~streams.deadletter.DeadLetters`
(what fails goes to ``dead-letters`` with its reason), bind log context, and hand off
to plain code tested without Kafka. Records from outside the service (``events``,
``rewards``) are validated with their schemas; records of the service's own topics
(``decisions``, ``training``) are read for their schema version and structure only
(:mod:`streams.trusted`), and a decision's bytes go on to ``training`` as they came.

=================  ===============  ====================================================
agent / timer      consumes         hands off to
=================  ===============  ====================================================
``context``        ``events``       :class:`streams.context.ContextAggregator`
``join-decisions`` ``decisions``    ``streams.join.JoinStore.add_decision``
``join-rewards``   ``rewards``      :func:`join_rewards_record`: ``JoinStore.add_reward`` /
                                    ``add_activation`` / ``advance_watermark``
``release-due``    (when due)       :func:`release_tick`: :func:`release_due_once`
                                    (``JoinStore.claim_due`` -> ``training`` ->
                                    ``complete``), :func:`send_watermark_markers`
``learner``        ``training``     :func:`train_batch`: :class:`streams.learner.Learner`
                                    and the DSJSON decision log (:mod:`streams.sink`)
=================  ===============  ====================================================

The ``decision-log`` timer (every second) applies a request to delete the decision log
and, once a minute, its retention (:meth:`streams.ledger.DecisionLog.tend`).

``learner`` is not a Faust agent but a batch consumer
(:class:`streams.batch.BatchConsumer`, consumer group ``<app id>-learner``), run as a
task of the app: Faust's per-record cost would cap the learner well below its target.
It feeds both the learner and the decision log, so each training record is fetched and
decoded once (:mod:`streams.training`), and its offsets are committed once both have it.

The join releases a decision only once every ``rewards`` partition has been read past
its deadline (:mod:`streams.join`, "watermarks"), so a reward that reached the broker in
time is never taken for late while the worker that owns its partition is dead or the
group rebalances. Rewards and activations move their partition's watermark as they are
joined; a partition that gets none is moved on by *watermark markers*: records with an
empty value and a ``streambandit-watermark`` header holding the time they were sent, that
``release-due`` appends to the partitions holding back a due decision
(:meth:`~streams.join.JoinStore.lagging_partitions`), once the slack past its deadline
has passed (``release-due`` sleeps until then), one at a time per partition and worker
(again after 0.5 s if it was not read). ``join-rewards`` reads a marker as "this
partition is read up to that time".

Work that touches Redis is retried (with a growing pause, every failure logged) until it
succeeds, so a Redis outage stalls an agent instead of losing or double-applying records;
an agent never crashes on bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from pydantic import TypeAdapter

from bandit.service.learning import LearningMonitor
from bandit.service.state import StateStore
from bandit.settings import Settings
from bandit.wire.schemas import (
    Activation,
    BehaviourEvent,
    PolicySettings,
    RewardsRecord,
    TrainingExample,
)
from streams.batch import BatchConsumer
from streams.context import ContextAggregator
from streams.deadletter import DeadLetters, RawRecord
from streams.join import JoinStore
from streams.learner import BatchResult, Learner
from streams.ledger import DecisionLog
from streams.retrying import retry
from streams.sink import DecisionLogWriter, LogEntry
from streams.training import Decoded, TrainingDecoder, TrainingRecord, decode_training
from streams.trusted import TrustedDecision

if TYPE_CHECKING:
    from streams.app import StreamBanditApp  # the app registers these agents on itself

__all__ = [
    "AppServices",
    "PolicySettingsCache",
    "join_rewards_record",
    "log_batch",
    "register_agents",
    "release_due_loop",
    "release_due_once",
    "release_tick",
    "retry",
    "send_watermark_markers",
    "train_batch",
    "train_decoded",
]

T = TypeVar("T")

_RELEASE_INTERVAL_SECONDS = 0.2  # longest sleep of the release loop, and a tick's time
_CONTEXT_BATCH = 500  # most behaviour events the context agent folds in one Redis round
_CONTEXT_WITHIN_SECONDS = 0.01
_RELEASE_LIMIT = 500
_LEASE_SECONDS = 30.0
_MARKER_EVERY_SECONDS = 0.5  # a marker not read by then is sent again, per partition and worker
_MARKER_POLL_SECONDS = 0.02  # how often the timer looks whether its markers were read
_TRAINING_AHEAD = 3  # training batches fetched and being decoded while one is learned
_BEAT_SECONDS = 1.0  # how often a worker tells Redis it lives (bandit/service/learning.py)
_LOG_TEND_SECONDS = 1.0  # how often the decision log looks for a deletion asked for

_BEHAVIOUR: TypeAdapter[BehaviourEvent] = TypeAdapter(BehaviourEvent)
_REWARDS: TypeAdapter[RewardsRecord] = TypeAdapter(RewardsRecord)

# Not in __all__ (ruff's order of __all__ and the test's disagree on it), but public: the
# header of a watermark marker on `rewards`, whose value is the time the marker was sent
# (seconds since the epoch, ASCII). Such a record has an empty value and no key.
WATERMARK_HEADER = "streambandit-watermark"

_log = structlog.get_logger("streams.agents")


class PolicySettingsCache:
    """The live :class:`PolicySettings` of each policy, read from Redis at most once a second.

    A policy without stored settings gets the defaults, with its spec from
    ``settings.policies`` and ``settings.exploration_floor``.
    """

    def __init__(self, store: StateStore, settings: Settings, *, max_age: float = 1.0) -> None:
        self.store = store
        self.settings = settings
        self.max_age = max_age
        self._cache: dict[str, tuple[float, PolicySettings]] = {}

    async def get(self, policy: str) -> PolicySettings:
        """Return the settings of `policy`."""
        now = time.monotonic()
        cached = self._cache.get(policy)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        stored = await self.store.policy_settings(policy)
        if stored is not None:
            found = stored[0]
        else:
            spec = self.settings.policies.get(policy, policy)
            found = PolicySettings(spec=spec, exploration_floor=self.settings.exploration_floor)
        self._cache[policy] = (now, found)
        return found


@dataclass
class AppServices:
    """What the agents of one app share, created on the worker's event loop."""

    app: StreamBanditApp
    consumers: dict[str, BatchConsumer] = field(default_factory=dict)
    """The batch consumer of the ``training`` topic (``learner``: learner and decision log)."""
    _dead_letters: DeadLetters | None = field(default=None, init=False)
    _learner: Learner | None = field(default=None, init=False)
    _policy_settings: PolicySettingsCache | None = field(default=None, init=False)
    _join: JoinStore | None = field(default=None, init=False)
    _learning: LearningMonitor | None = field(default=None, init=False)
    markers_sent: dict[int, float] = field(default_factory=dict, init=False)
    """When this worker last sent a watermark marker to each ``rewards`` partition."""
    release_wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    """Set to wake the release loop before its planned time (a decision due sooner)."""
    release_at: float = field(default=-math.inf, init=False)
    """When the release loop plans to look again (seconds since the epoch); -inf while
    it is looking."""
    _unexpected_partitions: set[int] = field(default_factory=set, init=False)

    @property
    def store(self) -> StateStore:
        """The Redis state store."""
        return self.app.state_store()

    @property
    def dead_letters(self) -> DeadLetters:
        """The dead-letter helper every agent decodes with."""
        if self._dead_letters is None:
            topic = self.app.bandit_topics.dead_letters

            async def send(key: bytes | None, value: bytes) -> object:
                delivered = await topic.send(key=key, value=value)
                return await delivered  # wait for the broker's acknowledgement

            self._dead_letters = DeadLetters(send, self.store, limits=self.app.settings.limits)
        return self._dead_letters

    @property
    def learner(self) -> Learner:
        """The learner of this worker."""
        if self._learner is None:
            self._learner = Learner(self.store, self.app.settings)
        return self._learner

    @property
    def learning(self) -> LearningMonitor:
        """Worker heartbeats and the training examples held until learned."""
        if self._learning is None:
            stall = self.app.settings.learner.stall_seconds
            self._learning = LearningMonitor(self.store, stall)
        return self._learning

    @property
    def policy_settings(self) -> PolicySettingsCache:
        """Live policy settings, for the join."""
        if self._policy_settings is None:
            self._policy_settings = PolicySettingsCache(self.store, self.app.settings)
        return self._policy_settings

    @property
    def join(self) -> JoinStore:
        """The join state."""
        if self._join is None:
            settings = self.app.settings
            self._join = JoinStore(
                self.store,
                done_ttl_seconds=settings.redis.dedup_window_seconds,
                rewards_partitions=settings.kafka.partitions,
                watermark_slack_seconds=settings.watermark_slack_seconds,
            )
        return self._join


def register_agents(app: StreamBanditApp) -> AppServices:
    """Register every agent and timer on `app`; return the services they share."""
    services = AppServices(app)
    _register_context(app, services)
    _register_training(app, services)
    _register_join(app, services)
    _register_beat(app, services)
    return services


def _register_beat(app: StreamBanditApp, services: AppServices) -> None:
    """Tell Redis every second that this worker lives, and whether it consumes.

    It consumes once its Faust agents and its training consumer have partitions: the
    API is not ready before some worker does (bandit/service/learning.py).
    """
    worker = f"{socket.gethostname()}-{os.getpid()}"

    @app.timer(interval=_BEAT_SECONDS, name="learning-beat")  # type: ignore[untyped-decorator]
    async def beat() -> None:
        learner = services.consumers.get("learner")
        consuming = bool(app.consumer.assignment()) and learner is not None and learner.assigned
        try:
            await services.learning.beat(worker, consuming=consuming)
        except Exception:  # noqa: BLE001  # an error escaping the timer would end it for good
            _log.warning("learning.beat_failed", exc_info=True)


# -- context ------------------------------------------------------------------------------


def _register_context(app: StreamBanditApp, services: AppServices) -> None:
    topics = app.bandit_topics
    ttl = app.settings.redis.feature_ttl_seconds

    slack = app.settings.watermark_slack_seconds

    @app.agent(topics.events, name="context")
    async def context(stream):  # type: ignore[no-untyped-def]
        aggregator = ContextAggregator(services.store, ttl, slack)
        async for events in stream.take_events(_CONTEXT_BATCH, _CONTEXT_WITHIN_SECONDS):
            decoded, accepted = await _decode_all(services, _BEHAVIOUR, events)
            if decoded:
                apply = partial(aggregator.apply, decoded, accepted)
                await retry("context.apply", apply, attempts=5)


async def _decode_all(
    services: AppServices, adapter: TypeAdapter[T], events: Any
) -> tuple[list[T], list[float | None]]:
    """Decode `events`, dead-lettering what does not decode; with each, its Kafka time."""
    decoded: list[T] = []
    stamps: list[float | None] = []
    for event in events:
        value = await services.dead_letters.decode(adapter, RawRecord.from_event(event))
        if value is not None:
            decoded.append(value)
            stamps.append(_record_time(event.message.timestamp))
    return decoded, stamps


# -- learner and decision log -----------------------------------------------------------


def _register_training(app: StreamBanditApp, services: AppServices) -> None:
    """Consume ``training`` once for the learner and the decision log (:func:`train_batch`).

    Not a Faust agent: Faust's per-record cost would cap the learner (:mod:`streams.batch`).
    Each batch is decoded as soon as it is fetched (:func:`streams.training.decode_training`),
    while the previous one is learned; large ones (a backlog) in helper processes
    (:class:`streams.training.TrainingDecoder`, ``settings.learner.decode_processes``).
    Offsets are committed after the batch is handled, i.e. after the snapshot covering
    it is saved and it is in the decision log.
    """
    settings = app.settings.learner
    logs: list[DecisionLog] = []  # made on start (or the first batch), closed on stop
    letters = services.dead_letters
    days = app.settings.decision_log.retention_days
    retention = None if days is None else timedelta(days=days)

    def decision_log() -> DecisionLog:
        if not logs:
            writer = DecisionLogWriter.from_settings(app.settings.decision_log)
            logs.append(DecisionLog(services.store, writer, retention=retention))
        return logs[0]

    def reload_models() -> None:
        # Another worker may have saved newer models while it owned these partitions.
        services.learner.invalidate()

    decoder = TrainingDecoder(settings.decode_processes, max_bytes=letters.max_bytes)

    async def decode(records: list[RawRecord]) -> list[tuple[RawRecord, Decoded]]:
        return list(zip(records, await decoder.decode(records), strict=True))

    async def handle(decoded: list[tuple[RawRecord, Decoded]]) -> None:
        await train_decoded(services, decision_log(), decoded)

    async def close() -> None:
        decoder.close()
        for log in logs:
            log.writer.close()
        logs.clear()

    @app.task  # type: ignore[untyped-decorator]
    async def on_start() -> None:
        # Lines this directory's writer claimed before it was killed are written now,
        # whether or not this worker is given training partitions.
        await retry("decision_log.recover", decision_log().recover)

    @app.timer(interval=_LOG_TEND_SECONDS, name="decision-log")  # type: ignore[untyped-decorator]
    async def tend_log() -> None:
        # A deletion asked for (DELETE /v1/log) and the retention, between two batches.
        try:
            await decision_log().tend()
        except Exception:  # noqa: BLE001  # an error escaping the timer would end it for good
            _log.warning("decision_log.tend_failed", exc_info=True)

    consumer = BatchConsumer(
        app,
        app.bandit_topics.training,
        "learner",
        handle,
        max_records=settings.snapshot_every_examples,
        within=settings.snapshot_every_seconds,
        on_assigned=reload_models,
        on_stop=close,
        prepare=decode,
        ahead=_TRAINING_AHEAD,
    )
    services.consumers[consumer.name] = consumer
    app.task(consumer.run)


async def train_batch(
    services: AppServices, log: DecisionLog | None, events: Sequence[Any]
) -> BatchResult:
    """Decode a batch of training records once; learn and snapshot it; log it (then commit).

    Each record is decoded once (:func:`streams.training.decode_training`); what does
    not decode goes to the dead letters. The learner applies the batch and saves the
    snapshots covering it (retried until Redis takes them), while the decision log
    appends it (:func:`log_batch`; a batch it still cannot write after five tries is
    logged as ``decision_log.failed`` and skipped, so a broken disk does not stall the
    learner). Records the policy cannot learn are dead-lettered with the reason.

    Parameters
    ----------
    services
        The worker's services.
    log
        The decision log; None to keep none.
    events
        :class:`~streams.deadletter.RawRecord` s (or Faust events).

    Returns
    -------
    BatchResult
        What the learner did.
    """
    letters = services.dead_letters
    decoded: list[tuple[RawRecord, Decoded]] = []
    for event in events:
        record = event if isinstance(event, RawRecord) else RawRecord.from_event(event)
        outcome = decode_training(record, max_bytes=letters.max_bytes)
        decoded.append((record, outcome))
    return await train_decoded(services, log, decoded)


def _held_id(record: RawRecord) -> tuple[str, str] | None:
    """Return the policy (the key) and event id of a training record that did not decode.

    None when either cannot be read: such a record was never held by the join.
    """
    try:
        policy = (record.key or b"").decode()
        event_id = orjson.loads(record.value or b"null").get("event_id")
    except (UnicodeDecodeError, orjson.JSONDecodeError, AttributeError):
        return None
    if not policy or not isinstance(event_id, str):
        return None
    return policy, event_id


async def train_decoded(
    services: AppServices,
    log: DecisionLog | None,
    decoded: Sequence[tuple[RawRecord, Decoded]],
) -> BatchResult:
    """Learn, snapshot and log a batch decoded already; dead-letter what did not decode.

    Each of `decoded` pairs a record with its :class:`~streams.training.TrainingRecord`
    or its dead letter; see :func:`train_batch`.
    """
    letters = services.dead_letters
    records: list[TrainingRecord] = []
    unlearnable: dict[str, list[str]] = {}
    for record, outcome in decoded:
        if isinstance(outcome, TrainingRecord):
            records.append(outcome)
        else:
            await letters.send(record, outcome)
            held = _held_id(record)
            if held is not None:
                unlearnable.setdefault(held[0], []).append(held[1])
    for policy, ids in unlearnable.items():  # dead letters are never learned: not held
        await retry("learning.forget", partial(services.learning.forget, policy, ids))
    if not records:
        return BatchResult()
    learner = services.learner
    learning = retry("learner.process", partial(learner.process, records))
    if log is None:
        result = await learning
    else:
        result, _ = await asyncio.gather(learning, _log_records(log, records))
    # Learned and logged (a batch the log could not take is logged as decision_log.failed
    # and not held on for ever, as the learner is not): the join's copies can go.
    done: dict[str, list[str]] = {}
    for example in records:
        done.setdefault(example.policy, []).append(example.event_id)
    await retry("learning.release", partial(services.learning.learned, done))
    if result.rejected:
        raw = {(record.partition, record.offset): record for record, _ in decoded}
        for rejected, reason in result.rejected:
            letter_of = raw[rejected.partition, rejected.offset]
            await retry("learner.reject", partial(letters.reject, letter_of, reason))
    _log.info(
        "training.learned",
        records=len(records),
        learned=result.learned,
        replayed=result.replayed,
        duplicates=result.duplicates,
        rejected=len(result.rejected),
        saved=result.saved,
    )
    return result


async def _log_records(log: DecisionLog, records: Sequence[TrainingRecord]) -> None:
    """Append `records` to the decision log; log what cannot be, never raise."""
    entries: list[LogEntry] = []
    for record in records:
        try:
            entries.append(record.log_entry())
        except Exception:  # noqa: BLE001  # logged; the other lines are written
            _log.exception("decision_log.unwritable", event_id=record.event_id)
    if not entries:
        return
    try:
        await log.write(entries)
    except Exception:  # noqa: BLE001  # logged; go on with the next batch
        _log.exception("decision_log.failed", examples=len(entries))


# -- join ---------------------------------------------------------------------------------


def _register_join(app: StreamBanditApp, services: AppServices) -> None:
    topics = app.bandit_topics

    @app.agent(topics.decisions, name="join-decisions")
    async def join_decisions(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            raw = RawRecord.from_event(event)
            decision = await services.dead_letters.read(TrustedDecision.read, raw)
            if decision is None:
                continue
            with structlog.contextvars.bound_contextvars(
                event_id=decision.event_id, policy=decision.policy
            ):
                get_settings = partial(services.policy_settings.get, decision.policy)
                settings = await retry("join.settings", get_settings)
                add = partial(services.join.add_decision, decision, settings)
                if await retry("join.add_decision", add) == "pending":
                    _wake_release(services, decision.occurred_at.timestamp(), settings)

    @app.agent(topics.rewards, name="join-rewards")
    async def join_rewards(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await join_rewards_record(services, event)

    @app.task  # type: ignore[untyped-decorator]
    async def release_due() -> None:
        await release_due_loop(services)


def _wake_release(services: AppServices, occurred_at: float, settings: PolicySettings) -> None:
    """Wake the release loop if the decision just added is due before it planned to look."""
    join = services.join
    due = occurred_at + settings.reward_wait_seconds
    if join.rewards_partitions is not None:
        due += join.watermark_slack_seconds
    if due < services.release_at:
        services.release_wake.set()


async def release_due_loop(
    services: AppServices, *, interval: float = _RELEASE_INTERVAL_SECONDS
) -> None:
    """Release decisions as they fall due, one tick after the other, until cancelled.

    After each tick (:func:`release_tick`, its work bounded by `interval`) the loop
    sleeps until the first waiting decision is due (:meth:`streams.join.JoinStore.next_due`)
    and, when the ``rewards`` partitions' watermarks decide, the slack after it has
    passed, so that the markers it then sends let the decision go at once; it sleeps
    `interval` at most, and a decision added meanwhile that is due sooner wakes it.
    Decisions due but still held back (their markers not read yet, a partition nobody
    reads) are looked at again after `interval`; a tick that ran out of time is followed
    by the next at once. Not a Faust timer; ticks never run concurrently.
    """
    loop = asyncio.get_running_loop()
    join = services.join
    wake = services.release_wake
    await asyncio.sleep(interval)
    while True:
        started = loop.time()
        until = started + interval
        pause = interval
        try:
            released = await release_tick(services, until=until)
            wake.clear()
            ahead = await join.next_due()
            if ahead is not None and join.rewards_partitions is not None:
                ahead += join.watermark_slack_seconds
            if loop.time() >= until:
                pause = 0.0  # a backlog: go on
            elif ahead is not None and ahead > 0:
                pause = min(ahead, interval)
            elif ahead is not None and released:
                pause = 0.0  # what it released may have freed more
        except Exception:  # noqa: BLE001  # an error escaping the loop would end it for good
            _log.exception("join.release_postponed", retry_in=interval)
        services.release_at = time.time() + pause
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), pause)
        services.release_at = -math.inf


async def release_tick(services: AppServices, *, until: float) -> int:
    """Release what is due, send watermark markers, and release what they freed; by `until`.

    Each step starts only while there is time left before `until` (the loop's clock):
    claims of due decisions stop there, and the wait for markers to be read ends there;
    what is left is done by the next tick. Returns how many decisions were released.
    """
    loop = asyncio.get_running_loop()
    release = partial(release_due_once, services, until=until)
    released = await retry("join.release", release, attempts=3)
    if loop.time() >= until:
        return released
    marked = await retry("join.markers", partial(send_watermark_markers, services), attempts=3)
    if marked and await _markers_read(services, marked, until=until):
        released += await retry("join.release", release, attempts=3)  # what they freed, now
    return released


async def join_rewards_record(services: AppServices, event: Any) -> None:
    """Hand one record of ``rewards`` to the join, moving its partition's watermark.

    A reward or an activation is joined, and its partition's watermark moved to the
    record's timestamp, in one script (one sent with a key not allowed its decision's
    policy is refused there, then dead-lettered with that reason); a watermark marker
    moves the watermark to the marker's time; a record that does not decode is
    dead-lettered, then moves the watermark to its timestamp.

    Parameters
    ----------
    services
        The worker's services.
    event
        The Faust event (its message gives partition, timestamp and headers).
    """
    message = event.message
    partition = int(message.partition)
    join = services.join
    expected = join.rewards_partitions
    if (
        expected is not None
        and partition >= expected
        and partition not in services._unexpected_partitions
    ):
        services._unexpected_partitions.add(partition)
        _log.error(
            "join.partition_unexpected",
            partition=partition,
            expected=expected,
            hint="settings.kafka.partitions must be the rewards topic's partition count",
        )
    marker = _watermark_marker(message.headers)
    if marker is not None:
        await retry("join.watermark", partial(join.advance_watermark, partition, marker))
        return
    stamp = _record_time(message.timestamp)
    raw = RawRecord.from_event(event)
    record = await services.dead_letters.decode(_REWARDS, raw)
    if record is None:
        if stamp is not None:
            await retry("join.watermark", partial(join.advance_watermark, partition, stamp))
        return
    read: dict[str, Any] = {}
    if stamp is not None:
        read = {"partition": partition, "record_time": stamp}
    with structlog.contextvars.bound_contextvars(event_id=record.event_id):
        if isinstance(record, Activation):
            add = partial(join.add_activation, record, **read)
        else:
            add = partial(join.add_reward, record, **read)
        outcome = await retry("join.add", add)
        if outcome == "forbidden":  # counted by the join; said with the reason here
            policy = await retry(
                "join.policy", partial(services.store.decision_policy, record.event_id)
            )
            reason = (
                f"key not allowed for policy {policy!r} (its scope: {list(record.scope or ())})"
            )
            await retry("join.reject", partial(services.dead_letters.reject, raw, reason))


def _watermark_marker(headers: Any) -> float | None:
    """Return the time of a watermark marker, or None for any other record."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == WATERMARK_HEADER:
            try:
                marker = float(value.decode() if isinstance(value, bytes | bytearray) else value)
            except (TypeError, ValueError, UnicodeDecodeError):
                return None  # not ours after all: decoded, hence dead-lettered
            return marker if math.isfinite(marker) else None
    return None


def _record_time(timestamp: Any) -> float | None:
    """Return a record's Kafka timestamp in seconds, or None when it has none."""
    if timestamp is None:
        return None
    stamp = float(timestamp)
    return stamp if math.isfinite(stamp) and stamp > 0 else None


async def _markers_read(services: AppServices, partitions: Sequence[int], *, until: float) -> bool:
    """Wait (until `until`, by the loop's clock) until none of `partitions` lags; say if so."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        await asyncio.sleep(_MARKER_POLL_SECONDS)
        lagging = await services.join.lagging_partitions()
        if not set(partitions).intersection(lagging):
            return True
    return False


async def send_watermark_markers(services: AppServices) -> list[int]:
    """Append a watermark marker to each ``rewards`` partition that holds back a due decision.

    A partition gets a new marker from this worker once the last one was read (its
    watermark reached the marker's time), or, when it was not, 0.5 s after it (so a
    partition nobody reads gets two a second at most). The marker's time
    is taken before it is sent, so everything appended to the partition before that
    time precedes it; once ``join-rewards`` has read it, the partition is read up to
    that time. Returns the partitions sent a marker, after the broker has them.
    """
    lagging = await services.join.lagging_partitions()  # by Redis's clock
    if not lagging:
        return []
    marks = await services.join.watermarks()
    sent_at = services.markers_sent
    stamp = time.time()
    chosen = [
        p
        for p in lagging
        if p not in sent_at
        or marks.get(p, -math.inf) >= sent_at[p]
        or stamp - sent_at[p] >= _MARKER_EVERY_SECONDS
    ]
    if not chosen:
        return []
    rewards = services.app.bandit_topics.rewards
    headers = [(WATERMARK_HEADER, repr(stamp).encode())]
    pending = [
        await rewards.send(key=None, value=b"", partition=partition, headers=headers)
        for partition in chosen
    ]
    await asyncio.gather(*pending)  # the broker has every marker
    for partition in chosen:
        sent_at[partition] = stamp
    return chosen


async def release_due_once(
    services: AppServices, *, limit: int = _RELEASE_LIMIT, until: float | None = None
) -> int:
    """Claim the decisions whose reward wait is over; publish their training examples.

    Examples go to ``training`` keyed by policy; each joined decision is completed only
    once the broker has its example. Claims go on, `limit` at a time, while a full
    claim was made and (with `until`, by the loop's clock) there is time left. Returns
    how many decisions were released.
    """
    loop = asyncio.get_running_loop()
    join = services.join
    training = services.app.bandit_topics.training
    released = 0
    while True:
        due = await join.claim_due(None, limit, _LEASE_SECONDS)  # None: Redis's clock
        if not due:
            return released
        examples: list[tuple[str, str, bytes]] = []
        held: dict[str, list[tuple[str, bytes]]] = {}
        for joined in due:
            if joined.value is not None:
                examples.append((joined.policy, joined.event_id, joined.value))
                held.setdefault(joined.policy, []).append((joined.event_id, joined.value))
        # Held before they are produced, so the learner never applies one not yet held.
        await services.learning.hold(held)  # until learned and logged (bandit/service/learning.py)
        pending = [
            await training.send(key=policy.encode(), value=value) for policy, _, value in examples
        ]
        for joined in due:
            if joined.value is None:
                _log.info(
                    "decision.dropped",
                    event_id=joined.event_id,
                    policy=joined.policy,
                    reason=joined.dropped,
                    detail=joined.detail,
                )
        await asyncio.gather(*pending)  # the broker has every example
        await join.complete(due)
        released += len(due)
        if len(due) < limit or (until is not None and loop.time() >= until):
            return released


# -- decision log -------------------------------------------------------------------------


async def log_batch(
    store: StateStore,
    writer: DecisionLogWriter,
    examples: Sequence[TrainingExample | LogEntry],
) -> int:
    """Append the examples no decision log holds or claimed; return lines written.

    :meth:`streams.ledger.DecisionLog.write` for one batch: every worker writes its own
    files, and the ids are claimed in Redis first, so each decision is in exactly one.
    """
    return await DecisionLog(store, writer).write(examples)
