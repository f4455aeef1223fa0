"""Erasure through the API is final: page tokens die with it, consent does not come back.

A real uvicorn server against the session's broker and Redis.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bandit.api.app import create_app
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from tests.bandit.serving import served

APP_KEY = "app-key-erasure-api-012345"
APP = {"X-API-Key": APP_KEY}
ROUNDS = 50


@pytest.fixture(scope="module")
def api_url(broker: str, redis_url: str) -> Iterator[str]:
    """An API whose clocks are taken to agree exactly (no slack), so order is exact."""
    prefix = f"ea{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=APP_KEY, role="app"),)),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-erasure-api-0"),
        policies={"default": "uniform"},
        watermark_slack_seconds=0.0,
    )
    with served(create_app(settings), "erasure-api") as url:
        yield url


def _token(http: httpx.Client, user: str) -> dict[str, str]:
    answer = http.post("/v1/privacy/token", json={"user_id": user}, headers=APP)
    assert answer.status_code == 200, answer.text
    return {"X-Privacy-Token": answer.json()["token"]}


def _consent(http: httpx.Client, user: str) -> dict[str, Any]:
    answer = http.post("/v1/consent/lookup", json={"user_id": user}, headers=APP)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_page_token_is_refused_once_its_person_is_erased(api_url: str) -> None:
    """After an erasure the old token opens nothing and records nothing; a new one works."""
    user = f"erased-{uuid.uuid4().hex[:8]}@example.org"
    with httpx.Client(base_url=api_url, timeout=10) as http:
        old = _token(http, user)
        assert http.get("/v1/me", headers=old).status_code == 200
        assert http.post("/v1/privacy/erase", json={"user_id": user}, headers=APP).is_success
        for method, path, body in (
            ("GET", "/v1/me", None),
            ("POST", "/v1/me/consent", {"learning": True}),
            ("POST", "/v1/me/erase", None),
        ):
            answer = http.request(method, path, json=body, headers=old)
            assert answer.status_code == 401, (path, answer.text)
            assert "revoked by an erasure" in answer.text
        assert _consent(http, user)["learning"] is None  # not recreated
        new = _token(http, user)  # the app gives them a new link: a new start
        given = http.post("/v1/me/consent", json={"learning": True}, headers=new)
        assert given.status_code == 200, given.text
        assert _consent(http, user)["learning"]["granted"] is True


def test_page_consent_racing_an_erasure_never_survives_it(api_url: str) -> None:
    """50 rounds of a page consent change racing the erasure: no consent is left."""

    async def main() -> list[int]:
        rng = random.Random(11)
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
            for _ in range(ROUNDS):
                user = f"race-{uuid.uuid4().hex[:8]}@example.org"
                token = await http.post("/v1/privacy/token", json={"user_id": user}, headers=APP)
                page = {"X-Privacy-Token": token.json()["token"]}

                async def change(page: dict[str, str] = page) -> int:
                    await asyncio.sleep(rng.uniform(0, 0.004))
                    body = {"personalisation": True, "learning": True}
                    return (await http.post("/v1/me/consent", json=body, headers=page)).status_code

                async def erase(user: str = user) -> None:
                    await asyncio.sleep(rng.uniform(0, 0.004))
                    answer = await http.post(
                        "/v1/privacy/erase", json={"user_id": user}, headers=APP
                    )
                    assert answer.status_code == 200, answer.text

                changed, _ = await asyncio.gather(change(), erase())
                statuses.append(changed)
                lookup = await http.post("/v1/consent/lookup", json={"user_id": user}, headers=APP)
                left = lookup.json()
                assert (left["personalisation"], left["learning"]) == (None, None), changed
        return statuses

    statuses = asyncio.run(main())
    assert set(statuses) <= {200, 401, 409}
