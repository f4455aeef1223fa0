"""Read decision logs into :class:`~replay.LoggedDecisions`, and write them for other tools.

:func:`read_log` reads, row by row, into the one validated in-memory form:

- **DSJSON**, one object a line: the decision log streambandit writes
  (:mod:`policies.dsjson`, :class:`streams.sink.DecisionLogWriter`), and the logs of
  Vowpal Wabbit / Azure Personalizer loops (the same core keys), read by
  :class:`policies.dsjson.DSJSONReader`;
- **JSON lines** of the simple schema below;
- **Parquet** with the same columns as the JSON lines.

Every row becomes offer-order arrays: ``chosen`` is a 0-based index into the offered
actions, ``probabilities`` follow the order the actions were offered in, and
``reward = -cost`` for DSJSON. A row that breaks a rule either stops the read with a
:class:`~bandit.errors.LogFormatError` naming ``file:line``, the field and the rule
(``on_error="stop"``), or is counted under its reason and left out
(``on_error="skip"``).

DSJSON fields read
------------------

=========================== ==============================================================
``_label_cost``             cost of the chosen action; ``reward = -cost`` (required)
``_original_label_cost``    Personalizer's cost before its learning mode changed it; read
                            instead with ``cost_key="_original_label_cost"``
``_labelIndex``             0-based offer index of the chosen action
``_label_Action``           the same, 1-based (either one is required; both must agree)
``_label_probability``      probability of the chosen action; must equal its entry of ``p``
``a``                       1-based action numbers in rank order (each action once)
``p``                       probabilities in the order of ``a`` (one per action)
``c``                       shared namespaces; the offered actions under ``c._multi``
``EventId``                 the decision's id; a repeated id keeps its first row
``_skipLearn``              ``true``: a decision VW does not learn from (a deferred one never
                            activated); left out and counted as ``skip_learn``
``_outcomes``               a multi-slot (CCB) decision: one slot is read, with ``slot=``
                            (its ``c._slots`` entry, ``_inc``, and ``_a``/``_p``/``_label_cost``
                            of its outcome); else left out, counted as ``multi_slot``
=========================== ==============================================================

Ignored: ``o`` (the outcomes, already aggregated into ``_label_cost``), ``Timestamp``,
``_sb`` (our own fields; it must be an object), ``Version``, ``VWState``, ``_deferred``,
and ``pdrop`` (VW weights such a row by ``1 / (1 - pdrop)``;
:class:`~replay.LoggedDecisions` has no weights).

Action ids and features: an action of streambandit's own log holds its id as the
namespace ``{"id": {"id=<id>": 1}}`` and its namespaces as ``a<name>`` (the context's as
``c<name>``), read back exactly as :func:`policies.dsjson.dsjson_record` was given them.
Any other action takes its id from ``"_tag"`` or a string ``"id"``, and its features as
VW's JSON parser groups them: an object is a namespace, an array of objects adds their features
to the namespace it is under, an array of numbers gives the features ``"0"``, ``"1"``,
...; a bare value outside any namespace goes to namespace ``"default"``; ``true`` is the
number 1, ``false`` and ``null`` are left out, and keys starting with ``_`` are VW's
fields, not features.

JSON lines (and Parquet columns)
--------------------------------

One object per row::

    {"actions": ["a", {"id": "b", "features": {"item": {"size": 2}}}],
     "chosen": 1, "probability": 0.25, "probabilities": [0.75, 0.25],
     "reward": 1.0, "context": {"user": {"tier": "gold"}}, "event_id": "evt-1"}

=================== ===========================================================
``actions``         offered actions in offer order: ids, or ``{"id", "features"}``
``chosen``          0-based index into ``actions``
``probability``     the logged probability of the chosen action, in (0, 1]
``probabilities``   optional: every action's probability, in offer order
``reward``          the observed reward, a finite number
``context``         optional: shared features, ``{namespace: {name: value}}``
``event_id``        optional: the decision's id
``position``        optional: the 0-based position (slot) the action was shown in
=================== ===========================================================

Open Bandit Dataset (CSV)
-------------------------

The public release of the Open Bandit Dataset (Saito et al., *Open Bandit Dataset and
Pipeline*, NeurIPS 2021 Datasets and Benchmarks) and the sample inside the ``obp``
package lay out ``{behavior_policy}/{campaign}/{campaign}.csv`` with
``item_context.csv`` beside it. Each CSV row is one (impression, position): its columns
``item_id``, ``position`` (1-based), ``click`` and ``propensity_score`` become a row
over every item of ``item_context.csv`` (in its order, ids the item ids): ``chosen`` the
item's index, ``position`` 0-based, ``reward`` the click and ``propensity`` the
propensity score; ``probabilities`` are None. The context is the ``user_feature_*``
columns under namespace ``user`` (strings, hashed as features), and each item's
features are its ``item_feature_*`` columns under namespace ``item``. The
``user-item_affinity_*`` columns and ``timestamp`` are not read (rows are kept in file
order). ``propensity_score`` is the *marginal* probability that the behaviour policy
showed that item at that position, not the probability of the whole page: per-row
estimators (IPS per position, :class:`~replay.slates.IIPS`) are right on it, the slate
estimators that need probabilities conditional on the positions above are not.

Features are ``{namespace: {name: value}}`` with string or number values (booleans
become 1.0 or 0.0). In Parquet, ``context`` and each action's ``features`` may also be
JSON text, which is how :func:`to_parquet` writes them.

A column that only some rows carry (``probabilities``, action ids, event ids) is kept
only when every row kept has it: otherwise it is None in the result. An action offered
again with the same features shares one features dict across its rows: treat features
as read-only. Contexts come as a :class:`~replay.FeatureRows` (each distinct feature
kept once, a row a few integers and numbers), read back as mappings.

With ``cache=True``, each file's read is kept as Parquet (these columns; the contexts
as :class:`~replay.FeatureRows` holds them, in ``context_keys`` and ``context_values``
with their keys in the file's metadata) and read instead of the log while the file's
path, size and modification time, the read's options and the cache's version match.
"""

from __future__ import annotations

import csv
import gc
import gzip
import heapq
import math
import os
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BufferedReader
from pathlib import Path
from sys import intern
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from policies import Action
from policies.dsjson import (
    LOG_NAME,
    PROPENSITY_TOLERANCE,
    SUM_TOLERANCE_READ,
    DSJSONReader,
    LogRow,
    dsjson_line,
    dsjson_record,
    log_file_opened,
    log_file_sequence,
)
from policies.errors import ConfigurationError, LogFormatError
from policies.vwtext import reward_to_cost, to_vw_lines
from replay._columnar import CACHE_KEY, CACHE_SUFFIX, ROW_GROUP, Cache, to_table
from replay._data import FeatureRows, FeatureRowsBuilder, LoggedDecisions

__all__ = [
    "ALL_SLOTS",
    "ReadResult",
    "read_log",
    "to_dsjson",
    "to_jsonl",
    "to_obp",
    "to_parquet",
    "to_vw_text",
]

