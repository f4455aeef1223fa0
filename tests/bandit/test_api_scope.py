"""Keys scoped to policies act only on their policies' decisions, on every feedback route.

A real uvicorn server, the real broker and Redis. A key scoped to ``main`` may not
reward or activate a decision of ``other``: refused with 403 naming the policy when the
join already holds the decision, and otherwise produced with the key's scope, which
the join enforces when the decision comes (tests/streams/test_join_scope.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from bandit.api.app import create_app
from bandit.service.state import StateStore
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import Activation, Decision, PolicySettings, RewardReported
from streams.join import JoinStore
from tests.bandit.serving import served
from tests.bandit.test_api import _consume

MAIN_KEY = "scope-key-main-0123456789"
OTHER_KEY = "scope-key-other-012345678"
ANY_KEY = "scope-key-any-0123456789"
ADMIN_MAIN_KEY = "scope-key-admin-main-0123"
MAIN = {"X-API-Key": MAIN_KEY}
OTHER = {"X-API-Key": OTHER_KEY}
ACTIONS = [{"id": "a"}, {"id": "b"}]

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("native reward", "/v1/reward", {"reward": 1.0}),
    ("native activate", "/v1/activate", {}),
    ("Personalizer reward", "/personalizer/v1.0/events/{id}/reward", {"value": 1.0}),
    ("Personalizer activate", "/personalizer/v1.0/events/{id}/activate", None),
]


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[tuple[str, Settings]]:
    """An API serving ``main`` and ``other``, with a key for each and one for both."""
    prefix = f"sc{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        # a loaded machine must not turn the scope read into "the join decides" (the
        # fallback when Redis is slow, which this module does not test)
        redis=RedisSettings(url=redis_url, key_prefix=prefix, socket_timeout_seconds=2.0),
        api=ApiSettings(
            keys=(
                ApiKey(key=MAIN_KEY, policies=("main",)),
                ApiKey(key=OTHER_KEY, policies=("other",)),
                ApiKey(key=ANY_KEY),
                ApiKey(key=ADMIN_MAIN_KEY, role="admin", policies=("main",)),
            )
        ),
        policies={"main": "uniform", "other": "uniform"},
    )
    with served(create_app(settings), "api-scope") as url:
        yield url, settings


def _send(
    http: httpx.Client,
    route: str,
    event_id: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] = MAIN,
) -> httpx.Response:
    """Send feedback for `event_id` on `route` (in the path or the body, as it takes it)."""
    path = route.replace("{id}", event_id)
    if body is not None and "{id}" not in route:
        body = {"event_id": event_id, **body}
    return http.post(path, json=body, headers=headers)


def _rank(http: httpx.Client, headers: dict[str, str], policy: str) -> str:
    answer = http.post(f"/v1/rank?policy={policy}", json={"actions": ACTIONS}, headers=headers)
    assert answer.status_code == 200, answer.text
    event_id: str = answer.json()["event_id"]
    return event_id


def _join_holds(settings: Settings, broker: str, event_ids: list[str]) -> None:
    """Hand the decisions of `event_ids` to the join, as the worker would."""

    async def body() -> None:
        topic = f"{settings.kafka.topic_prefix}.decisions"
        found = await _consume(broker, topic, set(event_ids))
        client = Redis.from_url(settings.redis.url)
        try:
            join = JoinStore(StateStore(client, settings.redis.key_prefix))
            for value in found:
                await join.add_decision(
                    Decision.model_validate_json(value), PolicySettings(spec="uniform")
                )
        finally:
            await client.aclose()

    asyncio.run(body())


@pytest.mark.parametrize(("name", "route", "body"), ROUTES, ids=[r[0] for r in ROUTES])
def test_a_key_of_one_policy_is_refused_another_policys_known_decision(
    server: tuple[str, Settings], broker: str, name: str, route: str, body: dict[str, Any] | None
) -> None:
    """Once the join holds the decision, another policy's key gets 403 naming the policy."""
    url, settings = server
    with httpx.Client(base_url=url, timeout=10) as http:
        theirs = _rank(http, OTHER, "other")
        ours = _rank(http, MAIN, "main")
        _join_holds(settings, broker, [theirs, ours])
        refused = _send(http, route, theirs, body)
        assert refused.status_code == 403, refused.text
        assert "'other'" in refused.text
        assert _send(http, route, ours, body).status_code in (202, 204)  # its own policy's
        # a key allowed every policy may act on both
        allowed = _send(http, route, theirs, body, headers={"X-API-Key": ANY_KEY})
        assert allowed.status_code in (202, 204)


def test_feedback_before_the_decision_carries_the_keys_scope(
    server: tuple[str, Settings], broker: str
) -> None:
    """Not yet known to the join: accepted, and the record carries the key's policies."""
    url, settings = server
    event_ids = {name: f"early-{uuid.uuid4().hex[:10]}" for name, _, _ in ROUTES}
    with httpx.Client(base_url=url, timeout=10) as http:
        for name, route, body in ROUTES:
            assert _send(http, route, event_ids[name], body).status_code in (202, 204), name
        unscoped = f"early-{uuid.uuid4().hex[:10]}"
        answer = http.post(
            "/v1/reward", json={"event_id": unscoped, "reward": 1.0}, headers={"X-API-Key": ANY_KEY}
        )
        assert answer.status_code == 202
        sent_scope = http.post(
            "/v1/reward",
            json={"event_id": unscoped, "reward": 1.0, "scope": ["other"]},
            headers=MAIN,
        )
        assert sent_scope.status_code == 422
        assert "scope" in sent_scope.text
    topic = f"{settings.kafka.topic_prefix}.rewards"
    records = asyncio.run(_consume(broker, topic, {*event_ids.values(), unscoped}))
    scopes = {}
    for value in records:
        parsed = (
            Activation.model_validate_json(value)
            if b'"activation"' in value
            else (RewardReported.model_validate_json(value))
        )
        scopes[parsed.event_id] = parsed.scope
    assert {scopes[event_id] for event_id in event_ids.values()} == {("main",)}
    assert scopes[unscoped] is None


def test_an_admin_key_of_one_policy_is_refused_another_policys_settings_and_reports(
    server: tuple[str, Settings],
) -> None:
    """Admin routes naming a policy check the admin key's policies too."""
    url, _ = server
    admin = {"X-API-Key": ADMIN_MAIN_KEY}
    report = {"metric": "reward_rate", "policy": "other", "epsilon": 0.1}
    with httpx.Client(base_url=url, timeout=10) as http:
        for answer in (
            http.post("/v1/privacy/reports", json=report, headers=admin),
            http.get("/v1/policies/other/settings", headers=admin),
            http.put("/v1/policies/other/settings", json={"spec": "uniform"}, headers=admin),
        ):
            assert answer.status_code == 403, answer.text
            assert "'other'" in answer.text
        mine = http.post("/v1/privacy/reports", json={**report, "policy": "main"}, headers=admin)
        assert mine.status_code == 200, mine.text
