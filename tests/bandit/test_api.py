"""The HTTP API end to end: a real uvicorn server, the real broker and Redis.

Most tests share one server (module fixture) and each uses a policy of its own; the
tests that take Redis or the broker away run a private app in-process against a
private server they stop.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from bandit.api.app import create_app
from bandit.ops.runtime import LocalServices, ServiceProcess
from bandit.service.state import StateStore
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    Limits,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from bandit.wire.schemas import Activation, Decision, RewardReported
from policies import Action, make_policy
from tests.bandit.serving import served
from tests.conftest import worker_consumes

T = TypeVar("T")

APP_KEY = "app-key-main-0123456789"
ADMIN_KEY = "admin-key-0123456789abc"
OTHER_KEY = "app-key-other-012345678"
GHOST_KEY = "app-key-ghost-012345678"
APP = {"X-API-Key": APP_KEY}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SUBSCRIPTION = {"Ocp-Apim-Subscription-Key": APP_KEY}
USER = {"user": {"tier": "gold", "returning": True}}
ACTIONS = [{"id": "a"}, {"id": "b", "features": {"item": {"price": 9.5}}}, {"id": "c"}]


def _settings(broker: str, redis_url: str, **kafka: Any) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix, **kafka),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=APP_KEY, role="app", policies=("main",)),
                ApiKey(key=OTHER_KEY, role="app", policies=("other", "main")),
                ApiKey(key=GHOST_KEY, role="app", policies=("ghost",)),
                ApiKey(key=ADMIN_KEY, role="admin"),
            ),
            model_poll_seconds=0.05,
        ),
        limits=Limits(max_actions=4),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-api-tests-0123"),
        policies={
            "main": "vw-epsilon",
            "other": "uniform",
            "tuned": "vw-epsilon",
            "swapped": "vw-epsilon",
        },
    )


@dataclass(frozen=True)
class Server:
    """A running API: its base URL and settings."""

    url: str
    settings: Settings


@contextmanager
def serve_api(broker: str, redis_url: str, name: str) -> Iterator[Server]:
    """Serve the API of `_settings` by uvicorn on a free port, in a thread named `name`."""
    settings = _settings(broker, redis_url)
    with served(create_app(settings), name) as url:
        yield Server(url, settings)


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API served by uvicorn on a free port, in a thread, for this module."""
    with serve_api(broker, redis_url, "api-under-test") as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the shared server."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _run(body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body()

    return asyncio.run(main())


