"""Personalizer's ids through the whole loop, kept exactly: rank, join, learn, log, replay.

Personalizer took any id string up to 256 characters (its own quickstart offers
``"ice cream"``). Ranked and rewarded through its routes on a running API and stream
workers, such ids (a space, a slash, VW's separators ``|`` and ``:``, ``%``, quotes,
letters beyond ASCII, 256 characters) are joined, learned (VW text escapes what it
must), written to the DSJSON decision log and read back by replay exactly as the app
gave them. The native routes keep the strict id rule.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import PolicySettings
from replay import read_log
from tests.integration.conftest import logged_event_ids, n_learned, read_counters, wait_for

ODD_ACTIONS = [
    {"id": "ice cream", "features": [{"taste": "sweet"}]},
    {"id": "50% off | a:b", "features": [{"taste": "savory"}]},
    {"id": 'say "crème brûlée" / ✓', "features": [{"taste": "sweet"}]},
    {"id": "x" * 256, "features": [{"taste": "bitter"}]},
]
ODD_EVENTS = [f"lunch {n}/menu: 100% «ok»" for n in range(24)]


def test_personalizer_ids_are_kept_exactly_through_the_loop(
    stack: LocalStack, redis_url: str
) -> None:
    headers = {"Ocp-Apim-Subscription-Key": stack.app_key}
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        settings = PolicySettings(spec="vw-epsilon", reward_wait_seconds=1.0)
        changed = http.put(
            "/v1/policies/default/settings",
            content=settings.model_dump_json(),
            headers={"X-API-Key": stack.admin_key, "Content-Type": "application/json"},
        )
        assert changed.status_code == 200, changed.text
        chosen = {}
        for event_id in ODD_EVENTS:
            body = {"contextFeatures": [{"meal": "lunch"}], "actions": ODD_ACTIONS,
                    "eventId": event_id}  # fmt: skip
            ranked = http.post("/personalizer/v1.0/rank", json=body, headers=headers)
            assert ranked.status_code == 201, ranked.text
            answer = ranked.json()
            assert answer["eventId"] == event_id
            assert {entry["id"] for entry in answer["ranking"]} == {a["id"] for a in ODD_ACTIONS}
            chosen[event_id] = answer["rewardActionId"]
            path = f"/personalizer/v1.0/events/{quote(event_id, safe='')}/reward"
            rewarded = http.post(path, json={"value": 1.0}, headers=headers)
            assert rewarded.status_code == 204, rewarded.text
        # the native routes keep the strict rule
        native = http.post(
            "/v1/rank",
            json={"actions": [{"id": "ice cream"}]},
            headers={"X-API-Key": stack.app_key},
        )
        assert native.status_code == 422
        assert "action ids must match" in native.text

    n = len(ODD_EVENTS)
    wait_for(lambda: read_counters(stack, redis_url).get("joined", 0) >= n, 90, "the join")
    wait_for(lambda: n_learned(stack, redis_url) >= n, 60, "the learner")
    assert n_learned(stack, redis_url) == n
    wait_for(lambda: sorted(set(logged_event_ids(stack))) == sorted(ODD_EVENTS), 30, "the log")
    assert read_counters(stack, redis_url, "_streams").get("dead_letters", 0) == 0

    logged = read_log(stack.decision_logs).logs
    assert logged.event_ids is not None
    assert logged.action_ids is not None
    assert sorted(logged.event_ids) == sorted(ODD_EVENTS)
    for row, event_id in enumerate(logged.event_ids):
        offered = list(logged.action_ids[row])
        assert offered == [a["id"] for a in ODD_ACTIONS], offered
        assert offered[int(logged.chosen[row])] == chosen[event_id]
        assert float(logged.reward[row]) == 1.0
