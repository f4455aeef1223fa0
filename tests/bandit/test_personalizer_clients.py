"""Personalizer's own Python clients, from PyPI, drive the API by changing the endpoint only.

``azure-ai-personalizer`` (``/personalizer/...?api-version=2022-09-01-preview``) and
``azure-cognitiveservices-personalizer`` (``/personalizer/v1.0/...``) against a real
uvicorn server with the real broker and Redis: rank, reward and activate; the decision
each rank logged, and its reward and activation on the rewards topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.ai.personalizer import PersonalizerClient
from azure.cognitiveservices.personalizer import PersonalizerClient as LegacyClient
from azure.cognitiveservices.personalizer.models import RankableAction, RankRequest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from msrest.authentication import CognitiveServicesCredentials
from msrest.exceptions import HttpOperationError

from bandit.wire.schemas import LENIENT_IDS, Decision
from tests.bandit.test_api import APP_KEY, Server, _read, serve_api

ACTIONS = [
    {"id": "pasta", "features": [{"taste": "savory", "spiceLevel": "medium"}]},
    {"id": "ice cream", "features": [{"taste": "sweet", "spiceLevel": "none"}]},
    {"id": "juice", "features": [{"taste": "sweet"}, {"nutrition": {"calories": 120}}]},
]
CONTEXT = [{"timeOfDay": "Morning"}, {"user": {"tier": "gold"}}]


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API as tests/bandit/test_api.py serves it, for this module."""
    with serve_api(broker, redis_url, "api-personalizer-clients") as running:
        yield running


def _logged(server: Server, broker: str, event_id: str) -> tuple[Decision, int]:
    """The decision logged for `event_id`, and how many feedback records it got."""
    topics = server.settings.kafka.topic_prefix
    [decision] = [  # (the topics' records are read with the lenient id rule)
        Decision.model_validate_json(value, context=LENIENT_IDS)
        for value in _read(broker, f"{topics}.decisions", {event_id})
    ]
    return decision, len(_read(broker, f"{topics}.rewards", {event_id}))


def test_azure_ai_personalizer_ranks_rewards_and_activates(server: Server, broker: str) -> None:
    """Its quickstart's ids (``"ice cream"``), and an event id with a space and a slash."""
    client = PersonalizerClient(server.url, AzureKeyCredential(APP_KEY))
    event_id = f"sdk {uuid.uuid4().hex[:8]}/lunch"
    answer = client.rank(
        {
            "contextFeatures": CONTEXT,
            "actions": ACTIONS,
            "excludedActions": ["juice", "pasta"],
            "eventId": event_id,
            "deferActivation": True,
        }
    )
    assert answer["eventId"] == event_id
    assert answer["rewardActionId"] == "ice cream"  # the only action left
    assert answer["ranking"] == [
        {"id": "ice cream", "probability": 1.0},
        {"id": "juice", "probability": 0.0},
        {"id": "pasta", "probability": 0.0},
    ]
    client.reward(event_id, {"value": 1.0})
    client.activate(event_id)
    decision, feedback = _logged(server, broker, event_id)
    assert (decision.event_id, decision.chosen_action_id) == (event_id, "ice cream")
    assert (decision.deferred, feedback) == (True, 2)
    assert decision.context == {"default": {"timeOfDay": "Morning"}, "user": {"tier": "gold"}}

    with pytest.raises(HttpResponseError) as refused:  # invalid input: 400, its envelope
        client.reward(event_id, {"value": "high"})
    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error.code == "BadRequest"
    with pytest.raises(HttpResponseError) as refused:  # ids are printable, at most 256
        client.rank({"actions": [{"id": "x" * 257}]})
    assert refused.value.status_code == 400
    assert "actions[0].id" in str(refused.value)


def test_azure_cognitiveservices_personalizer_ranks_rewards_and_activates(
    server: Server, broker: str
) -> None:
    client = LegacyClient(server.url, CognitiveServicesCredentials(APP_KEY))
    event_id = f"sdk-{uuid.uuid4().hex[:12]}"
    actions = [RankableAction(id=a["id"], features=a["features"]) for a in ACTIONS]
    answer = client.rank(RankRequest(actions=actions, context_features=CONTEXT, event_id=event_id))
    assert answer.event_id == event_id
    assert {entry.id for entry in answer.ranking} == {"pasta", "ice cream", "juice"}
    assert answer.ranking[0].id == answer.reward_action_id
    assert abs(sum(entry.probability for entry in answer.ranking) - 1.0) < 1e-9
    client.events.reward(event_id, value=0.5)
    client.events.activate(event_id)
    decision, feedback = _logged(server, broker, event_id)
    assert (decision.chosen_action_id, feedback) == (answer.reward_action_id, 2)

    with pytest.raises(HttpOperationError) as refused:
        LegacyClient(server.url, CognitiveServicesCredentials("not-a-key")).rank(
            RankRequest(actions=actions, event_id=f"sdk-{uuid.uuid4().hex[:12]}")
        )
    assert refused.value.response.status_code == 401
