"""The Python client: argument checks, retries, and the real API on a real broker and Redis.

The API is :func:`bandit.api.app.create_app`, run in-process: through ``httpx.ASGITransport``
for :class:`AsyncClient` and by a uvicorn server on a free loopback port for
:class:`Client`. Nothing is mocked; a few transports wrap the real one to inject
connection failures or count what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer

from bandit.api.app import create_app
from bandit.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ClientError,
    ClientTimeoutError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RankResult,
    TransportError,
    UnprocessableRequestError,
)
from bandit.ops.runtime import free_port
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    Limits,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from bandit.wire.schemas import BehaviourEvent, PolicySettings, RankableAction
from streams.app import topic_names
from tests.conftest import worker_consumes

ADMIN_KEY = "admin-" + uuid.uuid4().hex
APP_KEY = "app-" + uuid.uuid4().hex
MAX_ACTIONS = 4  # the server's limit; the client's own checks allow more
CONTEXT = {"user": {"tier": "gold", "returning": True, "visits": 3}}
ACTIONS = ["article-1", {"id": "article-2", "features": {"item": {"length": 0.9}}}]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(broker: str, redis_url: str) -> Settings:
    """Settings of one API instance, on topics and keys no other test uses."""
    unique = f"client-{uuid.uuid4().hex[:10]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=unique, partitions=2),
        redis=RedisSettings(url=redis_url, key_prefix=unique),
        api=ApiSettings(
            keys=(ApiKey(key=ADMIN_KEY, role="admin"), ApiKey(key=APP_KEY, role="app")),
            model_poll_seconds=0.2,
        ),
        limits=Limits(max_actions=MAX_ACTIONS),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-client-tests-01"),
        policies={"default": "uniform", "greedy": "vw-epsilon"},
    )


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server run in a thread, stopped when the block ends."""

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        thread = threading.Thread(target=self.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60.0
        while not self.started:
            if not thread.is_alive():
                msg = "the API server stopped while starting; see the log above"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = "the API server did not start within 60 s"
                raise RuntimeError(msg)
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{self.config.port}"
        finally:
            self.should_exit = True
            thread.join(timeout=30.0)


@pytest.fixture(scope="module")
def base_url(settings: Settings) -> Iterator[str]:
    """URL of the real API, served by uvicorn on a free loopback port."""
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="on",
    )
    with _ThreadedServer(config).running() as url:
        yield url


@pytest.fixture
def app_client(base_url: str) -> Iterator[Client]:
    """A blocking client with the app key."""
    with Client(base_url, api_key=APP_KEY) as client:
        yield client


@pytest.fixture
def admin_client(base_url: str) -> Iterator[Client]:
    """A blocking client with the admin key."""
    with Client(base_url, api_key=ADMIN_KEY) as client:
        yield client


