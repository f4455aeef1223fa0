"""The decision log: joined decisions appended to size-rotated DSJSON files.

Each learnable :class:`~bandit.wire.schemas.TrainingExample` becomes one line of VW's DSJSON
(see :func:`policies.dsjson.dsjson_record` and :func:`policies.dsjson.dsjson_line`; the worker
writes it once on decoding, :mod:`streams.training`), readable by
``python -m vowpalwabbit --cb_explore_adf --dsjson -d FILE``. Our own fields go under
``"_sb"``, a key VW skips: ``policy``, ``model_version``, ``default_reward``,
``reward_count``, ``explored``, ``deferred``, ``learn`` (always ``true``: decisions
without learning consent are not kept) and ``consent`` (``"personalise"``, or
``"baseline"`` when the person had not consented to personalisation and the baseline
policy decided).

Files are named by the UTC time they were opened and a sequence number that keeps
growing across restarts, ``decisions-20261127T231500Z-0001.dsjson``. Only the newest
file is open, for appending; every older one is closed and complete. One writer owns a
directory; it is not thread-safe.

The feed is at-least-once, so the writer skips an event id it has written recently: the
last ``dedup_window`` ids, reloaded from the newest files when a writer starts, so a
batch redelivered after a restart is skipped too. What *another* worker logged is not
in these files: the worker claims each line in Redis before writing it
(:mod:`streams.ledger`), under the directory's writer id (:attr:`DecisionLogWriter
.writer_id`, kept in the directory's ``.writer-id`` file), so that every decision is
in exactly one worker's files. A copy arriving more than
``redis.dedup_window_seconds`` after its line was recorded would be written again;
readers keep the first line per ``EventId``.

Deleting and retention
----------------------
Files are deleted only by their writer, between two batches, and never while open:

- :meth:`DecisionLogWriter.delete_all` (an operator's ``DELETE /v1/log``, handed to each
  worker through Redis: :mod:`streams.ledger`) closes the open file, deletes every file
  of the directory, and notes the request's time in the directory's ``.deleted-at``
  file, so that a restart does not apply the same request again. Lines written after it
  go to a new file. The ids it wrote stay remembered (``dedup_window``), so a copy of a
  deleted line read again is still skipped, not written back.
- :meth:`DecisionLogWriter.expire` (``decision_log.retention_days``) deletes every
  closed file whose newest decision is older than the retention: the ``Timestamp`` of
  its last line (its modification time if that line has none). Lines are written as
  decisions are joined, a reward wait after them, so a line decided up to the longest
  reward wait after a file's last one may precede it and go with it. The open file is
  closed once it has been open an hour, so that a quiet log's lines expire too: a line
  outlives the retention by at most that hour (and the check's minute).

:meth:`DecisionLogWriter.write` is synchronous file I/O; from an agent, call it off the
event loop (``await asyncio.to_thread(writer.write, examples)``), one batch at a time;
so are :meth:`~DecisionLogWriter.delete_all` and :meth:`~DecisionLogWriter.expire`,
never at the same time as a write.
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import structlog

from bandit.errors import ConfigurationError
from bandit.service.logfiles import log_file_dates
from bandit.settings import LogSettings
from bandit.wire.schemas import TrainingExample
from policies import Action
from policies.dsjson import (
    LOG_NAME,
    LoggedSlot,
    ccb_dsjson_record,
    dsjson_line,
    dsjson_record,
    log_file_name,
    log_file_sequence,
    read_event_ids,
)

__all__ = [
    "DecisionLogWriter",
    "LogDeletion",
    "LogEntry",
    "dsjson_extra",
    "logged_slots",
    "training_record",
]

_log = structlog.get_logger("streams.sink")

_WRITER_ID_FILE = ".writer-id"
_DELETED_AT_FILE = ".deleted-at"
_ROLL_OVER_AFTER = timedelta(hours=1)
"""How long a file stays open while a retention applies (:meth:`DecisionLogWriter.expire`)."""


@dataclass(frozen=True, slots=True)
class LogDeletion:
    """What a deletion took from a directory: how many files, how many bytes."""

    files: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One training example as the decision log takes it.

    Attributes
    ----------
    policy, event_id
        The policy and the decision's event id.
    learn
        Whether the decision may be kept (learning consent); not written when false.
    line
        Its DSJSON line (:func:`policies.dsjson.dsjson_line`); empty when `learn` is false.
    """

    policy: str
    event_id: str
    learn: bool
    line: bytes

    @classmethod
    def of(cls, example: TrainingExample) -> LogEntry:
        """Return the entry of `example`, its line written by :func:`training_record`."""
        decision = example.decision
        if not decision.learn:
            return cls(decision.policy, example.event_id, learn=False, line=b"")
        line = dsjson_line(training_record(example))
        return cls(decision.policy, example.event_id, learn=True, line=line)


