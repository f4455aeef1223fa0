"""Evaluation jobs: kept in Redis, run in a helper process, honest about restarts.

Personalizer's offline evaluations and feature importances (:mod:`bandit.service.evaluation`
computes them) are jobs: created by an admin, run in the background, read later.
:class:`EvaluationStore` keeps each job's record in Redis, at most
``settings.evaluations.max_kept`` per kind (a create beyond that is refused until one is deleted), a
result at most :data:`MAX_RESULT_BYTES` of JSON. :class:`EvaluationRunner` runs the jobs
one at a time in a helper process at a lower CPU priority, off the API's event loop.
Keys, under the configured prefix::

    sb:jobs:{kind}              hash: job id -> JSON record (status, request, result)
    sb:jobs:{kind}:lease:{id}   set while a process holds the job (expires after
                                LEASE_SECONDS unless renewed)

A process that stops marks its unfinished jobs ``Failed`` (:meth:`EvaluationRunner.close`);
one that crashes stops renewing its jobs' leases, and a record still ``Running``
without a lease is marked ``Failed`` with that reason when next read: never left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final, Literal

import structlog
from redis.asyncio import Redis

from bandit.errors import StreambanditError
from bandit.service.process import die_with_parent, stop_task

__all__ = [
    "INTERRUPTED",
    "LEASE_SECONDS",
    "MAX_RESULT_BYTES",
    "EvaluationRunner",
    "EvaluationStore",
    "JobKind",
]

_log = structlog.get_logger("bandit.service.evaluations")

JobKind = Literal["evaluations", "featureImportances"]

MAX_RESULT_BYTES: Final = 4_000_000
"""The largest result kept, as JSON."""
LEASE_SECONDS: Final = 60
"""How long a job's lease outlives the last renewal of the process running it."""
INTERRUPTED: Final = (
    "interrupted: the API process running it stopped before it finished (a restart or a "
    "crash); create it again"
)
_ACTIVE = ("Running",)

# Adds the record unless the kind holds `max` records already: 1 added, 0 exists, -1 full.
_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[4]))
return 1
"""
# Replaces a record that still exists (a deleted job stays deleted).
_UPDATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class EvaluationStore:
    """The job records in Redis, by kind and id.

    Parameters
    ----------
    redis
        The control Redis.
    prefix
        Key prefix (``settings.redis.key_prefix``).
    max_kept
        Records kept per kind (``settings.evaluations.max_kept``).
    """

    def __init__(self, redis: Redis, prefix: str, max_kept: int = 32) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_kept = max_kept
        self._create = redis.register_script(_CREATE)
        self._update = redis.register_script(_UPDATE)

    def _key(self, kind: JobKind) -> str:
        return f"{self.prefix}:jobs:{kind}"

    def _lease(self, kind: JobKind, job_id: str) -> str:
        return f"{self.prefix}:jobs:{kind}:lease:{job_id}"

    async def create(self, kind: JobKind, record: dict[str, Any]) -> Literal[1, 0, -1]:
        """Add `record` (``Running``, leased): 1, or 0 when its id exists, -1 when full."""
        job_id = record["id"]
        found = await self._create(
            keys=[self._key(kind), self._lease(kind, job_id)],
            args=[job_id, json.dumps(record), self.max_kept, LEASE_SECONDS],
        )
        return int(found)  # type: ignore[return-value]  # the script returns one of them

    async def update(self, kind: JobKind, record: dict[str, Any]) -> bool:
        """Replace the job's record if it still exists; return whether it did."""
        found = await self._update(keys=[self._key(kind)], args=[record["id"], json.dumps(record)])
        return bool(found)

    async def renew(self, kind: JobKind, job_id: str) -> None:
        """Renew the job's lease for :data:`LEASE_SECONDS`."""
        await self.redis.set(self._lease(kind, job_id), "1", ex=LEASE_SECONDS)

    async def release(self, kind: JobKind, job_id: str) -> None:
        """Drop the job's lease."""
        await self.redis.delete(self._lease(kind, job_id))

    async def get(self, kind: JobKind, job_id: str) -> dict[str, Any] | None:
        """Return the job's record (an interrupted one marked ``Failed``), None if unknown."""
        raw = await self.redis.hget(self._key(kind), job_id)
        if raw is None:
            return None
        return await self._checked(kind, json.loads(raw))

    async def list(self, kind: JobKind) -> list[dict[str, Any]]:
        """Return every record of `kind`, oldest first."""
        raw = await self.redis.hvals(self._key(kind))
        records = [await self._checked(kind, json.loads(value)) for value in raw]
        return sorted(records, key=lambda r: (r["creationTime"], r["id"]))

    async def delete(self, kind: JobKind, job_id: str) -> bool:
        """Delete the job's record; return whether it existed (a running job's is dropped)."""
        deleted = await self.redis.hdel(self._key(kind), job_id)
        await self.release(kind, job_id)
        return bool(deleted)

    async def _checked(self, kind: JobKind, record: dict[str, Any]) -> dict[str, Any]:
        if record["status"] not in _ACTIVE:
            return record
        if await self.redis.exists(self._lease(kind, record["id"])):
            return record
        failed = {**record, "status": "Failed", "description": INTERRUPTED}
        await self.update(kind, failed)
        return failed


