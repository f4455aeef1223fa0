"""Live evaluation through the API: settings refused naming the rule, and the report's shape.

A real uvicorn server with the real broker and Redis (as tests/bandit/test_api.py
serves it); the learner's side is tested in tests/streams/test_live_evaluation.py and,
end to end, in tests/integration/test_live_evaluation.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bandit.api.liveeval import live_report
from bandit.service.liveeval import LOGGED, CandidateFigures, LiveFigures
from bandit.wire.schemas import LiveEvaluationSettings
from tests.bandit.test_api import ADMIN, OTHER_KEY, Server, serve_api

ROUTE = "/v1/policies/other/evaluation/live"
SETTINGS = "/v1/policies/other/settings"
READER = {"X-API-Key": OTHER_KEY}  # an app key allowed the policy


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    with serve_api(broker, redis_url, "api-live-evaluation") as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _put(client: httpx.Client, live: dict[str, Any] | None, **more: Any) -> httpx.Response:
    body = {"spec": "uniform", "live_evaluation": live, **more}
    return client.put(SETTINGS, json=body, headers=ADMIN)


@pytest.mark.parametrize(
    ("live", "more", "loc", "message"),
    [
        (
            {"candidates": ["uniform", "no-such-policy"]},
            {},
            ["live_evaluation", "candidates", "1"],
            "`live_evaluation.candidates.1` ('no-such-policy') is not a policy spec",
        ),
        (
            {"candidates": ["vw-epsilon:epsilon=7"]},
            {},
            ["live_evaluation", "candidates", "0"],
            "is not a policy spec",
        ),
        (
            {"candidates": ["uniform", "uniform"]},
            {},
            ["live_evaluation", "candidates"],
            "candidates must be distinct, got 'uniform' twice",
        ),
        (
            {"candidates": [f'fixed:order=["{i}"]' for i in range(9)]},
            {},
            ["live_evaluation", "candidates"],
            "at most 8 items",
        ),
        (
            {"reward_range": [1.0, 0.0]},
            {},
            ["live_evaluation", "reward_range"],
            "reward_range must be finite [low, high] with low < high, got [1.0, 0.0]",
        ),
        (
            {"alpha": 0.9},
            {},
            ["live_evaluation", "alpha"],
            "less than or equal to 0.5",
        ),
        (
            {"candidates": ["uniform"]},
            {"default_reward": 5.0},
            ["live_evaluation"],
            "live_evaluation.reward_range [0.0, 1.0] must hold default_reward 5.0",
        ),
    ],
    ids=["unknown", "bad-parameter", "twice", "too-many", "range", "alpha", "default-reward"],
)
def test_bad_live_evaluation_settings_are_refused_naming_the_field(
    client: httpx.Client, live: dict[str, Any], more: dict[str, Any], loc: list[str], message: str
) -> None:
    """Each bad setting is a 422 whose detail names the field and the rule."""
    answer = _put(client, live, **more)
    assert answer.status_code == 422, answer.text
    details = answer.json()["detail"]
    assert any(
        [str(part) for part in d["loc"]][: len(loc)] == loc and message in d["msg"] for d in details
    ), details


def test_the_route_says_whether_a_live_evaluation_runs(client: httpx.Client) -> None:
    """Not enabled without one; with one, every candidate at n 0 until the learner counts it."""
    assert _put(client, None).status_code == 200
    off = client.get(ROUTE, headers=READER)
    assert off.status_code == 200, off.text
    assert (off.json()["enabled"], off.json()["candidates"], off.json()["logged"]) == (
        False,
        [],
        None,
    )
    assert client.get("/v1/policies/ghost/evaluation/live", headers=ADMIN).status_code == 404
    assert _put(client, {"candidates": ["uniform", "vw-epsilon"]}).status_code == 200
    answer = client.get(ROUTE, headers=READER)  # any key allowed the policy may read it
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [row["candidate"] for row in body["candidates"]] == ["uniform", "vw-epsilon"]
    assert {row["n"] for row in body["candidates"]} == {0}
    assert (body["logged"]["lower"], body["logged"]["upper"]) == (0.0, 1.0)
    assert (body["enabled"], body["alpha"]) == (True, 0.05)
    _put(client, None)


def test_figures_of_other_settings_are_not_shown_as_current() -> None:
    """Figures saved at another alpha read as not counted yet; current ones are laid out."""
    now = datetime.now(UTC)
    row = CandidateFigures("uniform", 10, 0.4, 0.1, 0.7, 0, 0, now, now)
    logged = CandidateFigures(LOGGED, 10, 0.4, 0.1, 0.7, 0, 0, now, now)
    figures = LiveFigures(0.05, (0.0, 1.0), [row], logged, skipped=2)
    settings = LiveEvaluationSettings(candidates=["uniform", "vw-epsilon"])
    report = live_report("p", settings, figures)
    assert [(c.candidate, c.n) for c in report.candidates] == [("uniform", 10), ("vw-epsilon", 0)]
    assert report.logged is not None
    assert (report.logged.n, report.skipped) == (10, 2)
    stale = live_report("p", LiveEvaluationSettings(candidates=["uniform"], alpha=0.1), figures)
    assert [(c.n, c.lower, c.upper) for c in stale.candidates] == [(0, 0.0, 1.0)]
