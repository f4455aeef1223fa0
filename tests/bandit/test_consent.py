"""Consent through the API, against the session's real broker and Redis.

Consents are given, read and withdrawn over HTTP and through the Python client; each
consent state is ranked and the decision records are read back from Kafka: which policy
decided, whether they may be learned, what they keep. Raw user ids are looked for in
Redis, in Kafka and in the API's log, and never found.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import structlog
from redis.asyncio import Redis

from bandit.api.app import create_app
from bandit.client import AsyncClient, Client, InvalidArgumentError
from bandit.privacy.consent import pseudonymise
from bandit.service.logging import configure_logging
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from bandit.wire.schemas import Decision
from tests.bandit.serving import served
from tests.bandit.test_api import _consume, _metric

APP_KEY = "app-key-consent-0123456789"
PSEUDONYM_KEY = "pseudonym-key-for-tests-0123456789"
ACTIONS = [
    {"id": "a", "features": {"item": {"topic": "golf"}}},
    {"id": "b", "features": {"item": {"topic": "chess"}}},
    {"id": "c", "features": {"item": {"topic": "music"}}},
    {"id": "d", "features": {"item": {"topic": "food"}}},
]
CONTEXT = {"user": {"tier": "gold", "age": 0.4}}
# raw ids, one per consent state: personalisation and learning given or not
PEOPLE = {
    "both@example.com": (True, True),
    "personal-only@example.com": (True, False),
    "learning-only@example.com": (False, True),
    "nobody-asked@example.com": None,  # no record: the default (denied)
}


@dataclass(frozen=True)
class Server:
    url: str
    settings: Settings
    log: io.StringIO


def _settings(broker: str, redis_url: str, *, key: str | None = PSEUDONYM_KEY) -> Settings:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=APP_KEY, role="app"),), request_log="all"),
        privacy=PrivacySettings(pseudonym_key=key),
        policies={"default": "fixed"},  # personalised: the first action, 0.997
    )


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API on a free port, its log lines (every request's) captured."""
    settings = _settings(broker, redis_url)
    written = io.StringIO()
    configure_logging("json")
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(file=written))
    with served(create_app(settings), "consent-api") as url:
        yield Server(url, settings, written)
    configure_logging("json")


def _post(server: Server, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={"X-API-Key": APP_KEY}, timeout=10)


def test_consent_is_given_read_and_withdrawn(server: Server) -> None:
    """Each consent keeps its own source and time; the effect follows; changes are counted."""
    person = f"carol-{uuid.uuid4().hex[:6]}@example.com"
    looked = _post(server, "/v1/consent/lookup", {"user_id": person})
    assert looked.status_code == 200, looked.text
    assert looked.json() == {
        "personalisation": None,
        "learning": None,
        "effective": {"personalisation": False, "learning": False},
    }
    given = _post(
        server, "/v1/consent", {"user_id": person, "personalisation": True, "source": "banner-v3"}
    )
    assert given.status_code == 200, given.text
    view = given.json()
    assert view["personalisation"]["granted"] is True
    assert view["personalisation"]["source"] == "banner-v3"
    assert view["learning"] is None
    assert view["effective"] == {"personalisation": True, "learning": False}
    with Client(server.url, api_key=APP_KEY) as client:
        both = client.set_consent(person, learning=True, source="privacy-page")
        assert both.effective.personalisation
        assert both.effective.learning
        assert both.personalisation == client.consent(person).personalisation  # kept apart
        assert both.learning is not None
        assert both.learning.source == "privacy-page"
        withdrawn = client.set_consent(person, personalisation=False, source="privacy-page")
        assert withdrawn.effective.personalisation is False
        assert withdrawn.effective.learning is True
    metrics = httpx.get(f"{server.url}/metrics").text
    assert _metric(metrics, "streambandit_consent_changes_total", kind="learning") >= 1  # type: ignore[operator]
    opt_out = _metric(metrics, "streambandit_opt_out_share")
    assert opt_out is not None
    assert 0.0 < opt_out < 1.0  # one withdrawal among the changes


def test_bad_consent_requests_name_the_field_and_never_echo_the_id(server: Server) -> None:
    """No consent named, a blank source, an overlong id: 422 naming it; no key: 401."""
    secret = "dave-" + "x" * 300
    cases = [
        ({"user_id": "dave", "source": "banner"}, "personalisation, learning or both"),
        ({"user_id": "dave", "learning": True, "source": " "}, "source"),
        ({"user_id": secret, "learning": True, "source": "banner"}, "user_id"),
        ({"learning": True, "source": "banner"}, "user_id"),
    ]
    for body, named in cases:
        answer = _post(server, "/v1/consent", body)
        assert answer.status_code == 422, answer.text
        assert named in answer.text
        assert "dave" not in answer.text
    assert httpx.post(f"{server.url}/v1/consent/lookup", json={"user_id": "x"}).status_code == 401
    with Client(server.url, api_key=APP_KEY) as client, pytest.raises(InvalidArgumentError) as e:
        client.rank(CONTEXT, ACTIONS, user_id=secret)
    assert "dave" not in str(e.value)