class EvaluationRunner:
    """Run jobs one at a time in a helper process, and write their outcome to the store.

    The helper process starts with the first job, runs at ``nice`` 10 (the API's own
    work goes first on a machine with few cores) and dies with the API. While a job
    waits or runs, its lease is renewed every quarter of :data:`LEASE_SECONDS`.
    """

    def __init__(self, store: EvaluationStore) -> None:
        self.store = store
        self._pool: ProcessPoolExecutor | None = None
        self._tasks: dict[asyncio.Task[None], tuple[JobKind, dict[str, Any]]] = {}

    def submit(
        self,
        kind: JobKind,
        record: dict[str, Any],
        work: Callable[[Any], dict[str, Any]],
        job: object,
    ) -> asyncio.Task[None]:
        """Run ``work(job)`` in the helper; its result or error goes into `record`.

        Return the task, done once the outcome is stored (or the runner closed).
        """
        task = asyncio.create_task(self._run(kind, record, work, job), name=f"job-{record['id']}")
        self._tasks[task] = (kind, record)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _run(
        self,
        kind: JobKind,
        record: dict[str, Any],
        work: Callable[[Any], dict[str, Any]],
        job: object,
    ) -> None:
        renewing = asyncio.create_task(self._renew(kind, record["id"]))
        try:
            if self._pool is None:
                self._pool = _helper()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._pool, work, job)
            except BrokenProcessPool:
                self._pool = None
                stopped = "the helper process stopped"
                outcome: dict[str, Any] = {"status": "Failed", "description": stopped}
            except StreambanditError as exc:  # the log or the arguments: the job's own fault
                outcome = {"status": "Failed", "description": str(exc)}
            except Exception as exc:  # noqa: BLE001  # any other failure is the job's outcome
                _log.exception("job.failed", kind=kind, id=record["id"])
                outcome = {"status": "Failed", "description": f"{type(exc).__name__}: {exc}"}
            else:
                size = len(json.dumps(result))
                if size > MAX_RESULT_BYTES:
                    message = f"the result ({size} bytes) is larger than {MAX_RESULT_BYTES}"
                    outcome = {"status": "Failed", "description": message}
                else:
                    outcome = {"status": "Succeeded", "result": result}
            kept = await self.store.update(kind, {**record, **outcome})
            _log.info("job.finished", kind=kind, id=record["id"], status=outcome["status"],
                      kept=kept)  # fmt: skip
        finally:
            await stop_task(renewing)
            with contextlib.suppress(Exception):
                await self.store.release(kind, record["id"])

    async def _renew(self, kind: JobKind, job_id: str) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 4)
            with contextlib.suppress(Exception):  # Redis away: the next renewal tries again
                await self.store.renew(kind, job_id)

    async def wait(self) -> None:
        """Wait until every submitted job has finished (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop: the jobs not finished are marked ``Failed`` as interrupted, at once."""
        for task, (kind, record) in list(self._tasks.items()):
            await stop_task(task)
            with contextlib.suppress(Exception):  # Redis away: the lease runs out instead
                found = await self.store.get(kind, record["id"])
                if found is not None and found["status"] == "Running":  # (not just finished)
                    await self.store.update(kind, {**found, "status": "Failed",
                                                   "description": INTERRUPTED})  # fmt: skip
                await self.store.release(kind, record["id"])
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _helper() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_started
    )


def _started() -> None:
    """In the helper: die with the API, and let the API's own work go first."""
    die_with_parent()
    os.nice(10)
