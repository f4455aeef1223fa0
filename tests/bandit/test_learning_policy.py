"""Personalizer's learning policy: a VW command line read, applied live or with a fresh model.

A real uvicorn server with the real broker and Redis. ``GET /configurations/policy`` says
the served policy's VW options; ``PUT`` applies a command line (the body of the
specification's ``Policy_Update`` example among them), keeping the model when only
exploration VW changes live moves, serving a fresh model of the new options otherwise,
and saying which; ``DELETE`` goes back to the configured spec. Options touching files,
daemons or the process, and unknown ones, are refused by name. Personalizer's own Python
client drives the same routes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential

from tests.bandit.test_api import (
    ADMIN_KEY,
    SUBSCRIPTION,
    Server,
    _save_model,
    _trained,
    serve_api,
)

ADMIN = {"Ocp-Apim-Subscription-Key": ADMIN_KEY}
POLICY_PATH = "/personalizer/v1.1-preview.3/configurations/policy"
SPEC_EXAMPLE = {  # the body of Policy_Update.json, the .NET client's v1.1-preview.3 example
    "name": "myPersonalizer",
    "arguments": "--cb_explore_adf --epsilon 0.2 --dsjson --cb_type ips -l 0.5 --l1 1E-07 "
    "--power_t 0.5",
}
RANK = {
    "contextFeatures": [{"user": {"tier": "gold"}}],
    "actions": [{"id": "a", "features": [{"k": 1}]}, {"id": "b", "features": [{"k": 2}]}],
}


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API as tests/bandit/test_api.py serves it, with a learned model of `tuned`."""
    with serve_api(broker, redis_url, "api-learning-policy") as running:
        _save_model(running.settings, "tuned", _trained("b", 60), 3)
        _save_model(running.settings, "swapped", _trained("a", 60), 2)
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def _model_version(client: httpx.Client, policy: str) -> int:
    answer = client.get(f"/v1/policies/{policy}/model/properties", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["model_version"])


def _serves(client: httpx.Client, policy: str, version: int) -> httpx.Response:
    """Rank with `policy` until it serves model `version` (the API polls Redis)."""
    deadline = time.monotonic() + 10
    while True:
        ranked = client.post(f"/personalizer/v1.0/rank?policy={policy}", json=RANK, headers=ADMIN)
        assert ranked.status_code == 201, ranked.text
        if ranked.headers["X-Streambandit-Model-Version"] == str(version):
            return ranked
        assert time.monotonic() < deadline, ranked.headers
        time.sleep(0.05)


def _put(client: httpx.Client, policy: str, arguments: str) -> httpx.Response:
    body = {"name": "label", "arguments": arguments}
    return client.put(f"{POLICY_PATH}?policy={policy}", json=body, headers=ADMIN)


