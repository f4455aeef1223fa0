"""A model imported, reset or rolled back on a running loop: served, and learned on from.

A VW model file trained elsewhere is imported through the API while a stream worker
learns live traffic: the API serves it, and the worker's next save builds on it (its
examples counted from the import's zero, its versions after the import's), without
losing or doubling an example. A reset likewise starts a fresh lineage the worker
learns on from, and a rollback to the version the reset replaced serves it again, the
worker learning on from it.
"""

from __future__ import annotations

import asyncio
import random

import httpx
from redis.asyncio import Redis

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.service.state import StateStore
from policies import Action, Policy, make_policy
from tests.integration.conftest import ACTIONS, best_action, read_counters, wait_for


def _saved(stack: LocalStack, redis_url: str) -> tuple[int, int]:
    """The saved model of ``default``: its version and how many examples it learned."""

    async def read() -> tuple[int, int]:
        client = Redis.from_url(redis_url)
        try:
            record = await StateStore(client, stack.prefix).load_model("default")  # type: ignore[attr-defined]
        finally:
            await client.aclose()
        assert record is not None
        return record.version, Policy.restore(record.snapshot).n_learned

    return asyncio.run(read())


def _traffic(client: Client, n: int, rng: random.Random) -> None:
    for _ in range(n):
        segment = rng.randrange(2)
        result = client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
        client.reward(result.event_id, float(result.action_id == best_action(segment)))


def test_the_learner_learns_on_from_an_imported_a_reset_and_a_rolled_back_model(
    stack: LocalStack, redis_url: str
) -> None:
    admin = {"X-API-Key": stack.admin_key}
    rng = random.Random(3)
    with Client(stack.api_url, api_key=stack.app_key) as client:
        _traffic(client, 40, rng)
        wait_for(lambda: read_counters(stack, redis_url).get("learned", 0) >= 40, 90, "learning")
        before, learned = _saved(stack, redis_url)
        assert learned == 40

        trained = make_policy("vw-epsilon")  # trained elsewhere on other data
        for i in range(30):
            trained.learn({"user": {"segment": "s0"}}, [Action(a["id"]) for a in ACTIONS],
                          i % 3, float(i % 3 == 1), 1 / 3)  # fmt: skip
        with httpx.Client(base_url=stack.api_url, timeout=30) as http:
            imported = http.put(
                "/v1/policies/default/model",
                content=trained.model_file(),
                headers={**admin, "Content-Type": "application/octet-stream"},
            )
            assert imported.status_code == 200, imported.text
            version = imported.json()["model_version"]
            assert version == before + 1
            assert client.list_policies()[0].model_version == version  # served at once

            _traffic(client, 25, rng)
            wait_for(lambda: read_counters(stack, redis_url)["learned"] >= 65, 90, "learning on")
            wait_for(lambda: _saved(stack, redis_url)[1] == 25, 30, "the save after the import")
            after, learned = _saved(stack, redis_url)
            assert after > version  # the learner's versions follow the import's

            reset = http.delete("/v1/policies/default/model", headers=admin)
            assert reset.status_code == 200, reset.text
            assert reset.json()["n_learned"] == 0
            replaced = reset.json()["model_version"] - 1  # kept: a rollback undoes the reset
            _traffic(client, 15, rng)
            wait_for(lambda: read_counters(stack, redis_url)["learned"] >= 80, 90, "after reset")
            wait_for(lambda: _saved(stack, redis_url)[1] == 15, 30, "the save after the reset")

            rolled = http.post(
                "/v1/policies/default/model/rollback", json={"version": replaced}, headers=admin
            )
            assert rolled.status_code == 200, rolled.text
            assert rolled.json()["n_learned"] == 25  # the model the reset replaced
            _traffic(client, 10, rng)
            wait_for(lambda: read_counters(stack, redis_url)["learned"] >= 90, 90, "after rollback")
            wait_for(lambda: _saved(stack, redis_url)[1] == 35, 30, "the save after the rollback")
    assert read_counters(stack, redis_url)["learned"] == 90  # none lost, none twice
