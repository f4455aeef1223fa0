"""Personalizer's multi-slot routes: rank, per-slot rewards, activate, on a CCB policy.

A real uvicorn server, the real broker and Redis. The .NET client's v1.1-preview.3 paths
get the request bodies of the specification's examples; ``azure-ai-personalizer`` its own
calls. Each multi-slot rank is logged as one decision holding every slot's distribution.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.ai.personalizer import PersonalizerClient
from azure.core.credentials import AzureKeyCredential

from bandit.api.app import create_app
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from bandit.wire.schemas import LENIENT_IDS, Activation, Decision, RewardReported
from policies import Distribution, decide_ranking, slot_seed
from tests.bandit.serving import served
from tests.bandit.test_api import APP_KEY, _read

ADMIN_KEY = "admin-key-multislot-01234"
KEY = {"Ocp-Apim-Subscription-Key": APP_KEY}
ADMIN = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
PREVIEW3 = "/personalizer/v1.1-preview.3"

# The body of the specification's example MultiSlot_Rank.json (v1.1-preview.3).
SPEC_RANK: dict[str, Any] = {
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
    "slots": [
        {
            "id": "Main Article",
            "features": [{"size": "Large", "position": "Top Middle"}],
            "excludedActions": ["SportsArticle"],
            "baselineAction": "EntertainmentArticle",
        },
        {"id": "Side Bar", "features": [{"size": "Small"}], "baselineAction": "NewsArticle"},
    ],
    "eventId": "75269AD0-BFEE-4598-8196-C57383D38E10",
    "deferActivation": False,
}
# ... of MultiSlotEvents_Reward.json (its slot ids, as the example has them)
SPEC_REWARD = {
    "reward": [{"slotId": "Heroposition", "value": 0.5}, {"slotId": "SideBar", "value": 0.6}]
}


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[tuple[str, Settings]]:
    """The API serving `main`, `modes` and `learning`, all VW's CCB, for this module."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=APP_KEY, role="app", policies=("main", "modes")),
                ApiKey(key=ADMIN_KEY, role="admin"),
            ),
            model_poll_seconds=0.05,
        ),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-multislot-0123"),
        policies={"main": "vw-ccb", "modes": "vw-ccb", "learning": "vw-ccb"},
    )
    with served(create_app(settings), "api-multislot") as url:
        yield url, settings


@pytest.fixture
def client(server: tuple[str, Settings]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=10) as http:
        yield http


def _topic(server: tuple[str, Settings], name: str) -> str:
    return f"{server[1].kafka.topic_prefix}.{name}"


def _decision(server: tuple[str, Settings], broker: str, event_id: str) -> Decision:
    [value] = _read(broker, _topic(server, "decisions"), {event_id})
    return Decision.model_validate_json(value, context=LENIENT_IDS)


def _check_slots(decision: Decision, answer: dict[str, Any]) -> None:
    """Every slot's logged distribution is valid, and re-derives the slot's choice."""
    assert decision.slots is not None
    assert [(s.id, s.chosen_action_id) for s in decision.slots] == [
        (s["id"], s["rewardActionId"]) for s in answer["slots"]
    ]
    chosen = [s.chosen_action_id for s in decision.slots]
    assert len(set(chosen)) == len(chosen)  # no action twice
    taken: set[int] = set()
    for number, slot in enumerate(decision.slots):
        assert not taken & set(slot.include)
        by_id = {entry.id: entry.probability for entry in slot.ranking}
        probabilities = [by_id[decision.actions[i].id] for i in slot.include]
        assert all(0.0 < p <= 1.0 for p in probabilities)
        assert math.isclose(math.fsum(probabilities), 1.0, abs_tol=1e-9)
        again = decide_ranking(
            Distribution(tuple(probabilities)), slot_seed(decision.event_id, number)
        )
        assert slot.include[again.index] == slot.chosen_index
        assert again.probability == slot.probability
        taken.add(slot.chosen_index)


