"""A model trained by VW itself on our decision log imports, and serves what VW predicts.

The log lines are written by the service's one DSJSON writer (as the stream workers
write them); ``vw --cb_explore_adf --dsjson`` (pyvw, with the served policy's own
options) learns them, its model file goes in through ``PUT /personalizer/v1.0/model``, and
the service then serves the probabilities VW itself predicts from that file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from vowpalwabbit import pyvw

from bandit.wire.schemas import Decision, RankRequest, TrainingExample
from policies import Action, decide_ranking, make_policy
from policies.vw import VWPolicy
from policies.vwtext import example_text, to_vw_lines
from streams.training import write_training
from streams.trusted import training_values
from tests.bandit.test_api import ACTIONS, ADMIN_KEY, USER, Server, serve_api

ADMIN = {"X-API-Key": ADMIN_KEY}
CONTEXT = {"user": {"tier": "gold", "returning": 1.0}}  # as the policy sees USER


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    with serve_api(broker, redis_url, "api-vw-trained") as running:
        yield running


def _log_lines(n: int) -> list[str]:
    """`n` decision-log lines of a uniform logging policy where action c pays."""
    uniform = make_policy("uniform")
    lines = []
    for i in range(n):
        request = RankRequest.model_validate(
            {"event_id": f"vw-{i}-{uuid.uuid4().hex[:6]}", "context": USER, "actions": ACTIONS}
        )
        context, actions = request.policy_inputs()
        choice = decide_ranking(uniform.pmf(context, actions), request.event_id)
        decision = Decision.from_choice(choice, request=request, policy="main", model_version="0")
        reward = 1.0 if decision.chosen_action_id == "c" else 0.0
        example = TrainingExample(
            event_id=decision.event_id,
            decision=decision,
            reward=reward,
            reward_count=1,
            default_reward=False,
        )
        written = write_training(training_values(example.model_dump_json().encode()))
        assert written is not None
        lines.append(written.dsjson.decode())
    return lines


def test_a_model_vw_trained_on_our_log_imports_and_serves_what_vw_predicts(
    server: Server, tmp_path: Path
) -> None:
    served = make_policy("vw-epsilon")
    assert isinstance(served, VWPolicy)
    vw = pyvw.Workspace(f"{served.vw_arguments()} --dsjson --quiet", enable_logging=False)
    try:
        for line in _log_lines(150):
            examples = vw.parse(line)  # VW's own DSJSON parser
            vw.learn(examples)
            vw.finish_example(examples)
        path = tmp_path / "trained.vw"
        vw.save(str(path))
    finally:
        vw.finish()

    reader = pyvw.Workspace(f"--quiet --no_stdin -i {path}", enable_logging=False)
    try:
        actions = [Action(a["id"], a.get("features", {})) for a in ACTIONS]
        examples = reader.parse(example_text(to_vw_lines(CONTEXT, actions)))
        reader.predict(examples)
        predicted = dict(zip((a.id for a in actions), examples[0].get_action_scores(), strict=True))
        reader.finish_example(examples)
    finally:
        reader.finish()
    assert max(predicted, key=predicted.__getitem__) == "c"  # what the log taught VW

    with httpx.Client(base_url=server.url, timeout=10) as client:
        imported = client.put(
            "/personalizer/v1.0/model",
            content=path.read_bytes(),
            headers={"Ocp-Apim-Subscription-Key": ADMIN_KEY},
        )
        assert imported.status_code == 204, imported.text
        deadline = time.monotonic() + 10
        while True:
            body = {"context": USER, "actions": ACTIONS, "policy": "main"}
            answer = client.post("/v1/rank", json=body, headers=ADMIN).json()
            if answer["model_version"] == "1":
                break
            assert time.monotonic() < deadline, answer
            time.sleep(0.05)
    probabilities = {entry["id"]: entry["probability"] for entry in answer["ranking"]}
    assert probabilities == pytest.approx(predicted, abs=1e-6)
