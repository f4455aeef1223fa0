"""A policy's saved model, exported as the VW model file ``vw -i`` loads, and its properties.

A real uvicorn server with the real broker and Redis; models are saved to Redis as the
learner saves them. The exported file is loaded by VW itself (``pyvw``, ``-i``) and
must predict what the service serves; Personalizer's routes and its own Python client
export the same file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from redis.asyncio import Redis
from vowpalwabbit import pyvw

from bandit.service.state import StateStore
from policies import Action, make_policy
from policies.vwtext import example_text, to_vw_lines
from tests.bandit.test_api import (
    ACTIONS,
    ADMIN,
    ADMIN_KEY,
    APP,
    USER,
    Server,
    _run,
    _save_model,
    _trained,
    serve_api,
)

MAIN_VERSION = 4


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API as tests/bandit/test_api.py serves it, with a model of `main` saved."""
    with serve_api(broker, redis_url, "api-model-export") as running:
        _save_model(running.settings, "main", _trained("b", 120), MAIN_VERSION)
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _served_version(client: httpx.Client, policy: str, version: str) -> dict[str, float]:
    """Rank until `policy` serves model `version`; return the answer's probabilities by id."""
    deadline = time.monotonic() + 10
    while True:
        body = {"context": USER, "actions": ACTIONS, "policy": policy}
        answer = client.post("/v1/rank", json=body, headers=ADMIN).json()
        if answer["model_version"] == version:
            return {entry["id"]: entry["probability"] for entry in answer["ranking"]}
        assert time.monotonic() < deadline, f"model {version} of {policy} was never served"
        time.sleep(0.05)


def test_the_exported_model_loads_in_vw_and_predicts_what_the_service_serves(
    client: httpx.Client, tmp_path: Path
) -> None:
    served = _served_version(client, "main", str(MAIN_VERSION))
    answer = client.get("/v1/policies/main/model", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["X-Streambandit-Model-Version"] == str(MAIN_VERSION)
    path = tmp_path / "main.vw"
    path.write_bytes(answer.content)

    vw = pyvw.Workspace(f"--quiet --no_stdin -i {path}", enable_logging=False)
    try:
        actions = [Action(a["id"], a.get("features", {})) for a in ACTIONS]
        context = {"user": {"tier": "gold", "returning": 1.0}}  # as the policy sees USER
        examples = vw.parse(example_text(to_vw_lines(context, actions)))
        vw.predict(examples)
        scores = examples[0].get_action_scores()
        vw.finish_example(examples)
    finally:
        vw.finish()
    predicted = dict(zip((a.id for a in actions), scores, strict=True))
    assert predicted == pytest.approx(served, abs=1e-6)
    assert max(predicted, key=predicted.__getitem__) == "b"  # what it learned


def test_only_admin_keys_export_and_a_policy_not_vws_has_no_file(
    client: httpx.Client, server: Server
) -> None:
    refused = client.get("/v1/policies/main/model", headers=APP)
    assert refused.status_code == 403
    assert "admin key" in refused.json()["detail"]
    readable = client.get("/v1/policies/main/model/properties", headers=APP)  # any key of it
    assert (readable.status_code, readable.json()["model_version"]) == (200, MAIN_VERSION)
    unknown = client.get("/v1/policies/nobody/model", headers=ADMIN)
    assert unknown.status_code == 404
    nothing = client.get("/v1/policies/tuned/model", headers=ADMIN)  # nothing saved yet
    assert nothing.status_code == 404
    assert "has no saved model yet" in nothing.json()["detail"]
    _save_model(server.settings, "other", make_policy("uniform").snapshot(), 2)
    conflict = client.get("/v1/policies/other/model", headers=ADMIN)
    assert conflict.status_code == 409
    assert "'uniform' policy, which has no VW model file" in conflict.json()["detail"]
    properties = client.get("/v1/policies/other/model/properties", headers=ADMIN).json()
    assert (properties["policy_class"], properties["vw_model_bytes"]) == ("uniform", None)


def test_properties_say_which_model_is_served_and_when_its_lineage_began(
    client: httpx.Client, server: Server
) -> None:
    _save_model(server.settings, "swapped", _trained("c", 30), 1)
    first = client.get("/v1/policies/swapped/model/properties", headers=ADMIN).json()
    assert (first["model_version"], first["n_learned"], first["policy_class"]) == (1, 30, "vw")
    assert first["created_at"] == first["saved_at"]
    exported = client.get("/v1/policies/swapped/model", headers=ADMIN).content
    assert first["vw_model_bytes"] == len(exported)
    time.sleep(0.01)
    _save_model(server.settings, "swapped", _trained("c", 60), 2)
    second = client.get("/v1/policies/swapped/model/properties", headers=ADMIN).json()
    assert (second["model_version"], second["n_learned"]) == (2, 60)
    assert second["created_at"] == first["created_at"]  # the same lineage
    assert datetime.fromisoformat(second["saved_at"]) > datetime.fromisoformat(first["saved_at"])


def test_personalizer_routes_and_its_client_export_the_same_file(
    client: httpx.Client, server: Server
) -> None:
    native = client.get("/v1/policies/main/model", headers=ADMIN).content
    for path in ("/personalizer/v1.0/model", "/personalizer/model?api-version=2022-09-01-preview"):
        answer = client.get(path, headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY})
        assert (answer.status_code, answer.content) == (200, native), path
    signed = client.get("/personalizer/v1.0/model?signed=true", headers=ADMIN)
    assert signed.status_code == 400
    assert signed.json()["error"]["details"][0]["target"].endswith("signed")

    sdk = PersonalizerAdministrationClient(server.url, AzureKeyCredential(ADMIN_KEY))
    assert b"".join(sdk.export_model(signed=False)) == native
    properties = sdk.get_model_properties()
    ours = client.get("/v1/policies/main/model/properties", headers=ADMIN).json()
    assert datetime.fromisoformat(properties["lastModifiedTime"]) == datetime.fromisoformat(
        ours["saved_at"]
    )
    assert datetime.fromisoformat(properties["creationTime"]) == datetime.fromisoformat(
        ours["created_at"]
    )


