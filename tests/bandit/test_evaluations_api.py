"""Offline evaluations and feature importances through Personalizer's own client, end to end.

A real uvicorn server over a simulated decision log (tests/bandit/simulated_log.py);
``azure-ai-personalizer``'s administration client creates, reads, lists, applies and
deletes; the v1.1-preview.3 create is sent as its specification's example sends it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from redis.asyncio import Redis

from bandit.api.app import create_app
from bandit.service.evaluation import run_evaluation
from bandit.service.evaluations import INTERRUPTED, EvaluationRunner, EvaluationStore
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, LogSettings, RedisSettings, Settings
from tests.bandit.serving import served
from tests.bandit.simulated_log import START, write_log

ADMIN_KEY = "evaluations-admin-key-0123"
APP_KEY = "evaluations-app-key-012345"
N = 1500
LEARNER = "--cb_explore_adf --epsilon 0.05 -q ca"
WINDOW = {
    "startTime": START.isoformat(),
    "endTime": (START + timedelta(seconds=N)).isoformat(),
}


@pytest.fixture(scope="module")
def settings(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("decisions")
    write_log(folder / "w1" / "decisions-1.dsjson", N, policy="main")
    prefix = f"ev{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(ApiKey(key=ADMIN_KEY, role="admin"), ApiKey(key=APP_KEY, role="app"))
        ),
        decision_log=LogSettings(directory=folder),
        policies={"main": "vw-epsilon"},
    )


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    with served(create_app(settings), "api-evaluations") as running:
        yield running


@pytest.fixture
def sdk(url: str) -> PersonalizerAdministrationClient:
    return PersonalizerAdministrationClient(url, AzureKeyCredential(ADMIN_KEY))


def _until_done(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Read the job until it is no longer running (a bound on reads, not on time)."""
    for _ in range(600):
        found = read()
        if found["status"] != "Running":
            return found
        time.sleep(0.1)
    raise AssertionError(f"still running: {found}")


def test_an_evaluation_from_create_to_result_and_applied(
    sdk: PersonalizerAdministrationClient, url: str
) -> None:
    body = {
        "name": "first",
        **WINDOW,
        "policies": [{"name": "interactions", "arguments": LEARNER}],
        "enablePolicyOptimization": True,
    }
    sdk.create_evaluation("eval-1", body)

    def read() -> dict[str, Any]:
        return sdk.get_evaluation("eval-1", start_time=START, end_time=START + timedelta(days=1))

    found = _until_done(read)
    assert found["status"] == "Succeeded", found
    results = {r["name"]: r for r in found["content"]["value"]}
    assert set(results) == {
        "online", "baseline", "random", "interactions",
        "epsilon-0.01", "epsilon-0.05", "epsilon-0.1", "epsilon-0.2",
    }  # fmt: skip
    sources = {r["name"]: r["policySource"] for r in found["policyResults"]}
    assert (sources["online"], sources["interactions"]) == ("Online", "Custom")
    assert sources["epsilon-0.1"] == "OfflineExperimentation"
    learned = results["interactions"]["summary"]
    baseline = results["baseline"]["summary"]
    assert learned["confidenceInterval"][0] > baseline["confidenceInterval"][1]
    best = results[found["optimalPolicy"]]["summary"]["confidenceInterval"]
    assert all(best[0] >= r["summary"]["confidenceInterval"][0] for r in results.values())
    total = next(r for r in found["policyResults"] if r["name"] == "random")["totalSummary"]
    assert total["ipsEstimatorDenominator"] == N
    assert found["content"]["intervalInMinutes"] == 5  # 25 minutes: 5 intervals
    assert len(results["random"]["timeseries"]["data"]) == 5
    [listed] = sdk.list_evaluations()
    assert listed["id"] == "eval-1"
    assert "summary" not in listed["policyResults"][0]  # as listed: the totals only

    sdk.apply_from_evaluation({"evaluationId": "eval-1", "policyName": "interactions"})
    applied = sdk.get_policy()["arguments"]
    assert " --interactions ca" in applied or " -q ca" in applied
    with pytest.raises(HttpResponseError) as refused:  # the baseline has no arguments
        sdk.apply_from_evaluation({"evaluationId": "eval-1", "policyName": "baseline"})
    assert refused.value.status_code == 400

    sdk.delete_evaluation("eval-1")
    with pytest.raises(ResourceNotFoundError):
        read()
    assert list(sdk.list_evaluations()) == []


