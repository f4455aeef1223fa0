"""``streambandit policy get|set|baseline|resume`` against a real API, broker and Redis."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from typer.testing import CliRunner

from bandit.api.app import create_app
from bandit.ops import cli
from bandit.service.state import StateStore
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import Decision
from policies import Action, make_policy
from tests.bandit.serving import served

ADMIN_KEY = "admin-key-policy-cli-0123"
APP_KEY = "app-key-policy-cli-012345"
ACTIONS = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
USER = {"user": {"tier": "gold"}}
TRAINED = ("main", "switched")
runner = CliRunner()


@dataclass(frozen=True)
class Api:
    """A running API: its base URL and settings."""

    url: str
    settings: Settings


@pytest.fixture(scope="module")
def api(broker: str, redis_url: str) -> Iterator[Api]:
    """An API serving 'main' (vw-epsilon) and 'spare', on a free port, for this module."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(ApiKey(key=ADMIN_KEY, role="admin"), ApiKey(key=APP_KEY, role="app")),
            model_poll_seconds=0.05,
        ),
        policies={"main": "vw-epsilon", "spare": "vw-epsilon", "switched": "vw-epsilon"},
    )
    asyncio.run(_save_trained(settings))
    with served(create_app(settings), "api-policy-cli") as url:
        yield Api(url, settings)


async def _save_trained(settings: Settings) -> None:
    """Save, for each of `TRAINED`, a vw-epsilon model that learned 'b' is best."""
    policy = make_policy("vw-epsilon")
    actions = [Action(a["id"]) for a in ACTIONS]
    for i in range(60):
        chosen = i % len(actions)
        policy.learn(USER, actions, chosen, float(actions[chosen].id == "b"), 1 / len(actions))
    redis = Redis.from_url(settings.redis.url)
    try:
        store = StateStore(redis, settings.redis.key_prefix)
        for name in TRAINED:
            await store.save_model(name, policy.snapshot(), 1, {})
    finally:
        await redis.aclose()


def _policy(api: Api, *args: str, key: str = ADMIN_KEY) -> Any:
    return runner.invoke(cli.app, ["policy", *args, "--url", api.url, "--key", key])


