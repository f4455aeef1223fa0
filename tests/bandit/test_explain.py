"""Explanations from the model's own predictions; exploration and baseline say so."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx

from bandit.api import create_app
from bandit.explain import explain
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from policies import Action, Policy, make_policy
from tests.bandit.test_api import _metric

ACTIONS = [
    Action("sport-news", {"item": {"topic": "sport"}}),
    Action("cooking", {"item": {"topic": "food"}}),
    Action("markets", {"item": {"topic": "finance"}}),
]
APP_KEY = "app-key-explain-012345678"


def _trained() -> Policy:
    """A VW policy that learned: the section the page is in picks the topic that pays."""
    policy = make_policy("vw-squarecb")
    rng = random.Random(3)
    sections = ["sport", "food", "finance"]
    for _ in range(3000):
        section = rng.choice(sections)
        context = {"page": {"section": section}, "user": {"tier": rng.choice(["gold", "basic"])}}
        chosen = rng.randrange(3)
        reward = float(ACTIONS[chosen].features["item"]["topic"] == section)
        policy.learn(context, ACTIONS, chosen, reward, 1 / 3)
    return policy


def test_the_feature_that_drives_the_choice_is_named_first() -> None:
    """On a sport page the model picks the sport item; the page section is why."""
    policy = _trained()
    context = {"page": {"section": "sport"}, "user": {"tier": "gold"}}
    chosen = policy.pmf(context, ACTIONS).argmax()
    assert ACTIONS[chosen].id == "sport-news"
    found = explain(
        policy, context, ACTIONS, chosen, explored=False, personalised=True,
        policy_name="default", model_version="7",
    )  # fmt: skip
    assert found.kind == "personalised"
    reasons = [effect.feature for effect in found.for_it]
    assert reasons
    assert reasons[0] in {"context.page.section=sport", "action.item.topic=sport"}
    assert "context.page.section=sport" in reasons
    assert all(effect.effect > 0 for effect in found.for_it)
    assert all(effect.feature != "context.user.tier=gold" for effect in found.for_it[:1])
    assert "'sport-news' was the model's best guess" in found.text
    assert "context.page.section=sport (+" in found.text
    assert found.model_version == "7"


def test_exploration_and_the_baseline_say_so_and_give_no_reason() -> None:
    """An exploratory choice and a baseline choice are not dressed up with reasons."""
    policy = _trained()
    context = {"page": {"section": "sport"}}
    explored = explain(
        policy, context, ACTIONS, 2, explored=True, personalised=True,
        policy_name="default", model_version="7",
    )  # fmt: skip
    assert explored.kind == "exploration"
    assert explored.for_it == []
    assert explored.against_it == []
    assert "exploratory choice" in explored.text
    assert "not chosen because of anything about you" in explored.text
    baseline = explain(
        make_policy("uniform"), context, ACTIONS, 1, explored=False, personalised=False,
        policy_name="default", model_version="7",
    )  # fmt: skip
    assert baseline.kind == "baseline"
    assert baseline.probability == 1 / 3
    assert "not agreed to personalisation" in baseline.text


def test_a_sampling_policy_is_not_credited_with_feature_effects() -> None:
    """LinTS estimates its pmf by sampling: its explanation names no feature."""
    context = {"page": {"section": "sport", "hour": 3.0, "lang": "en"}}
    policy = make_policy("lints")
    chosen = policy.pmf(context, ACTIONS).argmax()
    found = explain(
        policy, context, ACTIONS, chosen, explored=False, personalised=True,
        policy_name="default", model_version="0",
    )  # fmt: skip
    assert found.for_it == []
    assert found.against_it == []
    assert "samples from what it is unsure of" in found.text


def test_rank_answers_with_its_explanation_on_request(broker: str, redis_url: str) -> None:
    """explain=true: the answer carries an explanation of exactly that decision."""
    prefix = f"x{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=APP_KEY, role="app"),)),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-explain-0123"),
        policies={"default": "vw-squarecb"},
    )
    body = {
        "context": {"page": {"section": "sport"}},
        "actions": [{"id": a.id, "features": a.features} for a in ACTIONS],
        "explain": True,
    }

    async def run() -> tuple[dict[str, object], dict[str, object], int]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", headers={"X-API-Key": APP_KEY}
            ) as http:
                explained = await http.post("/v1/rank", json=body)
                nobody = await http.post("/v1/rank", json={**body, "user_id": "no-consent-user"})
                plain = await http.post("/v1/rank", json={**body, "explain": False})
                metrics = (await http.get("/metrics")).text
        assert _metric(metrics, "streambandit_explanations_total", kind="baseline") == 1
        assert explained.status_code == 200, explained.text
        return explained.json(), nobody.json(), len(plain.json().get("explanation") or [])

    answer, baseline, plain = asyncio.run(run())
    explanation = answer["explanation"]
    assert isinstance(explanation, dict)
    assert explanation["chosen_action_id"] == answer["chosen_action_id"]
    assert explanation["probability"] == answer["probability"]
    assert explanation["policy"] == "default"
    assert explanation["kind"] in {"personalised", "exploration"}
    assert isinstance(explanation["text"], str)
    assert baseline["explanation"]["kind"] == "baseline"  # type: ignore[index]
    assert plain == 0
