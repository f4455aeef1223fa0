"""Restarts under ``streambandit up``'s stack: the broker, Redis, and ``up`` itself.

Each test runs a durable :class:`~bandit.ops.runtime.LocalStack` with its own broker and
Redis (the ones ``up`` starts), its supervisor (:meth:`LocalStack.supervise`) running
as ``up`` runs it, and counts the decisions answered, logged and learned.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from bandit.client import AsyncClient, Client
from bandit.errors import RuntimeServiceError
from bandit.ops.runtime import LocalStack
from bandit.settings import ApiSettings, Settings
from bandit.wire.schemas import PolicySettings
from policies import Policy
from tests.integration.conftest import ACTIONS, wait_for

ENV = {
    "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
    "STREAMBANDIT_LEARNER__SNAPSHOT_EVERY_SECONDS": "0.5",
    "STREAMBANDIT_POLICIES": json.dumps({"default": "vw-epsilon"}),
    "STREAMBANDIT_LOG_FORMAT": "json",
}
SEND_SECONDS = 16.0
FAULT_AFTER_SECONDS = 5.0
PAUSE_SECONDS = 2.0  # workers stopped (SIGSTOP) before the broker is killed
SESSION = "restart-session"


def _stack(data: Path) -> LocalStack:
    return LocalStack(Settings(api=ApiSettings(port=0)), workdir=data, extra_env=ENV, durable=True)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[LocalStack]:
    """``up`` on a data folder: its own broker and Redis, supervised every 0.5 s."""
    stack = _stack(tmp_path / "data").start()
    stop = threading.Event()
    notes: list[str] = []

    def supervise() -> None:
        while not stop.wait(0.5):
            notes.extend(stack.supervise())

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    stack.notes = notes  # type: ignore[attr-defined]
    try:
        yield stack
    finally:
        stop.set()
        thread.join()
        stack.stop()


def _counters(stack: LocalStack) -> dict[str, int]:
    client = redis.Redis.from_url(stack.services.redis_url)
    try:
        return {k.decode(): int(v) for k, v in client.hgetall("sb:counters:default").items()}
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _model(stack: LocalStack) -> tuple[int, int]:
    """The saved model of ``default``: (version, examples learned); (0, 0) before any."""
    client = redis.Redis.from_url(stack.services.redis_url)
    try:
        fields = client.hgetall("sb:model:default")
    finally:
        client.close()
    if not fields:
        return 0, 0
    return int(fields[b"version"]), Policy.restore(fields[b"snapshot"]).n_learned


def _ready(stack: LocalStack) -> bool:
    try:
        return httpx.get(f"{stack.api_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _logged(stack: LocalStack) -> Counter[str]:
    return Counter(
        json.loads(line)["EventId"]
        for path in sorted(stack.decision_logs.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    )


@dataclass
class Traffic:
    """Ranks answered while a server was killed, and what the join had read by then."""

    answered: list[tuple[str, float]] = field(default_factory=list)  # (event id, sent at)
    rewarded: set[str] = field(default_factory=set)  # event ids whose reward was accepted
    events: int = 0  # behaviour events accepted, all of session SESSION
    killed_at: float = math.inf
    joined_by_kill: int = 0  # decisions the join had read when the server was killed

    @property
    def event_ids(self) -> set[str]:
        return {event_id for event_id, _ in self.answered}

    def sent_after_kill(self) -> set[str]:
        return {event_id for event_id, sent in self.answered if sent > self.killed_at}

    def in_flight_at_kill(self) -> int:
        """Answered decisions sent before the kill and not yet read by the join then."""
        sent_before = sum(1 for _, sent in self.answered if sent <= self.killed_at)
        return max(sent_before - self.joined_by_kill, 0)


def _traffic_with_fault(
    stack: LocalStack, victim: str, *, unread: bool = False, reward_wait: float = 1.0
) -> Traffic:
    """Rank for SEND_SECONDS, killing `victim` (SIGKILL) part way.

    With `unread`, every rank is rewarded at once, a behaviour event sent with each
    burst, and the workers are stopped
    (SIGSTOP) PAUSE_SECONDS before the kill, so that the broker dies holding the
    decisions and rewards of those seconds unread.
    """
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings(
            "default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=reward_wait)
        )
    traffic = Traffic()

    def kill() -> None:
        time.sleep(FAULT_AFTER_SECONDS)
        if unread:
            for name, process in stack.processes.items():
                if name.startswith("worker-") and process.process is not None:
                    process.process.send_signal(signal.SIGSTOP)  # up kills them on restart
            traffic.joined_by_kill = _counters(stack).get("decisions", 0)
            time.sleep(PAUSE_SECONDS)
        traffic.killed_at = time.monotonic()
        stack.services.processes[victim].kill()
        if victim != "redis" and not unread:
            traffic.joined_by_kill = _counters(stack).get("decisions", 0)

    async def send() -> None:
        async with AsyncClient(stack.api_url, api_key=stack.app_key) as client:

            async def one(segment: int) -> None:
                sent = time.monotonic()
                try:
                    result = await client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
                except Exception:  # noqa: BLE001  # refused: not answered, so not counted
                    return
                traffic.answered.append((result.event_id, sent))
                if unread:
                    try:
                        await client.reward(result.event_id, 1.0)
                    except Exception:  # noqa: BLE001  # refused: not accepted, not counted
                        return
                    traffic.rewarded.add(result.event_id)

            async def event() -> None:
                try:
                    await client.event(
                        kind="view",
                        user_id="restart-user",
                        session_id=SESSION,
                        device={"type": "mobile", "os": "iOS 17.4"},
                    )
                except Exception:  # noqa: BLE001  # refused: not accepted, not counted
                    return
                traffic.events += 1

            loop = asyncio.get_running_loop()
            end = loop.time() + SEND_SECONDS
            while loop.time() < end:
                events = (event(),) if unread else ()
                await asyncio.gather(*(one(i % 2) for i in range(10)), *events)
                await asyncio.sleep(0.2)

    killer = threading.Thread(target=kill)
    killer.start()
    asyncio.run(send())
    killer.join()
    n = len(traffic.answered)
    assert n > 100, f"only {n} decisions answered: the test proves little"
    assert len(traffic.sent_after_kill()) > 20, "too few ranks after the kill"
    return traffic


def _check_logged_and_learned_once(stack: LocalStack, traffic: Traffic, may_lose: int) -> int:
    """Check every answer is logged and learned once, but `may_lose`; return those lost.

    Only decisions sent before the kill may be lost, at most `may_lose` of them.
    """
    answered = traffic.event_ids
    after = traffic.sent_after_kill()
    wait_for(lambda: set(_logged(stack)) >= after, 150, "every answer after the kill logged")
    deadline = time.monotonic() + 150  # the assertion below says how many were lost
    while len(answered - set(_logged(stack))) > may_lose and time.monotonic() < deadline:
        time.sleep(0.25)
    wait_for(lambda: _model(stack)[1] >= len(set(_logged(stack))), 60, "the learner")
    time.sleep(3)  # anything learned or logged twice, or late, would show by now
    logged = _logged(stack)
    assert set(logged) <= answered
    lost = answered - set(logged)
    assert len(lost) <= may_lose, f"{len(lost)} answered decisions lost, at most {may_lose}"
    twice = sorted(event_id for event_id, times in logged.items() if times > 1)
    assert not twice, f"{len(twice)} decisions logged twice, e.g. {twice[:3]}"
    assert _model(stack)[1] == len(logged)  # each logged decision learned exactly once
    # A release whose completion Redis lost is completed again once its lease is over
    # (streams/join.py, 30 s): only then does `joined` count it.
    wait_for(lambda: _counters(stack).get("joined") == len(logged), 90, "the join's count")
    counters = _counters(stack)
    assert counters["learned"] == counters["joined"] == len(logged)
    ready = httpx.get(f"{stack.api_url}/readyz", timeout=5).json()
    assert ready == {"status": "ready", "reasons": []}
    return len(lost)


def _resent(stack: LocalStack) -> float:
    """The API's count of records produced again after the broker lost its log."""
    for line in httpx.get(f"{stack.api_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("streambandit_producer_resent_total "):
            return float(line.split()[1])
    return 0.0


def test_broker_restart_under_traffic_loses_no_answer_nor_reward(up: LocalStack) -> None:
    """The broker dies holding unread decisions, rewards and events; none lost, none doubled.

    The embedded broker keeps its records in memory, so its restart loses its log: the
    supervisor creates the topics again, restarts the workers, produces again the
    training examples Redis still holds, and tells the API, which produces again its
    resend window (what the old broker had acknowledged unread); the learner learns the
    new log from offset 0. The workers are stopped for PAUSE_SECONDS before the kill,
    so the broker dies with those seconds' records unread: every answered decision is
    still logged and learned exactly once, with its reward, and every behaviour event
    folded once into its session's features.
    """
    traffic = _traffic_with_fault(up, "broker", unread=True, reward_wait=10.0)
    unread = traffic.in_flight_at_kill()
    assert unread >= 30, f"only {unread} decisions unread at the kill: the test proves little"
    notes = up.notes  # type: ignore[attr-defined]
    assert any("broker exited" in note for note in notes)
    assert any("worker-1 restarted" in note for note in notes)
    assert any("told to produce its recent records again" in note for note in notes)
    assert _check_logged_and_learned_once(up, traffic, may_lose=0) == 0
    counters = _counters(up)
    assert counters["rewards"] == len(traffic.rewarded)  # each reward joined, once
    assert counters.get("rewards_late", 0) == 0
    assert counters.get("default_rewards", 0) == len(traffic.event_ids - traffic.rewarded)
    resent = _resent(up)
    assert resent >= unread
    # The copies of what the join had read already were taken as duplicates.
    assert counters.get("decisions_duplicate", 0) > 0
    assert counters.get("rewards_duplicate", 0) > 0
    # Each behaviour event folded into its session's features once: none lost, none twice.
    client = redis.Redis.from_url(up.services.redis_url)
    try:
        folded = client.hget(f"sb:features:session:{SESSION}", "events")
    finally:
        client.close()
    assert traffic.events > 20, f"only {traffic.events} behaviour events accepted"
    assert folded is not None
    assert int(folded) == traffic.events


def test_redis_restart_under_traffic_loses_and_repeats_nothing(up: LocalStack) -> None:
    """Redis killed under traffic comes back from its append-only file; nothing is lost."""
    traffic = _traffic_with_fault(up, "redis")
    assert any("redis exited" in note for note in up.notes)  # type: ignore[attr-defined]
    assert _check_logged_and_learned_once(up, traffic, may_lose=0) == 0


def test_up_again_on_its_data_folder_serves_the_same_model_settings_and_consents(
    tmp_path: Path,
) -> None:
    """Stop ``up`` and start it on the same folder: same model version, settings, consents.

    And with Redis's files lost, the model and its kept versions still come back from the
    folder's copy.
    """
    data = tmp_path / "data"
    wanted = PolicySettings(spec="vw-epsilon", reward_wait_seconds=0.5, default_reward=-0.25)
    with _stack(data) as first:
        with Client(first.api_url, api_key=first.admin_key) as admin:
            admin.set_settings("default", wanted)
        with Client(first.api_url, api_key=first.app_key) as app:
            app.set_consent("person-1", personalisation=True, learning=True, source="test")
            for _ in range(60):
                app.rank({"user": {"segment": "s1"}}, ACTIONS)
        wait_for(lambda: _model(first)[1] >= 60, 60, "the learner")
        version = _model(first)[0]
        with Client(first.api_url, api_key=first.admin_key) as admin:
            kept = admin.model_versions("default").versions
        assert kept  # the learner's first version at least
        keys = (first.admin_key, first.app_key)
        first.processes["api"].kill()  # a child that dies is restarted, the stack goes on
        assert first.supervise() == ["api exited (code -9); restarted"]
        assert first.supervise() == []
        wait_for(lambda: _ready(first), 30, "the API back")
        first.supervise()  # as `up` does every second; stop() copies the models too

    def served(stack: LocalStack) -> tuple[int, int, PolicySettings]:
        with Client(stack.api_url, api_key=stack.admin_key) as admin:
            status = {s.name: s for s in admin.list_policies()}["default"]
            return status.model_version, status.learned_examples, admin.get_settings("default")

    with _stack(data) as second:
        assert (second.admin_key, second.app_key) == keys  # kept in the folder
        with pytest.raises(RuntimeServiceError, match="another `streambandit up` uses"):
            _stack(data).start()
        wait_for(lambda: served(second)[0] == version, 30, "the model served")
        assert served(second) == (version, 60, wanted)
        with Client(second.api_url, api_key=second.app_key) as app:
            consent = app.consent("person-1")
        assert consent.personalisation is not None
        assert consent.personalisation.granted
        assert consent.learning is not None
        assert consent.learning.granted

    for path in (data / "redis").iterdir():  # Redis's files lost: the model comes back
        if path.is_dir():
            for inner in path.iterdir():
                inner.unlink()
            path.rmdir()
        else:
            path.unlink()
    with _stack(data) as third:
        wait_for(lambda: served(third)[0] == version, 30, "the model restored")
        assert served(third)[1] == 60
        with Client(third.api_url, api_key=third.admin_key) as admin:
            assert admin.model_versions("default").versions == kept  # and its kept versions


def test_up_command_keeps_its_data_folder_and_takes_a_free_port(tmp_path: Path) -> None:
    """``up --data DIR --port 0`` is ready on a free port; stopped, its data folder stays.

    Redis's append-only file, the keys and the logs are kept after SIGTERM.
    """
    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "bandit", "up", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **ENV},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        api = next(line.split()[1] for line in lines if line.startswith("API"))
        assert not api.endswith(":8000"), api
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(lines) + rest
    assert f"the data stays in {data.resolve()}" in rest
    kept = {path.name for path in data.iterdir()}
    assert {"redis", "pseudonym.key", "api-keys.json", "api.log", "worker-1.log"} <= kept
    assert (data / "redis" / "appendonly.aof").is_file()
