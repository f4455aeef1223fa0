"""Deleting the decision log through the API, with real stream worker processes.

Two ``python -m bandit worker`` processes (their ``decision-log`` timer, a retention of
a day configured) log decisions ranked and rewarded through the API; ``DELETE
/v1/log`` empties both workers' folders, and the decisions made after it are logged as
before, in new files, with none of the deleted lines coming back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.settings import ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import PolicySettings
from tests.integration.conftest import ACTIONS, logged_event_ids, read_counters, wait_for


@pytest.fixture
def stack(broker: str, redis_url: str, tmp_path: Path) -> Iterator[LocalStack]:
    prefix = f"ld{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(port=0),
    )
    env = {
        "STREAMBANDIT_KAFKA__TOPIC_PREFIX": prefix,
        "STREAMBANDIT_REDIS__KEY_PREFIX": prefix,
        "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
        "STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_SECONDS": "0.5",
        "STREAMBANDIT_POLICIES": json.dumps({"default": "vw-epsilon"}),
        "STREAMBANDIT_DECISION_LOG__RETENTION_DAYS": "1",
        "STREAMBANDIT_LOG_FORMAT": "json",
    }
    with LocalStack(settings, workers=2, workdir=tmp_path / "stack", extra_env=env) as running:
        running.prefix = prefix  # type: ignore[attr-defined]
        yield running


def _decide(stack: LocalStack, n: int) -> set[str]:
    """Rank and reward `n` decisions; return their event ids."""
    ids = set()
    with Client(stack.api_url, api_key=stack.app_key) as app:
        for index in range(n):
            result = app.rank({"user": {"segment": f"s{index % 3}"}}, ACTIONS)
            app.reward(result.event_id, 1.0)
            ids.add(result.event_id)
    return ids


def test_deleting_the_log_empties_every_workers_folder_and_logging_goes_on(
    stack: LocalStack, redis_url: str
) -> None:
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=0.5))
    before = _decide(stack, 30)
    wait_for(lambda: before <= set(logged_event_ids(stack)), 60, "the first decisions logged")
    assert len(list(stack.decision_logs.rglob("*.dsjson"))) >= 1

    refused = httpx.delete(f"{stack.api_url}/v1/log", headers={"X-API-Key": stack.app_key})
    assert refused.status_code == 403
    answer = httpx.delete(
        f"{stack.api_url}/v1/log", headers={"X-API-Key": stack.admin_key}, timeout=20
    )
    assert answer.status_code == 204, answer.text
    assert logged_event_ids(stack) == []
    assert len(list(stack.decision_logs.glob("worker-*/.deleted-at"))) == 2  # each applied it
    properties = httpx.get(
        f"{stack.api_url}/v1/log/properties", headers={"X-API-Key": stack.app_key}
    ).json()
    assert (properties["files"], properties["first"]) == (0, None)

    after = _decide(stack, 30)
    wait_for(lambda: after <= set(logged_event_ids(stack)), 60, "the later decisions logged")
    logged = logged_event_ids(stack)
    assert not before & set(logged)
    assert len(logged) == len(set(logged))
    counters = read_counters(stack, redis_url, "_streams")
    assert counters["log_files_deleted.request"] >= 1
    assert "log_files_deleted.retention" not in counters  # a day's retention: nothing old