def test_the_served_policys_vw_options_are_read_at_every_path(client: httpx.Client) -> None:
    for path in (
        "/personalizer/v1.0/configurations/policy?policy=main",
        "/personalizer/configurations/policy?api-version=2022-09-01-preview&policy=main",
        f"{POLICY_PATH}?policy=main",
    ):
        answer = client.get(path, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        policy = answer.json()
        assert policy["name"] == "main"
        assert policy["arguments"].startswith("--cb_explore_adf --epsilon 0.05 ")
        assert "--interactions ca --interactions ci" in policy["arguments"]
    not_vw = client.get(f"{POLICY_PATH}?policy=other", headers=ADMIN)
    assert not_vw.status_code == 400
    assert "not a VW policy" in not_vw.json()["error"]["message"]


def test_an_exploration_change_vw_makes_live_keeps_the_model(client: httpx.Client) -> None:
    version = _model_version(client, "tuned")
    served = client.get(f"{POLICY_PATH}?policy=tuned", headers=ADMIN).json()["arguments"]
    wider = served.replace("--epsilon 0.05", "--epsilon 0.4")
    answer = _put(client, "tuned", wider)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Streambandit-Model-Reset"] == "false"
    assert answer.json()["arguments"] == wider
    assert _model_version(client, "tuned") == version  # the same learned model
    settings = client.get("/v1/policies/tuned/settings", headers=ADMIN).json()
    assert (settings["spec"], settings["exploration"]) == ("vw-epsilon", {"epsilon": 0.4})
    # epsilon-greedy over two actions: the greedy one has 1 - 0.4 + 0.4 / 2
    ranked = _serves(client, "tuned", version).json()["ranking"]
    assert max(action["probability"] for action in ranked) == pytest.approx(0.8)


def test_other_options_serve_a_fresh_model_of_them_and_delete_goes_back(
    client: httpx.Client,
) -> None:
    before = _model_version(client, "swapped")
    answer = client.put(f"{POLICY_PATH}?policy=swapped", json=SPEC_EXAMPLE, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Streambandit-Model-Reset"] == "true"
    arguments = answer.json()["arguments"]
    for option in ("--epsilon 0.2", "--cb_type ips", "--learning_rate 0.5", "--l1 1e-07"):
        assert option in arguments
    assert "--interactions" not in arguments  # left out: VW's default, none
    after = _model_version(client, "swapped")
    assert after == before + 1
    settings = client.get("/v1/policies/swapped/settings", headers=ADMIN).json()
    assert settings["spec"].startswith("vw:")
    assert '"ips"' in settings["spec"]
    _serves(client, "swapped", after)
    properties = client.get(
        "/personalizer/v1.0/model/properties?policy=swapped", headers=ADMIN
    ).json()
    assert properties["creationTime"] == properties["lastModifiedTime"]  # a new lineage
    # the replaced version is kept, but it learned with the old options: not served again
    rollback = client.post(
        "/v1/policies/swapped/model/rollback", json={"version": before}, headers=ADMIN
    )
    assert rollback.status_code == 409, rollback.text
    assert "learned with options the served spec" in rollback.text
    assert _model_version(client, "swapped") == after

    reset = client.delete(f"{POLICY_PATH}?policy=swapped", headers=ADMIN)
    assert reset.status_code == 200, reset.text
    assert reset.headers["X-Streambandit-Model-Reset"] == "true"
    assert "--cb_type" not in reset.json()["arguments"]  # VW's default, mtr
    assert "--interactions ca --interactions ci" in reset.json()["arguments"]
    settings = client.get("/v1/policies/swapped/settings", headers=ADMIN).json()
    assert settings["spec"] == "vw-epsilon"
    _serves(client, "swapped", after + 1)
    again = client.delete(f"{POLICY_PATH}?policy=swapped", headers=ADMIN)
    assert again.headers["X-Streambandit-Model-Reset"] == "false"  # nothing to change
    assert _model_version(client, "swapped") == after + 1


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (
            "--cb_explore_adf -d train.dsjson -f out.vw --daemon --port 26542 --cache_file c",
            "'-d', '-f', '--daemon', '--port', '--cache_file'",
        ),
        ("--cb_explore_adf -i elsewhere.vw --epsilon 0.1", "'-i'"),
        ("--cb_explore_adf --first 2", "'--first'"),
        ("--epsilon 0.2", "must hold --cb_explore_adf"),
        ("--cb_explore_adf --squarecb --epsilon 0.2", "epsilon does nothing with squarecb"),
        ("--cb_explore_adf --squarecb --cb_type dm", "'dm' is not a valid choice"),
        ("--cb_explore_adf -q UA", "names namespaces this service does not write"),
        ("--cb_explore_adf -q sa", "names namespaces this service does not write (['s'])"),
        ("--ccb_explore_adf --epsilon 0.2", "holds --ccb_explore_adf (multi-slot)"),
        ("--cb_explore_adf --epsilon 1.5", "epsilon"),
        ("--cb_explore_adf --bag 0", "bag"),
        ("--cb_explore_adf --bag 3000 --epsilon 0.1", "in [1, 64]"),
        ("--cb_explore_adf " + "-q ca " * 300, "at most 1024 characters"),
    ],
)
def test_options_that_cannot_apply_are_refused_naming_them(
    client: httpx.Client, arguments: str, says: str
) -> None:
    settings = client.get("/v1/policies/main/settings", headers=ADMIN).json()
    version = client.get("/v1/policies/main/model/properties", headers=ADMIN).status_code
    answer = _put(client, "main", arguments)
    assert answer.status_code == 400, answer.text
    [detail] = answer.json()["error"]["details"]
    assert detail["target"] == "arguments"
    assert says in detail["message"]
    assert client.get("/v1/policies/main/settings", headers=ADMIN).json() == settings
    assert client.get("/v1/policies/main/model/properties", headers=ADMIN).status_code == version


def test_only_admin_keys_change_the_learning_policy(client: httpx.Client) -> None:
    body: dict[str, Any] = {"name": "x", "arguments": "--cb_explore_adf --epsilon 0.3"}
    refused = client.put(f"{POLICY_PATH}?policy=main", json=body, headers=SUBSCRIPTION)
    assert refused.status_code == 403
    reset = client.delete(f"{POLICY_PATH}?policy=main", headers=SUBSCRIPTION)
    assert reset.status_code == 403


def test_personalizers_client_reads_updates_and_resets_the_policy(server: Server) -> None:
    sdk = PersonalizerAdministrationClient(server.url, AzureKeyCredential(ADMIN_KEY))
    served = sdk.get_policy()  # the admin key's first served policy: main
    assert served["arguments"].startswith("--cb_explore_adf --epsilon")
    wider = served["arguments"].replace("--epsilon 0.05", "--epsilon 0.25")
    updated = sdk.update_policy({"name": "wider", "arguments": wider})
    assert updated["arguments"] == wider
    assert sdk.get_policy()["arguments"] == wider
    reset = sdk.reset_policy()
    assert reset["arguments"] == served["arguments"]