def training_record(example: TrainingExample | Mapping[str, Any]) -> dict[str, Any]:
    """Return the DSJSON object logged for `example` (a model, or its values as plain data).

    The distribution is logged in offer order (``p`` follows the ranking, chosen action
    first, as ``a`` does) and the reward as ``_label_cost = -reward``.
    """
    values = example.model_dump() if isinstance(example, TrainingExample) else example
    decision = values["decision"]
    actions = [Action(a["id"], a.get("features", {})) for a in decision["actions"]]
    if decision.get("slots"):  # a multi-slot decision: VW's CCB form
        return ccb_dsjson_record(
            decision["context"],
            actions,
            logged_slots(decision, values["slot_rewards"]),
            event_id=decision["event_id"],
            timestamp=decision["occurred_at"],
            extra={
                **dsjson_extra(values),
                "slot_reward_counts": values["slot_reward_counts"],
                "baseline_actions": [slot.get("baseline_action_id") for slot in decision["slots"]],
            },
        )
    position = {action.id: index for index, action in enumerate(actions)}
    by_id = {entry["id"]: entry["probability"] for entry in decision["ranking"]}
    return dsjson_record(
        decision["context"],
        actions,
        decision["chosen_index"],
        [by_id[action.id] for action in actions],
        values["reward"],
        event_id=decision["event_id"],
        timestamp=decision["occurred_at"],
        ranking=[position[entry["id"]] for entry in decision["ranking"]],
        extra=dsjson_extra(values),
    )


def logged_slots(decision: Mapping[str, Any], rewards: Sequence[float]) -> list[LoggedSlot]:
    """Return a multi-slot decision's slots (plain data) with their rewards, as logged.

    Each slot's probabilities are given in its ``include`` order, read from its ranking.
    """
    slots = []
    for slot, reward in zip(decision["slots"], rewards, strict=True):
        by_id = {entry["id"]: entry["probability"] for entry in slot["ranking"]}
        include = slot["include"]
        probabilities = [by_id[decision["actions"][i]["id"]] for i in include]
        slots.append(
            LoggedSlot(
                slot["id"], slot.get("features") or {}, include, probabilities,
                slot["chosen_index"], reward,
            )
        )  # fmt: skip
    return slots


