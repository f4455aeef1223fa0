"""Consent through the whole loop: what is learned and logged, per consent state.

API and stream worker run as processes on the session's broker and Redis. Four people
(both consents, personalisation only, learning only, none recorded) are ranked and
rewarded; afterwards the model has learned exactly the decisions of the two with
learning consent, the decision log holds exactly theirs (the baseline's marked as
such, with uniform probabilities), and the others are only counted.
"""

from __future__ import annotations

import json

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import PolicySettings
from tests.integration.conftest import ACTIONS, n_learned, read_counters, wait_for

PEOPLE = {
    "both@example.org": (True, True),
    "personal-only@example.org": (True, False),
    "learning-only@example.org": (False, True),
    "never-asked@example.org": None,  # no record: consent_default, denied
}
ROUNDS = 25


def test_only_decisions_with_learning_consent_are_learned_and_logged(
    stack: LocalStack, redis_url: str
) -> None:
    """Model updates and log lines per consent state: learning consent, and nothing else."""
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=0.5))
    event_ids: dict[str, list[str]] = {person: [] for person in PEOPLE}
    with Client(stack.api_url, api_key=stack.app_key) as client:
        for person, consent in PEOPLE.items():
            if consent is not None:
                client.set_consent(
                    person, personalisation=consent[0], learning=consent[1], source="test"
                )
        for i in range(ROUNDS):
            for person in PEOPLE:
                result = client.rank({"user": {"segment": f"s{i % 2}"}}, ACTIONS, user_id=person)
                event_ids[person].append(result.event_id)
                client.reward(result.event_id, 1.0 if i % 3 else 0.0)
    learnable = {e for p in ("both@example.org", "learning-only@example.org") for e in event_ids[p]}
    total = ROUNDS * len(PEOPLE)
    wait_for(lambda: read_counters(stack, redis_url).get("decisions", 0) >= total, 60, "the join")
    wait_for(lambda: n_learned(stack, redis_url) >= len(learnable), 60, "the learner")
    counters = read_counters(stack, redis_url)
    assert counters["decisions"] == total
    assert counters["not_learned"] == total - len(learnable)

    def logged() -> list[dict[str, object]]:
        return [
            json.loads(line)
            for path in sorted(stack.decision_logs.rglob("*.dsjson"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]

    wait_for(lambda: {r["EventId"] for r in logged()} >= learnable, 30, "the log")
    # a last look once everything learnable is in: nothing else came, nothing twice
    assert n_learned(stack, redis_url) == len(learnable)
    lines = logged()
    assert sorted(str(r["EventId"]) for r in lines) == sorted(learnable)
    by_id = {str(r["EventId"]): r for r in lines}
    for event_id in event_ids["learning-only@example.org"]:
        line = by_id[event_id]
        assert line["_sb"]["consent"] == "baseline"  # type: ignore[index]
        assert line["p"] == [1 / 3] * 3
    for event_id in event_ids["both@example.org"]:
        assert by_id[event_id]["_sb"]["consent"] == "personalise"  # type: ignore[index]
    everything = "".join(path.read_text() for path in stack.decision_logs.rglob("*.dsjson"))
    assert "example.org" not in everything
