"""Learning modes through the API: Personalizer's configuration sets them, rank honours them.

A real uvicorn server with the real broker and Redis. In Apprentice mode the baseline
action (the first offered) serves with the policy's floor, and each logged decision
carries the served policy's own probabilities, the very ones it gives once Online
again; LoggingOnly serves the baseline action and logs nothing of the model. The
native report and Personalizer's ``latestApprenticeModeMetrics`` read the figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential

from bandit.wire.schemas import Decision
from tests.bandit.test_api import ADMIN_KEY, Server, _read, _save_model, _trained, serve_api

ADMIN = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
CONFIG = "/personalizer/v1.1-preview.3/configurations/service?policy=tuned"
FLOOR = 1e-6
RANK = {
    "contextFeatures": [{"user": {"tier": "gold", "returning": 1}}],
    "actions": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
}


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API as tests/bandit/test_api.py serves it, `tuned` with a model that prefers b."""
    with serve_api(broker, redis_url, "api-learning-modes") as running:
        _save_model(running.settings, "tuned", _trained("b", 90), 2)
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _set_mode(client: httpx.Client, mode: str) -> dict[str, object]:
    config = client.get(CONFIG, headers=ADMIN).json()
    answer = client.put(CONFIG, json={**config, "learningMode": mode}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["learningMode"] == mode
    body: dict[str, object] = answer.json()
    return body


def _ranked(client: httpx.Client, server: Server, broker: str, n: int) -> list[Decision]:
    ids = [f"mode-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    for event_id in ids:
        answer = client.post(
            "/personalizer/v1.0/rank?policy=tuned", json={**RANK, "eventId": event_id},
            headers=ADMIN,
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
    topic = f"{server.settings.kafka.topic_prefix}.decisions"
    return [Decision.model_validate_json(value) for value in _read(broker, topic, set(ids))]


def test_apprentice_serves_the_baseline_and_logs_the_models_own_probabilities(
    client: httpx.Client, server: Server, broker: str
) -> None:
    settings = client.get("/v1/policies/tuned/settings", headers=ADMIN).json()
    floor = {**settings, "exploration_floor": FLOOR}
    assert client.put("/v1/policies/tuned/settings", json=floor, headers=ADMIN).status_code == 200
    config = _set_mode(client, "Apprentice")
    metrics = config["latestApprenticeModeMetrics"]
    assert isinstance(metrics, dict)
    assert (metrics["numberOfEvents"], metrics["sumOfRewards"]) == (0, 0.0)
    assert metrics["startTime"] is not None

    decisions = _ranked(client, server, broker, 25)
    assert len(decisions) == 25
    learned = {tuple(d.learned or ()) for d in decisions}
    for decision in decisions:
        assert decision.learning_mode == "Apprentice"
        assert decision.chosen_action_id == "a"  # the baseline action, always
        assert decision.probability == pytest.approx(1 - 2 * FLOOR)
    [own] = learned  # one context, one model: the same probabilities each time
    assert max(range(3), key=own.__getitem__) == 1  # the model would have shown b

    _set_mode(client, "Online")
    [online] = _ranked(client, server, broker, 1)
    assert online.learning_mode == "Online"
    assert online.learned is None
    served = {entry.id: entry.probability for entry in online.ranking}
    assert [served[a] for a in ("a", "b", "c")] == pytest.approx(list(own), abs=1e-12)


def test_logging_only_serves_the_baseline_and_keeps_no_model_output(
    client: httpx.Client, server: Server, broker: str
) -> None:
    _set_mode(client, "LoggingOnly")
    try:
        decisions = _ranked(client, server, broker, 5)
        assert {d.learning_mode for d in decisions} == {"LoggingOnly"}
        assert {d.learned is None for d in decisions} == {True}
        assert {d.ranking[0].id for d in decisions} == {"a"}
    finally:
        _set_mode(client, "Online")


def test_the_native_report_and_personalizers_client_read_the_mode(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        report = client.get("/v1/policies/main/apprentice", headers=ADMIN)
        assert report.status_code == 200, report.text
        assert report.json()["learning_mode"] == "Online"
        assert report.json()["figures"]["recommend_online"] is False
        assert report.json()["figures"]["events"] == 0
    sdk = PersonalizerAdministrationClient(server.url, AzureKeyCredential(ADMIN_KEY))
    config = sdk.get_service_configuration()  # the admin key's first policy: main
    updated = sdk.update_service_configuration({**config, "learningMode": "Apprentice"})
    assert updated["learningMode"] == "Apprentice"
    assert updated["latestApprenticeModeMetrics"]["numberOfEvents"] == 0
    back = sdk.update_service_configuration({**updated, "learningMode": "Online"})
    assert back["learningMode"] == "Online"
    assert "latestApprenticeModeMetrics" not in back or back["latestApprenticeModeMetrics"] is None
