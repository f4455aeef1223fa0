"""Each decision in exactly one worker's decision log, across kills and restarts.

:class:`DecisionLog` writes a batch to a worker's :class:`~streams.sink.DecisionLogWriter`
through claims in Redis (:meth:`bandit.service.state.StateStore.claim_log`); the protocol, and
why a kill at any point neither loses nor doubles a line, is in docs/live-loop.md
("The decision log, exactly once").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

import structlog

from bandit.service.state import StateStore
from bandit.wire.schemas import TrainingExample
from streams.retrying import retry
from streams.sink import DecisionLogWriter, LogEntry

__all__ = ["DecisionLog"]

_log = structlog.get_logger("streams.ledger")


class DecisionLog:
    """A worker's decision log: lines claimed in Redis, written, then confirmed.

    Parameters
    ----------
    store
        The Redis state (the ``logged`` sets and the writers' claims).
    writer
        The worker's writer; its :attr:`~streams.sink.DecisionLogWriter.writer_id` names
        its claims.

    Examples
    --------
    In the worker, once at start and then for every batch of the ``training`` topic::

        log = DecisionLog(store, writer)
        await log.recover()           # lines a killed predecessor claimed but did not confirm
        await log.write(entries)      # only what no decision log holds or claimed
    """

    def __init__(self, store: StateStore, writer: DecisionLogWriter) -> None:
        self.store = store
        self.writer = writer
        self._lock = asyncio.Lock()

    async def recover(self) -> int:
        """Write what this directory's writer claimed and did not confirm; return lines written.

        A claim left by a writer killed between claiming and confirming is either in its
        files already (the writer skips the ids its newest files hold) or not written
        yet: then its line, kept with the claim, is written now. Either way the claim is
        then confirmed.
        """
        async with self._lock:
            return await self._recover()

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