def test_the_specifications_examples_rank_reward_and_activate_at_v1_1_preview_3(
    client: httpx.Client, server: tuple[str, Settings], broker: str
) -> None:
    """Its rank example answers 201 with each slot's action; its reward and activate 204."""
    body = {**SPEC_RANK, "eventId": f"{SPEC_RANK['eventId']}-{uuid.uuid4().hex[:6]}"}
    event_id = body["eventId"]
    ranked = client.post(f"{PREVIEW3}/multislot/rank", json=body, headers=KEY)
    assert ranked.status_code == 201, ranked.text
    answer = ranked.json()
    assert answer["eventId"] == event_id
    assert [slot["id"] for slot in answer["slots"]] == ["Main Article", "Side Bar"]
    assert answer["slots"][0]["rewardActionId"] != "SportsArticle"  # the slot excludes it
    decision = _decision(server, broker, event_id)
    _check_slots(decision, answer)
    assert decision.slots is not None
    main, side = decision.slots
    assert decision.actions[main.include[0]].id == "EntertainmentArticle"
    assert "SportsArticle" not in {decision.actions[i].id for i in main.include}
    assert main.features == {"default.size": "Large", "default.position": "Top Middle"}
    assert side.baseline_action_id == "NewsArticle"
    assert (decision.chosen_action_id, decision.ranking) == (main.chosen_action_id, main.ranking)
    assert decision.context["device"] == {"mobile": 1.0, "windows": 1.0}

    rewarded = client.post(
        f"{PREVIEW3}/multislot/events/{event_id}/reward", json=SPEC_REWARD, headers=KEY
    )
    assert rewarded.status_code == 204, rewarded.text
    activated = client.post(f"{PREVIEW3}/multislot/events/{event_id}/activate", headers=KEY)
    assert activated.status_code == 204, activated.text
    records = [
        RewardReported.model_validate_json(value, context=LENIENT_IDS)
        if b'"reward"' in value
        else Activation.model_validate_json(value, context=LENIENT_IDS)
        for value in _read(broker, _topic(server, "rewards"), {event_id}, at_least=3)
    ]
    rewards = sorted((r.slot_id, r.reward) for r in records if isinstance(r, RewardReported))
    assert rewards == [("Heroposition", 0.5), ("SideBar", 0.6)]
    assert sum(isinstance(r, Activation) for r in records) == 1


def test_azure_ai_personalizer_ranks_rewards_and_activates_multi_slot(
    server: tuple[str, Settings], broker: str
) -> None:
    """The SDK's rank_multi_slot, reward_multi_slot and activate_multi_slot, endpoint changed."""
    sdk = PersonalizerClient(server[0], AzureKeyCredential(APP_KEY))
    event_id = f"sdk multi {uuid.uuid4().hex[:8]}/page"
    answer = sdk.rank_multi_slot(
        {
            "contextFeatures": [{"timeOfDay": "Morning"}],
            "actions": [{"id": "pasta"}, {"id": "ice cream"}, {"id": "juice"}],
            "slots": [
                {"id": "hero", "baselineAction": "pasta"},
                {"id": "side bar", "excludedActions": ["pasta"], "baselineAction": "juice"},
                {"id": "footer", "baselineAction": "ice cream"},
            ],
            "eventId": event_id,
            "deferActivation": True,
        }
    )
    assert answer["eventId"] == event_id
    assert len({slot["rewardActionId"] for slot in answer["slots"]}) == 3  # every action once
    sdk.reward_multi_slot(event_id, {"reward": [{"slotId": "hero", "value": 1.0}]})
    sdk.activate_multi_slot(event_id)
    decision = _decision(server, broker, event_id)
    _check_slots(decision, answer)
    assert decision.deferred
    assert len(_read(broker, _topic(server, "rewards"), {event_id}, at_least=2)) == 2


@pytest.mark.parametrize(
    ("change", "target", "rule"),
    [
        ({"slots": []}, "slots", "1 to 10 slots allowed"),
        ({"slots": [{"id": "a"}, {"id": "a"}]}, "slots", "slot ids must be distinct"),
        (
            {"slots": [{"id": "a", "excludedActions": ["nope"]}]},
            "slots",
            "excluded actions must be among the actions offered",
        ),
        (
            {"slots": [{"id": "a"}, {"id": "b", "excludedActions": ["x", "y"]}]},
            "slots",
            "must allow at least 2, got 1",
        ),
        (
            {"slots": [{"id": "a", "baselineAction": "x", "excludedActions": ["x"]}]},
            "slots",
            "the baseline action must be one the slot may show",
        ),
        (
            {"slots": [{"id": "a", "features": [{"n": float("nan")}]}]},
            None,
            "",
        ),
    ],
)
def test_invalid_multi_slot_requests_are_400_naming_the_field_and_rule(
    client: httpx.Client, change: dict[str, Any], target: str | None, rule: str
) -> None:
    """A slot breaking a rule is refused in Personalizer's envelope, nothing decided."""
    body = {"actions": [{"id": "x"}, {"id": "y"}, {"id": "z"}], **change}
    try:
        answer = client.post(f"{PREVIEW3}/multislot/rank", json=body, headers=KEY)
    except ValueError:  # NaN cannot be sent as JSON: send it as text
        raw = '{"actions": [{"id": "x"}], "slots": [{"id": "a", "features": [{"n": NaN}]}]}'
        answer = client.post(
            f"{PREVIEW3}/multislot/rank", content=raw,
            headers={**KEY, "Content-Type": "application/json"},
        )  # fmt: skip
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    if target is not None:
        details = error["details"]
        assert any(d["target"] == target and rule in d["message"] for d in details), details


