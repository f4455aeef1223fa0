"""The whole loop on real servers: API, stream workers, broker and Redis as processes.

These tests start ``python -m bandit api`` and ``python -m bandit worker`` as child
processes against the session's broker and Redis (each test with its own topic and key
prefix), send traffic through the Python client, and read the outcome back from Redis
and the decision logs. Nothing is mocked.
"""

from __future__ import annotations

import os
import random

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.wire.schemas import PolicySettings
from tests.integration.conftest import (
    ACTIONS,
    best_action,
    logged_event_ids,
    n_learned,
    read_counters,
    wait_for,
)


def _traffic(client: Client, n: int, rng: random.Random) -> list[str]:
    event_ids = []
    for _ in range(n):
        segment = rng.randrange(2)
        result = client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
        event_ids.append(result.event_id)
        if result.action_id == best_action(segment):
            client.reward(result.event_id, 1.0)
    return event_ids


def test_the_loop_learns_from_live_traffic(stack: LocalStack, redis_url: str) -> None:
    """Ranked and rewarded traffic is joined, learned once each, logged, and served back."""
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings(
            "default",
            PolicySettings(
                spec="vw-epsilon", reward_wait_seconds=1.0, exploration={"epsilon": 0.3}
            ),
        )
    n = 400
    with Client(stack.api_url, api_key=stack.app_key) as client:
        event_ids = _traffic(client, n, random.Random(1))
        wait_for(lambda: read_counters(stack, redis_url).get("joined", 0) >= n, 90, "the join")
        wait_for(lambda: n_learned(stack, redis_url) >= n, 60, "the learner")
        assert n_learned(stack, redis_url) == n
        wait_for(lambda: sorted(set(logged_event_ids(stack))) == sorted(event_ids), 30, "the log")
        served = {p.name: p for p in client.list_policies()}["default"]
        wait_for(lambda: client.list_policies()[0].learned_examples == n, 10, "the API's hot swap")
        assert served.spec == "vw-epsilon"
        for segment in range(2):
            result = client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
            best = {r.id: r.probability for r in result.ranking}[best_action(segment)]
            assert best > 0.7
    wait_for(
        lambda: read_counters(stack, redis_url)["decisions"] == n + 2, 30, "the last decisions"
    )
    assert read_counters(stack, redis_url)["joined"] >= n


def test_a_worker_heartbeat_says_whether_it_runs(stack: LocalStack) -> None:
    """`streambandit worker-health` passes for a running worker, fails once it is gone."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "STREAMBANDIT_WORKER_HEARTBEAT": str(stack.heartbeat(1))}
    command = [sys.executable, "-m", "bandit", "worker-health", "--max-age", "60"]
    deadline = time.monotonic() + 30
    while not stack.heartbeat(1).exists():
        assert time.monotonic() < deadline, "the worker never wrote its heartbeat"
        time.sleep(0.2)
    first = stack.heartbeat(1).stat().st_mtime
    while stack.heartbeat(1).stat().st_mtime == first:  # touched again by the timer
        assert time.monotonic() < deadline + 15, "the heartbeat is not renewed"
        time.sleep(0.2)
    # (a generous age: a loaded machine may delay a beat, and this is not about timing)
    healthy = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert healthy.returncode == 0, healthy.stderr
    assert "alive" in healthy.stdout
    stack.processes["worker-1"].kill()
    stale = [*command[:-1], "0.5"]
    time.sleep(1.0)
    gone = subprocess.run(stale, env=env, capture_output=True, text=True, check=False)
    assert gone.returncode == 1
    assert "old" in gone.stderr