@contextlib.asynccontextmanager
async def _asgi_client(settings: Settings, api_key: str | None) -> AsyncIterator[AsyncClient]:
    """An AsyncClient calling a fresh app in-process, its lifespan run around it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://api.test", api_key=api_key, transport=transport) as client:
            yield client


class _CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, failing its first `failures` sends with ConnectError."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        if len(self.bodies) <= self.failures:
            msg = "injected connection failure"
            raise httpx.ConnectError(msg, request=request)
        return super().handle_request(request)


def _records(settings: Settings, topic: str, *, wanted: int, timeout: float = 20.0) -> list[Any]:
    """Read JSON records from `topic` from the start until `wanted` are found or time is up."""

    async def main() -> list[Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka.broker,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        found: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while len(found) < wanted and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    found.extend(json.loads(record.value) for record in batch if record.value)
        finally:
            await consumer.stop()
        return found

    return asyncio.run(main())


def _check_result(result: RankResult, offered: set[str]) -> None:
    ids = [entry.id for entry in result.ranking]
    assert set(ids) == offered
    assert ids[0] == result.action_id
    assert result.probability == result.ranking[0].probability
    assert math.isclose(sum(entry.probability for entry in result.ranking), 1.0, abs_tol=1e-9)
    assert result.model_version
    assert result.policy


# -- against the real API: the round trip --------------------------------------------------


def test_rank_reward_activate_round_trip(app_client: Client, settings: Settings) -> None:
    """A rank, its reward and its activation reach the API and land on their topics."""
    event_id = f"evt-{uuid.uuid4().hex}"
    result = app_client.rank(CONTEXT, ACTIONS, event_id=event_id, defer_activation=True)
    assert result.event_id == event_id
    _check_result(result, {"article-1", "article-2"})

    reward_id = app_client.reward(event_id, 1.0, action_id=result.action_id)
    app_client.activate(event_id)

    names = topic_names(settings)
    decisions = [
        d for d in _records(settings, names.decisions, wanted=1) if d["event_id"] == event_id
    ]
    assert decisions
    assert decisions[0]["chosen_action_id"] == result.action_id
    assert decisions[0]["deferred"] is True
    rewards = [r for r in _records(settings, names.rewards, wanted=2) if r["event_id"] == event_id]
    assert {r["type"] for r in rewards} == {"reward", "activation"}
    (reward,) = (r for r in rewards if r["type"] == "reward")
    assert (reward["reward_id"], reward["reward"], reward["action_id"]) == (
        reward_id,
        1.0,
        result.action_id,
    )


def test_rank_with_the_same_event_id_gives_the_same_choice(app_client: Client) -> None:
    """Ranking again with an event id is idempotent: the same draw, the same answer."""
    event_id = f"evt-{uuid.uuid4().hex}"
    actions = ["a", "b", "c"]
    first = app_client.rank(CONTEXT, actions, event_id=event_id)
    again = app_client.rank(CONTEXT, actions, event_id=event_id)
    assert again == first


def test_rank_accepts_models_dicts_and_ids_and_honours_exclusions(app_client: Client) -> None:
    """Actions may be ids, dicts or RankableAction; excluded actions are never ranked."""
    actions = ["a", {"id": "b"}, RankableAction(id="c", features={"item": {"x": 1.0}})]
    for _ in range(5):
        result = app_client.rank(None, actions, excluded_actions=["b"])
        _check_result(result, {"a", "c"})


def test_rank_event_ids_are_generated_when_absent(app_client: Client) -> None:
    """Without an event id the client makes one per call, and the server keeps it."""
    first = app_client.rank(CONTEXT, ACTIONS)
    second = app_client.rank(CONTEXT, ACTIONS)
    assert len(first.event_id) == 32
    assert first.event_id != second.event_id


def test_rank_with_a_named_policy(app_client: Client) -> None:
    """`policy` picks which policy decides."""
    result = app_client.rank(CONTEXT, ACTIONS, policy="greedy")
    assert result.policy == "greedy"


def test_event_is_published(app_client: Client, settings: Settings) -> None:
    """A behaviour event, as keywords or as a model, lands on the events topic."""
    event_id = app_client.event(
        kind="click",
        user_id="u-3f9a",
        session_id="s-1",
        device={"type": "mobile", "os": "iOS 17.4"},
        item_id="article-2",
    )
    model = BehaviourEvent(
        kind="view", user_id="u-3f9a", session_id="s-1", device={"type": "desktop", "os": "Linux"}
    )
    assert app_client.event(model) == model.event_id
    events = _records(settings, topic_names(settings).events, wanted=2)
    assert {event_id, model.event_id} <= {e["event_id"] for e in events}


def test_admin_reads_and_changes_settings(admin_client: Client) -> None:
    """An admin key reads a policy's settings and replaces them; the change sticks."""
    assert {"default", "greedy"} <= {status.name for status in admin_client.list_policies()}
    current = admin_client.get_settings("default")
    changed = current.model_copy(update={"reward_wait_seconds": 42.0, "default_reward": -0.5})
    assert admin_client.set_settings("default", changed) == changed
    assert admin_client.get_settings("default") == changed
    as_dict = admin_client.set_settings("default", current.model_dump())
    assert as_dict == current


def test_admin_reads_and_changes_the_personalizer_configuration(admin_client: Client) -> None:
    """Personalizer's service configuration and learning policy, read and changed by name."""
    current = admin_client.service_configuration("greedy")
    changed = current.model_copy(update={"default_reward": -0.25})
    assert admin_client.set_service_configuration("greedy", changed).default_reward == -0.25
    as_dict = current.model_dump(mode="json", by_alias=True)
    assert admin_client.set_service_configuration("greedy", as_dict).default_reward == (
        current.default_reward
    )
    admin_client.set_learning_policy("greedy", "--cb_explore_adf --epsilon 0.3 -l 0.5")
    assert admin_client.set_learning_policy("greedy", "--cb_explore_adf -l 0.5") is False  # kept
    assert admin_client.set_learning_policy("greedy", "--cb_explore_adf -l 0.25") is True  # reset


