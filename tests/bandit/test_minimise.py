"""Data minimisation: declared features only, never identifiers; unit and through the API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from bandit.api.app import create_app
from bandit.privacy.minimise import FeatureRefusedError, FeatureSchema, Minimiser, identifier_reason
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import Decision, PolicySettings
from policies import Action
from tests.bandit.test_api import _consume, _metric

APP_KEY = "app-key-minimise-0123456"
ADMIN_KEY = "admin-key-minimise-01234"

SCHEMA = FeatureSchema.model_validate(
    {
        "context": {
            "user": {
                "tier": {"type": "string", "values": ["gold", "basic"]},
                "age": {"type": "number", "minimum": 0, "maximum": 120},
                "returning": {"type": "boolean"},
            }
        },
        "actions": {"item": {"topic": {"type": "string"}, "price": {"type": "number"}}},
    }
)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("user_id", "u-1"),
        ("Email", "x"),
        ("ip-address", "x"),
        ("contact", "ann.lee@example.co.uk"),
        ("origin", "192.168.10.4"),
        ("origin", "2001:db8::8a2e:370:7334"),
        ("token", "123e4567-e89b-12d3-a456-426614174000"),
        ("token", "123E4567E89B12D3A456426614174000"),
        ("contact", "+44 20 7946 0958"),
        ("card", "4111-1111-1111-1111"),
    ],
)
def test_identifier_like_features_are_recognised(name: str, value: object) -> None:
    """Names that say who someone is, and values that are emails, IPs, UUIDs, numbers."""
    assert identifier_reason(name, value) is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("topic", "golf"),
        ("os", "iOS 17.4"),
        ("day", "2026-11-28"),
        ("hour", 14),
        ("price", 123456789.0),  # numbers are amounts, not identifiers
        ("ratio", "3:2"),
        ("section", "sport@home"),
    ],
)
def test_ordinary_features_are_not_identifiers(name: str, value: object) -> None:
    """Categories, versions, dates, numbers: not identifiers."""
    assert identifier_reason(name, value) is None


def test_declared_features_pass_undeclared_are_dropped_and_counted() -> None:
    """The schema keeps what it declares; the rest is dropped and counted by reason."""
    minimiser = Minimiser(SCHEMA)
    item = Action("a", {"item": {"topic": "golf", "price": 9.5, "colour": "red"}, "meta": {"x": 1}})
    context = {"user": {"tier": "gold", "age": 31, "returning": 1.0, "shoe": 42}, "page": {"s": 1}}
    kept, actions, dropped = minimiser.apply(context, [item])
    assert kept == {"user": {"tier": "gold", "age": 31, "returning": 1.0}}
    assert actions[0].features == {"item": {"topic": "golf", "price": 9.5}}
    assert (dropped.undeclared, dropped.identifier, dropped.invalid) == (4, 0, 0)
    again = minimiser.apply(context, [item])[1][0]
    assert again is actions[0]  # an action seen before: its minimised form, once
    untouched = Action("b", {"item": {"topic": "chess"}})
    assert minimiser.apply({}, [untouched])[1][0] is untouched


@pytest.mark.parametrize(
    ("context", "location", "kind"),
    [
        ({"user": {"tier": "platinum"}}, ["context", "user", "tier"], "invalid"),
        ({"user": {"age": 300}}, ["context", "user", "age"], "invalid"),
        ({"user": {"returning": 0.5}}, ["context", "user", "returning"], "invalid"),
        ({"user": {"tier": "gold", "mail": "a@b.io"}}, ["context", "user", "mail"], "identifier"),
    ],
)
def test_breaking_the_schema_or_naming_someone_is_refused(
    context: dict[str, Any], location: list[str], kind: str
) -> None:
    """A declared feature out of its rules, or an identifier: refused, located."""
    with pytest.raises(FeatureRefusedError) as caught:
        Minimiser(SCHEMA).apply(context, [])
    assert caught.value.location == location
    assert caught.value.kind == kind


def test_reject_mode_refuses_undeclared_and_stored_features_are_only_dropped() -> None:
    """undeclared="reject" refuses; the service's own features are never refused."""
    strict = Minimiser(SCHEMA.model_copy(update={"undeclared": "reject"}))
    with pytest.raises(FeatureRefusedError, match="undeclared feature") as caught:
        strict.apply({}, [Action("a", {"item": {"colour": "red"}})], ids=lambda: {"a": 2})
    assert caught.value.location == ["actions", 2, "features", "item", "colour"]
    kept, dropped = strict.stored({"session": {"clicks": 3, "last_ip": "10.0.0.7"}})
    assert kept == {}
    assert (dropped.undeclared, dropped.identifier) == (1, 1)