def test_a_slot_reward_names_its_slot_and_is_bounded(client: httpx.Client) -> None:
    """A reward without a slot id, or beyond the reward range, is 400 naming it."""
    url = f"{PREVIEW3}/multislot/events/e1/reward"
    missing = client.post(url, json={"reward": [{"value": 1.0}]}, headers=KEY)
    assert missing.status_code == 400
    assert "reward[0].slotId" in {d["target"] for d in missing.json()["error"]["details"]}
    large = client.post(url, json={"reward": [{"slotId": "s", "value": 1e6}]}, headers=KEY)
    assert large.status_code == 400
    assert "reward[0].value" in {d["target"] for d in large.json()["error"]["details"]}
    empty = client.post(url, json={"reward": []}, headers=KEY)
    assert empty.status_code == 400


def test_apprentice_serves_each_slots_baseline_action(
    client: httpx.Client, server: tuple[str, Settings], broker: str
) -> None:
    """In Apprentice mode every slot shows its baseline action; the model's own logged beside."""
    config_url = f"{PREVIEW3}/configurations/service?policy=modes"
    config = client.get(config_url, headers=ADMIN).json()
    changed = client.put(config_url, json={**config, "learningMode": "Apprentice"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    event_ids = [f"appr-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for event_id in event_ids:
        ranked = client.post(
            f"{PREVIEW3}/multislot/rank?policy=modes", json={**SPEC_RANK, "eventId": event_id},
            headers=KEY,
        )  # fmt: skip
        assert ranked.status_code == 201, ranked.text
        assert [s["rewardActionId"] for s in ranked.json()["slots"]] in (
            ["EntertainmentArticle", "NewsArticle"],  # the baselines, unless the floor's draw
            ["EntertainmentArticle", "SportsArticle"],
            ["NewsArticle", "EntertainmentArticle"],
            ["NewsArticle", "SportsArticle"],
        )
    values = _read(broker, _topic(server, "decisions"), set(event_ids))
    for value in values:
        decision = Decision.model_validate_json(value, context=LENIENT_IDS)
        assert decision.learning_mode == "Apprentice"
        assert decision.slots is not None
        for slot in decision.slots:
            top = max(slot.ranking, key=lambda entry: entry.probability)
            if slot.baseline_action_id in {decision.actions[i].id for i in slot.include}:
                assert top.id == slot.baseline_action_id
            assert slot.learned is not None
            assert math.isclose(math.fsum(slot.learned), 1.0, abs_tol=1e-9)


def test_the_learning_policy_of_a_ccb_policy_changes_by_a_ccb_command_line(
    client: httpx.Client,
) -> None:
    """A --ccb_explore_adf line changes a vw-ccb policy (live, or with a fresh model of the
    new options, still multi-slot); a --cb_explore_adf one is 400 naming `arguments`; DELETE
    goes back to the configured spec."""
    url = f"{PREVIEW3}/configurations/policy?policy=learning"
    read = client.get(url, headers=ADMIN)
    assert read.status_code == 200, read.text
    original = read.json()["arguments"]
    assert original.startswith("--ccb_explore_adf --squarecb ")

    single = {"name": "learning", "arguments": "--cb_explore_adf --epsilon 0.2"}
    refused = client.put(url, json=single, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    [detail] = refused.json()["error"]["details"]
    assert detail["target"] == "arguments"
    assert "must hold --ccb_explore_adf" in detail["message"]
    assert client.get(url, headers=ADMIN).json()["arguments"] == original

    live = original.replace("--gamma_scale 10.0", "--gamma_scale 30")
    answer = client.put(url, json={"name": "learning", "arguments": live}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Streambandit-Model-Reset"] == "false"
    assert "--gamma_scale 30.0" in answer.json()["arguments"]

    new = {"name": "learning", "arguments": "--ccb_explore_adf --epsilon 0.2 -q ca -q sa"}
    answer = client.put(url, json=new, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Streambandit-Model-Reset"] == "true"
    arguments = answer.json()["arguments"]
    assert arguments.startswith("--ccb_explore_adf --epsilon 0.2 --interactions ca ")
    assert "--interactions sa" in arguments
    settings = client.get("/v1/policies/learning/settings", headers={"X-API-Key": ADMIN_KEY})
    assert settings.json()["spec"].startswith("vw-ccb:")

    reset = client.delete(url, headers=ADMIN)
    assert reset.status_code == 200, reset.text
    assert reset.json()["arguments"] == original


def test_identifier_slot_features_are_dropped_as_context_features_are(
    client: httpx.Client, server: tuple[str, Settings], broker: str
) -> None:
    """A slot's identifier-like feature never reaches the policy or the log."""
    event_id = f"ids-{uuid.uuid4().hex[:10]}"
    body = {
        "actions": [{"id": "x"}, {"id": "y"}],
        "slots": [{"id": "top", "features": [{"contact": "ann@example.com", "size": "L"}]}],
        "eventId": event_id,
    }
    answer = client.post(f"{PREVIEW3}/multislot/rank", json=body, headers=KEY)
    assert answer.status_code == 201, answer.text
    decision = _decision(server, broker, event_id)
    assert decision.slots is not None
    assert decision.slots[0].features == {"default.size": "L"}