def dsjson_extra(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return our own fields of a training example's log line (under ``_sb``).

    `values` are the example's as plain data (``TrainingExample.model_dump()``).
    """
    decision = values["decision"]
    return {
        "policy": decision["policy"],
        "model_version": decision["model_version"],
        "default_reward": values["default_reward"],
        "reward_count": values["reward_count"],
        "explored": decision["explored"],
        "deferred": decision["deferred"],
        "learn": True,
        "consent": decision.get("consent", "personalise"),
        **({"subject": decision["subject"]} if decision.get("subject") else {}),
        # Apprentice, LoggingOnly: the baseline action served (its probabilities are `p`)
        **(
            {"learning_mode": mode}
            if (mode := decision.get("learning_mode")) not in (None, "Online")
            else {}
        ),
    }


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DecisionLogWriter:
    """Append joined decisions to DSJSON files rotated by size.

    Parameters
    ----------
    directory
        Where the files go; created if missing.
    rotate_bytes
        A new file starts before a line would take the current one past this size (a
        single longer line gets a file of its own).
    dedup_window
        How many recent event ids are remembered to skip duplicates.
    fsync
        Also ``fsync`` each file after every batch and before it is closed. Off by
        default: a batch is flushed to the operating system, which survives a crash of
        the process but not of the machine.
    clock
        Returns the current time; names new files. Defaults to the system clock.

    Attributes
    ----------
    written, duplicates, without_consent
        Lines written, and examples skipped as duplicates or for lack of learning
        consent, since this writer started.
    writer_id
        Names the directory's writer, the same across restarts (kept in its
        ``.writer-id`` file, made on first use): the claims of :mod:`streams.ledger`
        are held under it.
    deleted_at
        The time (seconds since the epoch) of the last deletion request applied to the
        directory (:meth:`delete_all`), kept in its ``.deleted-at`` file; 0.0 if none.
    """

    def __init__(
        self,
        directory: Path | str,
        rotate_bytes: int,
        *,
        dedup_window: int = 100_000,
        fsync: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if isinstance(rotate_bytes, bool) or not isinstance(rotate_bytes, int) or rotate_bytes < 1:
            msg = f"`rotate_bytes` must be an integer >= 1, got {rotate_bytes!r}"
            raise ConfigurationError(msg)
        if isinstance(dedup_window, bool) or not isinstance(dedup_window, int) or dedup_window < 1:
            msg = f"`dedup_window` must be an integer >= 1, got {dedup_window!r}"
            raise ConfigurationError(msg)
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.dedup_window = dedup_window
        self.fsync = fsync
        self._clock = clock
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self.written = 0
        self.duplicates = 0
        self.without_consent = 0
        self._opened_at: datetime | None = None
        self._newest: dict[Path, tuple[int, datetime]] = {}  # closed files' newest decisions
        self.directory.mkdir(parents=True, exist_ok=True)
        self.writer_id = _writer_id(self.directory)
        self.deleted_at = _deleted_at(self.directory)
        existing = self.files()
        self._sequence = log_file_sequence(existing[-1]) if existing else 0
        if existing:
            _repair_tail(existing[-1])
            self._reload_recent(existing)

    @classmethod
    def from_settings(cls, settings: LogSettings, **options: Any) -> Self:
        """Build the writer the settings describe; `options` go to the constructor."""
        return cls(settings.directory, settings.rotate_bytes, **options)

    # -- the public surface -------------------------------------------------------------

    def write(self, examples: Sequence[TrainingExample | LogEntry]) -> int:
        """Append one line per new, learnable example; flush; return how many were written.

        Examples whose decision may not be learned from (``decision.learn`` false) are
        not kept; an event id written recently, or earlier in the batch, is skipped.
        Every line is built before anything is written, so an example whose line cannot
        be built raises before the batch touches the file.
        """
        lines: list[tuple[str, bytes]] = []
        batch: set[str] = set()
        for example in examples:
            if isinstance(example, TrainingExample):
                learn, event_id = example.decision.learn, example.event_id
            else:
                learn, event_id = example.learn, example.event_id
            if not learn:
                self.without_consent += 1
                continue
            if event_id in batch or event_id in self._recent:
                self.duplicates += 1
                continue
            batch.add(event_id)
            if isinstance(example, TrainingExample):
                lines.append((event_id, dsjson_line(training_record(example))))
            else:
                lines.append((event_id, example.line))
        if not lines:
            return 0
        self._append_all([line for _, line in lines])
        self._flush()
        # Only once the batch is flushed: a failed batch is redelivered and written again.
        self._remember([event_id for event_id, _ in lines])
        self.written += len(lines)
        return len(lines)

    def files(self) -> list[Path]:
        """Every decision log file in the directory, oldest first (the last may be open)."""
        found = [
            path
            for path in self.directory.iterdir()
            if LOG_NAME.match(path.name) and path.is_file()
        ]
        return sorted(found, key=lambda path: (log_file_sequence(path), path.name))

    @property
    def current(self) -> Path | None:
        """The file open for appending, if any; every other file is complete."""
        return self._path

    def close(self) -> None:
        """Flush and close the current file; the next write starts a new one."""
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file = None
            self._path = None
            self._opened_at = None
            self._size = 0

    def delete_all(self, requested: float) -> LogDeletion:
        """Close the open file, delete every file of the log, note `requested`; say what went.

        `requested` is the time of the deletion request (seconds since the epoch), kept
        as :attr:`deleted_at` in the directory's ``.deleted-at`` file once the files are
        gone (and that is on disk), so a restart does not apply it again.
        """
        self.close()
        deleted = self._delete(self.files())
        _note_deleted_at(self.directory, requested)
        self.deleted_at = requested
        _log.info(
            "decision_log.deleted",
            directory=str(self.directory),
            files=deleted.files,
            bytes=deleted.bytes,
        )
        return deleted

    def expire(self, retention: timedelta) -> LogDeletion:
        """Delete the closed files whose newest decision is older than `retention`.

        A file's newest decision is its last line's (its modification time when that
        line has no ``Timestamp``). The open file is closed first when it was opened
        an hour ago or more, so that it can expire in turn.
        """
        now = self._clock()
        if self._opened_at is not None and now - self._opened_at >= _ROLL_OVER_AFTER:
            finished = self._path
            self.close()
            _log.info("decision_log.rotated", file=str(finished), reason="age")
        cutoff = now - retention
        old = []
        for path in self.files():
            if path == self._path:
                continue
            newest = self._newest_decision(path)
            if newest is not None and newest < cutoff:
                old.append(path)
        deleted = self._delete(old)
        if deleted.files:
            _log.info(
                "decision_log.expired",
                directory=str(self.directory),
                files=deleted.files,
                bytes=deleted.bytes,
                retention_days=retention / timedelta(days=1),
            )
        return deleted

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- files --------------------------------------------------------------------------

    def _append_all(self, lines: list[bytes]) -> None:
        """Append `lines`, rotating before one would take a file past `rotate_bytes`.

        The lines that fit the current file go in one write.
        """
        start = 0
        while start < len(lines):
            if self._file is None:
                self._open()
            assert self._file is not None
            size, end = self._size, start
            while end < len(lines) and not (size and size + len(lines[end]) > self.rotate_bytes):
                size += len(lines[end])
                end += 1
            if end > start:
                self._file.write(b"".join(lines[start:end]))
                self._size, start = size, end
            if start < len(lines):  # the next line starts a new file
                finished = self._path
                self.close()
                _log.info("decision_log.rotated", file=str(finished))

    def _open(self) -> None:
        self._sequence += 1
        path = self.directory / log_file_name(self._clock(), self._sequence)
        self._file = path.open("ab")
        self._path = path
        self._opened_at = self._clock()
        self._size = self._file.tell()

    def _newest_decision(self, path: Path) -> datetime | None:
        """Return the time of a closed file's last decision (None if it cannot be read)."""
        try:
            size = path.stat().st_size
            cached = self._newest.get(path)
            if cached is not None and cached[0] == size:
                return cached[1]
            last = log_file_dates(path).last
            if last is None:
                last = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            return None
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        self._newest[path] = (size, last)
        return last

    def _delete(self, paths: Sequence[Path]) -> LogDeletion:
        """Delete `paths` (closed files of the directory), then make that durable."""
        files = size = 0
        for path in paths:
            try:
                length = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            self._newest.pop(path, None)
            files += 1
            size += length
        if files:
            _fsync_directory(self.directory)
        return LogDeletion(files, size)

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    # -- duplicates ---------------------------------------------------------------------

    def _remember(self, event_ids: list[str]) -> None:
        recent = self._recent
        recent.update(dict.fromkeys(event_ids))
        while len(recent) > self.dedup_window:
            recent.popitem(last=False)

    def _reload_recent(self, files: list[Path]) -> None:
        """Remember the event ids of the newest lines already written, oldest first."""
        newest: list[list[str]] = []
        count = 0
        for path in reversed(files):
            ids = read_event_ids(path)
            newest.append(ids)
            count += len(ids)
            if count >= self.dedup_window:
                break
        ordered = [event_id for ids in reversed(newest) for event_id in ids]
        self._remember(ordered[-self.dedup_window :])


