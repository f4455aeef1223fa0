"""Each decision in exactly one worker's decision log, across kills and restarts.

:class:`DecisionLog` writes a batch to a worker's :class:`~streams.sink.DecisionLogWriter`
through claims in Redis (:meth:`bandit.service.state.StateStore.claim_log`); the protocol, and
why a kill at any point neither loses nor doubles a line, is in docs/live-loop.md
("The decision log, exactly once").

It also deletes the log when asked and applies its retention, between two batches,
never during one (:meth:`DecisionLog.tend`, the worker's ``decision-log`` timer):

- **Deletion.** ``DELETE /v1/log`` sets ``sb:log:deletion`` to the time of the request
  (:meth:`~bandit.service.state.StateStore.request_log_deletion`). Before each batch,
  at start and every second, the writer compares it with the last request it applied
  (the directory's ``.deleted-at``): for a newer one, it first settles its claims (so
  a line claimed before the request is written, then deleted with the rest, and no
  unconfirmed claim can write a deleted line back after a restart), then deletes every
  file (:meth:`~streams.sink.DecisionLogWriter.delete_all`) and tells Redis, in
  ``sb:log:writers``, what it applied and deleted: the API answers once every writer
  alive has. A writer whose worker is stopped applies the request when it starts,
  before it writes anything.
- **Retention.** With ``decision_log.retention_days``, once a minute, the closed files
  whose newest decision is older than that are deleted
  (:meth:`~streams.sink.DecisionLogWriter.expire`).

Both are counted in the stream counters (``<prefix>:counters:_streams``:
``log_files_deleted.request`` / ``.retention`` and ``log_bytes_deleted.*``), which the
API exports as ``streambandit_stream_counter_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import partial

import structlog

from bandit.service.state import StateStore
from bandit.wire.schemas import TrainingExample
from streams.deadletter import DEAD_LETTER_COUNTERS
from streams.retrying import retry
from streams.sink import DecisionLogWriter, LogDeletion, LogEntry

__all__ = ["DecisionLog"]

_log = structlog.get_logger("streams.ledger")

_EXPIRE_EVERY_SECONDS = 60.0
"""How often :meth:`DecisionLog.tend` looks for files older than the retention."""


class DecisionLog:
    """A worker's decision log: lines claimed in Redis, written, then confirmed.

    Parameters
    ----------
    store
        The Redis state (the ``logged`` sets and the writers' claims).
    writer
        The worker's writer; its :attr:`~streams.sink.DecisionLogWriter.writer_id` names
        its claims.
    retention
        How long a file is kept after its newest decision (:meth:`tend`); None keeps
        every file until a deletion is asked for.

    Examples
    --------
    In the worker, once at start and then for every batch of the ``training`` topic::

        log = DecisionLog(store, writer)
        await log.recover()           # lines a killed predecessor claimed but did not confirm
        await log.write(entries)      # only what no decision log holds or claimed
        await log.tend()              # every second: deletion requests, retention
    """

    def __init__(
        self, store: StateStore, writer: DecisionLogWriter, *, retention: timedelta | None = None
    ) -> None:
        self.store = store
        self.writer = writer
        self.retention = retention
        self._lock = asyncio.Lock()
        self._deleted = LogDeletion()  # what the last deletion applied here took
        self._expire_at = 0.0  # (monotonic) when the retention is applied next

    async def recover(self) -> int:
        """Write what this directory's writer claimed and did not confirm; return lines written.

        A claim left by a writer killed between claiming and confirming is either in its
        files already (the writer skips the ids its newest files hold) or not written
        yet: then its line, kept with the claim, is written now. Either way the claim is
        then confirmed.
        """
        async with self._lock:
            await self._obey_deletion()
            return await self._recover()

    async def tend(self) -> None:
        """Apply a deletion asked for, and the retention when due; tell Redis this lives.

        Called by the worker's timer every second. Raises what Redis or the disk raised
        (the next call tries again). While a batch is being written it only says that
        this writer lives (with the last deletion it applied), so that a long write
        does not make the API take it for stopped and answer a deletion before it is
        applied here; the deletion goes first in the next batch.
        """
        if self._lock.locked():
            await self._beat()
            return
        async with self._lock:
            await self._obey_deletion()
            if self.retention is not None and time.monotonic() >= self._expire_at:
                self._expire_at = time.monotonic() + _EXPIRE_EVERY_SECONDS
                expired = await asyncio.to_thread(self.writer.expire, self.retention)
                await self._count(expired, "retention")
            await self._beat()

    async def write(self, examples: Sequence[TrainingExample | LogEntry]) -> int:
        """Append the examples no decision log holds or claimed; return lines written.

        Claims left by an earlier batch (a write or a confirmation that failed) are
        settled first. When Redis cannot be reached, the batch is written whole rather
        than lost (a line another worker logged may then appear twice).

        Raises
        ------
        Exception
            The last error when the batch could not be written after five tries; its
            lines stay claimed, and are written by the next batch or the next start.
        """
        entries = [e if isinstance(e, LogEntry) else LogEntry.of(e) for e in examples]
        async with self._lock:
            try:  # a deletion asked for goes first: this batch's lines come after it
                await self._obey_deletion()
            except Exception:  # noqa: BLE001  # logged; applied by the timer or next batch
                _log.exception("decision_log.deletion_postponed")
            try:
                await retry("decision_log.recover", self._recover, attempts=3)
            except Exception:  # noqa: BLE001  # logged; settled with a later batch
                _log.exception("decision_log.recovery_postponed")
            mine = await self._claim(entries)
            if mine is None:  # Redis unreachable: write everything, a duplicate at worst
                return await self._write_unclaimed(entries)
            written = await retry(
                "decision_log.write",
                partial(asyncio.to_thread, self.writer.write, mine),
                attempts=5,
            )
            claims = [(entry.policy, entry.event_id) for entry in mine]
            try:
                confirm = partial(self.store.confirm_log, self.writer.writer_id, claims)
                await retry("decision_log.confirm", confirm, attempts=3)
            except Exception:  # noqa: BLE001  # logged; the next batch confirms them
                _log.exception("decision_log.confirm_postponed", examples=len(claims))
            return written

    # -- internals ---------------------------------------------------------------------

    async def _obey_deletion(self) -> None:
        """Delete every file if a deletion was asked for since the last one applied here."""
        requested = await self.store.log_deletion_requested()
        if requested is None or requested <= self.writer.deleted_at:
            return
        # Claims first: a claimed line is written now and deleted with the rest, rather
        # than written back after a restart (the ids of the deleted files are forgotten).
        await self._recover()
        self._deleted = await asyncio.to_thread(self.writer.delete_all, requested)
        await self._count(self._deleted, "request")
        await self._beat()  # the API waits for this

    async def _beat(self) -> None:
        await self.store.note_log_writer(
            self.writer.writer_id,
            deleted_at=self.writer.deleted_at,
            files=self._deleted.files,
            size=self._deleted.bytes,
        )

    async def _count(self, deleted: LogDeletion, reason: str) -> None:
        if not deleted.files:
            return
        counts = {
            f"log_files_deleted.{reason}": deleted.files,
            f"log_bytes_deleted.{reason}": deleted.bytes,
        }
        try:
            await self.store.count(DEAD_LETTER_COUNTERS, counts)
        except Exception:  # noqa: BLE001  # the files are gone; only the count is missed
            _log.warning("decision_log.count_failed", exc_info=True, **counts)

    async def _recover(self) -> int:
        writer_id = self.writer.writer_id
        claims = await self.store.log_claims(writer_id)
        if not claims:
            return 0
        entries = [LogEntry(policy, event_id, True, line) for policy, event_id, line in claims]
        written = await asyncio.to_thread(self.writer.write, entries)
        await self.store.confirm_log(writer_id, [(p, e) for p, e, _ in claims])
        _log.info(
            "decision_log.recovered",
            claims=len(claims),
            written=written,
            found_written=len(claims) - written,
        )
        return written

    async def _claim(self, entries: Sequence[LogEntry]) -> list[LogEntry] | None:
        """Return the entries this writer is to write; None when Redis cannot be reached."""
        by_policy: dict[str, list[LogEntry]] = {}
        for entry in entries:
            if entry.learn:
                by_policy.setdefault(entry.policy, []).append(entry)
        mine: list[LogEntry] = []
        skipped = 0
        try:
            for policy, group in by_policy.items():
                pairs = [(entry.event_id, entry.line) for entry in group]
                claim = partial(self.store.claim_log, self.writer.writer_id, policy, pairs)
                flags = await retry("decision_log.claim", claim, attempts=3)
                for entry, ours in zip(group, flags, strict=True):
                    if ours:
                        mine.append(entry)
                    else:
                        skipped += 1
        except Exception:  # noqa: BLE001  # logged; the caller writes the batch unclaimed
            _log.exception("decision_log.claim_failed", examples=len(entries))
            return None
        if skipped:
            _log.info("decision_log.already_logged", examples=skipped)
        return mine

    async def _write_unclaimed(self, entries: Sequence[LogEntry]) -> int:
        write = partial(asyncio.to_thread, self.writer.write, entries)
        written = await retry("decision_log.write", write, attempts=5)
        by_policy: dict[str, list[str]] = {}
        for entry in entries:
            if entry.learn:
                by_policy.setdefault(entry.policy, []).append(entry.event_id)
        for policy, ids in by_policy.items():
            try:
                mark = partial(self.store.mark_logged, policy, ids)
                await retry("decision_log.record", mark, attempts=3)
            except Exception:  # noqa: BLE001  # logged; the lines are written
                _log.exception("decision_log.record_failed", examples=len(ids))
        return written