async def _consume(
    broker: str, topic: str, keys: set[str], timeout: float = 15.0, at_least: int = 1
) -> list[bytes]:
    """Read a topic from the start until `at_least` records of every key in `keys` are seen."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[bytes] = []
    seen: dict[str, int] = dict.fromkeys(keys, 0)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while min(seen.values(), default=at_least) < at_least and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for record in (r for batch in batches.values() for r in batch):
                key = record.key.decode()
                if key in keys:
                    seen[key] += 1
                    found.append(record.value)
    finally:
        await consumer.stop()
    return found


def _read(broker: str, topic: str, keys: set[str], at_least: int = 1) -> list[bytes]:
    return _run(lambda: _consume(broker, topic, keys, at_least=at_least))


def _trained(best: str, examples: int) -> bytes:
    """A vw-epsilon snapshot that learned `best` is the only rewarding action."""
    policy = make_policy("vw-epsilon")
    actions = [Action(a["id"]) for a in ACTIONS]
    for i in range(examples):
        chosen = i % len(actions)
        reward = float(actions[chosen].id == best)
        policy.learn({"user": {"tier": "gold", "returning": 1.0}}, actions, chosen, reward, 1 / 3)
    return policy.snapshot()


def _save_model(settings: Settings, policy: str, snapshot: bytes, version: int) -> None:
    async def body() -> None:
        client = Redis.from_url(settings.redis.url)
        try:
            store = StateStore(client, settings.redis.key_prefix)
            await store.save_model(policy, snapshot, version, {0: version})
        finally:
            await client.aclose()

    _run(body)


def _rank(client: httpx.Client, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/rank", json={"context": USER, "actions": ACTIONS, **extra}, headers=headers
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus exposition text, or None if absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def _policy_info(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get("/v1/policies", headers=ADMIN)
    assert response.status_code == 200, response.text
    return next(p for p in response.json()["policies"] if p["name"] == name)


# -- rank, reward, activate ------------------------------------------------------------


def test_rank_answers_a_distribution_and_logs_the_same_decision(
    client: httpx.Client, server: Server, broker: str
) -> None:
    """Rank returns probabilities summing to 1, and the decisions topic holds that decision."""
    answer = _rank(client, APP, excluded_actions=["c"], event_id="evt-rank-1")
    ranking = answer["ranking"]
    assert ranking[0]["id"] == answer["chosen_action_id"]
    assert sorted(entry["id"] for entry in ranking) == ["a", "b"]
    assert all(0 < entry["probability"] <= 1 for entry in ranking)
    assert abs(sum(entry["probability"] for entry in ranking) - 1) < 1e-9
    assert (answer["event_id"], answer["policy"], answer["model_version"]) == (
        "evt-rank-1",
        "main",
        "0",
    )
    topic = f"{server.settings.kafka.topic_prefix}.decisions"
    [logged] = [Decision.model_validate_json(v) for v in _read(broker, topic, {"evt-rank-1"})]
    assert logged.event_id == answer["event_id"]
    assert logged.chosen_action_id == answer["chosen_action_id"]
    assert logged.probability == answer["probability"]
    assert [e.model_dump() for e in logged.ranking] == ranking
    assert (logged.policy, logged.model_version) == ("main", "0")
    assert logged.context == {"user": {"tier": "gold", "returning": 1.0}}
    assert [a.id for a in logged.actions] == ["a", "b"]


def test_native_reward_activate_and_events_reach_their_topics(
    client: httpx.Client, server: Server, broker: str
) -> None:
    """Rewards and activations go to ``rewards`` and events to ``events``, keyed as documented."""
    prefix = server.settings.kafka.topic_prefix
    reward = client.post("/v1/reward", json={"event_id": "evt-n1", "reward": 0.5}, headers=APP)
    assert reward.status_code == 202, reward.text
    reward_id = reward.json()["reward_id"]
    activation = client.post("/v1/activate", json={"event_id": "evt-n2"}, headers=APP)
    assert activation.status_code == 202, activation.text
    event = {
        "kind": "click",
        "user_id": "u-hash-1",
        "session_id": "sess-1",
        "device": {"type": "mobile", "os": "iOS 17"},
    }
    assert client.post("/v1/events", json=event, headers=APP).status_code == 202
    records = _read(broker, f"{prefix}.rewards", {"evt-n1", "evt-n2"})
    parsed = {type(r).__name__: r for r in map(_rewards_record, records)}
    assert parsed["RewardReported"] == RewardReported.model_validate(
        {**parsed["RewardReported"].model_dump(), "reward": 0.5, "reward_id": reward_id}
    )
    assert parsed["Activation"].event_id == "evt-n2"
    assert len(_read(broker, f"{prefix}.events", {"sess-1"})) == 1


def _rewards_record(value: bytes) -> RewardReported | Activation:
    if b'"type":"activation"' in value:
        return Activation.model_validate_json(value)
    return RewardReported.model_validate_json(value)


def test_personalizer_rank_reward_activate_map_to_our_records(
    client: httpx.Client, server: Server, broker: str
) -> None:
    """Personalizer-shaped calls work with its header and map to our decision and rewards."""
    body = {
        "contextFeatures": [
            {"timeOfDay": "Morning"},
            {"user": {"tier": "gold", "profile": {"age": 31}}},
            {"device": {"mobile": True}},
        ],
        "actions": [
            {"id": "news", "features": [{"topic": "news"}, {"item": {"len": 3}}]},
            {"id": "sports", "features": [{"topic": "sports"}]},
            {"id": "weather"},
        ],
        "excludedActions": ["weather"],
        "eventId": "pz-1",
        "deferActivation": True,
    }
    response = client.post("/personalizer/v1.0/rank", json=body, headers=SUBSCRIPTION)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) == {"ranking", "eventId", "rewardActionId"}
    assert answer["eventId"] == "pz-1"
    assert answer["ranking"][0]["id"] == answer["rewardActionId"]
    ranked, excluded = answer["ranking"][:2], answer["ranking"][2:]
    assert sorted(entry["id"] for entry in ranked) == ["news", "sports"]
    assert abs(sum(entry["probability"] for entry in ranked) - 1) < 1e-9
    assert excluded == [{"id": "weather", "probability": 0.0}]  # as Personalizer ranks it
    assert response.headers["X-Streambandit-Policy"] == "main"
    reward = client.post(
        "/personalizer/v1.0/events/pz-1/reward", json={"value": 1}, headers=SUBSCRIPTION
    )
    assert (reward.status_code, reward.content) == (204, b"")
    activate = client.post("/personalizer/v1.0/events/pz-1/activate", headers=SUBSCRIPTION)
    assert (activate.status_code, activate.content) == (204, b"")

    prefix = server.settings.kafka.topic_prefix
    [logged] = [
        Decision.model_validate_json(v) for v in _read(broker, f"{prefix}.decisions", {"pz-1"})
    ]
    assert logged.context == {
        "default": {"timeOfDay": "Morning"},
        "user": {"tier": "gold", "profile.age": 31},
        "device": {"mobile": 1.0},
    }
    assert [(a.id, a.features) for a in logged.actions] == [
        ("news", {"default": {"topic": "news"}, "item": {"len": 3}}),
        ("sports", {"default": {"topic": "sports"}}),
    ]
    assert logged.deferred
    assert logged.chosen_action_id == answer["rewardActionId"]
    rewards = [_rewards_record(v) for v in _read(broker, f"{prefix}.rewards", {"pz-1"})]
    deadline = time.monotonic() + 10
    while len(rewards) < 2 and time.monotonic() < deadline:
        rewards = [_rewards_record(v) for v in _consume_all(broker, f"{prefix}.rewards", "pz-1")]
    kinds = sorted((type(r).__name__, getattr(r, "reward", None)) for r in rewards)
    assert kinds == [("Activation", None), ("RewardReported", 1.0)]


def _consume_all(broker: str, topic: str, key: str) -> list[bytes]:
    async def body() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=1000)
        finally:
            await consumer.stop()
        return [r.value for batch in batches.values() for r in batch if r.key == key.encode()]

    return _run(body)


# -- errors ----------------------------------------------------------------------------

RANK = {"context": USER, "actions": ACTIONS}
PZ_RANK = {"contextFeatures": [{"x": 1}], "actions": [{"id": "a"}, {"id": "b"}]}


@dataclass(frozen=True)
class Case:
    """One bad request and what the answer must say."""

    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    says: str
    where: str | None = None


CASES = [
    Case("no key", "POST", "/v1/rank", {}, RANK, 401, "an API key is required"),
    Case("unknown key", "POST", "/v1/rank", {"X-API-Key": "x" * 20}, RANK, 401, "unknown API key"),
    Case(
        "not bearer",
        "POST",
        "/v1/rank",
        {"Authorization": "Basic abc"},
        RANK,
        401,
        "'Bearer <key>'",
    ),
    Case(
        "policy not the key's",
        "POST",
        "/v1/rank",
        APP,
        {**RANK, "policy": "other"},
        403,
        "may not use policy 'other'; it may use ['main']",
    ),
    Case("policy not served", "POST", "/v1/rank", APP, {**RANK, "policy": "nope"}, 404, "'nope'"),
    Case(
        "key with no served policy",
        "POST",
        "/v1/reward",
        {"X-API-Key": GHOST_KEY},
        {"event_id": "e", "reward": 1},
        403,
        "may use none of the served policies",
    ),
    Case(
        "app key changes settings",
        "PUT",
        "/v1/policies/main/settings",
        APP,
        {"spec": "vw-epsilon", "exploration": {"epsilon": 0.5}},
        403,
        "needs an admin key; this key's role is 'app'",
    ),
    Case(
        "settings of another policy",
        "GET",
        "/v1/policies/tuned/settings",
        APP,
        None,
        403,
        "'tuned'",
    ),
    Case(
        "no actions", "POST", "/v1/rank", APP, {"actions": []}, 422, "at least 1 action", "actions"
    ),
    Case(
        "more actions than the configured limit",
        "POST",
        "/v1/rank",
        APP,
        {"actions": [{"id": f"a{i}"} for i in range(5)]},
        422,
        "at most 4 actions allowed, got 5",
        "actions",
    ),
    Case(
        "unknown field", "POST", "/v1/rank", APP, {**RANK, "surprise": 1}, 422, "Extra", "surprise"
    ),
    Case("not JSON", "POST", "/v1/rank", APP, b"{nope", 422, "Invalid JSON"),
    Case(
        "body too large",
        "POST",
        "/v1/rank",
        APP,
        b" " * (1024 * 1024 + 1),
        413,
        "at most 1048576 bytes (settings.api.max_body_bytes)",
    ),
    Case(
        "bad session id",
        "POST",
        "/v1/rank",
        APP,
        {**RANK, "session_id": "a b"},
        422,
        "session ids must match",
        "session_id",
    ),
    Case(
        "reward not a number",
        "POST",
        "/v1/reward",
        APP,
        {"event_id": "e", "reward": "lots"},
        422,
        "valid number",
        "reward",
    ),
    Case(
        "spec change",
        "PUT",
        "/v1/policies/tuned/settings",
        ADMIN,
        {"spec": "uniform"},
        422,
        "`spec` must stay 'vw-epsilon'",
        "spec",
    ),
    Case(
        "exploration not live",
        "PUT",
        "/v1/policies/tuned/settings",
        ADMIN,
        {"spec": "vw-epsilon", "exploration": {"gamma_scale": 2}},
        422,
        "cannot change 'gamma_scale' while running",
        "exploration",
    ),
    Case(
        "personalizer no key",
        "POST",
        "/personalizer/v1.0/rank",
        {},
        PZ_RANK,
        401,
        "an API key is required",
    ),
    Case(
        "personalizer policy not the key's",
        "POST",
        "/personalizer/v1.0/rank?policy=other",
        SUBSCRIPTION,
        PZ_RANK,
        403,
        "may not use policy 'other'",
    ),
    Case(
        "personalizer bad action id",
        "POST",
        "/personalizer/v1.0/rank",
        SUBSCRIPTION,
        {**PZ_RANK, "actions": [{"id": "a"}, {"id": "b\nc"}]},
        400,
        "action ids must be printable",
        "actions[1].id",
    ),
    Case(
        "personalizer non-finite action feature",
        "POST",
        "/personalizer/v1.0/rank",
        SUBSCRIPTION,
        b'{"actions": [{"id": "a", "features": [{"p": {"x": 1e999}}]}]}',
        400,
        "finite",
        "actions[0].features[0].p.x",
    ),
    Case(
        "personalizer reward value",
        "POST",
        "/personalizer/v1.0/events/e1/reward",
        SUBSCRIPTION,
        {"value": "high"},
        400,
        "valid number",
        "value",
    ),
    Case(
        "personalizer bad event id",
        "POST",
        "/personalizer/v1.0/events/bad%09id/activate",
        SUBSCRIPTION,
        None,
        400,
        "event ids must be printable",
        "path.eventId",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_requests_get_a_status_and_a_message_that_names_the_problem(
    client: httpx.Client, case: Case
) -> None:
    """401, 403, 404 and 422 answers say what is missing or which field breaks which rule."""
    content = case.body if isinstance(case.body, bytes) else None
    payload = None if isinstance(case.body, bytes) else case.body
    headers = {**case.headers, "Content-Type": "application/json"} if content else case.headers
    response = client.request(
        case.method, case.path, json=payload, content=content, headers=headers
    )
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.path.startswith("/personalizer/"):
        error = body["error"]
        text = " ".join([error["message"], *(d["message"] for d in error["details"])])
        where = [d["target"] for d in error["details"]]
    elif isinstance(body["detail"], list):
        text = " ".join(d["msg"] for d in body["detail"])
        where = [".".join(map(str, d["loc"])) for d in body["detail"]]
    else:
        text, where = body["detail"], []
    assert case.says in text
    if case.where is not None:
        assert case.where in where
    if case.status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_validation_errors_do_not_echo_user_ids(client: httpx.Client) -> None:
    """A user id that breaks a rule is named as the problem but never echoed back."""
    event = {
        "kind": "click",
        "user_id": "jane.doe@example.com\n",  # not printable
        "session_id": "s1",
        "device": {"type": "mobile", "os": "iOS"},
    }
    response = client.post("/v1/events", json=event, headers=APP)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["user_id"]
    assert "jane" not in response.text


# -- settings and hot swap --------------------------------------------------------------


def _top(answer: dict[str, Any]) -> tuple[str, float]:
    best = max(answer["ranking"], key=lambda entry: entry["probability"])
    return best["id"], best["probability"]


def _wait_for_model(client: httpx.Client, policy: str, version: str) -> dict[str, Any]:
    """Rank until the answer comes from model `version` (a few polls), or fail."""
    deadline = time.monotonic() + 15
    while True:
        answer = _rank(client, ADMIN, policy=policy)
        if answer["model_version"] == version:
            return answer
        assert time.monotonic() < deadline, f"{policy} still serves {answer['model_version']}"
        time.sleep(0.05)


def test_admin_settings_change_exploration_live_and_keep_the_model(
    client: httpx.Client, server: Server
) -> None:
    """An admin PUT changes exploration at once; the model and what it learned stay."""
    _save_model(server.settings, "tuned", _trained("b", 60), 3)
    before = _wait_for_model(client, "tuned", "3")
    assert _top(before)[0] == "b"
    assert _top(before)[1] == pytest.approx(1 - 0.05 * 2 / 3)
    refused = client.put(
        "/v1/policies/tuned/settings",
        json={"spec": "vw-epsilon", "exploration": {"epsilon": 0.6}},
        headers={"X-API-Key": OTHER_KEY},
    )
    assert refused.status_code == 403
    changed = client.put(
        "/v1/policies/tuned/settings",
        json={"spec": "vw-epsilon", "exploration": {"epsilon": 0.6}},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["exploration"] == {"epsilon": 0.6}
    assert changed.headers["ETag"] == '"2"'
    after = _rank(client, ADMIN, policy="tuned")
    assert after["model_version"] == "3"
    assert _top(after) == ("b", pytest.approx(1 - 0.6 * 2 / 3))
    info = _policy_info(client, "tuned")
    assert (info["model_version"], info["learned_examples"], info["settings_version"]) == (3, 60, 2)
    read = client.get("/v1/policies/tuned/settings", headers=ADMIN)
    assert (read.json()["exploration"], read.headers["ETag"]) == ({"epsilon": 0.6}, '"2"')


def test_a_saved_model_is_hot_swapped_in(client: httpx.Client, server: Server) -> None:
    """A snapshot saved to Redis is served within a few polls, with its version."""
    assert _rank(client, ADMIN, policy="swapped")["model_version"] == "0"
    _save_model(server.settings, "swapped", _trained("c", 90), 7)
    answer = _wait_for_model(client, "swapped", "7")
    assert _top(answer)[0] == "c"
    assert _policy_info(client, "swapped")["learned_examples"] == 90


# -- operations -------------------------------------------------------------------------


def test_metrics_expose_the_named_metrics(client: httpx.Client, server: Server) -> None:
    """/metrics has decisions, route latency, model version/age, exploration, degraded, counters."""

    async def count() -> None:
        redis = Redis.from_url(server.settings.redis.url)
        try:
            store = StateStore(redis, server.settings.redis.key_prefix)
            await store.count("other", {"rewards_late": 2, "rewards_joined": 5})
            await store.count("_streams", {"dead_letters": 1})
        finally:
            await redis.aclose()

    _run(count)
    _rank(client, {"X-API-Key": OTHER_KEY}, policy="other")
    text = client.get("/metrics").text
    assert (_metric(text, "streambandit_decisions_total", policy="other") or 0) >= 1
    assert _metric(text, "streambandit_request_duration_seconds_count", route="/v1/rank")
    assert _metric(text, "streambandit_model_version", policy="other") == 0
    assert (_metric(text, "streambandit_model_age_seconds", policy="other") or -1) >= 0
    share = _metric(text, "streambandit_exploration_share", policy="other")
    assert share is not None
    assert 0 <= share <= 1
    assert _metric(text, "streambandit_degraded") == 0
    # (the decision just made may still wait for the broker's acknowledgement)
    assert _metric(text, "streambandit_producer_buffered") in (0, 1)
    assert (
        _metric(text, "streambandit_stream_counter_total", scope="other", counter="rewards_late")
        == 2
    )
    assert (
        _metric(text, "streambandit_stream_counter_total", scope="_streams", counter="dead_letters")
        == 1
    )


def test_health_readiness_and_documentation(client: httpx.Client, server: Server) -> None:
    """Health and readiness answer without a key; OpenAPI documents every route and body."""
    assert client.get("/healthz").json() == {"status": "alive"}
    not_yet = client.get("/readyz")
    assert not_yet.status_code == 503  # no stream worker consumes yet
    assert any("no stream worker has consumed" in r for r in not_yet.json()["reasons"])
    worker_consumes(server.settings.redis.url, server.settings.redis.key_prefix)
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    openapi = client.get("/openapi.json").json()
    assert {
        "/v1/rank",
        "/v1/reward",
        "/v1/activate",
        "/v1/events",
        "/v1/policies",
        "/v1/policies/{name}/settings",
        "/personalizer/v1.0/rank",
        "/personalizer/v1.0/events/{eventId}/reward",
        "/personalizer/v1.0/events/{eventId}/activate",
    } <= set(openapi["paths"])
    body = openapi["paths"]["/personalizer/v1.0/rank"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "contextFeatures" in openapi["components"]["schemas"][ref]["properties"]
    assert "NativeRankRequest" in openapi["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# -- losing Redis or the broker ---------------------------------------------------------


@asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process app (lifespan run) and a client of it."""
    app = create_app(settings, shutdown_flush_seconds=1.0)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http


