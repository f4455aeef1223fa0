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
from datetime import UTC, datetime
from pathlib import Path

import orjson

__all__ = ["LogFileDates", "LogFiles", "Window", "copy_window", "log_file_dates", "log_files"]

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


@dataclass(frozen=True, slots=True)
class Window:
    """What :func:`copy_window` copied: files read, lines copied, whether it stopped early."""

    files: int
    lines: int
    truncated: bool


def copy_window(
    directory: Path,
    out: Path,
    *,
    policy: str,
    start: datetime,
    end: datetime,
    max_lines: int,
    times: dict[str, datetime] | None = None,
) -> Window:
    r"""Copy `policy`'s decision log lines dated in ``[start, end]`` to the file `out`.

    Files are read in the order of their first decision; a file whose dates miss the
    window is not read past its first and last lines, and a file deleted or rotated
    meanwhile (``DELETE /logs``, retention) is passed over. A line belongs to the policy
    its ``_sb.policy`` names; a ``Timestamp`` without a zone is UTC. At most `max_lines`
    lines are copied, the earliest. `times`, when given, gets each copied line's
    ``EventId`` and date. Blocking: call it off the event loop.

    Examples
    --------
    >>> import tempfile
    >>> from datetime import UTC
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "decisions-1.dsjson").write_text(
    ...     '{"Timestamp":"2026-12-01T10:00:00Z","_sb":{"policy":"p"}}\n'
    ...     '{"Timestamp":"2026-12-02T10:00:00Z","_sb":{"policy":"q"}}\n'
    ...     '{"Timestamp":"2026-12-03T10:00:00Z","_sb":{"policy":"p"}}\n'
    ... )
    >>> copy_window(folder, folder / "out.dsjson", policy="p", max_lines=10,
    ...             start=datetime(2026, 12, 1, tzinfo=UTC), end=datetime(2026, 12, 2, tzinfo=UTC))
    Window(files=1, lines=1, truncated=False)
    """
    found: list[tuple[datetime, Path]] = []
    for path in directory.rglob("*.dsjson") if directory.is_dir() else ():
        try:
            dates = log_file_dates(path)
        except OSError:
            continue
        if dates.first is None or dates.last is None:
            continue
        if dates.last < start or dates.first > end:
            continue
        found.append((dates.first, path))
    files = lines = 0
    with out.open("wb") as sink:
        for _, path in sorted(found):
            try:
                handle = path.open("rb")
            except OSError:  # deleted since it was listed
                continue
            files += 1
            with handle:
                for line in handle:
                    record = _record(line)
                    when = _when(record)
                    if when is None or not start <= when <= end:
                        continue
                    hidden = record.get("_sb") if record is not None else None
                    if not isinstance(hidden, dict) or hidden.get("policy") != policy:
                        continue
                    if lines == max_lines:
                        return Window(files, lines, truncated=True)
                    sink.write(line if line.endswith(b"\n") else line + b"\n")
                    lines += 1
                    event_id = record.get("EventId") if record is not None else None
                    if times is not None and isinstance(event_id, str):
                        times[event_id] = when
    return Window(files, lines, truncated=False)


def _record(line: bytes) -> dict[str, object] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _when(record: dict[str, object] | None) -> datetime | None:
    value = None if record is None else record.get("Timestamp")
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _timestamp(line: bytes) -> datetime | None:
    """Return the ``Timestamp`` of a DSJSON line, or None for a partial or unreadable one."""
    return _when(_record(line))