Format: TypeAlias = Literal["auto", "dsjson", "jsonl", "parquet", "obd"]
OnError: TypeAlias = Literal["stop", "skip"]
PathArg: TypeAlias = str | os.PathLike[str]

_FORMATS = ("auto", "dsjson", "jsonl", "parquet", "obd")
ALL_SLOTS = "*"
"""The `slot` of :func:`read_log` that reads every slot of a multi-slot line."""
_COST_KEYS = ("_label_cost", "_original_label_cost")
_LINE_SUFFIXES = (".dsjson", ".json", ".jsonl", ".ndjson")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_PROGRESS_EVERY = 10_000
_KEEP_MESSAGES = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Features: TypeAlias = dict[str, dict[str, Any]]
_NO_FEATURES: Features = {}

_T = TypeVar("_T", int, float)


@dataclass(frozen=True, eq=False)
class ReadResult:
    """What :func:`read_log` read: the decisions kept, and how many rows were left out, why.

    Attributes
    ----------
    logs
        The rows kept, validated.
    rows_read
        Rows seen: non-blank lines, or Parquet rows.
    skipped
        Rows left out, by reason: ``invalid_json``, ``missing_field``,
        ``bad_probability``, ``ragged``, ``bad_chosen``, ``bad_reward``,
        ``bad_actions``, ``bad_features``, ``bad_event_id``, ``bad_position``,
        ``unsupported`` (errors),
        ``skip_learn``, ``duplicate``, and ``multi_slot``, ``single_slot``, ``no_slot``
        (rows that are not decisions to evaluate on; see `slot` of :func:`read_log`).
    files
        The files read, in order.
    messages
        The messages of the first few rows left out as errors, ``file:line: ...``.
    """

    logs: LoggedDecisions
    rows_read: int
    skipped: Mapping[str, int]
    files: tuple[Path, ...]
    messages: tuple[str, ...] = ()

    @property
    def rows_kept(self) -> int:
        """Rows kept: ``rows_read`` minus every row skipped."""
        return self.logs.n

    @property
    def rows_skipped(self) -> int:
        """Rows left out, for any reason."""
        return sum(self.skipped.values())


