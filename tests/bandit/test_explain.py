"""Explanations from the model's own predictions; exploration and baseline say so."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bandit.api.app import create_app
from bandit.service.engine import LoadedPolicy
from bandit.service.explain import Explanation, explain
from bandit.service.explainer import Explainer, explain_limit_errors
from bandit.service.metrics import ApiMetrics
from bandit.settings import (
    ApiKey,
    ApiSettings,
    ExplainSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from bandit.wire.schemas import PolicySettings
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


def test_an_explanation_past_its_deadline_stops() -> None:
    """explain gives up with TimeoutError once its deadline has passed."""
    policy = _trained()
    context = {"page": {"section": "sport"}, "user": {"tier": "gold"}}
    chosen = policy.pmf(context, ACTIONS).argmax()
    with pytest.raises(TimeoutError, match=r"not done by its deadline: 0 of 3 features"):
        explain(
            policy, context, ACTIONS, chosen, explored=False, personalised=True,
            policy_name="default", model_version="7", deadline=time.monotonic() - 1,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("context", "actions", "match"),
    [
        ({}, [{}] * 4, (r"\['body', 'actions'\]: an explained rank offers at most 3 actions "
         r"\(STREAMBANDIT_EXPLAIN__MAX_ACTIONS\), got 4; ask without explain")),
        ({"u": {"a": 1, "b": 2}}, [{"i": {"t": "x", "w": 1}}, {}],
         (r"\['body', 'explain'\]: an explained rank carries at most 3 features in its "
          r"context and actions together \(STREAMBANDIT_EXPLAIN__MAX_FEATURES\), got 4; ask "
          r"without explain")),
    ],
)  # fmt: skip
def test_explanation_limits_name_the_field_the_rule_and_the_setting(
    context: dict[str, dict[str, Any]], actions: list[dict[str, dict[str, Any]]], match: str
) -> None:
    """Each limit broken is one detail naming the field, the limit, its setting and the count."""
    found = explain_limit_errors(context, actions, ExplainSettings(max_features=3, max_actions=3))
    assert len(found) == 1
    assert re.match(match, f"{found[0]['loc']}: {found[0]['msg']}")


def _settings(broker: str, redis_url: str, explain: ExplainSettings) -> Settings:
    prefix = f"x{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=APP_KEY, role="app"),)),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-explain-0123"),
        policies={"default": "vw-squarecb"},
        explain=explain,
    )


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"X-API-Key": APP_KEY}
        ) as http:
            yield app, http


def _wide(features: int, actions: int) -> dict[str, Any]:
    """An explained rank with `features` context features, 64 to a namespace."""
    context: dict[str, dict[str, float]] = {}
    for index in range(features):
        context.setdefault(f"n{index // 64}", {})[f"f{index % 64}"] = (index % 7 + 1) / 8
    offered = [{"id": f"a{i}", "features": {"item": {"k": f"v{i}"}}} for i in range(actions)]
    return {"context": context, "actions": offered, "explain": True}


def test_an_explained_rank_beyond_the_limits_is_refused_before_deciding(
    broker: str, redis_url: str
) -> None:
    """Too many actions or features for an explanation: 422 naming each rule; nothing decided."""
    settings = _settings(broker, redis_url, ExplainSettings(max_features=40, max_actions=5))

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response, str]:
        async with _client(settings) as (_, http):
            too_wide = await http.post("/v1/rank", json=_wide(40, 6))
            plain = await http.post("/v1/rank", json={**_wide(40, 6), "explain": False})
            allowed = await http.post("/v1/rank", json=_wide(35, 5))
            metrics = (await http.get("/metrics")).text
        return too_wide, plain, allowed, metrics

    too_wide, plain, allowed, metrics = asyncio.run(run())
    assert too_wide.status_code == 422, too_wide.text
    details = too_wide.json()["detail"]
    assert [d["loc"] for d in details] == [["body", "actions"], ["body", "explain"]]
    assert "at most 5 actions (STREAMBANDIT_EXPLAIN__MAX_ACTIONS), got 6" in details[0]["msg"]
    assert "at most 40 features" in details[1]["msg"]
    assert "(STREAMBANDIT_EXPLAIN__MAX_FEATURES), got 46" in details[1]["msg"]
    assert plain.status_code == 200, plain.text
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["explanation"]["kind"] in {"personalised", "exploration"}
    assert _metric(metrics, "streambandit_decisions_total", policy="default") == 2


def test_a_good_rank_is_answered_while_the_costliest_explanation_runs(
    broker: str, redis_url: str
) -> None:
    """While the most expensive explained rank its limits allow is computed, others are served.

    1,024 context features and 20 actions: about a thousand predictions over all 20
    actions, next to one for a plain rank. Each good rank is answered while the
    explanation is still running, and the explanation still comes.
    """
    limits = ExplainSettings(max_features=1044, max_actions=20, deadline_seconds=60)
    settings = _settings(broker, redis_url, limits)
    good = {"context": {"page": {"section": "sport"}}, "actions": _wide(0, 3)["actions"]}

    async def run() -> tuple[list[bool], dict[str, Any], int]:
        async with _client(settings) as (app, http):
            explainer = app.state.service.explainer
            warm = await http.post("/v1/rank", json=_wide(16, 3))  # starts the helpers
            assert warm.json()["explanation"] is not None
            explained = asyncio.create_task(http.post("/v1/rank", json=_wide(1024, 20)))
            while explainer.running == 0:
                assert not explained.done(), explained.result().text
                await asyncio.sleep(0.001)
            still_running = []
            for _ in range(3):
                answer = await http.post("/v1/rank", json=good)
                assert answer.status_code == 200, answer.text
                still_running.append(not explained.done() and explainer.running == 1)
            done = await explained
            assert done.status_code == 200, done.text
            return still_running, done.json(), explainer.running

    still_running, explained, running = asyncio.run(run())
    assert still_running == [True, True, True]
    assert explained["explanation"] is not None
    assert explained["explanation"]["chosen_action_id"] == explained["chosen_action_id"]
    assert running == 0


def test_past_the_deadline_the_answer_comes_without_its_explanation(
    broker: str, redis_url: str
) -> None:
    """An explanation not done by the deadline: the decision is answered, counted, logged."""
    limits = ExplainSettings(max_features=1044, max_actions=20, deadline_seconds=0.05)
    settings = _settings(broker, redis_url, limits)

    async def run() -> tuple[httpx.Response, str, int]:
        async with _client(settings) as (app, http):
            explainer = app.state.service.explainer
            # (the draw is seeded by the event id: this one takes the most probable
            # action, whose explanation needs the helper; an explored one would not)
            request = {**_wide(1024, 20), "event_id": "explain-deadline-1"}
            answer = await http.post("/v1/rank", json=request)
            metrics = (await http.get("/metrics")).text
            for _ in range(6000):  # the helper stops at its next batch
                if explainer.running == 0:
                    break
                await asyncio.sleep(0.01)
            return answer, metrics, explainer.running

    answer, metrics, running = asyncio.run(run())
    assert answer.status_code == 200, answer.text
    assert answer.json()["explanation"] is None
    assert answer.json()["chosen_action_id"].startswith("a")
    assert _metric(metrics, "streambandit_explanations_missed_total", reason="deadline") == 1
    assert _metric(metrics, "streambandit_decisions_total", policy="default") == 1
    assert _metric(metrics, "streambandit_explored_decisions_total", policy="default") == 0
    assert running == 0


def test_the_privacy_page_explains_past_decisions_within_the_same_limits(
    broker: str, redis_url: str
) -> None:
    """A past decision too large to explain shows as unavailable; a small one is explained."""
    settings = _settings(broker, redis_url, ExplainSettings(max_features=40, max_actions=5))
    person = {"user_id": "person-explained-1"}

    async def run() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with _client(settings) as (_, http):
            given = await http.post(
                "/v1/consent",
                json={**person, "personalisation": True, "learning": True, "source": "test"},
            )
            assert given.status_code == 200, given.text
            made = {}
            for name, features in (("small", 8), ("large", 60)):
                body = {**_wide(features, 3), "explain": False, **person}
                answer = await http.post("/v1/rank", json=body)
                assert answer.status_code == 200, answer.text
                made[answer.json()["event_id"]] = name
            token = (await http.post("/v1/privacy/token", json=person)).json()["token"]
            page = await http.get("/v1/me", headers={"X-Privacy-Token": token})
            assert page.status_code == 200, page.text
            metrics = (await http.get("/metrics")).text
        shown = {made[d["event_id"]]: d["explanation"] for d in page.json()["decisions"]}
        return shown["small"], shown["large"], metrics

    small, large, metrics = asyncio.run(run())
    assert small["kind"] in {"personalised", "exploration"}
    assert large == {
        "kind": "unavailable",
        "text": "This decision used too many features to explain.",
    }
    assert _metric(metrics, "streambandit_explanations_missed_total", reason="limits") == 1


def test_a_helper_explains_the_served_model_exactly_as_it_decides() -> None:
    """A saved model rebuilt in a helper from the engine's bytes: the same explanation."""
    trained = _trained()
    snapshot = trained.snapshot()
    settings = PolicySettings(spec="vw-squarecb", exploration_floor=0.01)
    served = LoadedPolicy(
        "default", Policy.restore(snapshot), 7, 0.0, settings, 3, snapshot
    )  # fmt: skip
    served.policy.configure(floor=0.01)
    context = {"page": {"section": "sport"}, "user": {"tier": "gold"}}
    chosen = served.policy.pmf(context, ACTIONS).argmax()

    async def run() -> tuple[Explanation | None, Explanation | None]:
        explainer = Explainer(ExplainSettings(deadline_seconds=60), ApiMetrics())
        try:
            deadline = explainer.deadline() + 60
            found = await explainer.run(
                served.policy, deadline, context, ACTIONS, chosen, served=served,
                explored=False, personalised=True, policy_name="default", model_version="7",
            )  # fmt: skip
            other = await explainer.run(
                make_policy("uniform"), deadline, {}, ACTIONS, 1, served=served,
                explored=False, personalised=False, policy_name="default", model_version="7",
            )  # fmt: skip
        finally:
            explainer.close()
        return found, other

    found, other = asyncio.run(run())
    expected = explain(
        served.policy, context, ACTIONS, chosen, explored=False, personalised=True,
        policy_name="default", model_version="7",
    )  # fmt: skip
    assert expected.kind == "personalised"
    assert expected.for_it
    assert found == expected
    assert other is not None
    assert other.kind == "baseline"


_HELPERS_THEN_WAIT = """
import asyncio
from bandit.service.explainer import Explainer
from bandit.service.metrics import ApiMetrics
from bandit.settings import ExplainSettings

async def main():
    await Explainer(ExplainSettings(), ApiMetrics())._start()
    print("started", flush=True)
    await asyncio.sleep(120)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[1]) == pid:
                    found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
        return state != "Z"
    return False


def test_explanation_helpers_never_outlive_a_killed_api(tmp_path: Path) -> None:
    """kill -9 of the API's process: its helper processes exit too, no orphan is left."""
    script = tmp_path / "api_like.py"
    script.write_text(_HELPERS_THEN_WAIT)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"started"
        helpers = _children(process.pid)
        assert helpers
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in helpers)
