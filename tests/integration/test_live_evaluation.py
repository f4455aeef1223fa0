"""Live evaluation on the real stack: candidates set through the API, read back from it.

The served policy is uniform over three actions, and a decision earns 1 exactly when
its segment's best action was served: the uniform candidate's weight is 1 on every
decision, so its estimate is the logged reward mean, and the candidate that always
serves the best action is worth 1 (its floor aside).
"""

from __future__ import annotations

import random

import httpx

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import LiveEvaluationSettings, PolicySettings
from tests.integration.conftest import ACTIONS, best_action, wait_for

POLICIES = {"default": "uniform"}
ROUTE = "/v1/policies/default/evaluation/live"


def test_candidates_are_evaluated_on_live_traffic_and_read_from_the_api(
    stack: LocalStack,
) -> None:
    """Ranked and rewarded decisions reach each candidate's figures once each."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as http:
        assert http.get(ROUTE).json()["enabled"] is False  # no live evaluation yet
    candidates = ["uniform", 'fixed:order=["item-0"]', "vw-epsilon"]
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings(
            "default",
            PolicySettings(
                spec="uniform",
                reward_wait_seconds=1.0,
                live_evaluation=LiveEvaluationSettings(candidates=candidates, alpha=0.05),
            ),
        )
    n = 150
    rng = random.Random(5)
    rewards = []
    with Client(stack.api_url, api_key=stack.app_key) as client:
        for _ in range(n):
            segment = 0  # item-0 is its best action
            result = client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
            reward = float(result.action_id == best_action(segment))
            if reward or rng.random() < 0.5:  # some rewards never come: default 0
                client.reward(result.event_id, reward)
            rewards.append(reward)

    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as http:

        def report() -> dict[str, object]:
            answer = http.get(ROUTE)
            assert answer.status_code == 200, answer.text
            body: dict[str, object] = answer.json()
            return body

        wait_for(lambda: report()["logged"]["n"] >= n, 90, "the learner")  # type: ignore[index]
        found = report()
        rows = {row["candidate"]: row for row in found["candidates"]}  # type: ignore[attr-defined]
        assert list(rows) == candidates
        assert found["logged"]["n"] == n  # type: ignore[index]
        mean = sum(rewards) / n
        assert abs(rows["uniform"]["estimate"] - mean) < 1e-9
        assert rows["uniform"]["lower"] <= mean <= rows["uniform"]["upper"]
        best = rows['fixed:order=["item-0"]']
        assert best["n"] == n
        assert best["lower"] > rows["uniform"]["upper"]  # told apart at this level
        assert rows["vw-epsilon"]["n"] == n
        metrics = http.get("/metrics").text
        assert 'streambandit_live_evaluation_decisions{candidate="uniform",policy="default"}' in (
            metrics
        )
