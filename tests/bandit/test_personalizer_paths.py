"""Personalizer's routes at every path its clients use, one handler each, as lenient as it.

``/personalizer/v1.0/`` (azure-cognitiveservices-personalizer), ``/personalizer/v1.1-preview.1``
to ``.3`` (the .NET 2.x client) and ``/personalizer/...?api-version=2022-09-01-preview``
(azure-ai-personalizer): a real uvicorn server, the real broker and Redis; each path's
rank is logged as a decision, and its reward and activation reach the rewards topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bandit.api.personalizer import API_VERSIONS, PATH_VERSIONS
from bandit.wire.schemas import Decision
from tests.bandit.test_api import ADMIN_KEY, SUBSCRIPTION, Server, _read, serve_api

RANK = {
    "contextFeatures": [{"timeOfDay": "Morning"}, {"user": {"tier": "gold"}}],
    "actions": [{"id": "news", "features": [{"topic": "news"}]}, {"id": "sports"}],
}


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API as tests/bandit/test_api.py serves it, for this module."""
    with serve_api(broker, redis_url, "api-personalizer-paths") as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


PREFIXES = [
    *[(f"/personalizer/{version}", "") for version in PATH_VERSIONS],
    *[("/personalizer", f"?api-version={version}") for version in API_VERSIONS],
]


@pytest.mark.parametrize(("prefix", "query"), PREFIXES, ids=[p + q for p, q in PREFIXES])
def test_every_path_ranks_rewards_and_activates(
    client: httpx.Client, server: Server, broker: str, prefix: str, query: str
) -> None:
    event_id = f"pz-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {**RANK, "eventId": event_id, "deferActivation": True}
    ranked = client.post(f"{prefix}/rank{query}", json=body, headers=SUBSCRIPTION)
    assert ranked.status_code == 201, ranked.text
    answer = ranked.json()
    assert answer["eventId"] == event_id
    assert answer["ranking"][0]["id"] == answer["rewardActionId"]
    reward = client.post(
        f"{prefix}/events/{event_id}/reward{query}", json={"value": 0.5}, headers=SUBSCRIPTION
    )
    assert (reward.status_code, reward.content) == (204, b""), reward.text
    activate = client.post(f"{prefix}/events/{event_id}/activate{query}", headers=SUBSCRIPTION)
    assert (activate.status_code, activate.content) == (204, b""), activate.text

    topics = server.settings.kafka.topic_prefix
    [logged] = [
        Decision.model_validate_json(value)
        for value in _read(broker, f"{topics}.decisions", {event_id})
    ]
    assert (logged.chosen_action_id, logged.deferred) == (answer["rewardActionId"], True)
    feedback = _read(broker, f"{topics}.rewards", {event_id})
    assert len(feedback) == 2  # the reward and the activation


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?api-version=2016-01-01", "Input should be '2022-09-01-preview'"),
        ("", "Field required"),
    ],
)
def test_the_query_form_refuses_an_unknown_or_missing_api_version(
    client: httpx.Client, query: str, says: str
) -> None:
    """400 in Personalizer's error envelope, naming ``api-version``; nothing is decided."""
    answer = client.post(f"/personalizer/rank{query}", json=RANK, headers=SUBSCRIPTION)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "BadRequest"
    text = " ".join([error["message"], *(d["message"] for d in error["details"])])
    assert says in text
    assert any("api-version" in (d["target"] or "") for d in error["details"])


def test_invalid_input_is_400_in_personalizers_envelope_on_every_path(
    client: httpx.Client,
) -> None:
    """Personalizer answered invalid input with 400; the native routes keep 422."""
    bad = {**RANK, "deferActivation": "later"}
    for prefix, query in PREFIXES:
        answer = client.post(f"{prefix}/rank{query}", json=bad, headers=SUBSCRIPTION)
        assert answer.status_code == 400, (prefix, answer.text)
        [detail] = answer.json()["error"]["details"]
        assert detail["target"] == "deferActivation"
    native = client.post(
        "/v1/rank",
        json={"actions": [{"id": "a"}], "defer_activation": "later"},
        headers=SUBSCRIPTION,
    )
    assert native.status_code == 422


def test_the_openapi_document_lists_every_path(client: httpx.Client) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    for prefix, _ in PREFIXES:
        assert {
            f"{prefix}/rank",
            f"{prefix}/events/{{eventId}}/reward",
            f"{prefix}/events/{{eventId}}/activate",
        } <= paths


def test_null_features_and_unknown_fields_are_ignored_and_excluded_actions_ranked_zero(
    client: httpx.Client, server: Server, broker: str
) -> None:
    """As Personalizer took them: nothing of a null or an unknown field reaches the log."""
    event_id = f"pz-{uuid.uuid4().hex[:12]}"
    body = {
        "contextFeatures": [{"user": {"tier": "gold", "age": None}}, {"device": None}],
        "actions": [
            {"id": "news", "features": None, "rank": 3},
            {"id": "sports", "features": [{"topic": "sports", "size": None}]},
            {"id": "weather"},
        ],
        "excludedActions": ["weather"],
        "eventId": event_id,
        "clientVersion": "1.2.3",
    }
    answer = client.post("/personalizer/rank?api-version=2022-09-01-preview", json=body,
                         headers=SUBSCRIPTION)  # fmt: skip
    assert answer.status_code == 201, answer.text
    ranking = answer.json()["ranking"]
    assert [entry["id"] for entry in ranking[2:]] == ["weather"]
    assert ranking[2]["probability"] == 0.0
    assert all(entry["probability"] > 0 for entry in ranking[:2])
    topics = server.settings.kafka.topic_prefix
    [logged] = [
        Decision.model_validate_json(value)
        for value in _read(broker, f"{topics}.decisions", {event_id})
    ]
    assert logged.context == {"user": {"tier": "gold"}}
    features = {action.id: action.features for action in logged.actions}
    assert features == {"news": {}, "sports": {"default": {"topic": "sports"}}}