async def _arank(http: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    return await http.post(
        "/v1/rank", json={"context": USER, "actions": ACTIONS, **extra}, headers=APP
    )


def _restart(process: ServiceProcess) -> ServiceProcess:
    again = ServiceProcess(process.name, process.args, process.port, process.log)
    again.start()
    return again


def test_redis_down_rank_still_answers_degraded_and_not_ready(broker: str, tmp_path: Path) -> None:
    """Without Redis rank still answers, degraded is set and /readyz says why; then it recovers."""
    services = LocalServices(Settings(kafka=KafkaSettings(broker=broker)), workdir=tmp_path)
    services.start()
    process = services.processes["redis"]
    restarted: ServiceProcess | None = None
    settings = _settings(broker, services.redis_url)

    async def body() -> None:
        nonlocal restarted
        async with _app(settings) as http:
            assert (await _arank(http, session_id="s1")).status_code == 200
            process.stop()
            answered = await _arank(http, session_id="s1")
            assert answered.status_code == 200, answered.text
            metrics = (await http.get("/metrics")).text
            assert _metric(metrics, "streambandit_degraded") == 1
            assert _metric(metrics, "streambandit_degraded_decisions_total", policy="main") == 1
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert any("redis unreachable" in reason for reason in ready.json()["reasons"])
            restarted = _restart(process)
            deadline = time.monotonic() + 15
            while _metric((await http.get("/metrics")).text, "streambandit_degraded") != 0:
                assert time.monotonic() < deadline, "the engine did not see Redis come back"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(worker_consumes, settings.redis.url, settings.redis.key_prefix)
            assert (await http.get("/readyz")).status_code == 200
            settings_read = await http.get("/v1/policies/main/settings", headers=APP)
            assert settings_read.headers["ETag"] == '"1"'  # stored again in the new Redis

    try:
        _run(body)
    finally:
        if restarted is not None:
            restarted.stop()
        services.stop()


def test_broker_down_rank_buffers_then_flushes_and_refuses_beyond_the_bound(
    redis_url: str, tmp_path: Path
) -> None:
    """Without a broker decisions are buffered (503 past the bound) and flushed when it is back."""
    services = LocalServices(Settings(redis=RedisSettings(url=redis_url)), workdir=tmp_path)
    services.start()
    process = services.processes["broker"]
    restarted: ServiceProcess | None = None
    settings = _settings(services.broker, redis_url, producer_buffer=3)
    topic = f"{settings.kafka.topic_prefix}.decisions"

    async def body() -> set[str]:
        nonlocal restarted
        async with _app(settings) as http:
            assert (await _arank(http, event_id="up-0")).status_code == 200
            deadline = time.monotonic() + 10
            while _metric((await http.get("/metrics")).text, "streambandit_producer_buffered"):
                assert time.monotonic() < deadline, "up-0 was never acknowledged"
                await asyncio.sleep(0.01)
            process.kill()  # as a crash would (SIGTERM makes tansu linger)
            for i in (1, 2, 3):
                answered = await _arank(http, event_id=f"down-{i}")
                assert answered.status_code == 200, answered.text
            refused = await _arank(http, event_id="down-4")
            assert refused.status_code == 503
            assert "producer buffer is full (3 records" in refused.json()["detail"]
            assert refused.headers["Retry-After"] == "1"
            metrics = (await http.get("/metrics")).text
            assert _metric(metrics, "streambandit_producer_buffered") == 3
            assert _metric(metrics, "streambandit_producer_rejected_total") == 1
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert any("broker unreachable" in reason for reason in ready.json()["reasons"])
            restarted = _restart(process)
            deadline = time.monotonic() + 20
            while _metric((await http.get("/metrics")).text, "streambandit_producer_buffered"):
                assert time.monotonic() < deadline, "the buffer was not flushed"
                await asyncio.sleep(0.05)
            keys = {"down-1", "down-2", "down-3"}
            found = await _consume(services.broker, topic, keys)
            return {Decision.model_validate_json(value).event_id for value in found}

    try:
        delivered = _run(body)
    finally:
        if restarted is not None:
            restarted.stop()
        services.stop()
    assert delivered == {"down-1", "down-2", "down-3"}