def test_a_refused_learning_policy_names_the_option_and_field(admin_client: Client) -> None:
    """Personalizer's error envelope reads as its message and each detail's target."""
    with pytest.raises(BadRequestError) as caught:
        admin_client.set_learning_policy("greedy", "--cb_explore_adf -d log.dsjson")
    assert "'-d'" in caught.value.message
    assert "arguments: " in caught.value.message


def test_ready(app_client: Client, settings: Settings) -> None:
    """The running API reports ready once a stream worker consumes."""
    worker_consumes(settings.redis.url, settings.redis.key_prefix)
    assert app_client.ready() is True


def test_async_client_round_trip(settings: Settings) -> None:
    """AsyncClient ranks, rewards, activates and reads settings through the real app."""

    async def main() -> None:
        async with _asgi_client(settings, APP_KEY) as client:
            event_id = f"evt-{uuid.uuid4().hex}"
            result = await client.rank(CONTEXT, ACTIONS, event_id=event_id, defer_activation=True)
            assert result.event_id == event_id
            _check_result(result, {"article-1", "article-2"})
            reward_id = await client.reward(event_id, 0.5)
            assert len(reward_id) == 32
            await client.activate(event_id)
            assert await client.event(
                kind="purchase",
                user_id="u-1",
                session_id="s-2",
                device={"type": "tablet", "os": "Android 14"},
                value=9.5,
            )
            await asyncio.to_thread(worker_consumes, settings.redis.url, settings.redis.key_prefix)
            assert await client.ready() is True
            current = await client.get_settings("default")
            with pytest.raises(PermissionDeniedError):
                await client.set_settings("default", current)
        async with _asgi_client(settings, ADMIN_KEY) as admin:
            assert await admin.set_settings("default", current) == current
            assert [p.name for p in await admin.list_policies()] == ["default", "greedy"]

    asyncio.run(main())


def test_async_client_resets_lists_exports_and_rolls_back_a_model(settings: Settings) -> None:
    """AsyncClient's model calls: a reset, the kept versions, an export, a rollback."""

    async def main() -> None:
        async with _asgi_client(settings, ADMIN_KEY) as admin:
            first = await admin.reset_model("greedy")
            fresh = await admin.export_model("greedy")
            assert fresh.version == first.model_version
            second = await admin.reset_model("greedy")
            assert second.model_version == first.model_version + 1
            kept = await admin.model_versions("greedy")
            assert [v.version for v in kept.versions[:2]] == [
                second.model_version,
                first.model_version,
            ]
            rolled = await admin.rollback_model("greedy", first.model_version)
            assert rolled.model_version == second.model_version + 1
            assert (await admin.model_properties("greedy")).model_version == rolled.model_version
            again = await admin.export_model("greedy", first.model_version)
            assert (again.version, again.data) == (first.model_version, fresh.data)
            assert (await admin.model_versions("greedy")).versions[0].restored_from == (
                first.model_version
            )
            with pytest.raises(NotFoundError, match="keeps no model version 999"):
                await admin.rollback_model("greedy", 999)

    asyncio.run(main())


# -- against the real API: errors ----------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, "not-a-key-" + "x" * 20])
def test_missing_or_unknown_key_is_401(base_url: str, api_key: str | None) -> None:
    """No key, or one the server does not know, raises AuthenticationError with its message."""
    with Client(base_url, api_key=api_key) as client, pytest.raises(AuthenticationError) as caught:
        client.rank(CONTEXT, ACTIONS)
    assert caught.value.status == 401
    assert caught.value.message.startswith(("an API key is required", "unknown API key"))
    assert str(caught.value) == f"HTTP 401: {caught.value.message}"


def test_app_key_changing_settings_is_403(app_client: Client) -> None:
    """An app key may read settings but not change them: 403 with the server's message."""
    current = app_client.get_settings("default")
    with pytest.raises(PermissionDeniedError) as caught:
        app_client.set_settings("default", current)
    assert caught.value.status == 403
    assert caught.value.message == (
        "changing settings needs an admin key; this key's role is 'app'"
    )


def test_settings_the_policy_cannot_apply_are_422(admin_client: Client) -> None:
    """Exploration a policy does not have is refused with the server's reason."""
    current = admin_client.get_settings("default")
    changed = current.model_copy(update={"exploration": {"no_such_knob": 1.0}})
    with pytest.raises(UnprocessableRequestError, match="no_such_knob") as caught:
        admin_client.set_settings("default", changed)
    assert caught.value.errors
    assert admin_client.get_settings("default") == current


