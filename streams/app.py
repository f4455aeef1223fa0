"""The Faust app, built from :class:`~bandit.settings.Settings` by :func:`create_app`.

Nothing here runs at import time: :func:`create_app` builds a configured app (agents
included) and :func:`run_worker` runs it until it is stopped.

Configuration (see DESIGN.md, "Local runtime and tests"):

- JSON values decoded by the agents with pydantic, so the topics carry raw bytes
  (``value_serializer="raw"``), never pickle;
- at-least-once processing, no idempotent or transactional producer (the local broker
  has neither), no Faust tables (state lives in Redis), no web server;
- a short session timeout and heartbeat from ``settings.kafka`` (the local broker holds
  JoinGroup for half the session timeout), offsets reset to the earliest;
- the consumer's fetch wait from ``settings.kafka.fetch_max_wait_ms``.

The fetch wait
--------------
Faust's aiokafka driver builds its consumer with a hard-coded ``fetch_max_wait_ms=1500``
(``faust/transport/drivers/aiokafka.py``, ``AIOKafkaConsumerThread
._create_worker_consumer``); there is no setting for it. :class:`StreamBanditApp` builds
its transport from the three small subclasses below, whose consumer thread lets Faust
create the consumer as usual and then sets the wait before the consumer starts (aiokafka
reads it when :meth:`aiokafka.AIOKafkaConsumer.start` creates its fetcher). Only apps
made by :func:`create_app` are affected; Faust itself is not patched.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka
from redis.asyncio import Redis

from bandit.service.logging import configure_logging
from bandit.service.process import tune_gc
from bandit.service.state import StateStore
from bandit.settings import Settings
from streams.agents import register_agents

__all__ = [
    "HEARTBEAT_SECONDS",
    "StreamBanditApp",
    "TopicNames",
    "Topics",
    "create_app",
    "faust_options",
    "run_worker",
    "topic_names",
]

_log = structlog.get_logger("streams.app")

HEARTBEAT_SECONDS = 5.0
"""How often a worker touches ``settings.worker_heartbeat``."""


# -- the fetch wait --------------------------------------------------------------------


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait taken from the app's settings."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):  # pragma: no cover - aiokafka moved it
            msg = (
                "aiokafka.AIOKafkaConsumer has no `_fetch_max_wait_ms` any more: "
                "update streams.app._ConsumerThread for this aiokafka version"
            )
            raise RuntimeError(msg)
        consumer._fetch_max_wait_ms = cast(StreamBanditApp, self.app).fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


# -- the app ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Full names of the topics of one deployment: ``<kafka.topic_prefix>.<name>``."""

    events: str
    decisions: str
    rewards: str
    training: str
    dead_letters: str


def topic_names(settings: Settings) -> TopicNames:
    """Return the topic names for `settings` (see docs/live-loop.md).

    Examples
    --------
    >>> topic_names(Settings()).dead_letters
    'streambandit.dead-letters'
    """
    kafka = settings.kafka
    return TopicNames(
        events=kafka.topic("events"),
        decisions=kafka.topic("decisions"),
        rewards=kafka.topic("rewards"),
        training=kafka.topic("training"),
        dead_letters=kafka.topic("dead-letters"),
    )


@dataclass(frozen=True, slots=True)
class Topics:
    """The app's Faust topics, raw bytes in and out."""

    names: TopicNames
    events: Any
    decisions: Any
    rewards: Any
    training: Any
    dead_letters: Any


