"""Kill Redis or the broker under traffic in ``streambandit up``'s stack; count what survives.

``python -m bench.restarts [broker|redis] [--seconds S] [--data DIR]`` (from the repository
root: ``bench/policies.py`` would shadow the ``policies`` package if run as a file)

Starts a durable :class:`~bandit.ops.runtime.LocalStack` (what ``up`` runs) with its
supervisor, ranks at about 50 decisions/s for `seconds`, SIGKILLs the chosen server a
third of the way in, then waits for the loop to settle and prints one JSON line:
decisions answered, joined, learned (the saved model's examples), logged (distinct and
lines), answered but never logged, the model version before the kill and at the end,
how long until every answer sent after the kill was logged, and the supervisor's notes.
Figures depend on the host's load: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from bandit.client import AsyncClient, Client
from bandit.ops.runtime import LocalStack
from bandit.settings import ApiSettings, Settings
from bandit.wire.schemas import PolicySettings
from policies import Policy

ACTIONS = [{"id": f"item-{i}", "features": {"item": {"kind": f"k{i}"}}} for i in range(3)]
ENV = {
    "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
    "STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_SECONDS": "0.5",
    "STREAMBANDIT_POLICIES": json.dumps({"default": "vw-epsilon"}),
    "STREAMBANDIT_LOG_FORMAT": "json",
}


def _read(stack: LocalStack) -> tuple[dict[str, int], int, int]:
    """Counters, model version and examples learned of ``default`` (zeros when away)."""
    client = redis.Redis.from_url(stack.services.redis_url, socket_timeout=2)
    try:
        counters = {k.decode(): int(v) for k, v in client.hgetall("sb:counters:default").items()}
        model = client.hgetall("sb:model:default")
    except redis.RedisError:
        return {}, 0, 0
    finally:
        client.close()
    if not model:
        return counters, 0, 0
    return counters, int(model[b"version"]), Policy.restore(model[b"snapshot"]).n_learned


def _version(stack: LocalStack) -> int:
    client = redis.Redis.from_url(stack.services.redis_url, socket_timeout=2)
    try:
        return int(client.hget("sb:model:default", "version") or 0)
    finally:
        client.close()


def _logged(stack: LocalStack) -> list[str]:
    return [
        json.loads(line)["EventId"]
        for path in sorted(stack.decision_logs.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def run(victim: str, seconds: float, data: Path) -> dict[str, object]:
    """Run the experiment; return its figures."""
    stack = LocalStack(Settings(api=ApiSettings(port=0)), workdir=data, extra_env=ENV, durable=True)
    stack.start()
    notes: list[str] = []
    stop = threading.Event()

    def supervise() -> None:
        while not stop.wait(0.5):
            notes.extend(stack.supervise())

    threading.Thread(target=supervise, daemon=True).start()
    answered: list[tuple[str, float]] = []
    killed: dict[str, float] = {}
    try:
        with Client(stack.api_url, api_key=stack.admin_key) as admin:
            admin.set_settings(
                "default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=1.0)
            )

        def kill() -> None:
            time.sleep(seconds / 3)
            killed["version"] = _version(stack)
            killed["at"] = time.monotonic()
            stack.services.processes[victim].kill()

        async def send() -> None:
            async with AsyncClient(stack.api_url, api_key=stack.app_key) as client:

                async def one() -> None:
                    sent = time.monotonic()
                    try:
                        result = await client.rank({"user": {"segment": "s1"}}, ACTIONS)
                    except Exception:  # noqa: BLE001  # refused: not answered
                        return
                    answered.append((result.event_id, sent))

                loop = asyncio.get_running_loop()
                end = loop.time() + seconds
                while loop.time() < end:
                    await asyncio.gather(*(one() for _ in range(10)))
                    await asyncio.sleep(0.2)

        killer = threading.Thread(target=kill)
        killer.start()
        asyncio.run(send())
        killer.join()
        after = {event_id for event_id, sent in answered if sent > killed["at"]}
        ids = {event_id for event_id, _ in answered}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not ids <= set(_logged(stack)):
            if after <= set(_logged(stack)) and time.monotonic() > deadline - 150:
                break  # what was sent after the kill is in; the rest is not coming
            time.sleep(1)
        settled = time.monotonic() - killed["at"]
        time.sleep(3)
        counters, version, learned = _read(stack)
        logged = _logged(stack)
        return {
            "victim": victim,
            "answered": len(ids),
            "answered_after_kill": len(after),
            "joined": counters.get("joined", 0),
            "learned": learned,
            "logged_distinct": len(set(logged)),
            "logged_lines": len(logged),
            "answered_never_logged": len(ids - set(logged)),
            "model_version_at_kill": killed["version"],
            "model_version_at_end": version,
            "seconds_kill_to_settled": round(settled, 1),
            "supervisor": notes,
        }
    finally:
        stop.set()
        stack.stop()


def main() -> None:
    """Parse the arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("victim", choices=["broker", "redis"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-restarts-") as tmp:
        figures = run(args.victim, args.seconds, args.data or Path(tmp) / "data")
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
