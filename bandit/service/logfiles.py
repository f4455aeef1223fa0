r"""What the decision log holds, read from its files: how many, how large, which dates.

The stream workers write the decision log as DSJSON files under
``settings.decision_log.directory`` (:mod:`streams.sink`), one folder per worker; this
reads what an operator (or Personalizer's ``GET /logs/properties``) asks of them without
reading them whole: each file's first and last line give its dates. A line is written
when its decision is joined, at most a reward wait after it was made, so the dates are
those of the decisions to within the policies' reward wait.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "decisions-1.dsjson").write_text(
...     '{"Timestamp":"2026-12-01T10:00:00Z"}\n{"Timestamp":"2026-12-02T09:30:00Z"}\n'
... )
>>> found = log_files(folder)
>>> found.files, found.first.isoformat(), found.last.isoformat()
(1, '2026-12-01T10:00:00+00:00', '2026-12-02T09:30:00+00:00')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

__all__ = ["LogFileDates", "LogFiles", "log_file_dates", "log_files"]

_TAIL_BYTES = 64 * 1024
"""How far from a file's end its last line is looked for (a line is a few KB)."""


@dataclass(frozen=True, slots=True)
class LogFiles:
    """The decision log's files: how many, their bytes, the first and last decision dates.

    `first` and `last` are None when no file holds a line with a ``Timestamp``.
    """

    files: int
    bytes: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class LogFileDates:
    """One decision log file: its bytes, and the dates of its first and last decisions.

    `first` and `last` are None when its first (last) readable line has no ``Timestamp``.
    """

    bytes: int
    first: datetime | None
    last: datetime | None


def log_file_dates(path: Path) -> LogFileDates:
    """Read a decision log file's size and the dates of its first and last lines.

    Only its first line and its last 64 KiB are read; a last line being written is
    skipped for the one before it. Blocking: call it off the event loop.

    Raises
    ------
    OSError
        When the file cannot be read (rotated or deleted meanwhile, say).
    """
    with path.open("rb") as handle:
        length = os.fstat(handle.fileno()).st_size
        head = _timestamp(handle.readline())
        handle.seek(max(0, length - _TAIL_BYTES))
        lines = handle.read().splitlines()
    tail = next((t for t in map(_timestamp, reversed(lines)) if t is not None), None)
    return LogFileDates(length, head, tail)


def log_files(directory: Path) -> LogFiles:
    """Read the decision log's files under `directory` (none when it does not exist).

    Blocking (it reads files): call it off the event loop.
    """
    files = 0
    size = 0
    first: datetime | None = None
    last: datetime | None = None
    if not directory.is_dir():
        return LogFiles(0, 0, None, None)
    for path in directory.rglob("*.dsjson"):
        try:
            dates = log_file_dates(path)
        except OSError:  # rotated or deleted while read: it is not counted
            continue
        files += 1
        size += dates.bytes
        for found in (dates.first, dates.last):
            if found is None:
                continue
            first = found if first is None or found < first else first
            last = found if last is None or found > last else last
    return LogFiles(files, size, first, last)


def _timestamp(line: bytes) -> datetime | None:
    """Return the ``Timestamp`` of a DSJSON line, or None for a partial or unreadable one."""
    try:
        value = orjson.loads(line).get("Timestamp")
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return None