def test_the_api_drops_refuses_and_logs_only_what_the_policy_saw(
    broker: str, redis_url: str
) -> None:
    """Through the API: undeclared features never reach the decision log; 422 names."""
    prefix = f"m{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(ApiKey(key=APP_KEY, role="app"), ApiKey(key=ADMIN_KEY, role="admin")),
            model_poll_seconds=0.05,
        ),
        policies={"default": "vw-epsilon"},
    )
    body = {
        "event_id": "min-1",
        "context": {"user": {"tier": "gold", "age": 31, "shoe_size": 42}},
        "actions": [{"id": "a", "features": {"item": {"topic": "golf", "colour": "red"}}}],
    }

    async def run() -> tuple[list[bytes], str]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                refused = await http.post(
                    "/v1/rank",
                    json={**body, "context": {"user": {"email": "x"}}},
                    headers={"X-API-Key": APP_KEY},
                )
                assert refused.status_code == 422, refused.text  # even with nothing declared
                assert refused.json()["detail"][0]["loc"] == ["body", "context", "user", "email"]
                live = PolicySettings(spec="vw-epsilon", feature_schema=SCHEMA)
                changed = await http.put(
                    "/v1/policies/default/settings",
                    json=live.model_dump(mode="json"),
                    headers={"X-API-Key": ADMIN_KEY},
                )
                assert changed.status_code == 200, changed.text
                deadline = asyncio.get_running_loop().time() + 10
                while True:  # the engine applies new settings within a poll
                    answer = await http.post("/v1/rank", json=body, headers={"X-API-Key": APP_KEY})
                    assert answer.status_code == 200, answer.text
                    metrics = (await http.get("/metrics")).text
                    if _metric(metrics, "streambandit_features_dropped_total", reason="undeclared"):
                        break
                    assert asyncio.get_running_loop().time() < deadline, "settings not applied"
                    body["event_id"] = f"min-{uuid.uuid4().hex[:6]}"
                    await asyncio.sleep(0.1)
                bad = await http.post(
                    "/v1/rank",
                    json={**body, "event_id": "min-bad", "context": {"user": {"age": -3}}},
                    headers={"X-API-Key": APP_KEY},
                )
                assert bad.status_code == 422
                assert "must be at least 0" in bad.text
                metrics = (await http.get("/metrics")).text
        topic = f"{prefix}.decisions"
        return await _consume(broker, topic, {str(body["event_id"])}), metrics

    records, metrics = asyncio.run(run())
    decision = Decision.model_validate_json(records[-1])
    assert decision.context == {"user": {"tier": "gold", "age": 31}}
    assert decision.actions[0].features == {"item": {"topic": "golf"}}
    assert _metric(metrics, "streambandit_features_dropped_total", reason="undeclared") == 2
    assert _metric(metrics, "streambandit_features_refused_total", reason="identifier") == 1
    assert _metric(metrics, "streambandit_features_refused_total", reason="invalid") == 1


def test_identifiers_dropped_on_request_are_counted_and_never_seen_by_refusing_requests() -> None:
    """``identifiers="drop"`` (the Personalizer routes) drops and counts; the same action
    object offered later by a request that refuses is refused, not served from the drop."""
    minimiser = Minimiser(None)
    context = {"user": {"tier": "gold", "email": "ann@example.com"}}
    action = Action("a", {"item": {"owner": "bob@example.com", "kind": "k"}})
    kept, actions, dropped = minimiser.apply(context, [action], identifiers="drop")
    assert kept == {"user": {"tier": "gold"}}
    assert actions[0].features == {"item": {"kind": "k"}}
    assert dropped.identifier == 2
    with pytest.raises(FeatureRefusedError) as refused:
        minimiser.apply({}, [action])
    assert refused.value.kind == "identifier"
    assert refused.value.location[-2:] == ["item", "owner"]