def test_identifier_features_are_dropped_and_counted_where_the_native_routes_refuse(
    client: httpx.Client, server: Server, broker: str
) -> None:
    """An email or a user_id in a Personalizer request: left out of what the policy sees."""

    def dropped() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("streambandit_features_dropped_total{") and (
                'reason="identifier"' in line and 'policy="main"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = dropped()
    event_id = f"pz-{uuid.uuid4().hex[:12]}"
    body = {
        "contextFeatures": [{"user": {"tier": "gold", "contact": "ann@example.com"}}],
        "actions": [{"id": "news", "features": [{"user_id": "u-1", "topic": "news"}]},
                    {"id": "sports"}],
        "eventId": event_id,
    }  # fmt: skip
    answer = client.post("/personalizer/v1.0/rank", json=body, headers=SUBSCRIPTION)
    assert answer.status_code == 201, answer.text
    assert dropped() == before + 2
    topics = server.settings.kafka.topic_prefix
    [logged] = [
        Decision.model_validate_json(value)
        for value in _read(broker, f"{topics}.decisions", {event_id})
    ]
    assert logged.context == {"user": {"tier": "gold"}}
    assert {a.id: a.features for a in logged.actions} == {
        "news": {"default": {"topic": "news"}},
        "sports": {},
    }
    native = client.post(
        "/v1/rank",
        json={"context": {"user": {"contact": "ann@example.com"}}, "actions": [{"id": "a"}]},
        headers=SUBSCRIPTION,
    )
    assert native.status_code == 422
    assert "identifier-like feature refused" in native.text


def test_the_service_configuration_reads_and_changes_the_policys_live_settings(
    client: httpx.Client, server: Server
) -> None:
    admin = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
    path = "/personalizer/v1.1-preview.3/configurations/service?policy=tuned"
    read = client.get(path, headers=admin)
    assert read.status_code == 200, read.text
    config = read.json()
    assert config["learningMode"] == "Online"
    assert (config["explorationPercentage"], config["logRetentionDays"]) == (0.05, -1)
    assert config["modelExportFrequency"] == "PT0.25S"  # the learner's snapshot interval
    changed = {**config, "rewardWaitTime": "PT2M", "defaultReward": -0.5,
               "rewardAggregation": "sum", "explorationPercentage": 0.3}  # fmt: skip
    answer = client.put(path, json=changed, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rewardWaitTime"] == "PT2M"
    assert answer.json()["lastConfigurationEditDate"] is not None
    settings = client.get("/v1/policies/tuned/settings", headers=admin).json()
    assert (settings["reward_wait_seconds"], settings["default_reward"]) == (120.0, -0.5)
    assert (settings["reward_aggregation"], settings["exploration"]) == ("sum", {"epsilon": 0.3})

    refused = client.put(
        path,
        json={
            **changed,
            "logMirrorEnabled": True,
            "logRetentionDays": 30,
            "rewardAggregation": "average",
        },
        headers=admin,
    )
    assert refused.status_code == 400
    targets = {d["target"] for d in refused.json()["error"]["details"]}
    assert targets == {"logMirrorEnabled", "logRetentionDays", "rewardAggregation"}
    assert client.get("/v1/policies/tuned/settings", headers=admin).json() == settings
    often = {**changed, "isAutoOptimizationEnabled": True, "autoOptimizationFrequency": "PT1S"}
    too_often = client.put(path, json=often, headers=admin)  # below the deployment's hour
    assert too_often.status_code == 400
    [detail] = too_often.json()["error"]["details"]
    assert detail["target"] == "autoOptimizationFrequency"
    assert "STREAMBANDIT_LIMITS__MIN_AUTO_OPTIMIZATION_SECONDS" in detail["message"]
    beyond = client.put(path, json={**changed, "defaultReward": 5000.0}, headers=admin)
    assert beyond.status_code == 400  # the reward range, as the native route checks it
    assert beyond.json()["error"]["details"][0]["target"] == "defaultReward"
    not_admin = client.put(path.replace("tuned", "main"), json=changed, headers=SUBSCRIPTION)
    assert not_admin.status_code == 403
    uniform = client.put(
        "/personalizer/v1.0/configurations/service?policy=other", json=changed, headers=admin
    )
    assert uniform.status_code == 400
    assert uniform.json()["error"]["details"][0]["target"] == "explorationPercentage"


def test_personalizers_client_reads_and_updates_the_service_configuration(server: Server) -> None:
    from azure.ai.personalizer import PersonalizerAdministrationClient
    from azure.core.credentials import AzureKeyCredential

    sdk = PersonalizerAdministrationClient(server.url, AzureKeyCredential(ADMIN_KEY))
    config = sdk.get_service_configuration()
    assert config["learningMode"] == "Online"
    updated = sdk.update_service_configuration({**config, "rewardWaitTime": "PT45S"})
    assert updated["rewardWaitTime"] == "PT45S"
    assert sdk.get_service_configuration()["rewardWaitTime"] == "PT45S"
