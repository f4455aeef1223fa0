"""The columnar (Parquet) form of a log, and the cache of each log file's read kept in it.

:func:`replay.to_parquet` writes a log with :func:`to_table`; :func:`replay.read_log`
keeps each file's read with :class:`Cache` (the same columns, the contexts as
:class:`~replay.FeatureRows` holds them) and reads it back with :func:`from_table`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import suppress
from itertools import chain
from pathlib import Path
from sys import intern
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson

from policies.errors import LogFormatError
from replay._data import FeatureRows, FeatureRowsBuilder, LoggedDecisions

__all__ = [
    "CACHE_KEY",
    "CACHE_SUFFIX",
    "ROW_GROUP",
    "Cache",
    "CachedFile",
    "from_table",
    "to_table",
]

_CACHE_VERSION = 3  # 3: the position column
"""Bump when what a read gives for the same file changes: older caches are then missed."""
_CACHE_FOLDER = ".streambandit-cache"
CACHE_SUFFIX = ".streambandit-cache.parquet"
CACHE_KEY = b"streambandit.cache"

CachedFile: TypeAlias = tuple[
    list[tuple[LoggedDecisions, list[str | None]]], int, Counter[str], list[str]
]


class Cache:
    """Each log file's read, kept as Parquet (:func:`replay.to_parquet`'s columns).

    A file's cache is named by a digest of its resolved path and the read's options,
    and holds in its metadata the file's size and modification time and
    :data:`_CACHE_VERSION`: it is used only when all of them still match. Pages carry
    checksums; a cache that cannot be read whole is ignored with a warning, and written
    again. What the file's rows were is read back exactly: the decisions kept (with
    rows left out as their own file had them: cross-file duplicates are told apart by
    :func:`replay.read_log` afterwards), the rows read, the rows skipped by reason and the
    first messages.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, options: Mapping[str, Any]) -> None:
        self.folder = None if folder is None else Path(folder)
        self.options = dict(options)

    def _file(self, path: Path) -> Path:
        key = orjson.dumps([str(path.resolve()), self.options], option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(key, digest_size=12).hexdigest()
        folder = path.parent / _CACHE_FOLDER if self.folder is None else self.folder
        return folder / f"{path.name[:40]}-{digest}{CACHE_SUFFIX}"

    @staticmethod
    def _stamp(path: Path) -> dict[str, int]:
        stat = path.stat()
        return {"version": _CACHE_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def load(self, path: Path, *, features: bool) -> CachedFile | None:
        """Return the file's cached read, or None when there is none that matches."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        cache = self._file(path)
        if not cache.is_file():
            return None
        try:
            with pq.ParquetFile(
                cache,
                read_dictionary=_DICTIONARY_COLUMNS,
                page_checksum_verification=True,
                pre_buffer=False,  # a row group's pages read as decoded, not all held at once
            ) as file:
                facts = orjson.loads((file.schema_arrow.metadata or {})[CACHE_KEY])
                if facts["stamp"] != self._stamp(path):
                    return None
                keys = [_key_from_fields(fields) for fields in facts["keys"]]
                parts = [  # a row group at a time: nested dictionaries read in one chunk
                    from_table(
                        file.read_row_group(group, use_threads=False), features=features, keys=keys
                    )
                    for group in range(file.num_row_groups)
                ]
            pa.default_memory_pool().release_unused()  # what reading the row groups held
        except Exception as exc:  # noqa: BLE001  # any failure: read the log instead
            warnings.warn(
                f"{cache}: the cache of {path} cannot be read ({type(exc).__name__}: "
                f"{str(exc)[:200]}); reading the log again and writing it anew",
                stacklevel=3,
            )
            return None
        skipped = Counter[str](facts["skipped"])
        return parts, facts["rows_read"], skipped, list(facts["messages"])

    @staticmethod
    def release() -> None:
        """Give back to the system the memory Arrow keeps for reuse, once a cached read is in."""
        import pyarrow as pa

        pa.default_memory_pool().release_unused()

    def store(  # noqa: PLR0917  # one file's read, as load returns it
        self,
        path: Path,
        logs: LoggedDecisions,
        event_ids: list[str | None],
        rows_read: int,
        skipped: Counter[str],
        messages: list[str],
    ) -> None:
        """Write the file's read to its cache (atomically); warn, and go on, if it cannot."""
        import pyarrow.parquet as pq

        cache = self._file(path)
        facts = {
            "stamp": self._stamp(path),
            "rows_read": rows_read,
            "skipped": dict(skipped),
            "messages": messages,
        }
        keys: list[list[Any]] = []
        partial = cache.with_name(f".{cache.name}.{os.getpid()}.partial")
        writer = None
        # A row group at a time, of a bounded number of actions: what writing holds at once.
        rows = max(1, _GROUP_ACTIONS // max(logs.width, 1))
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            for start in range(0, max(logs.n, 1), rows):
                stop = min(logs.n, start + rows)
                part = logs if (start, stop) == (0, logs.n) else logs.take(slice(start, stop))
                compact = keys if writer is None else []  # the parts share one table of keys
                table = to_table(part, event_ids[start:stop], compact=compact)
                if writer is None:
                    facts["keys"] = keys
                    schema = table.schema.with_metadata({CACHE_KEY: orjson.dumps(facts)})
                    # (the other columns are numbers and unique ids: no dictionary to find)
                    writer = pq.ParquetWriter(
                        partial,
                        schema,
                        write_page_checksum=True,
                        use_dictionary=_DICTIONARY_COLUMNS,
                    )
                writer.write_table(table)
            if writer is not None:
                writer.close()
                writer = None
            partial.replace(cache)
        except Exception as exc:  # noqa: BLE001  # a cache never fails the read
            if writer is not None:
                with suppress(Exception):
                    writer.close()
            with suppress(OSError):
                partial.unlink(missing_ok=True)
            warnings.warn(f"{cache}: cannot write the cache of {path}: {exc}", stacklevel=3)


_GROUP_ACTIONS = 2**19
"""Offered actions a row group of the cache holds at most (65,536 rows of 8 actions)."""
ROW_GROUP = 65_536
_DICTIONARY_COLUMNS = ["actions.list.element.id", "actions.list.element.features"]


def _distinct(values: list[Any]) -> tuple[npt.NDArray[np.int32], list[Any]]:
    """Each value's index among the distinct objects of `values` (by identity), and those.

    The reader shares one string per action id and one dict per action's features, so
    a log of a million rows has some hundreds of distinct objects to encode once.
    """
    import pyarrow as pa

    identity = np.fromiter(map(id, values), dtype=np.int64, count=len(values))
    encoded = pa.array(identity).dictionary_encode()  # a hash table, in C++
    index = encoded.indices.to_numpy().astype(np.int32, copy=False)
    first = np.empty(len(encoded.dictionary), dtype=np.int64)
    first[index[::-1]] = np.arange(index.size - 1, -1, -1)  # the last write is the first
    return index, [values[i] for i in first.tolist()]


def to_table(
    logs: LoggedDecisions,
    event_ids: list[str | None],
    *,
    offer_index_ids: bool = False,
    compact: list[list[Any]] | None = None,
) -> Any:
    """Return `logs` as an Arrow table of :func:`replay.to_parquet`'s columns, column by column.

    Without action ids, the ids are null (the cache keeps that) or, with
    `offer_index_ids`, each action's offer index. With `compact` (the cache), the
    contexts are written as they are held (:class:`~replay._data.FeatureRows`): the
    columns ``context_keys`` and ``context_values``, and the keys appended to `compact`
    (for the file's metadata); ``context`` is then null.
    """
    import pyarrow as pa

    n = logs.n
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(logs.n_actions, out=offsets[1:])
    size = int(offsets[-1])
    if logs.action_ids is not None:
        id_index, id_values = _distinct(list(chain.from_iterable(logs.action_ids)))
        ids = pa.DictionaryArray.from_arrays(pa.array(id_index), pa.array(id_values, pa.string()))
    elif offer_index_ids:
        index = np.arange(size) - np.repeat(offsets[:-1], logs.n_actions)
        ids = pa.DictionaryArray.from_arrays(
            pa.array(index.astype(np.int32)), pa.array([str(j) for j in range(logs.width)])
        )
    else:
        ids = pa.nulls(size, pa.string())
    if logs.action_features is not None:
        feature_index, feature_values = _distinct(list(chain.from_iterable(logs.action_features)))
        texts = pa.array([orjson.dumps(f).decode() for f in feature_values], pa.string())
        action_features = pa.DictionaryArray.from_arrays(pa.array(feature_index), texts)
    else:
        action_features = pa.nulls(size, pa.string())
    actions = pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays(
            [
                ids,
                action_features,
            ],
            names=["id", "features"],
        ),
    )
    if logs.probabilities is None:
        probabilities = pa.nulls(n, pa.list_(pa.float64()))
    else:
        probabilities = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(logs.probabilities[logs.mask()])
        )
    columns = {
        "actions": actions,
        "chosen": pa.array(logs.chosen),
        "probability": pa.array(logs.propensity),
        "probabilities": probabilities,
        "reward": pa.array(logs.reward),
        "context": pa.nulls(n, pa.string()),
        "event_id": pa.array(event_ids, pa.string()),
        "position": (pa.nulls(n, pa.int64()) if logs.position is None else pa.array(logs.position)),
    }
    if logs.contexts is not None and compact is not None:
        rows = logs.contexts
        if not isinstance(rows, FeatureRows):
            rows = FeatureRows.from_mappings(rows)
        compact.extend(_key_fields(key) for key in rows.keys)
        ptr = pa.array((rows.ptr - rows.ptr[0]).astype(np.int32))
        entries = slice(int(rows.ptr[0]), int(rows.ptr[-1]))
        columns["context_keys"] = pa.ListArray.from_arrays(ptr, pa.array(rows.key[entries]))
        columns["context_values"] = pa.ListArray.from_arrays(ptr, pa.array(rows.value[entries]))
    elif logs.contexts is not None:
        texts = [orjson.dumps(c).decode() for c in logs.contexts]
        columns["context"] = pa.array(texts, pa.string())
    return pa.table(columns)


_NUMBER_KINDS: dict[str, type] = {"float": float, "int": int, "bool": bool}


def _key_fields(key: tuple[str, str, Any]) -> list[Any]:
    """Return a FeatureRows key as JSON: ``[namespace, name, number type or "value", value]``."""
    namespace, name, fixed = key
    if type(fixed) is type:
        return [namespace, name, fixed.__name__, None]
    return [namespace, name, "value", fixed]


def _key_from_fields(fields: list[Any]) -> tuple[str, str, Any]:
    namespace, name, kind, value = fields
    return (namespace, name, _NUMBER_KINDS[kind] if kind != "value" else value)


def from_table(
    table: Any, *, features: bool, keys: list[tuple[str, str, Any]] | None = None
) -> tuple[LoggedDecisions, list[str | None]]:
    """Read back what :func:`to_table` wrote (the cache: a log already checked once).

    `keys` are the context keys of a compact table (from the file's metadata).
    """
    import pyarrow as pa

    actions = table.column("actions").combine_chunks()
    offsets = actions.offsets.to_numpy().astype(np.int64)
    n_actions = np.diff(offsets)
    n = n_actions.size
    start, stop = int(offsets[0]), int(offsets[-1])
    items = actions.values.slice(start, stop - start)

    def per_row(column: Any, decode: Callable[[str], Any]) -> list[list[Any]]:
        if not n:
            return []
        chunk = column if isinstance(column, pa.DictionaryArray) else column.dictionary_encode()
        values = np.empty(len(chunk.dictionary), dtype=object)
        values[:] = [decode(v) for v in chunk.dictionary.to_pylist()]
        flat = values[chunk.indices.to_numpy(zero_copy_only=False)]
        if (n_actions == n_actions[0]).all():
            return flat.reshape(n, int(n_actions[0])).tolist()  # type: ignore[no-any-return]
        return [row.tolist() for row in np.split(flat, np.cumsum(n_actions)[:-1])]

    ids = items.field("id")
    action_ids = None if ids.null_count else per_row(ids, intern)
    action_features = (
        per_row(items.field("features"), lambda text: {} if text is None else orjson.loads(text))
        if features
        else None
    )
    width = int(n_actions.max()) if n else 0
    probabilities = None
    column = table.column("probabilities").combine_chunks()
    if column.null_count == 0:
        probabilities = np.zeros((n, width))
        flat = column.values.to_numpy()[column.offsets[0].as_py() : column.offsets[-1].as_py()]
        probabilities[np.arange(width)[None, :] < n_actions[:, None]] = flat
    contexts = None
    if features and keys is not None and "context_keys" in table.column_names:
        entry_keys = table.column("context_keys").combine_chunks()
        entry_values = table.column("context_values").combine_chunks()
        ptr = entry_keys.offsets.to_numpy().astype(np.int64)
        entries = slice(int(ptr[0]), int(ptr[-1]))
        contexts = FeatureRows(
            keys,
            ptr - ptr[0],
            entry_keys.values.to_numpy()[entries],
            entry_values.values.to_numpy()[entries],
        )
        if contexts.key.size and not 0 <= contexts.key.min() <= contexts.key.max() < len(keys):
            msg = "`context_keys` must index the keys of the file's metadata"
            raise LogFormatError(msg)
    elif features:
        builder = FeatureRowsBuilder()
        for text in table.column("context").to_pylist():
            builder.append({} if text is None else orjson.loads(text))
        contexts = builder.build()
    event_ids: list[str | None] = table.column("event_id").to_pylist()
    position = None
    if "position" in table.column_names:
        column = table.column("position").combine_chunks()
        position = None if column.null_count else column.to_numpy()
    logs = LoggedDecisions(
        n_actions=n_actions,
        chosen=table.column("chosen").to_numpy(),
        propensity=table.column("probability").to_numpy(),
        reward=table.column("reward").to_numpy(),
        probabilities=probabilities,
        action_ids=action_ids,
        contexts=contexts,
        action_features=action_features,
        event_ids=None if None in event_ids else event_ids,  # type: ignore[arg-type]
        position=position,
    )
    return logs, event_ids
