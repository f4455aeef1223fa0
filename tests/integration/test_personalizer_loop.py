"""Personalizer's own client drives the embedded runtime: Apprentice mode end to end.

The running API and a stream worker (child processes), driven only through
``azure-ai-personalizer`` pointed at the API: the configuration puts the policy in
Apprentice mode with a short reward wait; every rank serves the baseline action (the
floor aside), every outcome is joined and learned by the worker, and the apprentice
figures the worker saved with the model add up to what was sent. Back in Online mode
the same client sees the model learn on.
"""

from __future__ import annotations

import random

from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.core.credentials import AzureKeyCredential

from bandit.ops.runtime import LocalStack
from tests.integration.conftest import n_learned, read_counters, wait_for

ACTIONS = [
    {"id": "news", "features": [{"topic": "news"}]},
    {"id": "sports", "features": [{"topic": "sports"}]},
    {"id": "music", "features": [{"topic": "music"}]},
]


def _rank_and_reward(
    client: PersonalizerClient, n: int, rng: random.Random
) -> list[tuple[str, float]]:
    """Rank `n` times and reward each answer; return (served action, reward) pairs."""
    sent = []
    for _ in range(n):
        segment = rng.randrange(2)
        answer = client.rank(
            {"contextFeatures": [{"user": {"segment": f"s{segment}"}}], "actions": ACTIONS}
        )
        served = answer["rewardActionId"]
        reward = 1.0 if served == ("sports" if segment else "music") else 0.25
        client.reward(answer["eventId"], {"value": reward})
        sent.append((served, reward))
    return sent


def test_apprentice_mode_through_personalizers_client_adds_up(
    stack: LocalStack, redis_url: str
) -> None:
    admin = PersonalizerAdministrationClient(stack.api_url, AzureKeyCredential(stack.admin_key))
    config = admin.get_service_configuration()
    config = admin.update_service_configuration(
        {**config, "rewardWaitTime": "PT1S", "learningMode": "Apprentice"}
    )
    assert config["learningMode"] == "Apprentice"
    assert config["latestApprenticeModeMetrics"]["numberOfEvents"] == 0

    client = PersonalizerClient(stack.api_url, AzureKeyCredential(stack.app_key))
    n = 60
    sent = _rank_and_reward(client, n, random.Random(3))
    baseline = [reward for served, reward in sent if served == "news"]
    assert len(baseline) >= n - 2  # the baseline action, but for the floor's 0.1%

    def metrics() -> dict[str, float]:
        found: dict[str, float] = admin.get_service_configuration()["latestApprenticeModeMetrics"]
        return found

    wait_for(lambda: metrics()["numberOfEvents"] >= n, 90, "the worker to learn every outcome")
    figures = metrics()
    assert figures["numberOfEvents"] == n
    assert abs(figures["sumOfRewards"] - sum(reward for _, reward in sent)) < 1e-9
    assert figures["lastProcessedEventTime"] is not None
    assert n_learned(stack, redis_url) == n  # Apprentice learns from every outcome

    admin.update_service_configuration(
        {**admin.get_service_configuration(), "learningMode": "Online"}
    )
    more = _rank_and_reward(client, 20, random.Random(4))
    wait_for(lambda: n_learned(stack, redis_url) >= n + 20, 60, "the learner, Online again")
    assert read_counters(stack, redis_url).get("apprentice.events") == n  # Online adds none
    assert len(more) == 20
