"""The reward range: rewards and default rewards outside it are refused on every route.

A real uvicorn server against the session's broker and Redis; the Kafka side is the
dead-letter decoder the rewards agent uses.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pydantic
import pytest
from pydantic import TypeAdapter

from bandit.api.app import create_app
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, Limits, RedisSettings, Settings
from bandit.wire.schemas import DeadLetter, PolicySettings, RewardReported, RewardsRecord
from streams.deadletter import RawRecord, decode_record
from tests.bandit.serving import served

APP_KEY = "app-key-range-0123456789"
ADMIN_KEY = "admin-key-range-0123456789"
APP = {"X-API-Key": APP_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
ACTIONS = [{"id": "a"}, {"id": "b"}]
RULE = "must be within [-1000.0, 1000.0] (settings limits.min_reward and limits.max_reward"
SETTING = "STREAMBANDIT_LIMITS__MAX_REWARD"
OUTSIDE = [1e308, -1e308, 3.5e38, 1000.5, -1000.0001, 1e6]


@pytest.fixture(scope="module")
def http(broker: str, redis_url: str) -> Iterator[httpx.Client]:
    """A client of an API served by uvicorn on a free port, for this module."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(ApiKey(key=APP_KEY, role="app"), ApiKey(key=ADMIN_KEY, role="admin")),
            model_poll_seconds=0.05,
        ),
        policies={"default": "vw-squarecb"},
    )
    with (
        served(create_app(settings), "api-reward-range") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def _event_id(http: httpx.Client) -> str:
    answer = http.post("/v1/rank", json={"actions": ACTIONS}, headers=APP)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["event_id"])


def _details(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    details: list[dict[str, Any]] = response.json()["detail"]
    return details


@pytest.mark.parametrize("reward", OUTSIDE, ids=repr)
def test_a_reward_outside_the_range_is_refused_naming_the_field_and_rule(
    http: httpx.Client, reward: float
) -> None:
    """POST /v1/reward answers 422 at `reward`, with the range and the settings to change."""
    response = http.post(
        "/v1/reward", json={"event_id": _event_id(http), "reward": reward}, headers=APP
    )
    (detail,) = _details(response)
    assert detail["loc"] == ["reward"]
    assert detail["msg"].startswith(f"rewards {RULE}")
    assert SETTING in detail["msg"]
    assert detail["type"] == "reward_range"


@pytest.mark.parametrize("reward", [1000.0, -1000.0, 0.0, 1.0, 5e-324])
def test_a_reward_inside_the_range_is_accepted(http: httpx.Client, reward: float) -> None:
    """The bounds themselves and tiny values are rewards like any other (202)."""
    response = http.post(
        "/v1/reward", json={"event_id": _event_id(http), "reward": reward}, headers=APP
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("value", [1e308, 1001.0, -3.5e38])
def test_the_personalizer_reward_route_refuses_values_outside_the_range(
    http: httpx.Client, value: float
) -> None:
    """Personalizer's reward answers 400 (its error shape) naming `value` and the rule."""
    response = http.post(
        f"/personalizer/v1.0/events/{_event_id(http)}/reward",
        json={"value": value},
        headers={"Ocp-Apim-Subscription-Key": APP_KEY},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert [d["target"] for d in error["details"]] == ["value"]
    assert RULE in error["details"][0]["message"]


@pytest.mark.parametrize("default_reward", [1e308, -1e308, 5000.0])
def test_a_default_reward_outside_the_range_is_refused(
    http: httpx.Client, default_reward: float
) -> None:
    """PUT settings answers 422 at `default_reward`; the stored settings stay as they were."""
    before = http.get("/v1/policies/default/settings", headers=ADMIN)
    response = http.put(
        "/v1/policies/default/settings",
        json={"spec": "vw-squarecb", "default_reward": default_reward},
        headers=ADMIN,
    )
    (detail,) = _details(response)
    assert detail["loc"] == ["default_reward"]
    assert detail["msg"].startswith(f"default rewards {RULE}")
    after = http.get("/v1/policies/default/settings", headers=ADMIN)
    assert after.json() == before.json()
    assert after.headers["ETag"] == before.headers["ETag"]


def test_a_default_reward_inside_the_range_is_set(http: httpx.Client) -> None:
    """A default reward of -1 (Personalizer's negative reward) is stored and read back."""
    response = http.put(
        "/v1/policies/default/settings",
        json={"spec": "vw-squarecb", "default_reward": -1.0},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    read = http.get("/v1/policies/default/settings", headers=ADMIN)
    assert read.json()["default_reward"] == -1.0


def test_the_range_is_configurable() -> None:
    """Limits(min_reward, max_reward) moves the range; its message shows the new bounds."""
    tight = {"limits": Limits(min_reward=0.0, max_reward=1.0)}
    assert RewardReported.model_validate({"event_id": "e", "reward": 1.0}, context=tight)
    with pytest.raises(pydantic.ValidationError, match=r"rewards must be within \[0.0, 1.0\]"):
        RewardReported.model_validate({"event_id": "e", "reward": 1.5}, context=tight)
    wide = {"limits": Limits(min_reward=-1e9, max_reward=1e9)}
    assert RewardReported.model_validate({"event_id": "e", "reward": 1e6}, context=wide)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_reward": 1e10}, "less than or equal to 1000000000"),
        ({"min_reward": -math.inf}, "finite number"),
        ({"min_reward": 5.0, "max_reward": 5.0}, "`min_reward` must be below `max_reward`"),
    ],
)
def test_the_range_itself_is_checked(changes: dict[str, float], message: str) -> None:
    """The range stays inside policies' REWARD_LIMIT (1e9), finite and not empty."""
    with pytest.raises(pydantic.ValidationError, match=message):
        Limits(**changes)


def test_stored_settings_read_back_without_limits_are_not_refused() -> None:
    """A default reward set under a wider range still reads back after it narrowed."""
    text = PolicySettings.model_validate(
        {"spec": "vw", "default_reward": 5000.0}, context={"limits": Limits(max_reward=1e4)}
    ).model_dump_json()
    assert PolicySettings.model_validate_json(text).default_reward == 5000.0


@pytest.mark.parametrize("reward", [1e308, 1001.0])
def test_a_reward_produced_to_kafka_outside_the_range_is_a_dead_letter(reward: float) -> None:
    """Apps producing to the rewards topic get a dead letter naming the rule, not a poison."""
    value = f'{{"type": "reward", "event_id": "evt-1", "reward": {reward!r}}}'.encode()
    record = RawRecord("sb.rewards", 0, 5, b"evt-1", value)
    outcome = decode_record(TypeAdapter(RewardsRecord), record, limits=Limits())
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason.startswith(f"reward.reward: rewards {RULE}")
    assert outcome.reason.endswith("[reward_range]")
    assert (outcome.source_topic, outcome.offset) == ("sb.rewards", 5)
