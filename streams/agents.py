"""The agents and timers of the stream worker, registered on an app by :func:`register_agents`.

Agents are thin: they decode records through :class:`~streams.deadletter.DeadLetters`
(what fails goes to ``dead-letters`` with its reason), bind log context, and hand off
to plain code tested without Kafka:

=================  ===============  ====================================================
agent / timer      consumes         hands off to
=================  ===============  ====================================================
``context``        ``events``       :class:`streams.context.ContextAggregator`
``join-decisions`` ``decisions``    ``streams.join.JoinStore.add_decision``
``join-rewards``   ``rewards``      ``JoinStore.add_reward`` / ``add_activation``
``release-due``    (every 0.2 s)    ``JoinStore.claim_due`` -> ``training`` -> ``complete``
``learner``        ``training``     :class:`streams.learner.Learner`
``decision-log``   ``training``     :mod:`streams.sink` (the DSJSON decision log)
=================  ===============  ====================================================

``learner`` and ``decision-log`` are not Faust agents but batch consumers
(:class:`streams.batch.BatchConsumer`, each its own consumer group), run as tasks of the
app: Faust's per-record cost would cap the learner well below its target.

Work that touches Redis is retried (with a growing pause, every failure logged) until it
succeeds, so a Redis outage stalls an agent instead of losing or double-applying records;
an agent never crashes on bad input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import structlog
from pydantic import TypeAdapter

from bandit.fastpath import FastDecoder
from bandit.schemas import (
    Activation,
    BehaviourEvent,
    Decision,
    PolicySettings,
    RewardsRecord,
    TrainingExample,
)
from bandit.settings import Settings
from bandit.state import StateStore
from streams.app import StreamBanditApp
from streams.batch import BatchConsumer
from streams.context import ContextAggregator
from streams.deadletter import DeadLetters, RawRecord, decode_record
from streams.join import JoinStore
from streams.learner import Learner, TrainingRecord
from streams.sink import DecisionLogWriter

__all__ = [
    "AppServices",
    "PolicySettingsCache",
    "learn_batch",
    "log_batch",
    "register_agents",
    "release_due_once",
    "retry",
]

T = TypeVar("T")

_RELEASE_INTERVAL_SECONDS = 0.2  # how often due decisions are claimed and released
_CONTEXT_BATCH = 500  # most behaviour events the context agent folds in one Redis round
_CONTEXT_WITHIN_SECONDS = 0.01
_RELEASE_LIMIT = 500
_LEASE_SECONDS = 30.0
_RETRY_FIRST_PAUSE = 0.05
_RETRY_MAX_PAUSE = 5.0

_BEHAVIOUR: TypeAdapter[BehaviourEvent] = TypeAdapter(BehaviourEvent)
_DECISION: FastDecoder[Decision] = FastDecoder(Decision)  # pydantic, after a fast path
_REWARDS: TypeAdapter[RewardsRecord] = TypeAdapter(RewardsRecord)
_TRAINING: FastDecoder[TrainingExample] = FastDecoder(TrainingExample)

_log = structlog.get_logger("streams.agents")


async def retry(
    what: str,
    work: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = None,
    first_pause: float = _RETRY_FIRST_PAUSE,
) -> T:
    """Run ``work()`` until it succeeds, pausing longer after each failure.

    Parameters
    ----------
    what
        Names the work in the log line of each failure.
    work
        Coroutine function to run.
    attempts
        Give up after this many failures and raise the last error (never, when None).
    first_pause
        Seconds before the first retry; doubled after each failure, up to 5 s.
    """
    pause, failures = first_pause, 0
    while True:
        try:
            return await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            _log.exception("work.failed", work=what, failures=failures, retry_in=pause)
            if attempts is not None and failures >= attempts:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RETRY_MAX_PAUSE)


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
    """The batch consumers of the ``training`` topic: ``learner`` and ``decision-log``."""
    _dead_letters: DeadLetters | None = field(default=None, init=False)
    _learner: Learner | None = field(default=None, init=False)
    _policy_settings: PolicySettingsCache | None = field(default=None, init=False)
    _join: JoinStore | None = field(default=None, init=False)

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
    def policy_settings(self) -> PolicySettingsCache:
        """Live policy settings, for the join."""
        if self._policy_settings is None:
            self._policy_settings = PolicySettingsCache(self.store, self.app.settings)
        return self._policy_settings

    @property
    def join(self) -> JoinStore:
        """The join state."""
        if self._join is None:
            self._join = JoinStore(self.store, limits=self.app.settings.limits)
        return self._join


def register_agents(app: StreamBanditApp) -> AppServices:
    """Register every agent and timer on `app`; return the services they share."""
    services = AppServices(app)
    _register_context(app, services)
    _register_learner(app, services)
    _register_join(app, services)
    _register_sink(app, services)
    return services


# -- context ------------------------------------------------------------------------------


def _register_context(app: StreamBanditApp, services: AppServices) -> None:
    topics = app.bandit_topics
    ttl = app.settings.redis.feature_ttl_seconds

    @app.agent(topics.events, name="context")
    async def context(stream):  # type: ignore[no-untyped-def]
        aggregator = ContextAggregator(services.store, ttl)
        async for events in stream.take_events(_CONTEXT_BATCH, _CONTEXT_WITHIN_SECONDS):
            decoded = await _decode_all(services, _BEHAVIOUR, events)
            if decoded:
                await retry("context.apply", partial(aggregator.apply, decoded), attempts=5)


async def _decode_all(services: AppServices, adapter: TypeAdapter[T], events: Any) -> list[T]:
    decoded: list[T] = []
    for event in events:
        value = await services.dead_letters.decode(adapter, RawRecord.from_event(event))
        if value is not None:
            decoded.append(value)
    return decoded


# -- learner ------------------------------------------------------------------------------


def _register_learner(app: StreamBanditApp, services: AppServices) -> None:
    # Not a Faust agent: Faust's per-record cost would cap the learner (streams.batch).
    # Offsets are committed after learn_batch returns, i.e. after the snapshot is saved.
    settings = app.settings.learner

    def reload_models() -> None:
        # Another worker may have saved newer models while it owned these partitions.
        services.learner.invalidate()

    consumer = BatchConsumer(
        app,
        app.bandit_topics.training,
        "learner",
        partial(learn_batch, services),
        max_records=settings.snapshot_every_examples,
        within=settings.snapshot_every_seconds,
        on_assigned=reload_models,
    )
    services.consumers[consumer.name] = consumer
    app.task(consumer.run)


async def learn_batch(services: AppServices, events: Sequence[Any]) -> None:
    """Decode, learn and snapshot one batch of training records (committed after).

    `events` are :class:`~streams.deadletter.RawRecord` s (or Faust events).
    """
    raw: dict[tuple[int, int], RawRecord] = {}
    records: list[TrainingRecord] = []
    for event in events:
        record = event if isinstance(event, RawRecord) else RawRecord.from_event(event)
        example = await services.dead_letters.decode(_TRAINING, record)
        if example is not None:
            raw[record.partition, record.offset] = record
            records.append(TrainingRecord(record.partition, record.offset, example))
    if not records:
        return
    learner = services.learner
    result = await retry("learner.process", partial(learner.process, records))
    for rejected, reason in result.rejected:
        letter_of = raw[rejected.partition, rejected.offset]
        await retry("learner.reject", partial(services.dead_letters.reject, letter_of, reason))
    _log.info(
        "training.learned",
        records=len(records),
        learned=result.learned,
        replayed=result.replayed,
        duplicates=result.duplicates,
        rejected=len(result.rejected),
        saved=result.saved,
    )


# -- join ---------------------------------------------------------------------------------


def _register_join(app: StreamBanditApp, services: AppServices) -> None:
    topics = app.bandit_topics

    @app.agent(topics.decisions, name="join-decisions")
    async def join_decisions(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            decision = await services.dead_letters.decode(_DECISION, RawRecord.from_event(event))
            if decision is None:
                continue
            with structlog.contextvars.bound_contextvars(
                event_id=decision.event_id, policy=decision.policy
            ):
                get_settings = partial(services.policy_settings.get, decision.policy)
                settings = await retry("join.settings", get_settings)
                add = partial(services.join.add_decision, decision, settings)
                await retry("join.add_decision", add)

    @app.agent(topics.rewards, name="join-rewards")
    async def join_rewards(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            record = await services.dead_letters.decode(_REWARDS, RawRecord.from_event(event))
            if record is None:
                continue
            with structlog.contextvars.bound_contextvars(event_id=record.event_id):
                if isinstance(record, Activation):
                    add = partial(services.join.add_activation, record)
                else:
                    add = partial(services.join.add_reward, record)
                await retry("join.add", add)

    @app.timer(interval=_RELEASE_INTERVAL_SECONDS, name="release-due")  # type: ignore[untyped-decorator]
    async def release_due() -> None:
        await retry("join.release", partial(release_due_once, services), attempts=3)


async def release_due_once(services: AppServices, *, limit: int = _RELEASE_LIMIT) -> int:
    """Claim the decisions whose reward wait is over; publish their training examples.

    Examples go to ``training`` keyed by policy; each joined decision is completed only
    once the broker has its example. Returns how many decisions were released.
    """
    join = services.join
    training = services.app.bandit_topics.training
    released = 0
    while True:
        due = await join.claim_due(None, limit, _LEASE_SECONDS)  # None: Redis's clock
        if not due:
            return released
        pending = []
        for joined in due:
            if joined.example is not None:
                sent = await training.send(
                    key=joined.policy.encode(), value=joined.example.model_dump_json().encode()
                )
                pending.append(sent)
            else:
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
        if len(due) < limit:
            return released


# -- decision log -------------------------------------------------------------------------


def _register_sink(app: StreamBanditApp, services: AppServices) -> None:
    """Log every training example to the DSJSON decision log (:mod:`streams.sink`).

    The writer does blocking file I/O, so it runs in a thread, one batch at a time. A
    batch that still fails after five tries is logged (``decision_log.failed``, with
    its size) and skipped, so a broken disk does not stall the learner's commits.
    """
    # A batch consumer, not a Faust agent, like the learner (streams.batch).
    settings = app.settings.learner
    writers: list[DecisionLogWriter] = []  # made on the first batch, closed on stop

    async def decision_log(records: Sequence[RawRecord]) -> None:
        if not writers:
            writers.append(DecisionLogWriter.from_settings(app.settings.decision_log))
        # The learner dead-letters what does not decode; the log skips it.
        examples: list[TrainingExample] = []
        for record in records:
            example = decode_record(_TRAINING, record)
            if isinstance(example, TrainingExample):
                examples.append(example)
        if not examples:
            return
        try:
            await log_batch(services.store, writers[0], examples)
        except Exception:  # noqa: BLE001  # logged; go on with the next batch
            _log.exception("decision_log.failed", examples=len(examples))

    def close() -> None:
        for writer in writers:
            writer.close()
        writers.clear()

    consumer = BatchConsumer(
        app,
        app.bandit_topics.training,
        "decision-log",
        decision_log,
        max_records=settings.snapshot_every_examples,
        within=settings.snapshot_every_seconds,
        on_stop=close,
    )
    services.consumers[consumer.name] = consumer
    app.task(consumer.run)


async def log_batch(
    store: StateStore, writer: DecisionLogWriter, examples: Sequence[TrainingExample]
) -> int:
    """Append the examples no decision log holds yet, then record them; return lines written.

    Every worker writes its own files, so the writer's memory of recent ids does not see
    what another worker logged: a batch redelivered to this worker after the other one
    died, or an example the join produced twice, would be logged twice. The event ids
    logged are therefore recorded in Redis (:meth:`StateStore.mark_logged`), only once
    their lines are flushed, and looked up before writing. Redis trouble never costs a
    line: when the look-up fails the batch is written whole (a duplicate at worst), and
    when the record fails the lines are written anyway.

    Raises
    ------
    Exception
        The last error when the batch could not be written after five tries.
    """
    learnable: dict[str, list[str]] = {}
    for example in examples:
        if example.decision.learn:
            learnable.setdefault(example.decision.policy, []).append(example.event_id)
    seen: set[tuple[str, str]] = set()
    try:
        for policy, ids in learnable.items():
            flags = await retry(
                "decision_log.lookup", partial(store.logged, policy, ids), attempts=3
            )
            seen.update((policy, event_id) for event_id, hit in zip(ids, flags, strict=True) if hit)
    except Exception:  # noqa: BLE001  # logged; write the whole batch rather than lose lines
        _log.exception("decision_log.lookup_failed", examples=len(examples))
        seen.clear()
    fresh = [e for e in examples if (e.decision.policy, e.event_id) not in seen]
    if seen:
        _log.info("decision_log.already_logged", examples=len(seen))
    written = await retry(
        "decision_log.write", partial(asyncio.to_thread, writer.write, fresh), attempts=5
    )
    for policy, ids in learnable.items():
        new_ids = [event_id for event_id in ids if (policy, event_id) not in seen]
        try:
            await retry(
                "decision_log.record", partial(store.mark_logged, policy, new_ids), attempts=3
            )
        except Exception:  # noqa: BLE001  # logged; the lines are written
            _log.exception("decision_log.record_failed", examples=len(new_ids))
    return written