class _Skip(Exception):  # noqa: N818  # not an error: control flow inside the reader
    """A row left out that breaks no rule (a duplicate, a ``_skipLearn`` row)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bad(reason: str, message: str) -> LogFormatError:
    """Return the error of a row that breaks a rule (the message names the field and rule)."""
    return LogFormatError(message, reason=reason)


# One row, in offer order: (n_actions, chosen, propensity, reward, probabilities or None,
# action ids or None, context or None, action features or None, event id or None,
# position or None).
_Row: TypeAlias = tuple[
    int,
    int,
    float,
    float,
    list[float] | None,
    list[str] | None,
    Features | None,
    list[Features] | None,
    str | None,
    int | None,
]


def read_log(
    path_or_paths: PathArg | Sequence[PathArg],
    *,
    format: Format = "auto",  # noqa: A002  # the name a user of the format reads
    on_error: OnError = "stop",
    cost_key: Literal["_label_cost", "_original_label_cost"] = "_label_cost",
    features: bool = True,
    progress: Callable[[int], None] | None = None,
    slot: str | int | None = None,
    cache: bool = False,
    cache_dir: PathArg | None = None,
) -> ReadResult:
    r"""Read decision logs into :class:`~replay.LoggedDecisions`, row by row.

    Parameters
    ----------
    path_or_paths
        A file, a directory (its log files at any depth: streambandit's in the order
        they were written, each worker's folder in its own order and the workers' files
        interleaved by when they were opened; others after them, by path), or a list of
        either. Files ending in ``.gz`` are read through gzip.
    format
        ``"dsjson"``, ``"jsonl"``, ``"parquet"``, ``"obd"`` (the Open Bandit Dataset's
        CSV files), or ``"auto"``: the Open Bandit Dataset by its layout (a CSV file, or
        a folder of them, with ``item_context.csv`` beside each), Parquet by its name or
        magic bytes, otherwise DSJSON or JSON lines by the keys of the first row.
    on_error
        ``"stop"`` raises on the first bad row; ``"skip"`` counts it under its reason
        (:attr:`ReadResult.skipped`) and goes on.
    cost_key
        The DSJSON field the reward is read from (``reward = -cost``).
    features
        Keep contexts and action features; without them only the arrays (and ids) are
        kept, which is all the importance-weighted estimators need.
    progress
        Called with the number of rows read so far every 10,000 rows and at the end.
    slot
        Evaluate one slot of multi-slot (CCB) decisions: its ``_id``, or its 0-based
        number. Each multi-slot line then gives the decision that slot was
        (:meth:`policies.dsjson.DSJSONReader.read_slot`: over the actions it could
        choose, its features in the context's ``_slot`` namespace, its ``position`` the
        slot's 0-based number); lines without it
        are left out as ``no_slot``, single-slot lines as ``single_slot``. ``"*"``
        (:data:`ALL_SLOTS`) reads every slot of each multi-slot line, in slot order,
        each slot's row with the line's ``EventId``: a slate log
        (:func:`replay.slates.consecutive_slates` numbers its slates). None (the
        default) reads single-slot decisions and leaves multi-slot lines out as
        ``multi_slot``.
    cache
        Keep each file's read as Parquet (:func:`to_parquet`'s columns, with page
        checksums) and read it from there the next time, while the file's path, size
        and modification time and these options are the same: several times faster
        than reading the log again. A cache that cannot be read is ignored with a
        warning and written anew; one that cannot be written is left out, with a
        warning.
    cache_dir
        Where the caches go (with `cache`); None: a folder ``.streambandit-cache``
        beside each log file (left out when reading a folder of logs).

    Returns
    -------
    ReadResult
        The decisions kept, the rows read and the rows left out, by reason.

    Raises
    ------
    LogFormatError
        With ``on_error="stop"``, at the first bad row: ``file:line: `field` rule``.
        Also when a file's format cannot be told.
    ConfigurationError
        If an argument is not one of its choices.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "log.jsonl"
    >>> _ = path.write_text(
    ...     '{"actions": ["a", "b"], "chosen": 1, "probability": 0.25,'
    ...     ' "probabilities": [0.75, 0.25], "reward": 1.0, "event_id": "e1"}\n'
    ...     '{"actions": ["a", "b"], "chosen": 2, "probability": 0.5, "reward": 0.0}\n'
    ... )
    >>> result = read_log(path, on_error="skip")
    >>> result.rows_read, result.rows_kept, dict(result.skipped)
    (2, 1, {'bad_chosen': 1})
    >>> result.logs.probabilities, result.logs.action_ids
    (array([[0.75, 0.25]]), [['a', 'b']])
    >>> read_log(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: ...log.jsonl:2: `chosen` must be an index in [0, 2), got 2
    >>> folder.cleanup()
    """
    _check_choices(format=format, on_error=on_error, cost_key=cost_key)
    if format == "obd" or (format == "auto" and _is_obd(path_or_paths)):
        return _read_obd(
            path_or_paths, on_error=on_error, features=features, progress=progress, slot=slot
        )
    files = _expand(path_or_paths)
    reader = DSJSONReader(cost_key=cost_key, features=features)

    dsjson = _dsjson_parser(reader, slot)

    seen_actions: dict[tuple[str, Any], Features] = {}

    def plain(raw: bytes | dict[str, Any]) -> _Row:
        record = _decode(raw) if type(raw) is bytes else raw
        return _plain_row(record, features, seen_actions)

    parsers: dict[str, Callable[[bytes | dict[str, Any]], _Row | list[_Row]]] = {
        "dsjson": dsjson,
        "jsonl": plain,
        "parquet": plain,
    }
    options = {"format": format, "on_error": on_error, "cost_key": cost_key}
    cached_reads = (
        Cache(cache_dir, {**options, "features": features, "slot": slot}) if cache else None
    )
    columns = _Columns(features=features)
    skipped: Counter[str] = Counter()
    messages: list[str] = []
    seen_ids: set[str] = set()  # the event ids of the files before this one
    repeated: list[int] = []  # rows whose event id an earlier file holds
    fresh: list[tuple[Path, int, int, int, Counter[str], list[str]]] = []
    rows_read = 0
    stop = on_error == "stop"
    with _bulk_load():
        for path in files:
            first_row = columns.rows
            cached = None if cached_reads is None else cached_reads.load(path, features=features)
            if cached is not None:
                parts, read_here, skipped_here, messages_here = cached
                columns.take_parts(parts)
            else:
                kind = _detect(path) if format == "auto" else format
                read_here, skipped_here, messages_here = _read_file(
                    path, parsers[kind], columns, stop=stop, kind=kind,
                    progress=None if progress is None else _offset(progress, rows_read),
                )  # fmt: skip
                fresh.append(
                    (path, first_row, columns.rows, read_here, skipped_here, messages_here)
                )
            rows_read += read_here
            skipped.update(skipped_here)
            messages.extend(messages_here[: _KEEP_MESSAGES - len(messages)])
            if seen_ids:
                ids = columns.raw_event_ids
                repeated.extend(i for i in range(first_row, columns.rows) if ids[i] in seen_ids)
            seen_ids.update(i for i in columns.raw_event_ids[first_row:] if i is not None)
            if cached is not None and progress is not None:
                progress(rows_read)
        logs = columns.build()
        if cached_reads is not None:
            for path, start, stop_row, read_here, skipped_here, messages_here in fresh:
                part = (
                    logs if (start, stop_row) == (0, logs.n) else logs.take(slice(start, stop_row))
                )
                cached_reads.store(
                    path, part, columns.raw_event_ids[start:stop_row], read_here,
                    skipped_here, messages_here,
                )  # fmt: skip
        if repeated:  # a row an earlier file holds: the first one is kept
            skipped["duplicate"] += len(repeated)
            keep = np.ones(logs.n, dtype=bool)
            keep[repeated] = False
            logs = logs.take(np.flatnonzero(keep))
    if progress is not None:
        progress(rows_read)
    return ReadResult(
        logs=logs,
        rows_read=rows_read,
        skipped=dict(skipped),
        files=tuple(files),
        messages=tuple(messages),
    )


def _read_file(  # one file's share of read_log's state
    path: Path,
    parse: Callable[[bytes | dict[str, Any]], _Row | list[_Row]],
    columns: _Columns,
    *,
    stop: bool,
    kind: str,
    progress: Callable[[int], None] | None,
) -> tuple[int, Counter[str], list[str]]:
    """Read one file's rows into `columns`: the rows read, skipped by reason, and messages.

    Duplicates are told by the event ids of this file only (:func:`read_log` tells those
    of earlier files afterwards), so what a file gives does not depend on the others.
    """
    rows_read, skipped = 0, Counter[str]()
    messages: list[str] = []
    event_ids: set[str] = set()
    for number, raw in _rows(path, kind):
        rows_read += 1
        if progress is not None and rows_read % _PROGRESS_EVERY == 0:
            progress(rows_read)
        try:
            row = parse(raw)
            event_id = (row[0] if isinstance(row, list) else row)[8]
            if event_id is not None:
                if event_id in event_ids:
                    raise _Skip("duplicate")
                event_ids.add(event_id)
        except _Skip as skip:
            skipped[skip.reason] += 1
            continue
        except LogFormatError as bad:
            where = f"{path}[row {number}]" if kind == "parquet" else f"{path}:{number}"
            message = f"{where}: {bad}"
            if stop:
                raise LogFormatError(message, reason=bad.reason) from None
            if len(messages) < _KEEP_MESSAGES:
                messages.append(message)
            skipped[bad.reason] += 1
            continue
        columns.add(row)
    return rows_read, skipped, messages


def _offset(progress: Callable[[int], None], before: int) -> Callable[[int], None]:
    """Return `progress` counting on from `before`."""
    return lambda done: progress(before + done)


def _dsjson_parser(
    reader: DSJSONReader, slot: str | int | None
) -> Callable[[bytes | dict[str, Any]], _Row | list[_Row]]:
    """Return the parser of DSJSON rows for :func:`read_log` (`slot`: as it says)."""

    def dsjson(raw: bytes | dict[str, Any]) -> _Row | list[_Row]:
        record = _decode(raw) if type(raw) is bytes else raw
        if type(record) is dict and "_outcomes" in record:  # a multi-slot (CCB) decision
            if slot is None:
                raise _Skip("multi_slot")
            if slot == ALL_SLOTS:
                rows = [_log_row(one) for one in reader.read_slots(record).slots]
                if not rows:
                    raise _Skip("no_slot")
                return rows
            row = reader.read_slot(record, slot)
            if row is None:
                raise _Skip("no_slot")
        elif slot is not None:
            raise _Skip("single_slot")
        else:
            row = reader.read(record)
        if row is None:
            raise _Skip("skip_learn")
        return _log_row(row)

    return dsjson


def _log_row(row: LogRow) -> _Row:
    """Return a row :class:`~policies.dsjson.DSJSONReader` read as a :data:`_Row`."""
    probabilities = row.probabilities
    return (
        len(probabilities),
        row.chosen,
        probabilities[row.chosen],
        row.reward,
        probabilities,
        row.action_ids,
        row.context,
        row.action_features,
        row.event_id,
        row.position,
    )


@contextmanager
def _bulk_load() -> Iterator[None]:
    """Pause the cyclic garbage collector while a log is read.

    A read builds millions of small dicts and lists, none of which can form a cycle;
    with the collector on, it rescans the growing heap over and over (a third of the
    time of a read).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decode(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _bad("invalid_json", f"the line is not valid JSON: {exc}") from None


def _check_choices(**given: str) -> None:
    choices = {"format": _FORMATS, "on_error": ("stop", "skip"), "cost_key": _COST_KEYS}
    for name, value in given.items():
        if value not in choices[name]:
            msg = f"`{name}` must be one of {list(choices[name])}, got {value!r}"
            raise ConfigurationError(msg)


# -- files ----------------------------------------------------------------------------------


def _expand(path_or_paths: PathArg | Sequence[PathArg]) -> list[Path]:
    """Return the files to read, in order: directories expand to their log files."""
    if isinstance(path_or_paths, str | os.PathLike):
        given = [Path(path_or_paths)]
    else:
        given = [Path(p) for p in path_or_paths]
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            files.extend(_folder_files(path))
        elif path.is_file():
            files.append(path)
        else:
            msg = f"{path}: no such file or directory"
            raise LogFormatError(msg)
    return files


def _folder_files(folder: Path) -> list[Path]:
    """Return a folder's log files at any depth (``streambandit up``: ``worker-N/``).

    Each folder's sink files keep their sequence order, and the folders' sink files are
    interleaved by the time each file was opened, so the rows of several workers come
    roughly in the order they were written; the other log files follow, by path.
    """
    sink: dict[Path, list[Path]] = {}
    other: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if not (path.is_file() and _is_log_name(path.name)):
            continue
        if LOG_NAME.match(path.name):
            sink.setdefault(path.parent, []).append(path)
        else:
            other.append(path)
    ordered = [sorted(paths, key=log_file_sequence) for paths in sink.values()]
    return [*heapq.merge(*ordered, key=log_file_opened), *other]


def _is_log_name(name: str) -> bool:
    name = name.lower().removesuffix(".gz")
    return name.endswith(_LINE_SUFFIXES + _PARQUET_SUFFIXES) and not name.endswith(CACHE_SUFFIX)


def _open_lines(path: Path) -> BufferedReader | gzip.GzipFile:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _detect(path: Path) -> str:
    """Tell a file's format from its name, its magic bytes or the keys of its first row."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    with path.open("rb") as file:
        if file.read(4) == b"PAR1":
            return "parquet"
    with _open_lines(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                first = orjson.loads(line)
            except orjson.JSONDecodeError:
                msg = (
                    f"{path}:{number}: cannot tell the log format: the first row is not "
                    "JSON; pass format="
                )
                raise LogFormatError(msg) from None
            if isinstance(first, dict):
                if "c" in first or "_label_cost" in first or "_labelIndex" in first:
                    return "dsjson"
                if "actions" in first:
                    return "jsonl"
            msg = (
                f"{path}:{number}: cannot tell the log format: the first row has neither "
                "DSJSON's `c` / `_label_cost` nor the JSON lines' `actions`; pass format="
            )
            raise LogFormatError(msg)
    return "dsjson"  # empty: nothing to read either way


def _rows(path: Path, kind: str) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """Yield each row's line number (Parquet: 0-based row index) and its raw form."""
    if kind == "parquet":
        yield from _parquet_rows(path)
        return
    with _open_lines(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.isspace():  # (a blank line; strip() would copy every line)
                yield number, line


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001  # pyarrow raises several kinds for one cause
        msg = f"{path}: not a readable Parquet file: {exc}"
        raise LogFormatError(msg) from None
    if CACHE_KEY in (table.schema_arrow.metadata or {}):
        msg = f"{path}: a cache of streambandit's, not a log: read the log it was made from"
        raise LogFormatError(msg)
    index = 0
    with table:
        for batch in table.iter_batches(batch_size=8192):
            for record in batch.to_pylist():
                yield index, record
                index += 1


# -- rows -----------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int


def _plain_row(  # noqa: PLR0912
    record: Any, features: bool, seen: dict[tuple[str, Any], Features]
) -> _Row:
    """Read one JSON-lines object (or Parquet row) of the documented schema.

    An action offered again with the same features (`seen`, by id and content) shares
    the features dict read the first time.
    """
    if type(record) is not dict:
        raise _bad("invalid_json", f"a row must be a JSON object, got {_show(record)}")
    actions = record.get("actions")
    if actions is None:
        raise _bad("missing_field", "`actions` is missing: every row needs the offered actions")
    if type(actions) is not list or not actions:
        msg = f"`actions` must be a non-empty list of ids or {{id, features}}, got {_show(actions)}"
        raise _bad("bad_actions", msg)
    n = len(actions)
    ids: list[str] = []
    action_features: list[Features] | None = [] if features else None
    for k, action in enumerate(actions):
        if type(action) is str:
            ids.append(action)
            if action_features is not None:
                action_features.append({})
            continue
        if type(action) is not dict or type(action.get("id")) is not str:
            msg = (
                f"`actions[{k}]` must be an id or an object with a string `id`, got {_show(action)}"
            )
            raise _bad("bad_actions", msg)
        ids.append(action["id"])
        if action_features is not None:
            action_features.append(_plain_action_features(action, k, seen))
    if len(set(ids)) != n:
        raise _bad("bad_actions", f"the offered action ids must be distinct, got {_show(ids)}")
    chosen = record.get("chosen")
    if chosen is None:
        raise _bad("missing_field", "`chosen` is missing: every row needs its chosen action")
    if type(chosen) is not int or not 0 <= chosen < n:
        raise _bad("bad_chosen", f"`chosen` must be an index in [0, {n}), got {_show(chosen)}")
    propensity = record.get("probability")
    if propensity is None:
        msg = "`probability` is missing: every row needs the chosen action's logged probability"
        raise _bad("missing_field", msg)
    if not _is_number(propensity) or not 0.0 < propensity <= 1.0:
        msg = f"`probability` must be in (0, 1], got {_show(propensity)}"
        raise _bad("bad_probability", msg)
    probabilities = record.get("probabilities")
    if probabilities is not None:
        probabilities = _plain_probabilities(probabilities, n, chosen, float(propensity))
    reward = record.get("reward")
    if reward is None:
        raise _bad("missing_field", "`reward` is missing: every row needs its observed reward")
    if not _is_number(reward) or not math.isfinite(reward):
        raise _bad("bad_reward", f"`reward` must be a finite number, got {_show(reward)}")
    event_id = record.get("event_id")
    if event_id is not None and type(event_id) is not str:
        raise _bad("bad_event_id", f"`event_id` must be a string, got {_show(event_id)}")
    position = _plain_position(record.get("position"))
    context = _plain_features(record.get("context"), "context") if features else None
    return (
        n,
        chosen,
        float(propensity),
        float(reward),
        probabilities,
        ids,
        context,
        action_features,
        event_id,
        position,
    )


def _plain_position(value: Any) -> int | None:
    if value is not None and (type(value) is not int or value < 0):
        raise _bad("bad_position", f"`position` must be an integer >= 0, got {_show(value)}")
    return value


def _plain_action_features(
    action: dict[str, Any], k: int, seen: dict[tuple[str, Any], Features]
) -> Features:
    """Return the checked features of `action` (the `k`-th), shared with equal ones seen."""
    raw = action.get("features")
    key = (action["id"], _content_key(raw))
    known = seen.get(key) if key[1] is not None else None
    if known is None:
        known = _plain_features(raw, f"actions[{k}].features")
        if key[1] is not None:
            seen[key] = known
    return known


def _content_key(features: Any) -> Any:
    """Return a hashable key equal for equal features (types included), or None."""
    if features is None:
        return (None,)
    if type(features) is str:
        return features
    if type(features) is not dict:
        return None
    try:
        key = tuple(
            (namespace, tuple((k, type(v), v) for k, v in values.items()))
            if type(values) is dict
            else (namespace, type(values), values)
            for namespace, values in features.items()
        )
        hash(key)
    except (TypeError, AttributeError):
        return None
    return key


def _plain_probabilities(value: Any, n: int, chosen: int, propensity: float) -> list[float]:
    if type(value) is not list:
        raise _bad("bad_probability", f"`probabilities` must be a list, got {_show(value)}")
    if len(value) != n:
        msg = f"`probabilities` must hold one probability per action ({n}), got {len(value)}"
        raise _bad("ragged", msg)
    for k, p in enumerate(value):
        if not _is_number(p) or not 0.0 < p <= 1.0:
            msg = f"`probabilities` must be in (0, 1], got probabilities[{k}] = {_show(p)}"
            raise _bad("bad_probability", msg)
    probabilities = [float(p) for p in value]
    total = math.fsum(probabilities)
    if abs(total - 1.0) > SUM_TOLERANCE_READ:
        msg = f"`probabilities` must sum to 1 within {SUM_TOLERANCE_READ}, got {total!r}"
        raise _bad("bad_probability", msg)
    if abs(probabilities[chosen] - propensity) > PROPENSITY_TOLERANCE:
        msg = (
            f"`probability` ({propensity!r}) must equal `probabilities[{chosen}]` "
            f"({probabilities[chosen]!r})"
        )
        raise _bad("bad_probability", msg)
    return probabilities


def _plain_features(value: Any, where: str) -> Features:
    """Check ``{namespace: {name: str | number | bool}}``; JSON text is decoded first."""
    if value is None:
        return {}
    if type(value) is str:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            msg = f"`{where}` must be an object or its JSON text, got {_show(value)}"
            raise _bad("bad_features", msg) from None
    if type(value) is not dict:
        msg = f"`{where}` must map namespaces to features, got {_show(value)}"
        raise _bad("bad_features", msg)
    features: Features = {}
    for namespace, values in value.items():
        if values is None:
            continue
        if type(values) is not dict:
            msg = f"`{where}.{namespace}` must map names to values, got {_show(values)}"
            raise _bad("bad_features", msg)
        checked: dict[str, Any] = {}
        for name, feature in values.items():
            kind = type(feature)
            if kind is bool:
                checked[name] = 1.0 if feature else 0.0
            elif kind is str or ((kind is int or kind is float) and math.isfinite(feature)):
                checked[name] = feature
            elif feature is not None:  # None: a Parquet struct field this row lacks
                msg = (
                    f"`{where}.{namespace}.{name}` must be a string or a finite number, "
                    f"got {_show(feature)}"
                )
                raise _bad("bad_features", msg)
        features[namespace] = checked
    return features


class _Columns:
    """Rows gathered into the columns of a :class:`LoggedDecisions`."""

    def __init__(self, *, features: bool) -> None:
        self.features = features
        # Numbers go to typed arrays: 8 bytes each, not a Python object each.
        self.n_actions = array("q")
        self.chosen = array("q")
        self.propensity = array("d")
        self.reward = array("d")
        self.probabilities: array[float] | None = array("d")
        self.action_ids: list[list[str]] | None = []
        self.contexts = FeatureRowsBuilder()
        self.action_features: list[list[Features]] = []
        self.raw_event_ids: list[str | None] = []
        self.rows = 0
        self.position: array[int] | None = array("q")

    def add(self, parsed: _Row | list[_Row]) -> None:
        """Append a row, or each row of a line that holds several (``slot="*"``)."""
        for row in parsed if isinstance(parsed, list) else (parsed,):
            self.append(row)

    def append(self, row: _Row) -> None:
        n, chosen, propensity, reward, probabilities, ids, context, actions, event_id, position = (
            row
        )
        self.n_actions.append(n)
        self.chosen.append(chosen)
        self.propensity.append(propensity)
        self.reward.append(reward)
        if self.probabilities is not None:
            if probabilities is None:
                self.probabilities = None
            else:
                self.probabilities.extend(probabilities)
        if self.action_ids is not None:
            if ids is None:
                self.action_ids = None
            else:  # one string per distinct id, not one per row: ids repeat across rows
                # (copied: a list of its exact size; one grown from `map` has spare room)
                self.action_ids.append(list(map(intern, ids))[:])
        self.raw_event_ids.append(event_id)
        self.rows += 1
        if self.position is not None:  # kept only while every row has one
            self.position = _appended(self.position, position)
        if self.features:
            self.contexts.append(context or _NO_FEATURES)
            self.action_features.append(actions[:] if actions else [{} for _ in range(n)])

    def extend(self, logs: LoggedDecisions, event_ids: list[str | None]) -> None:
        """Add the rows of `logs` (a file read before), with each row's event id or None."""
        self.n_actions.frombytes(logs.n_actions.tobytes())
        self.chosen.frombytes(logs.chosen.tobytes())
        self.propensity.frombytes(logs.propensity.tobytes())
        self.reward.frombytes(logs.reward.tobytes())
        offered = None if logs.probabilities is None else logs.probabilities[logs.mask()]
        self.probabilities = _joined(self.probabilities, offered)
        if self.action_ids is not None:
            if logs.action_ids is None:
                self.action_ids = None
            else:
                self.action_ids.extend(logs.action_ids)  # type: ignore[arg-type]
        self.raw_event_ids.extend(event_ids)
        self.rows += logs.n
        self.position = _joined(self.position, logs.position)
        if self.features:
            if logs.contexts is not None:
                contexts = logs.contexts
                if not isinstance(contexts, FeatureRows):
                    contexts = FeatureRows.from_mappings(contexts)
                self.contexts.extend(contexts)
            if logs.action_features is not None:
                self.action_features.extend(logs.action_features)  # type: ignore[arg-type]

    def take_parts(self, parts: list[tuple[LoggedDecisions, list[str | None]]]) -> None:
        """:meth:`extend` with each part of a cached file, emptying `parts` as it goes.

        Each part is let go once its rows are in the columns, and Arrow's memory given
        back: a cached read does not hold its arrays twice.
        """
        parts.reverse()
        while parts:
            self.extend(*parts.pop())
        Cache.release()  # (the parts' arrays were Arrow's)

    def build(self) -> LoggedDecisions:
        n_actions = np.array(self.n_actions, dtype=np.int64)
        matrix = None
        if self.probabilities is not None:
            width = int(n_actions.max()) if len(n_actions) else 0
            matrix = np.zeros((len(n_actions), width))
            offered = np.frombuffer(self.probabilities, dtype=np.float64)  # (not a copy)
            matrix[np.arange(width)[None, :] < n_actions[:, None]] = offered
        return LoggedDecisions(
            n_actions=n_actions,
            chosen=np.array(self.chosen, dtype=np.int64),
            propensity=np.array(self.propensity, dtype=np.float64),
            reward=np.array(self.reward, dtype=np.float64),
            probabilities=matrix,
            action_ids=self.action_ids,
            contexts=self.contexts.build() if self.features else None,
            action_features=self.action_features if self.features else None,
            event_ids=None if None in self.raw_event_ids else self.raw_event_ids,  # type: ignore[arg-type]
            position=None if self.position is None else np.array(self.position, dtype=np.int64),
        )


def _joined(column: array[_T] | None, values: npt.NDArray[Any] | None) -> array[_T] | None:
    """Return `column` with `values` appended, or None (the column dropped) when either is."""
    if column is None or values is None:
        return None
    column.frombytes(values.tobytes())
    return column


def _appended(column: array[int], value: int | None) -> array[int] | None:
    """Return `column` with `value` appended, or None (the column dropped) for no value."""
    if value is None:
        return None
    column.append(value)
    return column


# -- the Open Bandit Dataset ---------------------------------------------------------------

_OBD_ITEMS = "item_context.csv"
_OBD_COLUMNS = ("item_id", "position", "click", "propensity_score")


def _obd_csv(path: Path) -> Path | None:
    """Return the campaign CSV of `path` (the file, or a campaign folder's), else None."""
    if path.is_file():
        suffix_ok = path.name.lower().endswith(".csv") and path.name != _OBD_ITEMS
        return path if suffix_ok and (path.parent / _OBD_ITEMS).is_file() else None
    candidate = path / f"{path.name}.csv"
    return candidate if candidate.is_file() and (path / _OBD_ITEMS).is_file() else None


def _obd_files(path_or_paths: PathArg | Sequence[PathArg]) -> list[Path]:
    """Return the campaign CSVs given: files, campaign folders, or folders of them (by path)."""
    if isinstance(path_or_paths, str | os.PathLike):
        given = [Path(path_or_paths)]
    else:
        given = [Path(p) for p in path_or_paths]
    files: list[Path] = []
    for path in given:
        found = _obd_csv(path)
        if found is not None:
            files.append(found)
        elif path.is_dir():
            files.extend(
                csv
                for items in sorted(path.rglob(_OBD_ITEMS))
                if (csv := _obd_csv(items.parent)) is not None
            )
        else:
            msg = f"{path}: not an Open Bandit Dataset CSV (no {_OBD_ITEMS} beside it)"
            raise LogFormatError(msg)
    return files


def _is_obd(path_or_paths: PathArg | Sequence[PathArg]) -> bool:
    """Whether the paths are the Open Bandit Dataset's layout (and nothing else)."""
    try:
        return bool(_obd_files(path_or_paths))
    except LogFormatError:
        return False


def _read_obd(
    path_or_paths: PathArg | Sequence[PathArg],
    *,
    on_error: OnError,
    features: bool,
    progress: Callable[[int], None] | None,
    slot: str | int | None,
) -> ReadResult:
    """Read Open Bandit Dataset CSVs (see the module docstring) with pyarrow's CSV reader."""
    if slot is not None:
        msg = "`slot` reads multi-slot DSJSON; Open Bandit Dataset rows carry their position"
        raise ConfigurationError(msg)
    files = _obd_files(path_or_paths)
    if not files:
        msg = f"{path_or_paths}: no Open Bandit Dataset CSV (a campaign CSV and {_OBD_ITEMS})"
        raise LogFormatError(msg)
    parts: list[LoggedDecisions] = []
    skipped: Counter[str] = Counter()
    messages: list[str] = []
    rows_read = 0
    for path in files:
        logs, read, dropped = _read_obd_file(path, on_error=on_error, features=features)
        rows_read += read
        for reason, message in dropped:
            skipped[reason] += 1
            if len(messages) < _KEEP_MESSAGES:
                messages.append(message)
        parts.append(logs)
        if progress is not None:
            progress(rows_read)
    return ReadResult(
        logs=_concatenate(parts),
        rows_read=rows_read,
        skipped=dict(skipped),
        files=tuple(files),
        messages=tuple(messages),
    )


def _read_obd_file(
    path: Path, *, on_error: OnError, features: bool
) -> tuple[LoggedDecisions, int, list[tuple[str, str]]]:
    """Read one campaign CSV: its decisions, its rows, and each row left out (reason, message)."""
    table, items, user = _obd_tables(path, features)
    item_ids = [str(item) for item in items.column("item_id").to_pylist()]
    index = {item: j for j, item in enumerate(item_ids)}
    if len(index) != len(item_ids) or not item_ids:
        msg = f"{path.parent / _OBD_ITEMS}: `item_id` must list distinct items, at least one"
        raise LogFormatError(msg)
    n = table.num_rows
    chosen = _obd_items(table.column("item_id"), item_ids)
    position = _obd_numbers(table, "position") - 1.0
    reward = _obd_numbers(table, "click")
    propensity = _obd_numbers(table, "propensity_score")
    checks = (
        ("bad_chosen", chosen < 0, "`item_id` must be an item of item_context.csv"),
        (
            "bad_position",
            ~(np.isfinite(position) & (position >= 0) & (position == np.round(position))),
            "`position` must be an integer >= 1",
        ),
        ("bad_reward", ~np.isfinite(reward), "`click` must be a finite number"),
        (
            "bad_probability",
            ~((propensity > 0.0) & (propensity <= 1.0)),
            "`propensity_score` must be in (0, 1]",
        ),
    )
    keep = np.ones(n, dtype=bool)
    dropped: list[tuple[str, str]] = []
    for reason, bad, rule in checks:
        for row in np.flatnonzero(bad & keep):
            message = f"{path}:{row + 2}: {rule}"  # line 1 is the header
            if on_error == "stop":
                raise LogFormatError(message, reason=reason)
            dropped.append((reason, message))
        keep &= ~bad
    rows = np.flatnonzero(keep)
    contexts = action_features = None
    if features:
        contexts, per_item = _obd_features(table, items, user, rows)
        action_features = [per_item] * rows.size
    logs = LoggedDecisions(
        n_actions=np.full(rows.size, len(item_ids), dtype=np.int64),
        chosen=chosen[rows],
        propensity=propensity[rows],
        reward=reward[rows],
        action_ids=[item_ids] * rows.size,
        contexts=contexts,
        action_features=action_features,
        position=position[rows].astype(np.int64),
    )
    return logs, n, dropped


def _obd_tables(path: Path, features: bool) -> tuple[Any, Any, list[str]]:
    """Return a campaign CSV's table, its items' table, and the user feature columns read."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        with path.open(newline="", encoding="utf-8") as file:
            header = next(csv.reader(file), [])
        user = [name for name in header if name.startswith("user_feature_")] if features else []
        # Only the columns read (not the user-item affinities); user features as text.
        wanted = [name for name in header if name in _OBD_COLUMNS] + user
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types=dict.fromkeys(user, pa.string())
            ),
        )
        items = pacsv.read_csv(
            path.parent / _OBD_ITEMS,
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, csv.Error) as exc:
        msg = f"{path}: not a readable Open Bandit Dataset CSV: {exc}"
        raise LogFormatError(msg) from None
    for source, columns, needed in (
        (path, table.column_names, _OBD_COLUMNS),
        (path.parent / _OBD_ITEMS, items.column_names, ("item_id",)),
    ):
        missing = [column for column in needed if column not in columns]
        if missing:
            msg = f"{source}: the Open Bandit Dataset column `{missing[0]}` is missing"
            raise LogFormatError(msg)
    return table, items, user


def _obd_features(
    table: Any, items: Any, user: list[str], rows: npt.NDArray[np.int64]
) -> tuple[list[Features], list[Features]]:
    """Return the kept rows' contexts (equal ones share a dict) and each item's features."""
    values = [table.column(name).to_pylist() for name in user]
    shared: dict[tuple[Any, ...], Features] = {}
    contexts = []
    for i in rows:
        key = tuple(column[i] for column in values)
        context = shared.get(key)
        if context is None:
            context = {"user": {name: _obd_value(v) for name, v in zip(user, key, strict=True)}}
            shared[key] = context
        contexts.append(context)
    item_columns = [name for name in items.column_names if name.startswith("item_feature_")]
    item_values = [items.column(name).to_pylist() for name in item_columns]
    per_item: list[Features] = [
        {
            "item": {
                name: _obd_value(column[j])
                for name, column in zip(item_columns, item_values, strict=True)
            }
        }
        for j in range(items.num_rows)
    ]
    return contexts, per_item


def _obd_items(column: Any, item_ids: list[str]) -> npt.NDArray[np.int64]:
    """Return each cell's index in `item_ids` (compared as text), -1 for an unknown item."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(column.cast(pa.string()), value_set=pa.array(item_ids))
    return np.asarray(found.fill_null(-1).to_numpy(), dtype=np.int64)


def _obd_numbers(table: Any, name: str) -> npt.NDArray[np.float64]:
    """Return a column as floats, NaN where a cell is empty or not a number."""
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return np.asarray(column.cast(pa.float64()).fill_null(math.nan).to_numpy(), np.float64)
    return np.array([_float_or_nan(v) for v in column.to_pylist()], dtype=np.float64)


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _obd_value(value: Any) -> str | float:
    """Return a CSV cell as a feature value: a finite number stays one, the rest is text."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return "" if value is None else str(value)


def _concatenate(parts: Sequence[LoggedDecisions]) -> LoggedDecisions:
    """Join logs read file by file into one (every part holds the same columns)."""
    if len(parts) == 1:
        return parts[0]

    def joined(name: str) -> list[Any] | None:
        columns = [getattr(part, name) for part in parts]
        return None if any(c is None for c in columns) else [x for c in columns for x in c]

    def stacked(name: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(part, name) for part in parts])

    return LoggedDecisions(
        n_actions=stacked("n_actions"),
        chosen=stacked("chosen"),
        propensity=stacked("propensity"),
        reward=stacked("reward"),
        action_ids=joined("action_ids"),
        contexts=joined("contexts"),
        action_features=joined("action_features"),
        position=stacked("position"),
    )


# -- exports --------------------------------------------------------------------------------


def _row_actions(logs: LoggedDecisions, i: int) -> list[Action]:
    n = int(logs.n_actions[i])
    ids = logs.action_ids[i] if logs.action_ids is not None else [str(j) for j in range(n)]
    features = logs.action_features[i] if logs.action_features is not None else [{}] * n
    return [Action(action_id, features[j]) for j, action_id in enumerate(ids)]


def _row_context(logs: LoggedDecisions, i: int) -> Mapping[str, Mapping[str, Any]]:
    return logs.contexts[i] if logs.contexts is not None else {}


def to_vw_text(logs: LoggedDecisions, path: PathArg) -> int:
    """Write VW ``--cb_explore_adf`` multi-line text examples, one per decision.

    Lines are written by :func:`policies.vwtext.to_vw_lines`, so the features are the ones
    the live :class:`~policies.vw.VWPolicy` learns from; the chosen action's line
    carries the label ``0:<cost>:<probability>`` (``cost = -reward``), and a blank line
    ends each example. Rows without action ids use their offer index as the id.

    Returns
    -------
    int
        The number of examples written.

    Examples
    --------
    >>> import tempfile
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2]), chosen=np.array([1]), propensity=np.array([0.25]),
    ...     reward=np.array([1.0]), action_ids=[["x", "y"]],
    ...     contexts=[{"user": {"tier": "gold"}}], action_features=[[{}, {"item": {"size": 2}}]],
    ... )
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "log.vw"
    ...     to_vw_text(logs, path)
    ...     print(path.read_text(), end="")
    1
    shared |cuser tier=gold
    |id id=x
    0:-1.0:0.25 |aitem size:2 |id id=y
    <BLANKLINE>
    """
    with Path(path).open("w", encoding="utf-8") as file:
        for i in range(logs.n):
            label = (
                int(logs.chosen[i]),
                reward_to_cost(float(logs.reward[i])),
                float(logs.propensity[i]),
            )
            lines = to_vw_lines(_row_context(logs, i), _row_actions(logs, i), label)
            file.write("\n".join(lines))
            file.write("\n\n")
    return logs.n


def to_dsjson(logs: LoggedDecisions, path: PathArg, *, timestamp: datetime = _EPOCH) -> int:
    """Write streambandit's DSJSON (:func:`policies.dsjson.dsjson_record`), one row a line.

    VW reads the file with ``--cb_explore_adf --dsjson`` and :func:`read_log` reads it
    back. The log must hold every row's full distribution. Rows without an event id get
    ``row-<index>``; :class:`LoggedDecisions` keeps no times, so every ``Timestamp`` is
    `timestamp` (the Unix epoch unless given).

    Returns
    -------
    int
        The number of lines written.

    Raises
    ------
    LogFormatError
        If the log holds only the chosen actions' probabilities.
    """
    if logs.probabilities is None:
        msg = "to_dsjson needs every row's full distribution: `probabilities` is None"
        raise LogFormatError(msg)
    with Path(path).open("wb") as file:
        for i in range(logs.n):
            n = int(logs.n_actions[i])
            record = dsjson_record(
                _row_context(logs, i),
                _row_actions(logs, i),
                int(logs.chosen[i]),
                [float(p) for p in logs.probabilities[i, :n]],
                float(logs.reward[i]),
                event_id=logs.event_ids[i] if logs.event_ids is not None else f"row-{i}",
                timestamp=timestamp,
            )
            file.write(dsjson_line(record))
    return logs.n


def _plain_record(logs: LoggedDecisions, i: int) -> dict[str, Any]:
    n = int(logs.n_actions[i])
    ids = logs.action_ids[i] if logs.action_ids is not None else [str(j) for j in range(n)]
    actions: list[Any]
    if logs.action_features is None:
        actions = list(ids)
    else:
        actions = [
            {"id": action_id, "features": logs.action_features[i][j]}
            for j, action_id in enumerate(ids)
        ]
    return {
        "actions": actions,
        "chosen": int(logs.chosen[i]),
        "probability": float(logs.propensity[i]),
        "probabilities": (
            None if logs.probabilities is None else [float(p) for p in logs.probabilities[i, :n]]
        ),
        "reward": float(logs.reward[i]),
        "context": None if logs.contexts is None else logs.contexts[i],
        "event_id": None if logs.event_ids is None else logs.event_ids[i],
        "position": None if logs.position is None else int(logs.position[i]),
    }


def to_jsonl(logs: LoggedDecisions, path: PathArg) -> int:
    """Write the documented JSON-lines schema, one row a line; :func:`read_log` reads it.

    Rows without action ids use their offer index as the id; missing columns are
    written as ``null``.

    Returns
    -------
    int
        The number of lines written.
    """
    with Path(path).open("wb") as file:
        for i in range(logs.n):
            file.write(orjson.dumps(_plain_record(logs, i)))
            file.write(b"\n")
    return logs.n


def to_parquet(logs: LoggedDecisions, path: PathArg, *, row_group_size: int = ROW_GROUP) -> int:
    """Write the JSON-lines columns to Parquet; :func:`read_log` reads it back.

    ``actions`` is a list of ``{id, features}`` structs, and ``context`` and each
    action's ``features`` are JSON text (namespaces differ from row to row, so they
    have no one Parquet type).

    Returns
    -------
    int
        The number of rows written.
    """
    import pyarrow.parquet as pq

    event_ids: list[str | None] = (
        [None] * logs.n if logs.event_ids is None else list(logs.event_ids)
    )
    table = to_table(logs, event_ids, offer_index_ids=True)
    # (without Arrow's schema: readers see plain strings, which Parquet dictionary-encodes)
    pq.write_table(table, str(path), row_group_size=row_group_size, store_schema=False)
    return logs.n


def to_obp(logs: LoggedDecisions, *, hash_dim: int | None = None) -> dict[str, Any]:
    """Return Open Bandit Pipeline's ``bandit_feedback`` dict for `logs`.

    OBP numbers actions globally, so each distinct action id gets an index, in the order
    the ids are first offered (``action_ids`` lists them; without ids, the offer index is
    the action). Keys: ``n_rounds``, ``n_actions``, ``action``, ``position`` (each
    row's 0-based position; None when the log has none), ``reward``, ``pscore`` (the
    chosen action's logged probability), ``context``
    (one row per decision, or None without contexts), ``pi_b`` (``(n_rounds, n_actions,
    1)``, the logged distribution, 0 for actions not offered; None without it),
    ``action_context`` (one row per action, from the features it was first offered
    with; only when actions have features) and ``action_ids``.

    Context and action-context columns are the features flattened: a number is the
    column ``namespace.name``, a string the indicator column ``namespace.name=value``,
    columns in sorted order; or, with `hash_dim`, the flattened names hashed (CRC-32)
    into that many columns.

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 2]), chosen=np.array([1, 0]),
    ...     propensity=np.array([0.25, 0.5]), reward=np.array([1.0, 0.0]),
    ...     probabilities=np.array([[0.75, 0.25], [0.5, 0.5]]),
    ...     action_ids=[["x", "y"], ["z", "x"]],
    ...     contexts=[{"u": {"age": 3}}, {"u": {"tier": "gold"}}],
    ... )
    >>> feedback = to_obp(logs)
    >>> feedback["n_actions"], feedback["action"], feedback["action_ids"]
    (3, array([1, 2]), ['x', 'y', 'z'])
    >>> feedback["context"]
    array([[3., 0.],
           [0., 1.]])
    >>> feedback["pi_b"][:, :, 0]
    array([[0.75, 0.25, 0.  ],
           [0.5 , 0.  , 0.5 ]])
    """
    if hash_dim is not None and (isinstance(hash_dim, bool) or hash_dim < 1):
        msg = f"`hash_dim` must be an integer >= 1 or None, got {hash_dim!r}"
        raise ConfigurationError(msg)
    n = logs.n
    rows = np.arange(n)
    columns: npt.NDArray[np.int64]  # (n, K): each offered action's global index
    if logs.action_ids is not None:
        index: dict[str, int] = {}
        columns = np.zeros((n, logs.width), dtype=np.int64)
        for i, ids in enumerate(logs.action_ids):
            for j, action_id in enumerate(ids):
                columns[i, j] = index.setdefault(action_id, len(index))
        action_ids = list(index)
    else:
        columns = np.broadcast_to(np.arange(logs.width), (n, logs.width)).copy()
        action_ids = [str(j) for j in range(logs.width)]
    n_total = len(action_ids)
    feedback: dict[str, Any] = {
        "n_rounds": n,
        "n_actions": n_total,
        "action": columns[rows, logs.chosen],
        "position": None if logs.position is None else logs.position.copy(),
        "reward": logs.reward.copy(),
        "pscore": logs.propensity.copy(),
        "context": None if logs.contexts is None else _feature_matrix(logs.contexts, hash_dim),
        "pi_b": None,
        "action_ids": action_ids,
    }
    if logs.probabilities is not None:
        pi_b = np.zeros((n, n_total, 1))
        mask = logs.mask()
        pi_b[np.nonzero(mask)[0], columns[mask], 0] = logs.probabilities[mask]
        feedback["pi_b"] = pi_b
    if logs.action_features is not None and logs.action_ids is not None:
        first: dict[str, Mapping[str, Mapping[str, Any]]] = {}
        for ids, per_action in zip(logs.action_ids, logs.action_features, strict=True):
            for action_id, features in zip(ids, per_action, strict=True):
                first.setdefault(action_id, features)
        if any(first.values()):
            feedback["action_context"] = _feature_matrix(
                [first[action_id] for action_id in action_ids], hash_dim
            )
    return feedback


def _flatten(features: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for namespace, values in features.items():
        for name, value in values.items():
            if isinstance(value, str):
                flat[f"{namespace}.{name}={value}"] = 1.0
            else:
                flat[f"{namespace}.{name}"] = float(value)
    return flat


def _feature_matrix(
    rows: Sequence[Mapping[str, Mapping[str, Any]]], hash_dim: int | None
) -> npt.NDArray[np.float64]:
    flat = [_flatten(features) for features in rows]
    if hash_dim is None:
        names = sorted({name for row in flat for name in row})
        position = {name: j for j, name in enumerate(names)}
        matrix = np.zeros((len(flat), len(names)))
        for i, row in enumerate(flat):
            for name, value in row.items():
                matrix[i, position[name]] = value
        return matrix
    matrix = np.zeros((len(flat), hash_dim))
    for i, row in enumerate(flat):
        for name, value in row.items():
            matrix[i, zlib.crc32(name.encode()) % hash_dim] += value
    return matrix
