"""Deleting the decision log through the API, natively and as Personalizer's ``DELETE /logs``.

A real uvicorn server on the real Redis; beside it, two stand-in workers (the real sink
and ledger, :class:`streams.ledger.DecisionLog`, in a thread, ticking as the worker's
``decision-log`` timer does): one writes batches all along, the other is idle. The
deletion takes both folders' files written before it and keeps every line written after
it answered; Personalizer's own client (``azure-ai-personalizer``) deletes the same way.
Keys that are not an admin's, or not allowed every policy, are refused, and a running
worker that does not confirm in time gets a 503. Personalizer's ``logRetentionDays`` is
the deployment's retention, in every policy's configuration.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from redis.asyncio import Redis

import bandit.api.admin
import bandit.privacy.consent
import policies.dsjson
from bandit.api.app import create_app
from bandit.privacy.consent import find_logged, subject_token
from bandit.service.state import StateStore
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, LogSettings, RedisSettings, Settings
from policies import make_policy
from streams.ledger import DecisionLog
from streams.sink import DecisionLogWriter
from tests.bandit.serving import served
from tests.streams.test_sink import _joined

ADMIN = "log-deletion-admin-0123456"
SCOPED_ADMIN = "log-deletion-scoped-0123456"
APP = "log-deletion-app-key-0123456"


class Worker:
    """A stand-in stream worker: the real writer and ledger, ticking every 20 ms.

    With `writing`, it also writes a batch of 5 decisions every few milliseconds, and
    notes when each batch began and ended (``time.monotonic``) and its event ids.
    """

    def __init__(self, redis_url: str, prefix: str, directory: Path, *, writing: bool) -> None:
        self.redis_url, self.prefix, self.directory = redis_url, prefix, directory
        self.writing = writing
        self.batches: list[tuple[float, float, set[str]]] = []
        self.examples = (_joined(make_policy("uniform"), 5, seed=s) for s in range(100_000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self.failure: BaseException | None = None

    async def _run(self) -> None:
        client = Redis.from_url(self.redis_url)
        writer = DecisionLogWriter(self.directory, 2048)
        log = DecisionLog(StateStore(client, self.prefix), writer)
        try:
            next_tick = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_tick:
                    await log.tend()
                    next_tick = time.monotonic() + 0.02
                if self.writing:
                    batch = next(self.examples)
                    started = time.monotonic()
                    await log.write(batch)
                    self.batches.append((started, time.monotonic(), {e.event_id for e in batch}))
                await asyncio.sleep(0.003)
        except BaseException as exc:  # noqa: BLE001  # reported by stop()
            self.failure = exc
        finally:
            writer.close()
            await client.aclose()

    def start(self) -> Worker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.failure is None, repr(self.failure)

    def wait_for_batches(self, count: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.batches) < count:
            assert time.monotonic() < deadline, "the worker did not write"
            assert self.failure is None, repr(self.failure)
            time.sleep(0.01)


def _ids(directory: Path) -> set[str]:
    return {
        json.loads(line)["EventId"]
        for path in directory.rglob("*.dsjson")
        for line in path.read_text().splitlines()
    }


@pytest.fixture
def setup(broker: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """The served API's URL, its Redis key prefix and the decision log's folder."""
    prefix = f"ld{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "decisions"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=ADMIN, role="admin"),
                ApiKey(key=SCOPED_ADMIN, role="admin", policies=("main",)),
                ApiKey(key=APP, role="app"),
            )
        ),
        decision_log=LogSettings(directory=directory, retention_days=30),
        policies={"main": "uniform"},
    )
    with served(create_app(settings), "api-log-deletion") as url:
        yield url, prefix, directory


def test_deleting_the_log_takes_what_was_written_before_and_keeps_what_comes_after(
    setup: tuple[str, str, Path], redis_url: str
) -> None:
    url, prefix, directory = setup
    busy = Worker(redis_url, prefix, directory / "worker-1", writing=True).start()
    idle = Worker(redis_url, prefix, directory / "worker-2", writing=False).start()
    try:
        busy.wait_for_batches(30)
        (directory / "worker-2" / "decisions-20261127T231500Z-0001.dsjson").write_text(
            '{"EventId":"from-before","Timestamp":"2026-11-27T23:15:00Z"}\n'
        )  # (a file its writer wrote before a restart)
        for key in (APP, SCOPED_ADMIN):
            refused = httpx.delete(f"{url}/v1/log", headers={"X-API-Key": key})
            assert refused.status_code == 403, refused.text
        assert "from-before" in _ids(directory)
        asked = time.monotonic()
        answer = httpx.delete(f"{url}/v1/log", headers={"X-API-Key": ADMIN}, timeout=20)
        answered = time.monotonic()
        assert answer.status_code == 204, answer.text
        written_then = len(busy.batches)
        busy.wait_for_batches(written_then + 20)
    finally:
        busy.stop()
        idle.stop()
    kept = _ids(directory)
    assert "from-before" not in kept
    for started, ended, ids in busy.batches:
        assert ids <= kept or not ids & kept  # a batch is never cut in two
        if ended <= asked:
            assert not ids & kept
        if started >= answered:
            assert ids <= kept
    assert any(started >= answered for started, _, _ in busy.batches)
    properties = httpx.get(f"{url}/v1/log/properties", headers={"X-API-Key": APP}).json()
    assert properties["files"] == len(list(directory.rglob("*.dsjson")))


def test_personalizers_client_deletes_the_logs(
    setup: tuple[str, str, Path], redis_url: str
) -> None:
    url, prefix, directory = setup
    worker = Worker(redis_url, prefix, directory / "worker-1", writing=True)
    worker.start()
    try:
        worker.wait_for_batches(5)
        worker.writing = False
        time.sleep(0.1)
        assert _ids(directory)
        PersonalizerAdministrationClient(url, AzureKeyCredential(ADMIN)).delete_logs()
        assert _ids(directory) == set()
        worker.writing = True
        worker.wait_for_batches(len(worker.batches) + 3)
        worker.writing = False
        time.sleep(0.1)
        assert _ids(directory)
        legacy = httpx.delete(
            f"{url}/personalizer/v1.0/logs",
            headers={"Ocp-Apim-Subscription-Key": ADMIN},
            timeout=20,
        )
        assert legacy.status_code == 204, legacy.text
        assert _ids(directory) == set()
        sdk = PersonalizerAdministrationClient(url, AzureKeyCredential(APP))
        with pytest.raises(HttpResponseError) as refused:
            sdk.delete_logs()
        assert refused.value.status_code == 403
    finally:
        worker.stop()


def test_a_running_worker_that_does_not_confirm_gets_a_503(
    setup: tuple[str, str, Path], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request stands; the answer says it is not confirmed (and asking again)."""
    url, prefix, _ = setup

    async def stuck() -> None:  # a writer that beats but is stuck in a batch
        client = Redis.from_url(redis_url)
        try:
            await StateStore(client, prefix).note_log_writer("stuck")
        finally:
            await client.aclose()

    asyncio.run(stuck())
    monkeypatch.setattr(bandit.api.admin, "_DELETE_WAIT_SECONDS", 0.3)
    answer = httpx.delete(f"{url}/v1/log", headers={"X-API-Key": ADMIN}, timeout=20)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert "did not confirm it in time" in answer.json()["detail"]


