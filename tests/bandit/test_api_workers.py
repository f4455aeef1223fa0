"""``streambandit api --workers 2``: two API processes share the ports, each a whole API.

The real command, the session's broker and Redis. Each worker is checked alone, the
other stopped (SIGSTOP) meanwhile: it ranks, it keeps the operators' routes on the
operators' port (:mod:`bandit.api.exposure`), it refuses an oversized body and cuts off
slow headers (:mod:`bandit.api.shedding`, whose HTTP protocol each worker gets).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bandit.ops.runtime import free_port

KEY = "workers-key-0123456789"
HEADERS = {"X-API-Key": KEY}


def _env(broker: str, redis_url: str, prefix: str, port: int, **api: str) -> dict[str, str]:
    """The environment of ``streambandit api`` on the session's broker and Redis.

    `api` adds ``STREAMBANDIT_API__<NAME>`` variables (e.g. ``OPS_PORT="8001"``).
    """
    return {
        **os.environ,
        "STREAMBANDIT_KAFKA__BROKER": broker,
        "STREAMBANDIT_KAFKA__TOPIC_PREFIX": prefix,
        "STREAMBANDIT_REDIS__URL": redis_url,
        "STREAMBANDIT_REDIS__KEY_PREFIX": prefix,
        "STREAMBANDIT_API__HOST": "127.0.0.1",
        "STREAMBANDIT_API__PORT": str(port),
        **{f"STREAMBANDIT_API__{name.upper()}": value for name, value in api.items()},
        "STREAMBANDIT_API__KEYS": json.dumps([{"key": KEY}]),
        "STREAMBANDIT_POLICIES": json.dumps({"default": "uniform"}),
        "STREAMBANDIT_LOG_FORMAT": "json",
    }


@dataclass(frozen=True)
class Served:
    supervisor: subprocess.Popen[bytes]
    workers: list[int]
    main: str
    ops: str
    port: int


@pytest.fixture(scope="module")
def served(
    broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """``streambandit api --workers 2`` on a main and an operators' port, both workers up."""
    prefix = f"wk{uuid.uuid4().hex[:8]}"
    port, ops = free_port(), free_port()
    log = tmp_path_factory.mktemp("workers") / "api.log"
    env = _env(
        broker,
        redis_url,
        prefix,
        port,
        ops_port=str(ops),
        header_timeout_seconds="0.5",
        max_body_bytes="100000",
    )
    supervisor = _supervisor(env, log)
    try:
        workers = _started_workers(supervisor, log, 2)
        yield Served(
            supervisor, workers, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops}", port
        )
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(30)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait(10)
    assert supervisor.returncode == 0, log.read_text()


def _supervisor(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``streambandit api --workers 2`` with `env`, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bandit", "api", "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _started_workers(supervisor: subprocess.Popen[bytes], log: Path, count: int) -> list[int]:
    """Wait until `count` workers logged ``api.started``; return their process ids."""
    deadline = time.monotonic() + 90
    while True:
        assert supervisor.poll() is None, f"the API exited: {log.read_text()}"
        started = log.read_text().count('"event":"api.started"')
        workers = _children(supervisor.pid)
        if started >= count and len(workers) == count:
            return workers
        assert time.monotonic() < deadline, (
            f"{started} of {count} workers started: {log.read_text()}"
        )
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    """The worker processes of uvicorn's supervisor `pid` (not multiprocessing's helpers)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command:
            found.append(int(child))
    return sorted(found)


@contextmanager
def _alone(served: Served, worker: int) -> Iterator[None]:
    """Stop every other worker while the block runs (SIGSTOP, then SIGCONT)."""
    others = [pid for pid in served.workers if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def _answer_to_oversized_body(port: int) -> bytes:
    """The answer to a rank declaring 50 MB of body, none of it sent."""
    head = (
        "POST /v1/rank HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: 50000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(4096):  # it closes the connection after answering
            answer += chunk
    return answer


def _cut_off_after_slow_headers(port: int) -> bool:
    """Whether the server closes a connection whose headers never end (within 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # no blank line: headers go on
        try:
            return sock.recv(1024) == b""
        except TimeoutError:
            return False


def test_two_workers_each_serve_the_whole_api(served: Served) -> None:
    """Each worker alone ranks, splits the ports, sheds an oversized body, cuts off slow headers."""
    assert len(served.workers) == 2
    for worker in served.workers:
        with _alone(served, worker):
            # new connections each time (httpx.post/get): only the running worker accepts them
            answer = httpx.post(
                f"{served.main}/v1/rank",
                json={"actions": [{"id": "a"}, {"id": "b"}]},
                headers=HEADERS,
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["chosen_action_id"] in {"a", "b"}
            assert httpx.get(f"{served.main}/metrics", timeout=10).status_code == 404
            metrics = httpx.get(f"{served.ops}/metrics", timeout=10)
            assert metrics.status_code == 200
            assert "streambandit_decisions_total" in metrics.text
            assert _answer_to_oversized_body(served.port).startswith(b"HTTP/1.1 413 ")
            assert _cut_off_after_slow_headers(served.port)
    assert _children(served.supervisor.pid) == served.workers  # none was restarted meanwhile


def test_a_stop_is_bounded_whatever_a_client_holds_open(
    broker: str, redis_url: str, tmp_path: Path
) -> None:
    """SIGTERM with a request in flight (its body half sent): the API stops within its bound.

    The body's own timeout is two minutes; ``api.shutdown_seconds`` (1 s here) closes the
    connection long before, and both workers and the supervisor exit cleanly.
    """
    prefix = f"st{uuid.uuid4().hex[:8]}"
    port = free_port()
    log = tmp_path / "api.log"
    env = _env(broker, redis_url, prefix, port, body_timeout_seconds="120", shutdown_seconds="1")
    supervisor = _supervisor(env, log)
    try:
        _started_workers(supervisor, log, 2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(
                b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
                b'{"actions"'
            )
            time.sleep(0.5)  # the request is read up to its body: in flight
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the API did not stop with a request in flight: {log.read_text()}")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
    assert supervisor.returncode == 0, log.read_text()
    assert log.read_text().count('"event":"api.stopped"') == 2


def test_workers_end_with_a_supervisor_killed_outright(
    broker: str, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL to the supervisor of ``--workers 2``: its workers end too, no orphan serves on."""
    prefix = f"kw{uuid.uuid4().hex[:8]}"
    log = tmp_path / "api.log"
    env = _env(broker, redis_url, prefix, free_port())
    supervisor = _supervisor(env, log)
    try:
        workers = _started_workers(supervisor, log, 2)
    finally:
        supervisor.kill()
        supervisor.wait(10)
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and _running(pid)]
        time.sleep(0.1)
    for pid in alive:  # do not leave them behind for the next test
        os.kill(pid, signal.SIGKILL)
    assert alive == [], f"workers {alive} outlived their supervisor"


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
