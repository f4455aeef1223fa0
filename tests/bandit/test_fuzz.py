"""Property-based fuzzing of every route from the API's own OpenAPI document (schemathesis).

The app is served by uvicorn against the real broker and Redis. schemathesis reads the
app's OpenAPI document and, for every operation, sends requests generated from it
(valid ones, and ones that break it): the native and Personalizer routes with an
admin key and with an app key scoped to one policy, the privacy page routes with a
fresh page token, the operations routes with nothing. Every answer must be no 5xx, a
documented status code with the documented content type, and a body and headers
matching the documented schema; data breaking the schema must be refused (4xx); a
route declaring auth must refuse requests without it. Each operation must also have
answered 2xx, so the fuzzer reached its handler, not only its validation; an app key
never gets 2xx from an admin route.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from bandit.api.app import create_app
from bandit.settings import (
    ApiKey,
    ApiSettings,
    EvaluationSettings,
    KafkaSettings,
    LearnerSettings,
    LogSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from policies import make_policy
from policies.vw import VWPolicy
from tests.bandit.serving import served
from tests.bandit.test_api import _save_model
from tests.conftest import worker_consumes

ADMIN_KEY = "admin-key-fuzz-0123456789"
APP_KEY = "app-key-fuzz-main-0123456"
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 12}
"""Examples per operation, caller and mode (the module runs in about a minute on 2 cores)."""
SPEC = "vw-squarecb"
"""The spec of the policy ``main`` (steered requests name it)."""
_SERVED = make_policy(SPEC)
assert isinstance(_SERVED, VWPolicy)
LIVE_ARGUMENTS = _SERVED.vw_arguments().replace("--gamma_scale 10.0", "--gamma_scale 12.0")
"""A learning policy that changes `main` live: its spec stays (the settings route's steer)."""
ADMIN_ONLY = {
    ("POST", "/v1/privacy/reports"),
    ("GET", "/v1/privacy/ledger"),
    ("PUT", "/v1/policies/{name}/settings"),
    ("PUT", "/v1/policies/{name}/baseline"),
    ("GET", "/v1/policies/{name}/auto-optimization"),
    ("GET", "/v1/policies/{name}/model"),
    ("GET", "/v1/policies/{name}/model/versions"),
    ("GET", "/v1/policies/{name}/model/versions/{version}"),
    ("POST", "/v1/policies/{name}/model/rollback"),
    ("GET", "/personalizer/v1.0/model"),
    ("GET", "/personalizer/model"),
    ("DELETE", "/v1/policies/{name}/model"),
    ("DELETE", "/personalizer/v1.0/model"),
    ("DELETE", "/personalizer/model"),
    ("PUT", "/personalizer/v1.0/configurations/service"),
    ("PUT", "/personalizer/configurations/service"),
    ("PUT", "/personalizer/v1.0/configurations/policy"),
    ("PUT", "/personalizer/configurations/policy"),
    ("DELETE", "/personalizer/v1.0/configurations/policy"),
    ("DELETE", "/personalizer/configurations/policy"),
    ("DELETE", "/v1/log"),
    ("DELETE", "/personalizer/v1.0/logs"),
    ("DELETE", "/personalizer/logs"),
    *(
        (method, f"{prefix}{path}")
        for prefix in ("/personalizer/v1.0", "/personalizer")
        for method, path in (
            ("GET", "/evaluations"),
            ("POST", "/evaluations"),
            ("PUT", "/evaluations/{evaluationId}"),
            ("GET", "/evaluations/{evaluationId}"),
            ("DELETE", "/evaluations/{evaluationId}"),
            ("POST", "/configurations/applyFromEvaluation"),
            ("GET", "/featureImportances"),
            ("PUT", "/featureImportances/{featureImportanceId}"),
            ("GET", "/featureImportances/{featureImportanceId}"),
            ("DELETE", "/featureImportances/{featureImportanceId}"),
        )
    ),
}
WINDOW = {"startTime": "2026-12-01T00:00:00Z", "endTime": "2026-12-02T00:00:00Z"}
"""An evaluation's or feature importance's window (steered requests name it)."""


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without servers (as ``/openapi.json`` serves it)."""
    settings = Settings(
        kafka=KafkaSettings(broker="127.0.0.1:1"), redis=RedisSettings(url="redis://127.0.0.1:1")
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


DOCUMENT = _document()


def _caller(path: str) -> tuple[str, ...]:
    """Who calls an operation: keys for the API, a page token for the page, else no one."""
    if path.startswith("/v1/me"):
        return ("page",)
    if path.startswith(("/v1/", "/personalizer/")):
        return ("admin", "app")
    return ("anyone",)


def _cases() -> Iterator[Any]:
    for path, operations in sorted(DOCUMENT["paths"].items()):
        if path.startswith("/personalizer/v1.1-preview."):
            # the v1.0 paths' handlers again (bandit.api.personalizer): fuzzed there;
            # tests/bandit/test_personalizer_paths.py sends each path a request
            continue
        for method, operation in sorted(operations.items()):
            if method == "put" and path.endswith("/model"):
                # each request checks a model file in a child process (seconds each):
                # tests/bandit/test_model_export.py sends these routes good and bad files
                continue
            takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
            modes = list(EXAMPLES) if takes_input else [GenerationMode.POSITIVE]
            for caller in _caller(path):
                for mode in modes:
                    label = f"{method.upper()} {path} {caller} {mode.value}"
                    yield pytest.param(method.upper(), path, caller, mode, id=label)


@dataclass(frozen=True)
class Fuzzed:
    """A served API: its base URL and the OpenAPI document it serves."""

    url: str
    document: dict[str, Any]

    def page_token(self) -> str:
        """A page token for a new person (an erasure in one test leaves the others alone)."""
        answer = httpx.post(
            f"{self.url}/v1/privacy/token",
            json={"user_id": f"fuzz-person-{uuid.uuid4().hex[:8]}"},
            headers={"X-API-Key": ADMIN_KEY},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        return token

    def kept_version(self) -> int:
        """The newest kept version of the model of ``main`` (rollbacks and exports name one)."""
        answer = httpx.get(
            f"{self.url}/v1/policies/main/model/versions",
            headers={"X-API-Key": ADMIN_KEY},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        newest: int = answer.json()["versions"][0]["version"]
        return newest


@pytest.fixture(scope="module")
def api(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """The API under fuzzing, served on a free port for this module."""
    prefix = f"f{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=ADMIN_KEY, role="admin"),
                ApiKey(key=APP_KEY, role="app", policies=("main",)),
            ),
        ),
        decision_log=LogSettings(directory=tmp_path_factory.mktemp("fuzz-decisions")),
        evaluations=EvaluationSettings(max_kept=10_000),  # steered requests create many
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-fuzz-tests-0123"),
        policies={"main": SPEC, "other": "uniform"},
        # /readyz answers 200 only while a worker consumes: one stands in, fresh all module
        learner=LearnerSettings(stall_seconds=3600),
    )
    worker_consumes(redis_url, prefix)
    _save_model(settings, "main", make_policy(SPEC).snapshot(), 1)  # the model routes' own
    with served(create_app(settings), "api-under-fuzz") as url:
        document = httpx.get(f"{url}/openapi.json", timeout=10).json()
        assert _operations(document) == _operations(DOCUMENT)  # the tests cover every one
        yield Fuzzed(url, document)


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (method, path) of an OpenAPI document."""
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


def _schema(api: Fuzzed, caller: str, credential: str) -> Any:
    """The document as schemathesis reads it, with `caller`'s credential for its scheme."""
    scheme = {"admin": "ApiKey", "app": "SubscriptionKey", "page": "PrivacyToken"}.get(caller)
    config: dict[str, Any] = {
        "base-url": api.url,
        # The schema states the input rules it can (types, ranges, id syntax), not every
        # one (the configured limits, rules across fields): a schema-valid request may be
        # refused with 422, so 2xx on valid data is asserted below by count, not per request.
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }
    if scheme is not None:
        config["auth"] = {"openapi": {scheme: {"api_key": credential}}}
    return schemathesis.openapi.from_dict(
        api.document, config=schemathesis.Config.from_dict(config)
    )


def _job(url: str, kind: str) -> str:
    """Create an evaluation or feature importance of `main` over :data:`WINDOW`; its id."""
    job_id = f"fuzz-{uuid.uuid4().hex[:12]}"
    answer = httpx.put(
        f"{url}/personalizer/{kind}/{job_id}?api-version=2022-09-01-preview",
        json={"name": "fuzz", **WINDOW},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return job_id


def _steered(case: Any, kept: int = 1, url: str = "") -> Any:
    """`case` with what its schema cannot state made valid, so it reaches the handler.

    A served policy (path, query, body) and its spec, a well-formed event id in the
    path, a model version `main` keeps (path, body), printable user ids, features and
    devices the limits accept, one consent changed at least, an evaluation or feature
    importance that exists (read, deleted, applied) or not (created) and its window;
    the rest of the request stays as generated.
    """
    for name, kind in (("evaluationId", "evaluations"), ("featureImportanceId",
                                                        "featureImportances")):  # fmt: skip
        if name in (case.path_parameters or {}):
            fresh = case.method.upper() == "PUT"
            case.path_parameters[name] = f"fuzz-{uuid.uuid4().hex}" if fresh else _job(url, kind)
    if "name" in (case.path_parameters or {}):
        case.path_parameters["name"] = "main"
    if "eventId" in (case.path_parameters or {}):
        case.path_parameters["eventId"] = f"fuzz-event-{uuid.uuid4().hex[:8]}"
    if "version" in (case.path_parameters or {}):
        case.path_parameters["version"] = kept
    if isinstance(case.query, dict) and "policy" in case.query:
        case.query["policy"] = "main"
    body = case.body
    if not isinstance(body, dict):
        return case
    fixed: dict[str, Any] = {
        "policy": "main",
        "spec": SPEC,
        "user_id": "fuzz-user-1",
        "source": "fuzz",
        "context": {"user": {"tier": "gold"}},
        "contextFeatures": [{"user": {"tier": "gold"}}],
        "device": {"type": "mobile", "os": "iOS 17.4"},
        "feature_schema": None,
        "version": kept,
        "policies": [],
        "policyName": "online",
        **WINDOW,
    }
    if "evaluationId" in body:
        body["evaluationId"] = _job(url, "evaluations")
    body.update({name: value for name, value in fixed.items() if name in body})
    if case.operation.path in ("/v1/consent", "/v1/me/consent"):
        body.setdefault("learning", True)
    if case.operation.path.endswith("/configurations/service"):  # only what is done here
        body.update(
            learningMode="Online", logRetentionDays=-1, rewardAggregation="earliest",
            logMirrorEnabled=False, isAutoOptimizationEnabled=False,
            modelExportFrequency=None, explorationPercentage=None, rewardWaitTime="PT30S",
            defaultReward=0.0, autoOptimizationFrequency=None,
        )  # fmt: skip
    if case.operation.path.endswith("/configurations/policy"):  # a live change of `main`
        body.update(arguments=LIVE_ARGUMENTS)
    if case.operation.path.endswith("/multislot/rank"):  # slots the actions can fill
        body["slots"] = [{"id": "slot-0"}, {"id": "slot-1", "features": [{"size": "small"}]}]
        body["actions"] = [*(body.get("actions") or []), {"id": "x"}, {"id": "y"}]
    if case.operation.path.endswith("/multislot/events/{eventId}/reward"):
        body["reward"] = [{"slotId": "slot-0", "value": 0.5}, {"slotId": "slot-1", "value": 0.0}]
    if isinstance(body.get("actions"), list):
        personalizer = case.operation.path.startswith("/personalizer/")
        body["actions"] = [
            {
                "id": f"action-{index}",
                "features": [{"price": index}] if personalizer else {"item": {"price": index}},
            }
            for index in range(min(len(body["actions"]), 8))
        ] or [{"id": "action-0"}]
        body.pop("excluded_actions", None)
        body.pop("excludedActions", None)
    return case


@pytest.mark.parametrize(("method", "path", "caller", "mode"), list(_cases()))
def test_every_answer_is_documented_and_no_request_fails(
    api: Fuzzed, method: str, path: str, caller: str, mode: GenerationMode
) -> None:
    """Generated requests get no 5xx, only documented answers, and reach the handler."""
    credential = {"admin": ADMIN_KEY, "app": APP_KEY, "anyone": ""}.get(caller)
    schema = _schema(api, caller, credential if credential is not None else api.page_token())
    strategy = schema[path][method].as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:  # (steering negative data could make it valid)
        kept = api.kept_version() if path.startswith("/v1/policies/{name}/model/") else 1
        strategy = st.one_of(
            strategy, strategy.map(functools.partial(_steered, kept=kept, url=api.url))
        )
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[  # about generating data, not about the API
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(session=session)
        statuses[response.status_code] += 1

    with requests.Session() as session:
        fuzz()
    succeeded = sum(n for status, n in statuses.items() if 200 <= status < 300)
    if caller == "app" and (method, path) in ADMIN_ONLY:
        assert succeeded == 0, f"an app key was answered 2xx: {dict(statuses)}"
    elif mode is GenerationMode.POSITIVE:
        hint = " (an admin route? list it in ADMIN_ONLY)" if statuses[403] else ""
        assert succeeded > 0, f"the handler was never reached: {dict(statuses)}{hint}"


def test_every_route_is_in_the_document() -> None:
    """Every route the app serves (but the page and the docs themselves) is fuzzed above."""
    settings = Settings(
        kafka=KafkaSettings(broker="127.0.0.1:1"), redis=RedisSettings(url="redis://127.0.0.1:1")
    )
    app = create_app(settings)
    routes = [
        inner
        for route in app.routes
        for inner in getattr(getattr(route, "original_router", None), "routes", [route])
    ]
    served = {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))  # ({eventId:path}: {eventId})
        for route in routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    documented = _operations(DOCUMENT)
    undocumented = {
        ("GET", "/privacy"),  # the privacy page itself (HTML); its JSON routes are /v1/me...
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/docs/assets/{name}"),  # Swagger UI's own files, served from this origin
        ("GET", "/redoc"),
    }
    assert served - undocumented == documented
