"""A policy's kept model versions: listed, exported, rolled back to, by the API and the CLI.

A real uvicorn server with the real broker and Redis; models are saved to Redis as the
learner saves them, by a store keeping versions as the server's settings say (here:
the last 3, every one the learner saves). ``streambandit model ...`` runs against it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from bandit.api.app import create_app
from bandit.ops import cli
from bandit.service.state import StateStore
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    LearnerSettings,
    RedisSettings,
    Settings,
)
from policies import make_policy
from tests.bandit.serving import served
from tests.bandit.test_api import ACTIONS, USER, Server, _run, _trained

ADMIN = {"X-API-Key": "admin-key-versions-0123456"}
APP = {"X-API-Key": "app-key-versions-01234567"}
KEEP = 3


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """An API keeping the last 3 model versions of each policy, each the learner saves."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=ADMIN["X-API-Key"], role="admin"),
                ApiKey(key=APP["X-API-Key"], role="app"),
            ),
            model_poll_seconds=0.05,
        ),
        learner=LearnerSettings(model_history=KEEP, model_history_seconds=0),
        policies={
            "main": "vw-epsilon",
            "trimmed": "vw-epsilon",
            "mixed": "vw-epsilon",
            "plain": "uniform",
            "cli": "vw-epsilon",
        },
    )
    with served(create_app(settings), "api-model-versions") as url:
        yield Server(url, settings)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _save(server: Server, policy: str, snapshot: bytes, version: int) -> None:
    """Save a model version as the learner saves one."""

    async def body() -> None:
        redis = Redis.from_url(server.settings.redis.url)
        learner = server.settings.learner
        try:
            store = StateStore(
                redis,
                server.settings.redis.key_prefix,
                model_history=learner.model_history,
                model_history_seconds=learner.model_history_seconds,
            )
            await store.save_model(policy, snapshot, version, {0: version})
        finally:
            await redis.aclose()

    _run(body)


def _served(client: httpx.Client, policy: str, version: int) -> dict[str, float]:
    """Rank until `policy` serves model `version`; return the probabilities by action id."""
    deadline = time.monotonic() + 10
    while True:
        body = {"context": USER, "actions": ACTIONS, "policy": policy}
        answer = client.post("/v1/rank", json=body, headers=ADMIN).json()
        if answer["model_version"] == str(version):
            return {entry["id"]: entry["probability"] for entry in answer["ranking"]}
        assert time.monotonic() < deadline, f"model {version} of {policy} was never served"
        time.sleep(0.05)


