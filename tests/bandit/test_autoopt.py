"""Automatic optimisation end to end: two API processes sharing Redis, one run each.

Two uvicorn servers of the same deployment over a simulated decision log
(tests/bandit/simulated_log.py), where learning the user-item interaction earns 0.8 and
the uniform logging policy 0.5. Policy ``good`` learns that interaction, so its
exploration grid beats the logged policy: the best is applied. Policy ``plain`` learns
no interaction: nothing of its grid beats the logged policy, and nothing is applied.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bandit.api.app import create_app
from bandit.service.evaluation import optimisation_verdict
from bandit.settings import (
    ApiKey,
    ApiSettings,
    EvaluationSettings,
    KafkaSettings,
    Limits,
    LogSettings,
    RedisSettings,
    Settings,
)
from tests.bandit.serving import served
from tests.bandit.simulated_log import START, write_log

ADMIN_KEY = "autoopt-admin-key-0123456"
ADMIN = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
N = 800
CONFIG = "/personalizer/v1.1-preview.3/configurations/service"


@pytest.fixture(scope="module")
def settings(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("decisions")
    write_log(folder / "w1" / "decisions-1.dsjson", N, policy="good")
    write_log(folder / "w1" / "decisions-1.dsjson", N, policy="plain", seed=1)
    prefix = f"ao{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=ADMIN_KEY, role="admin"),)),
        decision_log=LogSettings(directory=folder),
        limits=Limits(min_auto_optimization_seconds=1.0),
        evaluations=EvaluationSettings(auto_check_seconds=0.2),
        policies={
            "good": 'vw-epsilon:interactions=["ca"],epsilon=0.5',
            "plain": "vw-epsilon:interactions=[]",
        },
    )


@pytest.fixture(scope="module")
def urls(settings: Settings) -> Iterator[tuple[str, str]]:
    with (
        served(create_app(settings), "api-autoopt-1") as first,
        served(create_app(settings), "api-autoopt-2") as second,
    ):
        yield first, second


def _enable(client: httpx.Client, policy: str) -> dict[str, Any]:
    """Turn automatic optimisation on, its first run due now, its window the whole log."""
    start = START - timedelta(hours=1)
    every = (datetime.now(UTC) - start).total_seconds() - 5  # due 5 s ago, once
    config = client.get(f"{CONFIG}?policy={policy}", headers=ADMIN).json()
    assert config["isAutoOptimizationEnabled"] is False
    config |= {
        "isAutoOptimizationEnabled": True,
        "autoOptimizationFrequency": f"PT{every:.0f}S",
        "autoOptimizationStartDate": start.isoformat(),
    }
    answer = client.put(f"{CONFIG}?policy={policy}", json=config, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ran(client: httpx.Client, policy: str) -> dict[str, Any]:
    """Read the policy's last run until there is one (a bound on reads, not on time)."""
    for _ in range(600):
        answer = client.get(f"/v1/policies/{policy}/auto-optimization", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["enabled"] is True
        if answer.json()["lastRun"] is not None:
            return answer.json()["lastRun"]
        time.sleep(0.05)
    raise AssertionError(f"no automatic optimisation of {policy} ran")


def test_the_better_policy_is_applied_once_and_a_worse_one_never(
    urls: tuple[str, str], settings: Settings
) -> None:
    """Two processes run each due run once; a third, started after it, runs none."""
    first, second = urls
    with httpx.Client(base_url=first, timeout=10) as one, httpx.Client(base_url=second) as two:
        before = two.get("/v1/policies/good/auto-optimization", headers=ADMIN).json()
        assert before == {"enabled": False, "nextDueTime": None, "lastRun": None}
        shown = _enable(one, "good")
        assert (shown["isAutoOptimizationEnabled"], shown["autoOptimizationStartDate"][:10]) == (
            True,
            "2026-11-30",
        )
        _enable(two, "plain")
        good, plain = _ran(two, "good"), _ran(one, "plain")

        assert good["applied"] is True, good
        assert good["policyName"].startswith("epsilon-"), good
        live = one.get("/v1/policies/good/settings", headers=ADMIN).json()
        assert f"--epsilon {live['exploration']['epsilon']:g}" in good["arguments"]
        assert live["exploration"]["epsilon"] != 0.5
        assert plain["applied"] is False, plain
        assert "online" in plain["reason"], plain
        assert one.get("/v1/policies/plain/settings", headers=ADMIN).json()["exploration"] == {}

        listed = one.get("/personalizer/v1.1-preview.3/evaluations", headers=ADMIN).json()
        ids = sorted(e["id"] for e in listed)  # each due run ran once, in one of the two
        assert ids == sorted([good["evaluationId"], plain["evaluationId"]])
        assert all(e["status"] == "completed" for e in listed)

        restarted = create_app(settings)  # a process started after the due time
        with served(restarted, "api-autoopt-3") as third:
            for _ in range(600):
                if (
                    getattr(restarted.state, "optimizer", None)
                    and restarted.state.optimizer.rounds >= 2
                ):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the restarted process never checked its policies")
            with httpx.Client(base_url=third, timeout=10) as three:
                assert _ran(three, "good") == good  # not run again
                again = three.get("/personalizer/v1.1-preview.3/evaluations", headers=ADMIN)
                assert sorted(e["id"] for e in again.json()) == ids


@pytest.mark.parametrize(
    ("best", "online", "applied"),
    [((0.6, 0.55), 0.5, "b"), ((0.6, 0.45), 0.5, None), ((0.6, None), 0.5, None)],
)
def test_the_optimal_policy_is_applied_only_when_its_lower_bound_beats_the_online(
    best: tuple[float, float | None], online: float, applied: str | None
) -> None:
    """A lower bound below, or without, the online estimate applies nothing."""
    value, low = best
    result = {
        "optimalPolicy": "b",
        "policyResults": [
            {"name": "online", "arguments": "--cb_explore_adf",
             "estimates": {"snips": {"value": online, "confidenceInterval": None}}},
            {"name": "b", "arguments": "--cb_explore_adf --epsilon 0.1",
             "estimates": {"snips": {"value": value, "confidenceInterval": [low, 0.9]}}},
        ],
    }  # fmt: skip
    chosen, reason = optimisation_verdict(result)
    assert chosen == applied
    assert "online policy's SNIPS estimate 0.5" in reason