def test_over_the_server_limit_is_422_with_its_message(app_client: Client) -> None:
    """The server's own limits apply: its 422 message names the field and the rule."""
    actions = [f"a{i}" for i in range(MAX_ACTIONS + 1)]
    with pytest.raises(UnprocessableRequestError) as caught:
        app_client.rank(CONTEXT, actions)
    error = caught.value
    assert error.status == 422
    assert f"at most {MAX_ACTIONS} actions allowed, got {MAX_ACTIONS + 1}" in error.message
    assert "actions" in error.message


def test_unknown_policy_is_an_api_error(app_client: Client, admin_client: Client) -> None:
    """A policy the server does not serve is refused with the server's message."""
    with pytest.raises((NotFoundError, UnprocessableRequestError)) as caught:
        app_client.rank(CONTEXT, ACTIONS, policy="no-such-policy")
    assert "no-such-policy" in caught.value.message
    with pytest.raises(NotFoundError):
        admin_client.get_settings("no-such-policy")


def test_errors_share_one_base(app_client: Client) -> None:
    """Every API error is a ClientError carrying the status."""
    with pytest.raises(ClientError) as caught:
        app_client.set_settings("default", PolicySettings(spec="uniform"))
    assert isinstance(caught.value, APIError)
    assert caught.value.status == 403


def test_async_errors_are_the_same(settings: Settings) -> None:
    """AsyncClient raises the same errors: 401, 422."""

    async def main() -> None:
        async with _asgi_client(settings, None) as anonymous:
            with pytest.raises(AuthenticationError):
                await anonymous.rank(CONTEXT, ACTIONS)
        async with _asgi_client(settings, APP_KEY) as client:
            with pytest.raises(UnprocessableRequestError, match="at most"):
                await client.rank(CONTEXT, [f"a{i}" for i in range(MAX_ACTIONS + 1)])

    asyncio.run(main())


# -- retries ------------------------------------------------------------------------------


def test_connection_failure_is_retried_with_the_same_ids(base_url: str) -> None:
    """A reward whose connection failed is sent again, with the same reward id."""
    transport = _CountingTransport(failures=2)
    with Client(base_url, api_key=APP_KEY, transport=transport, retry_backoff=0.0) as client:
        result = client.rank(CONTEXT, ACTIONS)
        transport.bodies.clear()
        transport.failures = 2
        reward_id = client.reward(result.event_id, 1.0)
    assert len(transport.bodies) == 3
    assert len(set(transport.bodies)) == 1
    assert json.loads(transport.bodies[0])["reward_id"] == reward_id


def test_retries_are_bounded() -> None:
    """A server that cannot be reached is tried 1 + max_retries times, then TransportError."""
    transport = _CountingTransport()
    port = free_port()  # nothing listens there
    with (
        Client(
            f"http://127.0.0.1:{port}", api_key=APP_KEY, transport=transport, retry_backoff=0.0
        ) as client,
        pytest.raises(TransportError, match="after 3 tries") as caught,
    ):
        client.activate("evt-1")
    assert len(transport.bodies) == 3
    assert caught.value.status is None


def test_no_retry_when_max_retries_is_zero() -> None:
    """`max_retries=0` sends once."""
    transport = _CountingTransport()
    with (
        Client(
            f"http://127.0.0.1:{free_port()}", api_key=APP_KEY, transport=transport, max_retries=0
        ) as client,
        pytest.raises(TransportError),
    ):
        client.activate("evt-1")
    assert len(transport.bodies) == 1


def test_a_timeout_is_not_retried() -> None:
    """A server that accepts but never answers gives ClientTimeoutError after one try."""
    transport = _CountingTransport()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with (
            Client(url, api_key=APP_KEY, transport=transport, timeout=0.3) as client,
            pytest.raises(ClientTimeoutError) as caught,
        ):
            client.activate("evt-1")
    assert isinstance(caught.value, TimeoutError)
    assert len(transport.bodies) == 1


# -- checked before sending ----------------------------------------------------------------