def _versions(client: httpx.Client, policy: str) -> dict[str, Any]:
    answer = client.get(f"/v1/policies/{policy}/model/versions", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_rollback_serves_the_old_model_s_predictions_again_as_a_new_version(
    client: httpx.Client, server: Server
) -> None:
    _save(server, "main", _trained("b", 90), 1)
    first = _served(client, "main", 1)
    assert max(first, key=first.__getitem__) == "b"
    exported = client.get("/v1/policies/main/model", headers=ADMIN).content
    _save(server, "main", _trained("c", 90), 2)
    second = _served(client, "main", 2)
    assert max(second, key=second.__getitem__) == "c"

    listed = _versions(client, "main")
    assert (listed["model_version"], listed["keep"], listed["keep_every_seconds"]) == (2, 3, 0)
    assert [(v["version"], v["source"]) for v in listed["versions"]] == [
        (2, "learner"),
        (1, "learner"),
    ]
    old = client.get("/v1/policies/main/model/versions/1", headers=ADMIN)
    assert old.status_code == 200, old.text
    assert old.headers["X-Streambandit-Model-Version"] == "1"
    assert old.content == exported  # the VW model file version 1 was exported as

    rolled = client.post("/v1/policies/main/model/rollback", json={"version": 1}, headers=ADMIN)
    assert rolled.status_code == 200, rolled.text
    properties = rolled.json()
    assert properties["model_version"] == 3  # the version counter never goes back
    assert _served(client, "main", 3) == pytest.approx(first, abs=1e-9)
    newest = _versions(client, "main")["versions"][0]
    assert (newest["version"], newest["source"], newest["restored_from"]) == (3, "rollback", 1)
    kept_first = listed["versions"][1]
    assert newest["created_at"] == kept_first["created_at"]  # the lineage version 1 had
    assert datetime.fromisoformat(properties["created_at"]) == datetime.fromisoformat(
        kept_first["created_at"]
    )


def test_only_the_last_n_versions_are_kept_and_an_unknown_one_is_named(
    client: httpx.Client, server: Server
) -> None:
    for version in range(1, 6):
        _save(server, "trimmed", _trained("a", 10 * version), version)
    kept = [v["version"] for v in _versions(client, "trimmed")["versions"]]
    assert kept == [5, 4, 3]
    gone = client.post("/v1/policies/trimmed/model/rollback", json={"version": 2}, headers=ADMIN)
    assert gone.status_code == 404
    assert gone.json()["detail"] == (
        "policy 'trimmed' keeps no model version 2: it keeps versions 5, 4, 3"
    )
    missing = client.get("/v1/policies/trimmed/model/versions/9", headers=ADMIN)
    assert missing.status_code == 404
    assert "keeps no model version 9" in missing.json()["detail"]

    rolled = client.post("/v1/policies/trimmed/model/rollback", json={"version": 3}, headers=ADMIN)
    assert rolled.status_code == 200, rolled.text
    after = _versions(client, "trimmed")["versions"]
    # the rollback (6) is kept, the version it replaced (5) was already: 3 goes
    assert [(v["version"], v["source"]) for v in after] == [
        (6, "rollback"),
        (5, "learner"),
        (4, "learner"),
    ]
    assert after[0]["snapshot_bytes"] > 0
    nothing = client.get("/v1/policies/nobody/model/versions", headers=ADMIN)
    assert nothing.status_code == 404


def test_app_keys_are_refused_and_a_bad_rollback_is_named(
    client: httpx.Client, server: Server
) -> None:
    _save(server, "mixed", _trained("a", 30), 1)
    _save(server, "mixed", make_policy("uniform").snapshot(), 2)  # not this policy's kind
    _save(server, "mixed", _trained("c", 30), 3)
    for method, path in (
        ("GET", "/v1/policies/mixed/model/versions"),
        ("GET", "/v1/policies/mixed/model/versions/1"),
        ("POST", "/v1/policies/mixed/model/rollback"),
    ):
        refused = client.request(method, path, json={"version": 1}, headers=APP)
        assert refused.status_code == 403, (method, path)
        assert "needs an admin key" in refused.json()["detail"]

    for body in ({"version": 0}, {"version": "1"}, {}):
        bad = client.post("/v1/policies/mixed/model/rollback", json=body, headers=ADMIN)
        assert bad.status_code == 422, body
        assert bad.json()["detail"][0]["loc"][-1] == "version"
    extra = client.post(
        "/v1/policies/mixed/model/rollback", json={"version": 1, "to": 2}, headers=ADMIN
    )
    assert extra.status_code == 422

    wrong = client.post("/v1/policies/mixed/model/rollback", json={"version": 2}, headers=ADMIN)
    assert wrong.status_code == 409
    assert wrong.json()["detail"].startswith("version 2 of policy 'mixed' cannot serve again")
    assert _versions(client, "mixed")["model_version"] == 3  # nothing was saved

    _save(server, "plain", make_policy("uniform").snapshot(), 1)
    plain = client.get("/v1/policies/plain/model/versions/1", headers=ADMIN)
    assert plain.status_code == 409
    assert "has no VW model file" in plain.json()["detail"]


def _model(server: Server, *args: str, key: str = ADMIN["X-API-Key"]) -> Any:
    """Run ``streambandit model ARGS`` against `server`."""
    return CliRunner().invoke(cli.app, ["model", *args, "--url", server.url, "--key", key])


def _printed(result: Any) -> list[str]:
    """The lines a command printed (the server, in this process, logs to the same streams)."""
    console_log = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")
    return [
        line
        for line in result.output.splitlines()
        if not console_log.match(line) and not _json_log(line)
    ]


def _json_log(line: str) -> bool:
    try:
        found = json.loads(line)
    except ValueError:
        return False
    return isinstance(found, dict) and "event" in found


def _best(probabilities: dict[str, float]) -> str:
    return max(probabilities, key=probabilities.__getitem__)


def test_the_model_commands_list_export_roll_back_import_and_reset(
    client: httpx.Client, server: Server, tmp_path: Path
) -> None:
    _save(server, "cli", _trained("b", 60), 1)
    _save(server, "cli", _trained("c", 60), 2)
    listed = _model(server, "list", "cli")
    assert listed.exit_code == 0, listed.output
    lines = _printed(listed)
    assert lines[0].startswith("policy 'cli': model version 2; keeps the last 3 versions")
    assert lines[1].split() == ["version", "source", "saved", "at", "lineage", "began", "bytes",
                                "restored"]  # fmt: skip
    assert [line.split()[:2] for line in lines[2:]] == [["2", "*"], ["1", "learner"]]
    assert lines[2].split()[2] == "learner"

    one = tmp_path / "one.vw"
    exported = _model(server, "export", "cli", "--version", "1", "--output", str(one))
    assert exported.exit_code == 0, exported.output
    assert f"wrote version 1 ({one.stat().st_size:,} bytes) to {one}" in exported.output
    assert (
        one.read_bytes() == client.get("/v1/policies/cli/model/versions/1", headers=ADMIN).content
    )

    rolled = _model(server, "rollback", "cli", "1")
    assert rolled.exit_code == 0, rolled.output
    assert _printed(rolled) == [
        "policy 'cli': version 1 serves again, as version 3",
        "Undo: streambandit model rollback cli 2",
    ]
    assert _best(_served(client, "cli", 3)) == "b"

    two = tmp_path / "two.vw"
    assert _model(server, "export", "cli", "--version", "2", "-o", str(two)).exit_code == 0
    imported = _model(server, "import", "cli", str(two))
    assert imported.exit_code == 0, imported.output
    assert _printed(imported) == [
        "policy 'cli': serves two.vw as version 4",
        "Undo: streambandit model rollback cli 3",
    ]
    assert _best(_served(client, "cli", 4)) == "c"

    reset = _model(server, "reset", "cli")
    assert reset.exit_code == 0, reset.output
    assert _printed(reset)[0] == "policy 'cli': serves a fresh model as version 5"
    _served(client, "cli", 5)
    as_json = json.loads("\n".join(_printed(_model(server, "list", "cli", "--json"))))
    assert [(v["version"], v["source"]) for v in as_json["versions"]] == [
        (5, "reset"),
        (4, "import"),
        (3, "rollback"),
    ]

    unknown = _model(server, "rollback", "cli", "1")
    assert unknown.exit_code == 1, unknown.output
    assert _printed(unknown) == [
        (
            "model rollback failed: HTTP 404: policy 'cli' keeps no model version 1: "
            "it keeps versions 5, 4, 3"
        )
    ]
    assert _model(server, "rollback", "cli", "0").exit_code == 2  # refused before sending
    denied = _model(server, "list", "cli", key=APP["X-API-Key"])
    assert denied.exit_code == 1
    assert "listing model versions needs an admin key" in denied.output
