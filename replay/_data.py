"""The one validated in-memory form of logged decisions, and target probabilities.

Rows may offer different numbers of actions: arrays are padded to the widest row
(``K``) and ``n_actions`` says how many of each row's columns are real. Everything is
checked once, in the constructors, so estimators can trust what they get.
"""

from __future__ import annotations

import array as typed
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, overload

import numpy as np
import numpy.typing as npt

from policies.errors import LogFormatError

__all__ = [
    "FeatureRows",
    "FeatureRowsBuilder",
    "FloatArray",
    "IntArray",
    "LoggedDecisions",
    "TargetProbabilities",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FeatureKey: TypeAlias = tuple[str, str, Any]
"""A feature's ``(namespace, name, fixed)``: `fixed` is its string value, the type its
number is read back as (``float``, ``int``, ``bool``), or any other value it holds."""

_EXACT_INT = 2**53  # the largest magnitude a float64 holds every integer up to


class FeatureRows(Sequence[Mapping[str, Mapping[str, Any]]]):
    """Many rows' namespaced features in one compact form, read back as mappings.

    Each distinct *key* ``(namespace, name, fixed)`` is kept once, and a row is a run
    of entries ``(key id, number)`` (compressed sparse rows): a string feature is a key
    of its own (its value is the key's), a number is the entry's. A row of a few
    features takes some tens of bytes instead of the kilobyte its dicts would;
    :func:`replay.read_log` builds one directly, and the reward models read the arrays.
    Indexing builds the row's dict anew each time (equal to the one stored).

    Parameters
    ----------
    keys
        The distinct keys, by id.
    ptr
        ``(n + 1,)`` row ``i``'s entries are ``ptr[i]:ptr[i + 1]``.
    key
        ``(entries,)`` each entry's key id.
    value
        ``(entries,)`` each entry's number (1.0 for a string feature).

    Examples
    --------
    >>> rows = FeatureRows.from_mappings(
    ...     [{"user": {"tier": "gold", "age": 31}}, {}, {"user": {"tier": "gold"}}])
    >>> len(rows), rows[0], rows[2], len(rows.keys)
    (3, {'user': {'tier': 'gold', 'age': 31}}, {'user': {'tier': 'gold'}}, 2)
    >>> rows[1:] == [{}, {"user": {"tier": "gold"}}]
    True
    """

    __slots__ = ("key", "keys", "ptr", "value")

    def __init__(
        self,
        keys: Sequence[FeatureKey],
        ptr: npt.NDArray[np.int64],
        key: npt.NDArray[np.int32],
        value: FloatArray,
    ) -> None:
        self.keys = list(keys)
        self.ptr = np.asarray(ptr, dtype=np.int64)
        self.key = np.asarray(key, dtype=np.int32)
        self.value = np.asarray(value, dtype=np.float64)

    @classmethod
    def from_mappings(cls, rows: Iterable[Mapping[str, Mapping[str, Any]]]) -> FeatureRows:
        """Return `rows` (``{namespace: {name: value}}`` each) in this form."""
        builder = FeatureRowsBuilder()
        for row in rows:
            builder.append(row)
        return builder.build()

    def __len__(self) -> int:
        return int(self.ptr.shape[0]) - 1

    @overload
    def __getitem__(self, index: int) -> dict[str, dict[str, Any]]: ...

    @overload
    def __getitem__(self, index: slice) -> FeatureRows: ...

    def __getitem__(self, index: int | slice) -> dict[str, dict[str, Any]] | FeatureRows:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            msg = f"row {index} out of range for {n} rows"
            raise IndexError(msg)
        start, stop = int(self.ptr[index]), int(self.ptr[index + 1])
        row: dict[str, dict[str, Any]] = {}
        keys = self.keys
        for k, number in zip(
            self.key[start:stop].tolist(), self.value[start:stop].tolist(), strict=True
        ):
            namespace, name, fixed = keys[k]
            values = row.get(namespace)
            if values is None:
                values = row[namespace] = {}
            values[name] = fixed(number) if type(fixed) is type else fixed
        return row

    def __iter__(self) -> Iterator[dict[str, dict[str, Any]]]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence, compared by value

    def __repr__(self) -> str:
        return f"FeatureRows({len(self)} rows, {len(self.keys)} keys)"

    def take(self, rows: npt.NDArray[np.int64]) -> FeatureRows:
        """Return the rows at `rows` (indices), sharing the keys."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, sizes = self.ptr[rows], np.diff(self.ptr)[rows]
        ptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=ptr[1:])
        entry = np.arange(int(ptr[-1])) + np.repeat(starts - ptr[:-1], sizes)
        return FeatureRows(self.keys, ptr, self.key[entry], self.value[entry])

    @classmethod
    def concat(cls, parts: Iterable[FeatureRows]) -> FeatureRows:
        """Return the rows of `parts`, one after the other, with one table of keys."""
        builder = FeatureRowsBuilder()
        for part in parts:
            builder.extend(part)
        return builder.build()


class FeatureRowsBuilder:
    """Gathers rows of namespaced features into a :class:`FeatureRows`, one row at a time."""

    def __init__(self) -> None:
        self.keys: list[FeatureKey] = []
        self._ids: dict[FeatureKey, int] = {}
        self._ptr = typed.array("q", [0])
        self._key = typed.array("i")
        self._value = typed.array("d")

    def key_id(self, key: FeatureKey) -> int:
        """Return the id of `key`, giving it the next one if new."""
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return found

    def append(self, row: Mapping[str, Mapping[str, Any]]) -> None:
        """Add one row ``{namespace: {name: value}}``."""
        ids, new, keys, values = self._ids.get, self.key_id, self._key, self._value
        for namespace, features in row.items():
            for name, feature in features.items():
                kind = type(feature)
                if kind is float or kind is bool or (kind is int and abs(feature) <= _EXACT_INT):
                    key = (namespace, name, kind)
                    number = float(feature)
                else:  # a string, or a value the float array cannot hold exactly
                    key = (namespace, name, feature)
                    number = 1.0
                try:
                    found = ids(key)
                except TypeError:  # unhashable: a list or a mapping is no feature value
                    msg = (
                        f"feature `{namespace}.{name}` must be a string or a number, "
                        f"got {feature!r:.80}"
                    )
                    raise LogFormatError(msg) from None
                keys.append(new(key) if found is None else found)
                values.append(number)
        self._ptr.append(len(keys))

    def extend(self, rows: FeatureRows) -> None:
        """Add every row of `rows`."""
        ids = np.array([self.key_id(key) for key in rows.keys], dtype=np.int32)
        offset = len(self._key)
        self._ptr.frombytes((rows.ptr[1:] - rows.ptr[0] + offset).tobytes())
        self._key.frombytes(ids[rows.key[rows.ptr[0] : rows.ptr[-1]]].tobytes())
        self._value.frombytes(rows.value[rows.ptr[0] : rows.ptr[-1]].tobytes())

    def build(self) -> FeatureRows:
        """Return the rows added so far."""
        return FeatureRows(
            self.keys,
            np.frombuffer(self._ptr, dtype=np.int64).copy(),
            np.frombuffer(self._key, dtype=np.int32).copy(),
            np.frombuffer(self._value, dtype=np.float64).copy(),
        )


@dataclass(frozen=True, eq=False)
class LoggedDecisions:
    """Logged decisions: what was offered, chosen with which probability, and earned.

    Parameters
    ----------
    n_actions
        ``(n,)`` how many actions each row offered, >= 1.
    chosen
        ``(n,)`` 0-based index of the logged choice, ``0 <= chosen < n_actions``.
    propensity
        ``(n,)`` the logged probability of the chosen action, in (0, 1].
    reward
        ``(n,)`` the observed reward, finite.
    probabilities
        ``(n, K)`` the logged probability of every offered action (0 in padding), or
        None when the log holds only the chosen action's. Each row sums to 1 within
        1e-6 over its real columns and agrees with `propensity` at `chosen`.
    action_ids
        Per row, the offered action ids in offer order (optional).
    contexts, action_features
        Per row, the shared features and each action's features, by namespace
        (optional; needed by reward models and by policies replayed on the log).
        `contexts` may be any sequence of mappings; :func:`replay.read_log` gives a
        :class:`FeatureRows`, a compact form read back as mappings.
    event_ids
        Per row, the event id (optional).
    position
        ``(n,)`` 0-based position (slot) each row's action was shown in, >= 0, or None
        when the log has no notion of position. Rows of one page or slate share a
        context and differ in position (:mod:`replay.slates`).

    Raises
    ------
    LogFormatError
        Naming the first bad row, the field and the rule.

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 3]), chosen=np.array([1, 0]),
    ...     propensity=np.array([0.5, 0.2]), reward=np.array([1.0, 0.0]),
    ... )
    >>> logs.n, logs.width
    (2, 3)
    >>> LoggedDecisions(n_actions=np.array([2]), chosen=np.array([2]),
    ...                 propensity=np.array([0.5]), reward=np.array([1.0]))
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: row 0: `chosen` must be in [0, n_actions=2), got 2
    """

    n_actions: IntArray
    chosen: IntArray
    propensity: FloatArray
    reward: FloatArray
    probabilities: FloatArray | None = None
    action_ids: Sequence[Sequence[str]] | None = None
    contexts: Sequence[Mapping[str, Mapping[str, Any]]] | None = None
    action_features: Sequence[Sequence[Mapping[str, Mapping[str, Any]]]] | None = None
    event_ids: Sequence[str] | None = None
    position: IntArray | None = None
    width: int = field(init=False)

    def __post_init__(self) -> None:
        n_actions = np.asarray(self.n_actions, dtype=np.int64)
        chosen = np.asarray(self.chosen, dtype=np.int64)
        propensity = np.asarray(self.propensity, dtype=np.float64)
        reward = np.asarray(self.reward, dtype=np.float64)
        n = n_actions.shape[0]
        for name, array in (("chosen", chosen), ("propensity", propensity), ("reward", reward)):
            if array.shape != (n,):
                msg = f"`{name}` must have shape ({n},) like `n_actions`, got {array.shape}"
                raise LogFormatError(msg)
        _first_bad(n_actions < 1, "`n_actions` must be >= 1", n_actions)
        _first_bad(
            (chosen < 0) | (chosen >= n_actions),
            "`chosen` must be in [0, n_actions={extra}), got {value}",
            chosen,
            extra=n_actions,
        )
        _first_bad(
            ~((propensity > 0.0) & (propensity <= 1.0)),
            "`propensity` must be in (0, 1], got {value}",
            propensity,
        )
        _first_bad(~np.isfinite(reward), "`reward` must be finite, got {value}", reward)
        width = int(n_actions.max()) if n else 0
        object.__setattr__(self, "n_actions", n_actions)
        object.__setattr__(self, "chosen", chosen)
        object.__setattr__(self, "propensity", propensity)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "width", width)
        if self.probabilities is not None:
            probabilities = np.asarray(self.probabilities, dtype=np.float64)
            if probabilities.shape != (n, width):
                msg = f"`probabilities` must have shape ({n}, {width}), got {probabilities.shape}"
                raise LogFormatError(msg)
            real = np.arange(width)[None, :] < n_actions[:, None]
            bad = real & ~((probabilities > 0.0) & (probabilities <= 1.0))
            _first_bad(
                bad.any(axis=1),
                "`probabilities` must be in (0, 1] for every offered action",
                n_actions,
            )
            _first_bad(
                (~real & (probabilities != 0.0)).any(axis=1),
                "`probabilities` must be 0 in padding",
                n_actions,
            )
            sums = probabilities.sum(axis=1)
            _first_bad(
                np.abs(sums - 1.0) > 1e-6, "`probabilities` must sum to 1, got {value}", sums
            )
            at_chosen = probabilities[np.arange(n), chosen]
            _first_bad(
                np.abs(at_chosen - propensity) > 1e-9,
                "`propensity` must equal `probabilities` at `chosen`, got {value}",
                propensity,
            )
            object.__setattr__(self, "probabilities", probabilities)
        for name in ("action_ids", "contexts", "action_features", "event_ids"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                msg = f"`{name}` must hold one entry per row ({n}), got {len(column)}"
                raise LogFormatError(msg)
        if self.position is not None:
            position = np.asarray(self.position)
            if position.shape != (n,) or (n and position.dtype.kind not in "iu"):
                msg = f"`position` must be ({n},) integers, got {position.dtype} {position.shape}"
                raise LogFormatError(msg)
            position = position.astype(np.int64)
            _first_bad(position < 0, "`position` must be >= 0, got {value}", position)
            object.__setattr__(self, "position", position)
        if self.action_ids is not None:
            for i, ids in enumerate(self.action_ids):
                if len(ids) != n_actions[i]:
                    msg = f"row {i}: `action_ids` must list {n_actions[i]} actions, got {len(ids)}"
                    raise LogFormatError(msg)

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.n_actions.shape[0])

    def mask(self) -> npt.NDArray[np.bool_]:
        """``(n, K)`` True where a column is a real offered action."""
        return np.arange(self.width)[None, :] < self.n_actions[:, None]

    def take(self, rows: npt.NDArray[np.int64] | slice) -> LoggedDecisions:
        """Return the decisions at `rows` (for bootstrap resamples and cross-fitting)."""
        index = np.arange(self.n)[rows]

        def pick(column: Sequence[Any] | None) -> Sequence[Any] | None:
            if isinstance(column, FeatureRows):
                return column.take(index)
            return None if column is None else [column[i] for i in index]

        n_actions = self.n_actions[index]
        width = int(n_actions.max()) if len(index) else 0
        return LoggedDecisions(
            n_actions=n_actions,
            chosen=self.chosen[index],
            propensity=self.propensity[index],
            reward=self.reward[index],
            probabilities=None if self.probabilities is None else self.probabilities[index, :width],
            action_ids=pick(self.action_ids),
            contexts=pick(self.contexts),
            action_features=pick(self.action_features),
            event_ids=pick(self.event_ids),
            position=None if self.position is None else self.position[index],
        )


@dataclass(frozen=True, eq=False)
class TargetProbabilities:
    """A target policy's probability of every offered action, row by row.

    Parameters
    ----------
    logs
        The decisions these probabilities are for.
    probabilities
        ``(n, K)``, in [0, 1] on real columns (0 allowed: the target may never take an
        action), 0 in padding, each row summing to 1 within 1e-6.
    """

    logs: LoggedDecisions
    probabilities: FloatArray

    def __post_init__(self) -> None:
        probabilities = np.asarray(self.probabilities, dtype=np.float64)
        n, width = self.logs.n, self.logs.width
        if probabilities.shape != (n, width):
            msg = (
                f"target `probabilities` must have shape ({n}, {width}), got {probabilities.shape}"
            )
            raise LogFormatError(msg)
        real = self.logs.mask()
        bad = real & ~((probabilities >= 0.0) & (probabilities <= 1.0))
        _first_bad(bad.any(axis=1), "target probabilities must be in [0, 1]", self.logs.n_actions)
        _first_bad(
            (~real & (probabilities != 0.0)).any(axis=1),
            "target probabilities must be 0 in padding",
            self.logs.n_actions,
        )
        sums = probabilities.sum(axis=1)
        _first_bad(
            np.abs(sums - 1.0) > 1e-6, "target probabilities must sum to 1, got {value}", sums
        )
        object.__setattr__(self, "probabilities", probabilities)

    def at_chosen(self) -> FloatArray:
        """``(n,)`` the target's probability of each logged choice."""
        logs = self.logs
        return self.probabilities[np.arange(logs.n), logs.chosen]

    def weights(self) -> FloatArray:
        """``(n,)`` importance weights: target over logged probability of the choice."""
        return self.at_chosen() / self.logs.propensity


def _first_bad(
    bad: npt.NDArray[np.bool_] | np.bool_,
    rule: str,
    values: npt.NDArray[Any],
    *,
    extra: npt.NDArray[Any] | None = None,
) -> None:
    """Raise naming the first row where `bad` holds."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    value = values[row]
    shown = repr(value.item() if hasattr(value, "item") else value)
    message = rule.format(value=shown, extra=None if extra is None else extra[row].item())
    msg = f"row {row}: {message}"
    raise LogFormatError(msg)