def _stored(api: Api, name: str) -> tuple[dict[str, Any], str]:
    answer = httpx.get(
        f"{api.url}/v1/policies/{name}/settings", headers={"X-API-Key": ADMIN_KEY}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json(), answer.headers["ETag"]


def _rank(api: Api, policy: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{api.url}/v1/rank",
        json={"context": USER, "actions": ACTIONS, "policy": policy},
        headers={"X-API-Key": APP_KEY},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _probabilities(answer: dict[str, Any]) -> list[float]:
    return sorted(entry["probability"] for entry in answer["ranking"])


def _metric(api: Api, name: str, policy: str) -> float | None:
    text = httpx.get(f"{api.url}/metrics", timeout=10).text
    match = re.search(rf'^{name}\{{policy="{policy}"\}} (\S+)$', text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def _logged(api: Api, event_ids: set[str]) -> dict[str, Decision]:
    """Read the decisions topic until every event id in `event_ids` is seen."""

    async def body() -> dict[str, Decision]:
        consumer = AIOKafkaConsumer(
            api.settings.kafka.topic("decisions"),
            bootstrap_servers=api.settings.kafka.broker,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        found: dict[str, Decision] = {}
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not event_ids <= set(found) and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for record in (r for batch in batches.values() for r in batch):
                    decision = Decision.model_validate_json(record.value)
                    if decision.event_id in event_ids:
                        found[decision.event_id] = decision
        finally:
            await consumer.stop()
        return found

    return asyncio.run(body())


def test_get_prints_the_live_settings(api: Api) -> None:
    """`policy get` prints every live setting the API holds, as a table or as JSON."""
    table = _policy(api, "get", "spare")
    assert table.exit_code == 0, table.output
    for line in (
        "spec                 vw-epsilon",
        "baseline_forced      no",
        "reward_wait_seconds  10",
    ):
        assert line in table.stdout
    as_json = _policy(api, "get", "spare", "--json")
    assert as_json.exit_code == 0, as_json.output
    stored, _ = _stored(api, "spare")
    assert json.loads(as_json.stdout) == {"policy": "spare", **stored}


def test_set_then_get_round_trips_and_keeps_what_was_not_named(api: Api) -> None:
    """`policy set` changes the named settings live; `get` shows them; the rest stays."""
    _, etag = _stored(api, "main")
    changed = _policy(
        api,
        "set",
        "main",
        "--exploration",
        "epsilon=0.3",
        "--floor",
        "0.02",
        "--reward-wait",
        "30",
        "--default-reward",
        "-0.5",
    )
    assert changed.exit_code == 0, changed.output
    stored, new_etag = _stored(api, "main")
    assert (
        stored["exploration"],
        stored["exploration_floor"],
        stored["reward_wait_seconds"],
        stored["default_reward"],
        stored["reward_aggregation"],
        stored["baseline_forced"],
    ) == ({"epsilon": 0.3}, 0.02, 30.0, -0.5, "earliest", False)
    assert int(new_etag.strip('"')) == int(etag.strip('"')) + 1
    shown = _policy(api, "get", "main", "--json")
    assert json.loads(shown.stdout) == {"policy": "main", **stored}
    # the new exploration serves at once: epsilon 0.3 over 3 actions
    assert max(_probabilities(_rank(api, "main"))) == pytest.approx(1 - 0.3 * 2 / 3)
    again = _policy(api, "set", "main", "--floor", "0.05")
    assert again.exit_code == 0, again.output
    assert _stored(api, "main")[0]["exploration"] == {"epsilon": 0.3}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--floor", "2"], "'--floor'"),
        (["--floor", "0"], "'--floor'"),
        (["--reward-wait", "-1"], "'--reward-wait'"),
        (["--default-reward", "nan"], "'--default-reward'"),
        (["--exploration", "epsilon"], "'--exploration'"),
        (["--exploration", "epsilon=lots"], "'--exploration'"),
        ([], "at least one of --exploration"),
    ],
)
def test_set_refuses_a_bad_value_naming_the_option(api: Api, args: list[str], named: str) -> None:
    """A value breaking a rule ends with exit 2 and a message naming the option; nothing changes."""
    before = _stored(api, "spare")
    refused = _policy(api, "set", "spare", *args)
    assert refused.exit_code == 2, refused.output
    assert named in " ".join(refused.output.split())
    assert _stored(api, "spare") == before


def test_set_reports_the_servers_refusal(api: Api) -> None:
    """Exploration the policy lacks is refused by the server: exit 2, its reason, no change."""
    before = _stored(api, "spare")
    refused = _policy(api, "set", "spare", "--exploration", "gamma_scale=3")
    assert refused.exit_code == 2, refused.output
    assert "policy set: refused:" in refused.output
    assert "gamma_scale" in refused.output
    assert _stored(api, "spare") == before


def test_an_app_key_or_no_api_fails_with_one_line(api: Api) -> None:
    """A key that may not change settings, or no API at the URL: exit 1, one line, no traceback."""
    denied = _policy(api, "baseline", "spare", key=APP_KEY)
    assert denied.exit_code == 1, denied.output
    # (the server, in this process, logs the refusal to the same stream, before or after)
    lines = [line for line in denied.output.splitlines() if "request.rejected" not in line]
    expected = (
        "policy baseline failed: HTTP 403: the kill switch needs an admin key; "
        "this key's role is 'app'"
    )
    assert lines == [expected]
    assert "Traceback" not in denied.output
    assert _stored(api, "spare")[0]["baseline_forced"] is False
    gone = runner.invoke(
        cli.app, ["policy", "get", "spare", "--url", "http://127.0.0.1:9", "--key", ADMIN_KEY]
    )
    assert gone.exit_code == 1, gone.output
    assert gone.output.splitlines()[-1].startswith("policy get failed: ")


def test_baseline_serves_uniform_with_logged_propensities_and_resume_restores(api: Api) -> None:
    """The kill switch makes the next ranks uniform, logged as the baseline's; resume undoes it."""
    policy = "switched"
    before = _rank(api, policy)
    assert max(_probabilities(before)) == pytest.approx(1 - 0.05 * 2 / 3)  # vw-epsilon
    assert _metric(api, "streambandit_baseline_forced", policy) == 0

    forced = _policy(api, "baseline", policy)
    assert forced.exit_code == 0, forced.output
    assert "the baseline (uniform) serves every request" in forced.stdout
    assert _stored(api, policy)[0]["baseline_forced"] is True
    during = [_rank(api, policy) for _ in range(5)]
    for answer in during:
        assert _probabilities(answer) == pytest.approx([1 / 3] * 3)
        assert answer["probability"] == pytest.approx(1 / 3)
    assert _metric(api, "streambandit_baseline_forced", policy) == 1
    assert "(it already was)" in _policy(api, "baseline", policy).stdout

    resumed = _policy(api, "resume", policy)
    assert resumed.exit_code == 0, resumed.output
    after = _rank(api, policy)
    assert max(_probabilities(after)) == pytest.approx(1 - 0.05 * 2 / 3)
    assert _metric(api, "streambandit_baseline_forced", policy) == 0
    assert _stored(api, policy)[0]["baseline_forced"] is False

    ids = {before["event_id"], after["event_id"], *(a["event_id"] for a in during)}
    logged = _logged(api, ids)
    assert set(logged) == ids
    for answer in during:  # logged with the baseline's propensities, context kept to learn
        decision = logged[answer["event_id"]]
        assert decision.consent == "baseline"
        assert [r.probability for r in decision.ranking] == pytest.approx([1 / 3] * 3)
        assert decision.probability == pytest.approx(1 / 3)
        assert decision.learn
        assert decision.context == USER
    for answer in (before, after):
        assert logged[answer["event_id"]].consent == "personalise"


def test_the_switch_works_when_stored_settings_break_a_rule_changed_since(api: Api) -> None:
    """A default reward stored before the range narrowed cannot stand in the switch's way."""
    policy = "spare"
    current, _ = _stored(api, policy)
    stale = {**current, "default_reward": 1e6, "baseline_forced": False}  # outside today's range

    async def store_stale() -> None:  # as if set under a wider range, before an upgrade
        redis = Redis.from_url(api.settings.redis.url)
        try:
            key = StateStore(redis, api.settings.redis.key_prefix).key("policy", policy, "settings")
            await redis.set(key, json.dumps(stale))
        finally:
            await redis.aclose()

    asyncio.run(store_stale())
    refused = httpx.put(
        f"{api.url}/v1/policies/{policy}/settings",
        json=stale,
        headers={"X-API-Key": ADMIN_KEY},
        timeout=10,
    )
    assert refused.status_code == 422  # a whole write is checked against today's rules
    forced = _policy(api, "baseline", policy)
    assert forced.exit_code == 0, forced.output
    stored, _ = _stored(api, policy)
    assert stored["baseline_forced"] is True
    assert stored["default_reward"] == 1e6  # the rest kept as it was
    assert _policy(api, "resume", policy).exit_code == 0
    assert _stored(api, policy)[0]["baseline_forced"] is False
    app_key = httpx.put(
        f"{api.url}/v1/policies/{policy}/baseline",
        json={"forced": True},
        headers={"X-API-Key": APP_KEY},
        timeout=10,
    )
    assert app_key.status_code == 403
    assert "the kill switch needs an admin key" in app_key.text
