"""The decision log: joined decisions appended to size-rotated DSJSON files.

Each learnable :class:`~bandit.schemas.TrainingExample` becomes one line of VW's DSJSON
(see :func:`policies.vw.dsjson_record`), readable by
``python -m vowpalwabbit --cb_explore_adf --dsjson -d FILE``. Our own fields go under
``"_sb"``, a key VW skips: ``policy``, ``model_version``, ``default_reward``,
``reward_count``, ``explored``, ``deferred`` and ``learn`` (always ``true``: decisions
without learning consent are not kept).

Files are named by the UTC time they were opened and a sequence number that keeps
growing across restarts, ``decisions-20261127T231500Z-0001.dsjson``. Only the newest
file is open, for appending; every older one is closed and complete. One writer owns a
directory; it is not thread-safe.

The feed is at-least-once, so the writer skips an event id it has written recently: the
last ``dedup_window`` ids, reloaded from the newest files when a writer starts, so a
batch redelivered after a restart is skipped too. What *another* worker logged is not
in these files: the agent looks ids up in Redis before writing and records them after
(:func:`streams.agents.log_batch`). A decision can still appear twice if its copy
arrives more than ``dedup_window`` decisions later and a day after it was recorded, if
a batch failed part way (a full disk) and was redelivered, or if its worker was killed
between flushing the batch and recording it: readers keep the first line per
``EventId``.

:meth:`DecisionLogWriter.write` is synchronous file I/O; from an agent, call it off the
event loop (``await asyncio.to_thread(writer.write, examples)``), one batch at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import structlog

from bandit.errors import ConfigurationError
from bandit.schemas import TrainingExample
from bandit.settings import LogSettings
from policies import Action
from policies.vw import dsjson_record

__all__ = ["DecisionLogWriter", "training_record"]

_log = structlog.get_logger("streams.sink")

_NAME_RE = re.compile(r"^decisions-(\d{8}T\d{6}Z)-(\d{4,})\.dsjson$")
_SUFFIX = ".dsjson"


def training_record(example: TrainingExample) -> dict[str, Any]:
    """Return the DSJSON object logged for `example`.

    The distribution is logged in offer order (``p`` follows the ranking, chosen action
    first, as ``a`` does) and the reward as ``_label_cost = -reward``.
    """
    decision = example.decision
    ids = [action.id for action in decision.actions]
    position = {action_id: index for index, action_id in enumerate(ids)}
    by_id = {entry.id: entry.probability for entry in decision.ranking}
    return dsjson_record(
        decision.context,
        [Action(action.id, action.features) for action in decision.actions],
        decision.chosen_index,
        [by_id[action_id] for action_id in ids],
        example.reward,
        event_id=decision.event_id,
        timestamp=decision.occurred_at,
        ranking=[position[entry.id] for entry in decision.ranking],
        extra={
            "policy": decision.policy,
            "model_version": decision.model_version,
            "default_reward": example.default_reward,
            "reward_count": example.reward_count,
            "explored": decision.explored,
            "deferred": decision.deferred,
            "learn": True,
        },
    )


def _encode(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode()


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
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        self._sequence = _sequence(existing[-1]) if existing else 0
        if existing:
            _repair_tail(existing[-1])
            self._reload_recent(existing)

    @classmethod
    def from_settings(cls, settings: LogSettings, **options: Any) -> Self:
        """Build the writer the settings describe; `options` go to the constructor."""
        return cls(settings.directory, settings.rotate_bytes, **options)

    # -- the public surface -------------------------------------------------------------

    def write(self, examples: Sequence[TrainingExample]) -> int:
        """Append one line per new, learnable example; flush; return how many were written.

        Examples whose decision may not be learned from (``decision.learn`` false) are
        not kept; an event id written recently, or earlier in the batch, is skipped.
        Every record is built before anything is written, so a record that cannot be
        built raises before the batch touches the file.
        """
        lines: list[tuple[str, bytes]] = []
        batch: set[str] = set()
        for example in examples:
            decision = example.decision
            if not decision.learn:
                self.without_consent += 1
                continue
            event_id = decision.event_id
            if event_id in batch or event_id in self._recent:
                self.duplicates += 1
                continue
            batch.add(event_id)
            lines.append((event_id, _encode(training_record(example))))
        if not lines:
            return 0
        for _, line in lines:
            self._append(line)
        self._flush()
        # Only once the batch is flushed: a failed batch is redelivered and written again.
        for event_id, _ in lines:
            self._remember(event_id)
        self.written += len(lines)
        return len(lines)

    def files(self) -> list[Path]:
        """Every decision log file in the directory, oldest first (the last may be open)."""
        found = [
            path
            for path in self.directory.iterdir()
            if _NAME_RE.match(path.name) and path.is_file()
        ]
        return sorted(found, key=lambda path: (_sequence(path), path.name))

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
            self._size = 0

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

    def _append(self, line: bytes) -> None:
        if self._file is not None and self._size and self._size + len(line) > self.rotate_bytes:
            finished = self._path
            self.close()
            _log.info("decision_log.rotated", file=str(finished))
        if self._file is None:
            self._open()
        assert self._file is not None
        self._file.write(line)
        self._size += len(line)

    def _open(self) -> None:
        self._sequence += 1
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.directory / f"decisions-{stamp}-{self._sequence:04d}{_SUFFIX}"
        self._file = path.open("ab")
        self._path = path
        self._size = self._file.tell()

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    # -- duplicates ---------------------------------------------------------------------

    def _remember(self, event_id: str) -> None:
        recent = self._recent
        recent[event_id] = None
        if len(recent) > self.dedup_window:
            recent.popitem(last=False)

    def _reload_recent(self, files: list[Path]) -> None:
        """Remember the event ids of the newest lines already written, oldest first."""
        newest: list[list[str]] = []
        count = 0
        for path in reversed(files):
            ids = _event_ids(path)
            newest.append(ids)
            count += len(ids)
            if count >= self.dedup_window:
                break
        ordered = [event_id for ids in reversed(newest) for event_id in ids]
        for event_id in ordered[-self.dedup_window :]:
            self._remember(event_id)


def _sequence(path: Path) -> int:
    match = _NAME_RE.match(path.name)
    return int(match.group(2)) if match else 0


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


def _event_ids(path: Path) -> list[str]:
    ids: list[str] = []
    with path.open("rb") as file:
        for line in file:
            try:
                event_id = json.loads(line).get("EventId")
            except (ValueError, AttributeError):
                continue
            if isinstance(event_id, str):
                ids.append(event_id)
    return ids
