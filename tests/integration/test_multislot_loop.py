"""Multi-slot on the whole loop: Personalizer's client, the API and a stream worker as processes.

Multi-slot decisions ranked by ``azure-ai-personalizer``, rewarded per slot, are joined,
learned by the ``vw-ccb`` policy once each, and logged in VW's CCB DSJSON form, which
VW's own parser reads (``--dsjson --ccb_explore_adf``). Nothing is mocked.
"""

from __future__ import annotations

import json
import uuid

import vowpalwabbit
from azure.ai.personalizer import PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from vowpalwabbit import pyvw

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import PolicySettings
from tests.integration.conftest import logged_event_ids, n_learned, read_counters, wait_for

POLICIES = {"default": "vw-ccb"}
ACTIONS = [{"id": name, "features": [{"kind": name}]} for name in ("news", "sport", "music")]
SLOTS = [
    {"id": "Main Article", "features": [{"size": "Large"}], "baselineAction": "news"},
    {"id": "Side Bar", "features": [{"size": "Small"}], "excludedActions": ["news"]},
]


def test_multi_slot_decisions_are_rewarded_per_slot_learned_and_logged(
    stack: LocalStack, redis_url: str
) -> None:
    """Every decision is joined with its slots' rewards, learned once, and read back by VW."""
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings(
            "default",
            PolicySettings(spec="vw-ccb", reward_wait_seconds=1.0, reward_aggregation="sum"),
        )
    sdk = PersonalizerClient(stack.api_url, AzureKeyCredential(stack.app_key))
    n = 20
    event_ids = [f"ms {uuid.uuid4().hex[:8]}" for _ in range(n)]
    chosen: dict[str, dict[str, str]] = {}
    for event_id in event_ids:
        answer = sdk.rank_multi_slot(
            {
                "contextFeatures": [{"user": {"tier": "gold"}}],
                "actions": ACTIONS,
                "slots": SLOTS,
                "eventId": event_id,
            }
        )
        chosen[event_id] = {s["id"]: s["rewardActionId"] for s in answer["slots"]}
        sdk.reward_multi_slot(event_id, {"reward": [{"slotId": "Side Bar", "value": 1.0}]})
    wait_for(lambda: read_counters(stack, redis_url).get("joined", 0) >= n, 90, "the join")
    wait_for(lambda: n_learned(stack, redis_url) >= n, 60, "the learner")
    assert n_learned(stack, redis_url) == n
    wait_for(lambda: sorted(set(logged_event_ids(stack))) == sorted(event_ids), 30, "the log")

    vw = pyvw.Workspace("--dsjson --ccb_explore_adf --quiet", enable_logging=False)
    slot_kind = vowpalwabbit.LabelType.CONDITIONAL_CONTEXTUAL_BANDIT
    for path in sorted(stack.decision_logs.rglob("*.dsjson")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            ids = [next(iter(action["id"]))[3:] for action in record["c"]["_multi"]]  # id=<id>
            examples = vw.parse(line)
            labels = [e.get_label(slot_kind) for e in examples]
            main, side = (label for label in labels if label.type == 2)  # (2: a slot)
            served = chosen[record["EventId"]]
            assert ids[main.outcome.action_probs[0].action] == served["Main Article"]
            assert ids[side.outcome.action_probs[0].action] == served["Side Bar"]
            assert (main.outcome.cost, side.outcome.cost) == (0.0, -1.0)  # default 0; side 1
            vw.learn(examples)
            vw.finish_example(examples)
    vw.finish()