def test_a_model_saved_again_keeps_its_creation_time_in_redis(server: Server) -> None:
    """The store keeps the first save's time (``created_at``) across later versions."""

    async def body() -> tuple[float, float, float]:
        redis = Redis.from_url(server.settings.redis.url)
        try:
            store = StateStore(redis, server.settings.redis.key_prefix)
            snapshot = make_policy("vw-epsilon").snapshot()
            await store.save_model("lineage", snapshot, 1, {})
            first = await store.load_model("lineage")
            await asyncio.sleep(0.01)
            await store.save_model("lineage", snapshot, 2, {})
            second = await store.load_model("lineage")
            assert first is not None
            assert second is not None
            return first.created_at, second.created_at, second.saved_at
        finally:
            await redis.aclose()

    created, kept, saved = _run(body)
    assert kept == created < saved


# -- replacing a model: reset and import -------------------------------------------------

CONTEXT = {"user": {"tier": "gold", "returning": 1.0}}  # as the policy sees USER


def _served_probabilities(client: httpx.Client, policy: str, version: int) -> dict[str, float]:
    return _served_version(client, policy, str(version))


def test_an_imported_vw_model_file_is_served_and_a_reset_serves_a_fresh_model(
    client: httpx.Client,
) -> None:
    trained = make_policy("vw-epsilon")
    actions = [Action(a["id"], a.get("features", {})) for a in ACTIONS]
    for i in range(90):  # trained elsewhere: "c" is the one that pays
        trained.learn(CONTEXT, actions, i % 3, float(i % 3 == 2), 1 / 3)
    before = client.get("/v1/policies/tuned/model/properties", headers=ADMIN)
    version = before.json()["model_version"] if before.status_code == 200 else 0

    imported = client.put(
        "/v1/policies/tuned/model",
        content=trained.model_file(),
        headers={**ADMIN, "Content-Type": "application/octet-stream"},
    )
    assert imported.status_code == 200, imported.text
    properties = imported.json()
    assert (properties["model_version"], properties["n_learned"]) == (version + 1, 0)
    assert properties["created_at"] == properties["saved_at"]  # a new lineage
    served = _served_probabilities(client, "tuned", version + 1)
    expected = trained.pmf(CONTEXT, actions).probabilities
    assert [served[a.id] for a in actions] == pytest.approx(list(expected), abs=1e-6)
    assert max(served, key=served.__getitem__) == "c"

    reset = client.delete("/v1/policies/tuned/model", headers=ADMIN)
    assert reset.status_code == 200, reset.text
    assert (reset.json()["model_version"], reset.json()["n_learned"]) == (version + 2, 0)
    served = _served_probabilities(client, "tuned", version + 2)
    fresh = make_policy("vw-epsilon").pmf(CONTEXT, actions).probabilities
    assert [served[a.id] for a in actions] == pytest.approx(list(fresh), abs=1e-6)


def test_a_model_file_the_policy_cannot_learn_on_from_is_refused_naming_it(
    client: httpx.Client,
) -> None:
    binary = {**ADMIN, "Content-Type": "application/octet-stream"}
    before = client.get("/v1/policies/main/model/properties", headers=ADMIN).json()
    for junk in (b"not a model", make_policy("vw-epsilon").snapshot()):
        refused = client.put("/v1/policies/main/model", content=junk, headers=binary)
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["detail"]
        assert (detail["loc"], detail["type"]) == (["body"], "model_file")
    squarecb = make_policy("vw-squarecb").model_file()  # another exploration's options
    other = client.put("/v1/policies/other/model", content=squarecb, headers=binary)
    assert other.status_code == 422
    assert "not a VW policy" in other.json()["detail"][0]["msg"]
    not_admin = client.put(
        "/v1/policies/main/model",
        content=squarecb,
        headers={**APP, "Content-Type": "application/octet-stream"},
    )
    assert not_admin.status_code == 403
    assert client.delete("/v1/policies/main/model", headers=APP).status_code == 403
    after = client.get("/v1/policies/main/model/properties", headers=ADMIN).json()
    assert after == before  # nothing was replaced


def test_personalizers_client_imports_and_resets_the_model(
    client: httpx.Client, server: Server
) -> None:
    sdk = PersonalizerAdministrationClient(server.url, AzureKeyCredential(ADMIN_KEY))
    before = client.get("/v1/policies/main/model/properties", headers=ADMIN).json()
    trained = make_policy("vw-epsilon")
    trained.learn(CONTEXT, [Action("a"), Action("b")], 1, 1.0, 0.5)
    sdk.import_model(trained.model_file())
    imported = client.get("/v1/policies/main/model/properties", headers=ADMIN).json()
    assert imported["model_version"] == before["model_version"] + 1
    assert (
        b"".join(sdk.export_model(signed=False))
        == client.get("/v1/policies/main/model", headers=ADMIN).content
    )
    sdk.reset_model()
    reset = client.get("/v1/policies/main/model/properties", headers=ADMIN).json()
    assert (reset["model_version"], reset["n_learned"]) == (before["model_version"] + 2, 0)
    with pytest.raises(HttpResponseError) as refused:
        sdk.import_model(b"not a model")
    assert refused.value.status_code == 400