@pytest.fixture
def offline() -> Iterator[tuple[Client, _CountingTransport]]:
    """A client whose transport counts sends; nothing listens at its URL."""
    transport = _CountingTransport()
    with Client(f"http://127.0.0.1:{free_port()}", api_key=APP_KEY, transport=transport) as client:
        yield client, transport


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"base_url": "localhost:8000"}, r"`base_url` must be an http\(s\) URL"),
        ({"base_url": "ftp://host"}, r"`base_url` must be an http\(s\) URL"),
        ({"api_key": ""}, "`api_key` must be a non-empty string"),
        ({"timeout": 0}, "`timeout` must be a finite number of seconds > 0"),
        ({"timeout": math.nan}, "`timeout` must be a finite number"),
        ({"timeout": "5"}, "`timeout` must be a finite number"),
        ({"max_retries": -1}, r"`max_retries` must be an int in \[0, 10\], got -1"),
        ({"max_retries": 11}, r"`max_retries` must be an int in \[0, 10\], got 11"),
        ({"max_retries": True}, r"`max_retries` must be an int"),
        ({"retry_backoff": -0.1}, r"`retry_backoff` must be a number of seconds in \[0, 60\]"),
    ],
)
def test_bad_constructor_arguments(arguments: dict[str, Any], match: str) -> None:
    """Constructor arguments are checked; the message names the argument and the rule."""
    options: dict[str, Any] = {"base_url": "http://localhost:8000", **arguments}
    base_url = options.pop("base_url")
    with pytest.raises(InvalidArgumentError, match=match):
        Client(base_url, **options)
    with pytest.raises(InvalidArgumentError, match=match):
        AsyncClient(base_url, **options)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"actions": []}, "actions: at least 1 action required, got 0"),
        ({"actions": "ab"}, "`actions` must be a list of actions"),
        ({"actions": [3]}, r"`actions`\[0\] must be an action id, a dict"),
        ({"actions": ["a", "a"]}, r"actions: action ids must be distinct, got 'a' at \[0\] and"),
        ({"actions": ["a b"]}, r"actions\[0\]\.id: action ids must match"),
        ({"context": {"user": {"tags": ["x"]}}}, "context.user.tags: feature values must be"),
        ({"context": {"user": {"x": math.inf}}}, "feature values must be finite numbers"),
        ({"excluded_actions": ["a", "b"]}, "at least one offered action must remain"),
        ({"excluded_actions": ["z"]}, "excluded actions must be among the offered action ids"),
        ({"excluded_actions": "a"}, "`excluded_actions` must be a list of action ids"),
        ({"event_id": "has space"}, "event_id: event ids must match"),
        ({"defer_activation": "yes"}, "`defer_activation` must be a bool"),
        ({"policy": "a/b"}, "`policy`: policy names must match"),
        ({"session_id": ""}, "`session_id`: session ids must match"),
        ({"device_id": "d 1"}, "`device_id`: device ids must match"),
        ({"device_id": "d" * 1025}, "`device_id`: device ids must be at most 1024 characters"),
        ({"user_id": ""}, "`user_id`: String should have at least 1 character"),
        ({"user_id": "u" * 257}, "`user_id`: String should have at most 256 characters"),
        ({"user_id": "a\nb"}, "`user_id`: Value error, user ids must be printable text"),
    ],
)
def test_bad_rank_arguments_are_not_sent(
    offline: tuple[Client, _CountingTransport], arguments: dict[str, Any], match: str
) -> None:
    """A rank breaking a rule raises InvalidArgumentError naming it, and sends nothing."""
    client, transport = offline
    call: dict[str, Any] = {"context": CONTEXT, "actions": ["a", "b"], **arguments}
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        client.rank(call.pop("context"), call.pop("actions"), **call)
    assert isinstance(caught.value, ValueError)
    assert caught.value.status is None
    assert transport.bodies == []


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"value": math.nan}, "`value` must be a finite number"),
        ({"value": math.inf}, "`value` must be a finite number"),
        ({"value": "1"}, "`value` must be a finite number"),
        ({"value": True}, "`value` must be a finite number"),
        ({"event_id": ""}, "event_id: event ids must match"),
        ({"reward_id": "bad id"}, "reward_id: event ids must match"),
        ({"action_id": "bad id"}, "action_id: action ids must match"),
    ],
)
def test_bad_reward_arguments_are_not_sent(
    offline: tuple[Client, _CountingTransport], arguments: dict[str, Any], match: str
) -> None:
    """A reward breaking a rule raises InvalidArgumentError naming it, and sends nothing."""
    client, transport = offline
    call: dict[str, Any] = {"event_id": "evt-1", "value": 1.0, **arguments}
    with pytest.raises(InvalidArgumentError, match=match):
        client.reward(call.pop("event_id"), call.pop("value"), **call)
    assert transport.bodies == []


