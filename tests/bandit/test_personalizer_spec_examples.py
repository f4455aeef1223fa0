"""The .NET client's paths (``/personalizer/v1.1-preview.3/``) sent the spec examples' bodies.

Azure's REST specification for Personalizer v1.1-preview.3 gives an example request per
operation (Rank, Events_Reward, Events_Activate, ServiceConfiguration_Update,
Policy_Update, Policy_Reset, Model_Reset, Model_GetProperties, Log_GetProperties); the
.NET 2.x client sends those shapes. Each is sent here to a real server (real broker and
Redis) and answered as Personalizer answered it, or, where this service does not do what
the example asks (log mirroring, automatic optimisation, another retention or export
frequency), refused with 400 naming exactly those fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bandit.wire.schemas import Decision
from tests.bandit.test_api import ADMIN_KEY, Server, _read, _save_model, _trained, serve_api

BASE = "/personalizer/v1.1-preview.3"
ADMIN = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
EVENT_ID = "75269AD0-BFEE-4598-8196-C57383D38E10"  # the example's, upper-case GUID

RANK_EXAMPLE: dict[str, Any] = {
    "contextFeatures": [
        {"user": {"profileType": "AnonymousUser", "latLong": "47.6,-122.1"}},
        {"environment": {"dayOfMonth": "28", "monthOfYear": "8", "weather": "Sunny"}},
        {"device": {"mobile": True, "windows": True}},
        {"recentActivity": {"itemsInCart": 3}},
    ],
    "actions": [
        {"id": "NewsArticle", "features": [{"type": "News"}]},
        {"id": "SportsArticle", "features": [{"type": "Sports"}]},
        {"id": "EntertainmentArticle", "features": [{"type": "Entertainment"}]},
    ],
    "excludedActions": ["SportsArticle"],
    "eventId": EVENT_ID,
    "deferActivation": False,
}
SERVICE_CONFIGURATION_EXAMPLE: dict[str, Any] = {
    "rewardWaitTime": "PT10M",
    "defaultReward": 0.0,
    "rewardAggregation": "earliest",
    "explorationPercentage": 0.2,
    "modelExportFrequency": "PT5M",
    "logMirrorEnabled": True,
    "logMirrorSasUri": "https://example.invalid/container?sig=signature",
    "logRetentionDays": 7,
    "lastConfigurationEditDate": "2019-01-19T00:00:00Z",
    "learningMode": "Online",
    "isAutoOptimizationEnabled": True,
    "autoOptimizationFrequency": "P7D",
    "autoOptimizationStartDate": "2019-01-19T00:00:00Z",
}


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API as tests/bandit/test_api.py serves it; `main` has a saved model."""
    with serve_api(broker, redis_url, "api-spec-examples") as running:
        _save_model(running.settings, "main", _trained("b", 30), 1)
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def test_rank_reward_and_activate_take_the_examples_bodies(
    client: httpx.Client, server: Server, broker: str
) -> None:
    ranked = client.post(f"{BASE}/rank", json=RANK_EXAMPLE, headers=ADMIN)
    assert ranked.status_code == 201, ranked.text
    answer = ranked.json()
    assert answer["eventId"] == EVENT_ID
    assert answer["rewardActionId"] in {"NewsArticle", "EntertainmentArticle"}
    probabilities = {entry["id"]: entry["probability"] for entry in answer["ranking"]}
    assert probabilities["SportsArticle"] == 0  # excluded, ranked with probability 0
    assert probabilities["NewsArticle"] + probabilities["EntertainmentArticle"] == pytest.approx(1)
    reward = client.post(f"{BASE}/events/{EVENT_ID}/reward", json={"value": 1}, headers=ADMIN)
    assert (reward.status_code, reward.content) == (204, b"")
    activate = client.post(f"{BASE}/events/{EVENT_ID}/activate", headers=ADMIN)
    assert (activate.status_code, activate.content) == (204, b"")
    topics = server.settings.kafka.topic_prefix
    [logged] = [
        Decision.model_validate_json(value)
        for value in _read(broker, f"{topics}.decisions", {EVENT_ID})
    ]
    assert logged.event_id == EVENT_ID  # kept exactly, case and all
    assert [action.id for action in logged.actions] == ["NewsArticle", "EntertainmentArticle"]
    assert len(_read(broker, f"{topics}.rewards", {EVENT_ID})) == 2


def test_the_service_configuration_example_is_refused_naming_what_is_not_done(
    client: httpx.Client,
) -> None:
    path = f"{BASE}/configurations/service?policy=main"
    before = client.get(path, headers=ADMIN).json()
    refused = client.put(path, json=SERVICE_CONFIGURATION_EXAMPLE, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    targets = {detail["target"] for detail in refused.json()["error"]["details"]}
    assert targets == {
        "logMirrorEnabled",
        "logRetentionDays",
        "modelExportFrequency",
    }
    assert client.get(path, headers=ADMIN).json() == before
    doable = {
        **SERVICE_CONFIGURATION_EXAMPLE,
        "logMirrorEnabled": False,
        "isAutoOptimizationEnabled": False,
        "logRetentionDays": before["logRetentionDays"],
        "modelExportFrequency": before["modelExportFrequency"],
    }
    applied = client.put(path, json=doable, headers=ADMIN)
    assert applied.status_code == 200, applied.text
    assert (applied.json()["rewardWaitTime"], applied.json()["explorationPercentage"]) == (
        "PT10M",
        0.2,
    )


def test_the_policy_model_and_log_examples(client: httpx.Client) -> None:
    update = {
        "name": "myPersonalizer",
        "arguments": "--cb_explore_adf --epsilon 0.2 --dsjson --cb_type ips -l 0.5 --l1 1E-07 "
        "--power_t 0.5",
    }
    put = client.put(f"{BASE}/configurations/policy?policy=swapped", json=update, headers=ADMIN)
    assert put.status_code == 200, put.text
    assert "--cb_type ips" in put.json()["arguments"]
    reset = client.delete(f"{BASE}/configurations/policy?policy=swapped", headers=ADMIN)
    assert reset.status_code == 200, reset.text
    assert "--cb_type" not in reset.json()["arguments"]

    properties = client.get(f"{BASE}/model/properties", headers=ADMIN)
    assert properties.status_code == 200, properties.text
    assert set(properties.json()) == {"creationTime", "lastModifiedTime"}
    model_reset = client.delete(f"{BASE}/model", headers=ADMIN)
    assert (model_reset.status_code, model_reset.content) == (204, b"")
    after = client.get(f"{BASE}/model/properties", headers=ADMIN).json()
    assert after["creationTime"] > properties.json()["creationTime"]  # a new lineage

    log = client.get(f"{BASE}/logs/properties", headers=ADMIN)
    assert log.status_code == 200, log.text
    assert set(log.json()["dateRange"]) == {"from", "to"}