def test_log_retention_days_is_the_deployments_retention(setup: tuple[str, str, Path]) -> None:
    """Read as configured (30 days here); only that value is accepted, -1 is refused."""
    url, _, _ = setup
    sdk = PersonalizerAdministrationClient(url, AzureKeyCredential(ADMIN))
    config = sdk.get_service_configuration()
    assert config["logRetentionDays"] == 30
    assert sdk.update_service_configuration(config)["logRetentionDays"] == 30
    refused = httpx.put(
        f"{url}/personalizer/v1.0/configurations/service",
        json={**config, "logRetentionDays": -1},
        headers={"Ocp-Apim-Subscription-Key": ADMIN},
    )
    assert refused.status_code == 400, refused.text
    [detail] = refused.json()["error"]["details"]
    assert detail["target"] == "logRetentionDays"
    assert "STREAMBANDIT_DECISION_LOG__RETENTION_DAYS" in detail["message"]


def test_an_export_reading_the_log_while_a_file_is_deleted_reads_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file listed, then deleted (by DELETE /v1/log or the retention) before it is read."""
    secret = b"s" * 32
    [example] = _joined(make_policy("uniform"), 1, seed=7)
    token = subject_token(secret, example.event_id)
    mine = example.model_copy(
        update={"decision": example.decision.model_copy(update={"subject": token})}
    )
    with DecisionLogWriter(tmp_path / "worker-1", 1 << 20) as writer:
        writer.write([mine])
    [kept] = policies.dsjson.log_files(tmp_path)
    gone = tmp_path / "worker-2" / "decisions-20261127T231500Z-0001.dsjson"
    monkeypatch.setattr(bandit.privacy.consent, "log_files", lambda _: [gone, kept])
    [found] = find_logged(tmp_path, secret)
    assert (found["event_id"], found["file"]) == (example.event_id, kept.name)