def test_the_v1_1_create_answers_201_with_its_location_and_a_bare_list(url: str) -> None:
    headers = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
    base = f"{url}/personalizer/v1.1-preview.3/evaluations"
    body = {  # the specification's example, on this log's dates
        "enableOfflineExperimentation": True,
        "name": "myFirstEvaluation",
        **WINDOW,
        "policies": [
            {
                "name": "Custom learning settings 1",
                "arguments": "--cb_explore_adf --epsilon 0.2 --dsjson --cb_type ips -l 0.5 "
                "--l1 1E-07 --power_t 0.5",
            }
        ],
    }
    created = httpx.post(base, json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location == f"{base}/{created.json()['id']}"
    assert created.json()["status"] == "pending"  # v1.1's statuses
    for _ in range(600):  # a bound on reads, not on time
        done = httpx.get(location, headers=headers, timeout=10).json()
        if done["status"] != "pending":
            break
        time.sleep(0.1)
    assert done["status"] == "completed", done
    listed = httpx.get(base, headers=headers, timeout=10).json()
    assert isinstance(listed, list)
    assert [e["id"] for e in listed] == [done["id"]]
    assert httpx.delete(location, headers=headers, timeout=10).status_code == 204


def test_process_options_and_app_keys_are_refused(url: str) -> None:
    base = f"{url}/personalizer/evaluations/bad?api-version=2022-09-01-preview"
    body = {"name": "bad", **WINDOW,
            "policies": [{"name": "x", "arguments": "--cb_explore_adf -f model.vw"}]}  # fmt: skip
    admin = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
    refused = httpx.put(base, json=body, headers=admin, timeout=10)
    assert refused.status_code == 400
    assert "'-f'" in refused.text
    assert "policies" in refused.text
    app = {"Ocp-Apim-Subscription-Key": APP_KEY}
    assert httpx.put(base, json={**body, "policies": []}, headers=app).status_code == 403
    missing = f"{url}/personalizer/evaluations/none?api-version=2022-09-01-preview"
    assert httpx.get(missing, headers=admin).status_code == 404


def test_a_feature_importance_from_create_to_scores(sdk: PersonalizerAdministrationClient) -> None:
    sdk.create_feature_importance("fi-1", {"name": "why", **WINDOW})
    found = _until_done(lambda: sdk.get_feature_importance("fi-1"))
    assert found["status"] == "Succeeded", found
    names = {(s["namespace"], s["featureName"]) for s in found["featureScores"]}
    assert names == {("user", "group"), ("item", "kind"), ("noise", "x")}
    assert {s["namespace"] for s in found["namespaceScores"]} == {"user", "item", "noise"}
    assert [f["id"] for f in sdk.list_feature_importances()] == ["fi-1"]
    sdk.delete_feature_importance("fi-1")
    with pytest.raises(ResourceNotFoundError):
        sdk.get_feature_importance("fi-1")


def test_a_job_left_running_by_a_stopped_process_reads_failed(
    sdk: PersonalizerAdministrationClient, settings: Settings
) -> None:
    record = {"id": "orphan", "name": "o", "creationTime": "2026-12-01T00:00:00+00:00",
              "status": "Running", "policy": "main", "policies": [], **WINDOW}  # fmt: skip

    async def leave_running() -> None:
        redis = Redis.from_url(settings.redis.url)
        store = EvaluationStore(redis, settings.redis.key_prefix)
        assert await store.create("evaluations", record) == 1
        await store.release("evaluations", "orphan")  # its process stopped renewing it
        await redis.aclose()

    asyncio.run(leave_running())
    found = sdk.get_evaluation("orphan", start_time=START, end_time=START)
    assert (found["status"], found["description"]) == ("Failed", INTERRUPTED)
    sdk.delete_evaluation("orphan")


def test_a_job_stopped_with_its_process_reads_failed_at_once(
    sdk: PersonalizerAdministrationClient, settings: Settings
) -> None:
    record = {"id": "stopped", "name": "s", "creationTime": "2026-12-01T00:00:00+00:00",
              "status": "Running", "policy": "main", "policies": [], **WINDOW}  # fmt: skip

    async def stop_while_running() -> None:
        redis = Redis.from_url(settings.redis.url)
        runner = EvaluationRunner(EvaluationStore(redis, settings.redis.key_prefix))
        assert await runner.store.create("evaluations", record) == 1
        runner.submit("evaluations", record, run_evaluation, None)
        await runner.close()  # as the API stops, before the job could finish
        await redis.aclose()

    asyncio.run(stop_while_running())
    found = sdk.get_evaluation("stopped", start_time=START, end_time=START)
    assert (found["status"], found["description"]) == ("Failed", INTERRUPTED)
    sdk.delete_evaluation("stopped")