class StreamBanditApp(faust.App):
    """A :class:`faust.App` that knows its settings, topics and Redis state.

    Build it with :func:`create_app`. The Redis client is created lazily, on the
    worker's event loop, by :meth:`state_store`.

    Parameters
    ----------
    settings
        The service settings.
    **options
        Faust settings.
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.settings = settings
        self.fetch_max_wait_ms = settings.kafka.fetch_max_wait_ms
        self._state: StateStore | None = None
        super().__init__(**options)
        names = topic_names(settings)
        self.bandit_topics = Topics(
            names=names,
            events=self._raw_topic(names.events),
            decisions=self._raw_topic(names.decisions),
            rewards=self._raw_topic(names.rewards),
            training=self._raw_topic(names.training),
            dead_letters=self._raw_topic(names.dead_letters),
        )

    def _raw_topic(self, name: str) -> Any:
        return self.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.kafka.partitions,
        )

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return _Transport(self.conf.broker_producer, self)

    def state_store(self) -> StateStore:
        """Return the Redis state store, creating its client on first use."""
        if self._state is None:
            client = Redis.from_url(self.settings.redis.url)
            self._state = StateStore(
                client,
                prefix=self.settings.redis.key_prefix,
                dedup_window_seconds=self.settings.redis.dedup_window_seconds,
                model_history=self.settings.learner.model_history,
                model_history_seconds=self.settings.learner.model_history_seconds,
            )
        return self._state

    async def on_stop(self) -> None:
        """Stop the app, then close the Redis client."""
        await super().on_stop()
        await self.close_state_store()

    async def close_state_store(self) -> None:
        """Close the Redis client, if one was created."""
        if self._state is not None:
            await self._state.redis.aclose()
            self._state = None


def faust_options(settings: Settings) -> dict[str, Any]:
    """Return the Faust settings streambandit runs with (see the module docstring)."""
    kafka = settings.kafka
    return {
        "id": f"{kafka.topic_prefix}-streams",
        "broker": f"kafka://{kafka.broker}",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_partitions": kafka.partitions,
        "topic_disable_leader": True,
        "broker_session_timeout": kafka.session_timeout_seconds,
        "broker_heartbeat_interval": kafka.heartbeat_seconds,
        "broker_rebalance_timeout": max(2 * kafka.session_timeout_seconds, 10.0),
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "store": "memory://",
        "web_enabled": False,
        "autodiscover": False,
        "worker_redirect_stdouts": False,
        "datadir": settings.worker_data / "faust",
    }


def create_app(settings: Settings, *, agents: bool = True) -> StreamBanditApp:
    """Build the Faust app for `settings`, with every agent and timer registered.

    Parameters
    ----------
    settings
        Broker, topics, Redis and learner settings; ``settings.kafka.broker`` and
        ``settings.redis.url`` must name running servers.
    agents
        Register the agents and timers (``False`` gives a bare app, for tests).

    Returns
    -------
    StreamBanditApp
    """
    app = StreamBanditApp(settings, **faust_options(settings))
    if agents:
        register_agents(app)
        if settings.worker_heartbeat is not None:
            _register_heartbeat(app, settings.worker_heartbeat)
    return app


def _register_heartbeat(app: StreamBanditApp, path: Path) -> None:
    """Touch `path` every :data:`HEARTBEAT_SECONDS` from the worker's event loop.

    A loop that is stuck, or a worker that stopped, leaves the file to age: a health
    check (``streambandit worker-health``) reads that age.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()

    @app.timer(interval=HEARTBEAT_SECONDS, name="heartbeat")  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        path.touch()


def run_worker(settings: Settings) -> None:
    """Run a stream worker for `settings` until it is stopped (SIGINT or SIGTERM).

    Configures structlog (the records of Faust, mode and aiokafka included, warnings
    and worse), builds the app with :func:`create_app` and runs a Faust worker on a new
    event loop. The worker is told not to set up logging itself (it would install a
    root handler of its own, not JSON), and has no progress spinner (it writes cursor
    escape codes even when its output is not a terminal).
    """
    configure_logging(settings.log_format, capture_stdlib=True)
    settings.worker_data.mkdir(parents=True, exist_ok=True)  # Faust makes only its own
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    _log.info(
        "worker.starting",
        broker=settings.kafka.broker,
        topic_prefix=settings.kafka.topic_prefix,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    worker = app.Worker(
        loglevel="WARNING",
        quiet=True,
        loop=loop,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.spinner = None
    tune_gc()  # everything built so far lives as long as the worker
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