def _writer_id(directory: Path) -> str:
    """Return the writer id kept in `directory`, making one if it has none."""
    path = directory / _WRITER_ID_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        found = path.read_text().strip()
        if found:
            return found
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)  # left empty by a crash
    made = secrets.token_hex(12)
    with os.fdopen(descriptor, "w") as file:
        file.write(made + "\n")
        file.flush()
        os.fsync(file.fileno())
    return made


def _deleted_at(directory: Path) -> float:
    """Return the time of the last deletion request applied to `directory` (0.0: none)."""
    try:
        return float((directory / _DELETED_AT_FILE).read_text().strip() or 0.0)
    except FileNotFoundError:
        return 0.0


def _note_deleted_at(directory: Path, requested: float) -> None:
    """Keep `requested` in the directory's ``.deleted-at`` file, durably and atomically."""
    final = directory / _DELETED_AT_FILE
    partial = directory / (_DELETED_AT_FILE + ".partial")
    with partial.open("w") as file:
        file.write(f"{requested!r}\n")
        file.flush()
        os.fsync(file.fileno())
    partial.replace(final)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the files created, renamed and deleted in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _repair_tail(path: Path) -> None:
    """Cut a line left half-written by a crash off the end of `path`."""
    with path.open("r+b") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        file.truncate(keep)
    _log.warning("decision_log.repaired", file=str(path), dropped_bytes=size - keep)