def test_other_bad_arguments_are_not_sent(offline: tuple[Client, _CountingTransport]) -> None:
    """Activate, event and settings calls check their arguments before sending."""
    client, transport = offline
    with pytest.raises(InvalidArgumentError, match="`event_id`: event ids must match"):
        client.activate("no spaces please")
    with pytest.raises(InvalidArgumentError, match="`event_id`: Input should be a valid string"):
        client.activate(7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="invalid behaviour event: kind: Field required"):
        client.event(user_id="u-1", session_id="s-1", device={"type": "mobile", "os": "iOS"})
    model = BehaviourEvent(
        kind="view", user_id="u-1", session_id="s-1", device={"type": "mobile", "os": "iOS"}
    )
    with pytest.raises(InvalidArgumentError, match="not both"):
        client.event(model, item_id="x")
    with pytest.raises(InvalidArgumentError, match="`event` must be a BehaviourEvent or a dict"):
        client.event(["kind"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="`policy`: policy names must match"):
        client.get_settings("../admin")
    with pytest.raises(InvalidArgumentError, match="exploration_floor: Input should be greater"):
        client.set_settings("default", {"spec": "uniform", "exploration_floor": 0})
    with pytest.raises(InvalidArgumentError, match="`settings` must be a PolicySettings"):
        client.set_settings("default", "uniform")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="version: Input should be greater than or"):
        client.rollback_model("default", 0)
    with pytest.raises(InvalidArgumentError, match="version: Input should be a valid integer"):
        client.rollback_model("default", True)
    with pytest.raises(InvalidArgumentError, match="version: Input should be a valid integer"):
        client.export_model("default", "3")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="`model` must be the bytes of a VW model"):
        client.import_model("default", b"")
    assert transport.bodies == []


def test_client_limits_are_applied_when_given() -> None:
    """Limits passed to the client are checked before sending."""
    with (
        Client("http://localhost:8000", limits=Limits(max_actions=2)) as client,
        pytest.raises(InvalidArgumentError, match="at most 2 actions allowed, got 3"),
    ):
        client.rank(CONTEXT, ["a", "b", "c"])


def test_id_arguments_follow_the_client_limits() -> None:
    """An id argument is checked against the client's limits, as the server checks it."""
    with Client("http://localhost:8000", limits=Limits(max_id_length=40)) as client:
        with pytest.raises(InvalidArgumentError, match="at most 40 characters, got 41") as caught:
            client.get_settings("p" * 41)
        assert [entry["type"] for entry in caught.value.errors] == ["id_too_long"]
        with pytest.raises(InvalidArgumentError, match="`session_id`: session ids must be at"):
            client.rank(CONTEXT, ["a", "b"], session_id="s" * 41)


def test_invalid_argument_error_carries_the_entries() -> None:
    """InvalidArgumentError from a schema keeps pydantic's entries."""
    with Client("http://localhost:8000") as client, pytest.raises(InvalidArgumentError) as caught:
        client.rank(CONTEXT, [])
    assert [entry["loc"] for entry in caught.value.errors] == [("actions",)]


def test_repr_hides_the_api_key() -> None:
    """A client's repr names its URL, never its key."""
    with Client("http://localhost:8000", api_key=APP_KEY) as client:
        assert repr(client) == "Client('http://localhost:8000')"
        assert APP_KEY not in repr(client._core)


def _answering(body: dict[str, Any]) -> Client:
    """A client whose every call is answered 200 with `body`."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    return Client("http://localhost:8000", api_key=APP_KEY, transport=transport)


RANK_ANSWER: dict[str, Any] = {
    "event_id": "e1",
    "policy": "default",
    "model_version": "3",
    "chosen_action_id": "b",
    "probability": 0.75,
    "ranking": [{"id": "b", "probability": 0.75}, {"id": "a", "probability": 0.25}],
    "deferred": False,
}


def test_rank_answers_with_fields_the_client_does_not_know_are_read() -> None:
    """A newer server's extra answer fields are ignored; the known ones are read."""
    with _answering({**RANK_ANSWER, "added_later": {"x": 1}}) as client:
        result = client.rank(CONTEXT, ["a", "b"])
    assert (result.event_id, result.action_id, result.probability) == ("e1", "b", 0.75)
    assert [entry.id for entry in result.ranking] == ["b", "a"]
    assert result.explanation is None


def test_a_rank_answer_of_another_shape_is_an_api_error() -> None:
    """An answer missing a field of the rank answer raises APIError naming the field."""
    broken = {key: value for key, value in RANK_ANSWER.items() if key != "chosen_action_id"}
    with (
        _answering(broken) as client,
        pytest.raises(APIError, match=r"not a rank result \(chosen_action_id: Field required\)"),
    ):
        client.rank(CONTEXT, ["a", "b"])