def test_rank_serves_and_logs_each_consent_state_as_it_allows(server: Server) -> None:
    """Personalised or baseline, learnable or stripped: per person, as their consents say."""

    async def run() -> dict[str, list[Decision]]:
        async with AsyncClient(server.url, api_key=APP_KEY) as client:
            for person, consent in PEOPLE.items():
                if consent is not None:
                    await client.set_consent(
                        person, personalisation=consent[0], learning=consent[1], source="test"
                    )
            event_ids: dict[str, list[str]] = {person: [] for person in PEOPLE}
            for round_ in range(5):
                for person in PEOPLE:
                    result = await client.rank(CONTEXT, ACTIONS, user_id=person)
                    event_ids[person].append(result.event_id)
                    assert round_ >= 0
            anonymous = await client.rank(CONTEXT, ACTIONS)
        wanted = {e for ids in event_ids.values() for e in ids} | {anonymous.event_id}
        topic = f"{server.settings.kafka.topic_prefix}.decisions"
        records = await _consume(server.settings.kafka.broker, topic, wanted)
        decisions = {d.event_id: d for d in map(Decision.model_validate_json, records)}
        found = {person: [decisions[e] for e in ids] for person, ids in event_ids.items()}
        found["(anonymous)"] = [decisions[anonymous.event_id]]
        for raw in records:
            assert b"@example.com" not in raw
        return found

    found = asyncio.run(run())
    for person, consent in [*PEOPLE.items(), ("(anonymous)", (True, True))]:
        personalise, learn = consent or (False, False)
        for decision in found[person]:
            assert decision.consent == ("personalise" if personalise else "baseline"), person
            assert decision.learn is learn, person
            probabilities = sorted(entry.probability for entry in decision.ranking)
            if personalise:  # epsilon-greedy: one action gets 1 - 0.2 + 0.05
                assert probabilities[-1] == pytest.approx(0.997)
            else:  # the uniform baseline, logged as such
                assert probabilities == pytest.approx([0.25] * 4)
            if learn:
                assert decision.context == {"user": {"tier": "gold", "age": 0.4}}
                assert decision.actions[0].features == {"item": {"topic": "golf"}}
            else:  # nothing about the decision kept but what counts it
                assert decision.context == {}
                assert all(action.features == {} for action in decision.actions)
    metrics = httpx.get(f"{server.url}/metrics").text
    counted = {
        (path, learn): _metric(
            metrics, "streambandit_consent_decisions_total", path=path, learn=learn
        )
        for path in ("personalise", "baseline")
        for learn in ("true", "false")
    }
    assert counted[("baseline", "false")] >= 5  # no record: neither consent
    assert counted[("personalise", "false")] >= 5
    assert counted[("baseline", "true")] >= 5
    assert counted[("personalise", "true")] >= 6  # and the anonymous request
    for kind in ("personalisation", "learning"):  # half the people gave each consent
        share = _metric(metrics, "streambandit_consent_share", kind=kind)
        assert share is not None
        assert 0.0 < share < 1.0


def test_raw_user_ids_are_kept_nowhere(server: Server, redis_url: str) -> None:
    """After consents and ranks naming people, no raw id is in Redis nor in the log."""
    person = f"erin-{uuid.uuid4().hex[:6]}@example.com"
    with Client(server.url, api_key=APP_KEY) as client:
        client.set_consent(person, personalisation=True, learning=True, source="test")
        client.rank(CONTEXT, ACTIONS, user_id=person)
        client.consent(person)

    async def scan() -> tuple[list[bytes], bytes]:
        redis = Redis.from_url(redis_url)
        try:
            prefix = server.settings.redis.key_prefix
            keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
            blob = b""
            for key in keys:
                kind = await redis.type(key)
                if kind == b"hash":
                    blob += json.dumps(
                        {
                            k.decode(): v.decode(errors="replace")
                            for k, v in (await redis.hgetall(key)).items()
                        }
                    ).encode()
                elif kind == b"string":
                    blob += await redis.get(key) or b""
            return keys, blob
        finally:
            await redis.aclose()

    keys, values = asyncio.run(scan())
    pseudonym = pseudonymise(person, PSEUDONYM_KEY.encode())
    assert any(pseudonym.encode() in key for key in keys)  # the consent is kept, hashed
    assert not any(b"example.com" in key for key in keys)
    assert b"example.com" not in values
    log = server.log.getvalue()
    assert '"event":"consent.changed"' in log  # every request logged (request_log "all")
    assert '"event":"decision.made"' in log
    assert "example.com" not in log


def test_without_a_pseudonym_key_requests_naming_a_user_are_refused(
    broker: str, redis_url: str
) -> None:
    """No key configured: 503 naming the setting for named users; anonymous rank works."""
    settings = _settings(broker, redis_url, key=None)

    async def run() -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", headers={"X-API-Key": APP_KEY}
            ) as http:
                named = await http.post(
                    "/v1/rank", json={"context": CONTEXT, "actions": ACTIONS, "user_id": "frank"}
                )
                assert named.status_code == 503
                assert "STREAMBANDIT_PRIVACY__PSEUDONYM_KEY" in named.text
                consent = await http.post(
                    "/v1/consent", json={"user_id": "frank", "learning": True, "source": "t"}
                )
                assert consent.status_code == 503
                anonymous = await http.post(
                    "/v1/rank", json={"context": CONTEXT, "actions": ACTIONS}
                )
                assert anonymous.status_code == 200

    asyncio.run(run())
