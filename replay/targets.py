"""Target policies for off-policy evaluation, built row by row over a decision log.

A target is named by a spec:

===============================  ===========================================================
``fixed:ID[,ID...]``             all mass on the first listed id the row offers, else on the
                                 row's first offered action (needs action ids)
``uniform``                      every offered action equally likely
``logging``                      the logged probabilities (needs every action's)
``policy:SPEC``                  a registered policy (:func:`policies.make_policy` spec, e.g.
                                 ``policy:vw-squarecb:gamma_scale=20``), trained online along
                                 the log: counterfactual learning
``snapshot:PATH``                a saved policy (:meth:`policies.Policy.restore` of the file's
                                 bytes), evaluated as it is, without learning
``snapshot-learn:PATH``          the same, learning along the log as ``policy:`` does
``file:PATH[#ARRAY]``            every row's probabilities read from a file (below)
``vw-model:PATH``                a model file Vowpal Wabbit saved (``vw --cb_explore_adf
                                 ... -f PATH``), evaluated as it is: VW's pmf over each
                                 row's offered actions, from the options in its header
                                 (:func:`policies.vw.model_file_policy`)
``callable:MODULE:FUNCTION``     a Python function of the whole log returning every row's
                                 probabilities (below); ``MODULE`` is an importable module
                                 (``my_pkg.targets``) or a ``.py`` file's path
===============================  ===========================================================

The library also takes an ``(n, K)`` array or such a function directly
(:func:`target_spec`, :func:`build_target`, :func:`replay.pipeline.replay_logs`).

**Probabilities from outside** (``file:``, ``callable:`` and arrays) give, for every
logged row, the target's probability of each action the row offered, in the log's offer
order, as an ``(n, K)`` table: ``n`` the log's rows, ``K`` at least its widest row, 0 in
the columns past a row's offered actions. Each row must be finite, >= 0 and sum to 1
within 1e-6 (it is then scaled to sum to 1 exactly). Errors name the source, the row and
the rule (:class:`~policies.errors.LogFormatError`). Files are read by extension, at most
:data:`MAX_FILE_BYTES` each:

==============================  ============================================================
``.jsonl``, ``.ndjson``,        one JSON object a line: ``{"probabilities": [...]}``, one
``.json``                       number per offered action of that row (trailing zeros
                                allowed), with optionally ``"event_id"``
``.parquet``, ``.pq``           the same columns: ``probabilities`` (a list of numbers a
                                row), optionally ``event_id``
``.npy``                        one 2-D ``(n, K)`` array
``.npz``                        the ``(n, K)`` array named after ``#`` in the spec, else the
                                one named ``probabilities``, else the file's only array
==============================  ============================================================

When the log has event ids and every line of a JSON lines or Parquet file gives one,
rows are matched by event id (each event id once in the file; rows the log does not
have are ignored, as when the log's bad rows were skipped); otherwise the file's rows
are the log's, in order, and their count must be the log's.

A ``callable:`` function takes the :class:`~replay.LoggedDecisions` (its ``n_actions``,
``action_ids``, ``contexts``, ``action_features``, ``event_ids``) and returns the
``(n, K)`` table; ``K`` may be the log's ``width`` or more.

Counterfactual learning replays the log in order: for each row the policy's
:meth:`~policies.Policy.pmf` over the row's offered actions is the target distribution
of that row; then the policy learns from the logged outcome exactly as a live policy
fed that log would have, ``policy.learn(context, actions, chosen, reward, propensity)``
with the logged choice and its logged propensity. The estimate of such a target is the
value of the policy *while it learned* on this traffic (its online, progressive value),
not of the policy it ends as.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from policies import Action, Policy, make_policy
from policies.errors import ConfigurationError, LogFormatError, StreambanditError
from policies.vw import model_file_policy
from replay._data import FloatArray, LoggedDecisions, TargetProbabilities

__all__ = [
    "MAX_FILE_BYTES",
    "Target",
    "TargetFunction",
    "TargetLike",
    "TargetSpec",
    "build_target",
    "check_target",
    "parse_target",
    "target_spec",
]

Kind = Literal[
    "fixed", "uniform", "logging", "policy", "snapshot", "file", "vw-model", "callable", "array"
]

TargetFunction: TypeAlias = Callable[[LoggedDecisions], Any]
"""A function of the whole log returning its ``(n, K)`` target probabilities (array-like)."""

TargetLike: TypeAlias = "str | TargetSpec | TargetFunction | npt.ArrayLike"
"""What :func:`target_spec` takes: a spec, a parsed one, a function or an array."""

MAX_FILE_BYTES = 2**30
"""The largest file a ``file:`` or ``vw-model:`` target reads, in bytes (1 GiB)."""

_KINDS = (
    "fixed:ID[,ID...], uniform, logging, policy:SPEC, snapshot:PATH, snapshot-learn:PATH, "
    "file:PATH[#ARRAY], vw-model:PATH, callable:MODULE:FUNCTION"
)
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_NUMPY_SUFFIXES = (".npy", ".npz")
_TOLERANCE = 1e-6
# Below any probability that matters: VW's pmf is evaluated without the exploration floor
# a served policy adds (a floor must be > 0; mixing with this one changes nothing).
_NO_FLOOR = 1e-300


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A parsed target spec.

    Parameters
    ----------
    spec
        The text it was parsed from (the target's label).
    kind
        ``"fixed"``, ``"uniform"``, ``"logging"``, ``"policy"``, ``"snapshot"``,
        ``"file"``, ``"vw-model"``, ``"callable"``, or ``"array"`` (library only).
    argument
        The ids (``fixed``, comma separated), the policy spec (``policy``), the file
        path (``snapshot``, ``file``, ``vw-model``) or ``MODULE:FUNCTION``
        (``callable`` from text); empty otherwise.
    learn
        Whether the policy learns along the log (``policy`` always, ``snapshot`` when
        given as ``snapshot-learn``).
    value
        The function (``callable``) or the ``(n, K)`` probabilities (``array``) given
        as objects rather than text; None otherwise.

    Examples
    --------
    >>> TargetSpec("half", "array", value=[[0.5, 0.5]]).label
    'half'
    """

    spec: str
    kind: Kind
    argument: str = ""
    learn: bool = False
    value: object = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """The spec as given: the target's name in reports."""
        return self.spec


@dataclass(frozen=True, eq=False)
class Target:
    """A target policy's probabilities on a log, and what its learning did along it.

    Parameters
    ----------
    spec
        The spec the target was built from.
    probabilities
        The target's probability of every offered action, row by row.
    running_value
        For a policy target, ``(n,)`` the IPS estimate of its value over rows ``0..t``
        (``cumsum(w r) / (t + 1)``): its cumulative reward curve along the log. None for
        the other targets (fixed, uniform, logging, and probabilities from a file, a
        function or an array).
    matched_reward
        For a policy target, ``(n,)`` the logged reward where the policy's most probable
        action is the logged choice, NaN elsewhere. None otherwise.
    """

    spec: TargetSpec
    probabilities: TargetProbabilities
    running_value: FloatArray | None = None
    matched_reward: FloatArray | None = None

    @property
    def label(self) -> str:
        """The spec as given."""
        return self.spec.spec


def parse_target(spec: str) -> TargetSpec:
    """Parse a target spec (see the module docstring).

    Raises
    ------
    ConfigurationError
        Naming the spec and the kinds accepted.

    Examples
    --------
    >>> parse_target("fixed:item-3,item-1")
    TargetSpec(spec='fixed:item-3,item-1', kind='fixed', argument='item-3,item-1', learn=False)
    >>> parse_target("policy:vw-squarecb:gamma_scale=20").argument
    'vw-squarecb:gamma_scale=20'
    >>> parse_target("snapshot-learn:model.bin").learn
    True
    >>> parse_target("best")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: target 'best': must be one of fixed:ID[,ID...], ...
    """
    head, sep, rest = spec.strip().partition(":")
    rest = rest.strip()
    if head in ("uniform", "logging") and not sep:
        return TargetSpec(spec, head)  # type: ignore[arg-type]  # checked just above
    if head == "fixed" and rest and all(part.strip() for part in rest.split(",")):
        return TargetSpec(spec, "fixed", rest)
    if head == "policy" and rest:
        return TargetSpec(spec, "policy", rest, learn=True)
    if head in ("snapshot", "snapshot-learn") and rest:
        return TargetSpec(spec, "snapshot", rest, learn=head == "snapshot-learn")
    if head in ("file", "vw-model") and rest:
        return TargetSpec(spec, head, rest)  # type: ignore[arg-type]  # checked just above
    if head == "callable":
        module, _, function = rest.rpartition(":")
        if module.strip() and function.strip().isidentifier():
            return TargetSpec(spec, "callable", f"{module.strip()}:{function.strip()}")
        msg = f"target {spec!r}: must be callable:MODULE:FUNCTION, e.g. callable:my_targets:greedy"
        raise ConfigurationError(msg)
    msg = f"target {spec!r}: must be one of {_KINDS}"
    raise ConfigurationError(msg)


def target_spec(target: TargetLike, *, label: str | None = None) -> TargetSpec:
    """Return the spec of a target given as text, parsed, a function or an array.

    Parameters
    ----------
    target
        A spec (:func:`parse_target`), a :class:`TargetSpec` (returned as it is), a
        function of the log (:data:`TargetFunction`) or ``(n, K)`` probabilities.
    label
        The name of a function or array target in reports; default: the function's
        ``callable:MODULE:NAME``, the array's ``array:`` and a digest of its values.

    Raises
    ------
    ConfigurationError
        For a bad spec, or an array that is not numeric.

    Examples
    --------
    >>> target_spec("uniform").kind
    'uniform'
    >>> target_spec(np.array([[0.5, 0.5]]))
    TargetSpec(spec='array:9ae723c8', kind='array', argument='', learn=False)
    >>> target_spec(np.array([[0.5, 0.5]]), label="coin").label
    'coin'
    """
    if isinstance(target, str):
        return parse_target(target)
    if isinstance(target, TargetSpec):
        return target
    if callable(target):
        name = getattr(target, "__qualname__", type(target).__qualname__)
        module = getattr(target, "__module__", None) or "?"
        if "<" in name:  # a lambda or a local function: not unique by name
            name = f"{name}@{id(target):x}"
        return TargetSpec(label or f"callable:{module}:{name}", "callable", value=target)
    try:
        array = np.asarray(target, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"target {label or type(target).__name__!r}: not a spec, function or array: {exc}"
        raise ConfigurationError(msg) from None
    digest = hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:8]
    return TargetSpec(label or f"array:{digest}", "array", value=array)


def check_target(spec: TargetLike) -> TargetSpec:
    """Check what a target names before any log is read; return its spec, function imported.

    A ``callable:`` spec's function is imported (the returned spec holds it as its
    `value`), a ``file:`` or ``vw-model:`` file must be there, readable and within
    :data:`MAX_FILE_BYTES`, and a ``file:`` of a known format. What depends
    on the log (shapes, rows, probabilities) is checked by :func:`build_target`.

    Raises
    ------
    ConfigurationError
        Naming the spec and what is wrong.

    Examples
    --------
    >>> check_target("callable:numpy:ones_like").value is np.ones_like
    True
    >>> check_target("file:probabilities.csv")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: target 'file:probabilities.csv': ... must end in one of ...
    """
    parsed = target_spec(spec)
    if parsed.kind == "callable" and parsed.value is None:
        return TargetSpec(parsed.spec, "callable", parsed.argument, value=_function(parsed))
    if parsed.kind in ("file", "vw-model"):
        path = _file_path(parsed)[0] if parsed.kind == "file" else Path(parsed.argument)
        try:
            _check_size(parsed, path)
            if not path.is_file():
                msg = f"target {parsed.spec!r}: {path} is not a file"
                raise ConfigurationError(msg)
        except OSError as exc:
            msg = f"target {parsed.spec!r}: cannot read {path}: {exc.strerror or exc}"
            raise ConfigurationError(msg) from exc
    return parsed


def build_target(
    spec: TargetLike,
    logs: LoggedDecisions,
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 1_000,
) -> Target:
    """Build the target's probabilities on `logs` (training it along them if it learns).

    Parameters
    ----------
    spec
        A target spec (text or parsed), a function of the log or ``(n, K)``
        probabilities (:func:`target_spec`).
    logs
        The logged decisions. ``policy``, ``snapshot`` and ``vw-model`` targets need
        their contexts and action features (``read_log(..., features=True)``, the
        default).
    progress
        For policy targets, called with the rows replayed so far every
        `progress_every` rows and at the end.
    progress_every
        Rows between progress calls, >= 1.

    Returns
    -------
    Target

    Raises
    ------
    ConfigurationError
        For a bad spec, a policy that cannot be built, a snapshot, VW model or file that
        cannot be read, or a function that cannot be imported or fails.
    LogFormatError
        When the log lacks what the target needs (action ids, probabilities, features),
        or probabilities from a file, function or array break a rule (naming the
        source, the row and the rule).

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 3]), chosen=np.array([1, 0]),
    ...     propensity=np.array([0.5, 1 / 3]), reward=np.array([1.0, 0.0]),
    ...     action_ids=[["a", "b"], ["c", "b", "a"]],
    ...     contexts=[{}, {}], action_features=[[{}, {}], [{}, {}, {}]],
    ... )
    >>> build_target("fixed:b", logs).probabilities.probabilities
    array([[0., 1., 0.],
           [0., 1., 0.]])
    >>> build_target("uniform", logs).probabilities.probabilities.round(3)
    array([[0.5  , 0.5  , 0.   ],
           [0.333, 0.333, 0.333]])
    >>> target = build_target("policy:uniform", logs)
    >>> target.running_value
    array([1. , 0.5])
    >>> build_target(np.array([[0.25, 0.75, 0], [1, 0, 0]]), logs).probabilities.at_chosen()
    array([0.75, 1.  ])
    >>> build_target(lambda logs: np.eye(3)[logs.chosen], logs).probabilities.weights()
    array([2., 3.])
    >>> build_target(np.array([[0.5, 0.6, 0], [1, 0, 0]]), logs)
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: target 'array:...': row 0: probabilities must sum to 1 ...
    """
    parsed = target_spec(spec)
    if progress_every < 1:
        msg = f"`progress_every` must be >= 1, got {progress_every!r}"
        raise ConfigurationError(msg)
    if parsed.kind == "fixed":
        ids = [part.strip() for part in parsed.argument.split(",")]
        return Target(parsed, TargetProbabilities(logs, _fixed(logs, ids, parsed.spec)))
    if parsed.kind == "uniform":
        return Target(parsed, TargetProbabilities(logs, _uniform(logs)))
    if parsed.kind == "logging":
        if logs.probabilities is None:
            msg = (
                f"target {parsed.spec!r}: the log holds only the chosen action's probability, "
                "not every offered action's; the logging target needs them all"
            )
            raise LogFormatError(msg)
        return Target(parsed, TargetProbabilities(logs, logs.probabilities))
    if parsed.kind in ("file", "callable", "array"):
        return Target(parsed, TargetProbabilities(logs, _outside(parsed, logs)))
    policy = _policy(parsed)
    return _replay(parsed, policy, logs, progress, progress_every)


# -- the targets ---------------------------------------------------------------------------


def _uniform(logs: LoggedDecisions) -> FloatArray:
    mask = logs.mask()
    uniform: FloatArray = mask / logs.n_actions[:, None].astype(np.float64)
    return uniform


def _fixed(logs: LoggedDecisions, ids: Sequence[str], spec: str) -> FloatArray:
    if logs.action_ids is None:
        msg = f"target {spec!r}: the log holds no action ids, so no fixed id can be found"
        raise LogFormatError(msg)
    rank = {action_id: r for r, action_id in enumerate(ids)}
    probabilities = np.zeros((logs.n, logs.width))
    for i, offered in enumerate(logs.action_ids):
        ranks = [rank.get(action_id, len(rank)) for action_id in offered]
        probabilities[i, int(np.argmin(ranks))] = 1.0  # ties: the first offered
    return probabilities


def _policy(parsed: TargetSpec) -> Policy:
    data = b""
    if parsed.kind != "policy":
        try:
            data = _read_bytes(parsed)
        except OSError as exc:
            what = "VW model" if parsed.kind == "vw-model" else "snapshot"
            msg = f"target {parsed.spec!r}: cannot read the {what}: {exc.strerror or exc}"
            raise ConfigurationError(msg) from exc
    try:
        if parsed.kind == "policy":
            return make_policy(parsed.argument)
        if parsed.kind == "vw-model":
            return model_file_policy(data, floor=_NO_FLOOR)
        return Policy.restore(data)
    except StreambanditError as exc:
        msg = f"target {parsed.spec!r}: {exc}"
        raise ConfigurationError(msg) from exc


def _read_bytes(parsed: TargetSpec, path: Path | None = None) -> bytes:
    """Read the target's file, refused past :data:`MAX_FILE_BYTES`."""
    path = Path(parsed.argument) if path is None else path
    _check_size(parsed, path)
    return path.read_bytes()


def _check_size(parsed: TargetSpec, path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        msg = f"target {parsed.spec!r}: {path} is {size:,} bytes, more than {MAX_FILE_BYTES:,}"
        raise ConfigurationError(msg)


# -- probabilities from outside: files, functions, arrays ------------------------------------


def _outside(parsed: TargetSpec, logs: LoggedDecisions) -> FloatArray:
    """Return the checked ``(n, K)`` probabilities of a file, function or array target."""
    source = f"target {parsed.spec!r}"
    if parsed.kind == "array":
        return _checked(parsed.value, logs, source)
    if parsed.kind == "callable":
        function = parsed.value if parsed.value is not None else _function(parsed)
        if not callable(function):
            msg = f"{source}: {function!r} is not callable"
            raise ConfigurationError(msg)
        try:
            table = function(logs)
        except Exception as exc:  # any failure of user code, named with the spec
            msg = f"{source}: the function raised {type(exc).__name__}: {exc}"
            raise ConfigurationError(msg) from exc
        return _checked(table, logs, f"{source} (its return value)")
    table, ids = _read_file(parsed, logs)
    return _checked(_matched(table, ids, logs, source), logs, source)


def _function(parsed: TargetSpec) -> Any:
    """Import ``MODULE:FUNCTION`` (``MODULE`` a module name or a ``.py`` file's path)."""
    module_name, _, name = parsed.argument.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            unique = f"_streambandit_target_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
            found = importlib.util.spec_from_file_location(unique, path)
            if found is None or found.loader is None or not path.is_file():
                msg = f"no Python file at {module_name}"
                raise ImportError(msg)
            module = importlib.util.module_from_spec(found)
            sys.modules[unique] = module
            found.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs user code: name any failure
        msg = f"target {parsed.spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        raise ConfigurationError(msg) from exc
    function = getattr(module, name, None)
    if function is None:
        msg = f"target {parsed.spec!r}: module {module_name!r} has no attribute {name!r}"
        raise ConfigurationError(msg)
    if not callable(function):
        msg = f"target {parsed.spec!r}: {function!r} is not callable"
        raise ConfigurationError(msg)
    return function


def _file_path(parsed: TargetSpec) -> tuple[Path, str | None]:
    """Return a ``file:`` target's path, of a known format, and the ``.npz`` array's name."""
    argument = parsed.argument
    name: str | None = None
    head, sep, tail = argument.rpartition("#")
    if sep and head.lower().endswith(".npz"):
        argument, name = head, tail
    path = Path(argument)
    known = (*_JSON_SUFFIXES, *_PARQUET_SUFFIXES, *_NUMPY_SUFFIXES)
    if path.suffix.lower() not in known:
        msg = (
            f"target {parsed.spec!r}: {path.name} must end in one of {', '.join(known)}, "
            "to say its format"
        )
        raise ConfigurationError(msg)
    return path, name


def _read_file(parsed: TargetSpec, logs: LoggedDecisions) -> tuple[Any, list[str] | None]:
    """Read the file's table and, for JSON lines and Parquet, its event ids (or None)."""
    path, name = _file_path(parsed)
    suffix = path.suffix.lower()
    source = f"target {parsed.spec!r}"
    try:
        if suffix in _JSON_SUFFIXES:
            return _read_json_lines(_read_bytes(parsed, path), source)
        if suffix in _PARQUET_SUFFIXES:
            _check_size(parsed, path)
            return _read_parquet(path, source)
        _check_size(parsed, path)
        return _read_numpy(path, name, source), None
    except OSError as exc:
        msg = f"{source}: cannot read {path}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from exc


def _read_json_lines(data: bytes, source: str) -> tuple[FloatArray, list[str] | None]:
    rows: list[list[float]] = []
    ids: list[str | None] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}: line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            msg = f"{where}: not JSON: {exc}"
            raise LogFormatError(msg) from None
        if not isinstance(record, dict) or not isinstance(record.get("probabilities"), list):
            msg = f'{where}: must be an object with a "probabilities" list'
            raise LogFormatError(msg)
        values = record["probabilities"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            msg = f'{where}: "probabilities" must hold numbers only'
            raise LogFormatError(msg)
        event_id = record.get("event_id")
        if event_id is not None and not isinstance(event_id, str):
            msg = f'{where}: "event_id" must be a string, got {event_id!r}'
            raise LogFormatError(msg)
        rows.append(values)
        ids.append(event_id)
    width = max((len(row) for row in rows), default=0)
    table = np.zeros((len(rows), width))
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table, _all_ids(ids)


def _read_parquet(path: Path, source: str) -> tuple[FloatArray, list[str] | None]:
    try:
        schema = pq.read_schema(path)
        names = [n for n in ("probabilities", "event_id") if n in schema.names]
        if "probabilities" not in names:
            msg = f'{source}: the Parquet file has no "probabilities" column; it has {schema.names}'
            raise LogFormatError(msg)
        table = pq.read_table(path, columns=names)
    except pa.ArrowException as exc:
        msg = f"{source}: not a Parquet file Arrow reads: {exc}"
        raise LogFormatError(msg) from None
    column = table.column("probabilities").combine_chunks()
    kind = column.type
    if not (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ) or not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
        msg = f'{source}: the "probabilities" column must hold lists of numbers, got {kind}'
        raise LogFormatError(msg)
    if column.null_count:
        msg = f'{source}: row {_first_null(column)}: "probabilities" is missing'
        raise LogFormatError(msg)
    lengths = np.asarray(pa.compute.list_value_length(column), dtype=np.int64)
    values = column.flatten()
    if values.null_count:
        msg = f'{source}: "probabilities" holds a missing number'
        raise LogFormatError(msg)
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    width = int(lengths.max()) if lengths.size else 0
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.repeat(np.arange(lengths.size), lengths)
    matrix = np.zeros((lengths.size, width))
    matrix[rows, np.arange(flat.size) - starts] = flat
    ids = None
    if "event_id" in names:
        raw = table.column("event_id")
        if not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
            msg = f'{source}: the "event_id" column must hold strings, got {raw.type}'
            raise LogFormatError(msg)
        ids = _all_ids(raw.to_pylist())
    return matrix, ids


def _first_null(column: pa.Array) -> int:
    return int(np.argmax(np.asarray(column.is_null())))


def _read_numpy(path: Path, name: str | None, source: str) -> Any:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        msg = f"{source}: not a NumPy file of numbers: {exc}"
        raise LogFormatError(msg) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        files = list(loaded.files)
        if name is None:
            name = "probabilities" if "probabilities" in files or len(files) != 1 else files[0]
        if name not in files:
            msg = f"{source}: {path.name} holds no array {name!r}; it holds {files}"
            raise LogFormatError(msg)
        return loaded[name]


def _all_ids(ids: Sequence[str | None]) -> list[str] | None:
    """Return the event ids when every row gives one, else None."""
    if not ids or any(event_id is None for event_id in ids):
        return None
    return [str(event_id) for event_id in ids]


def _matched(table: Any, ids: list[str] | None, logs: LoggedDecisions, source: str) -> Any:
    """Put the file's rows in the log's order: by event id when both have them, else as read."""
    if ids is None or logs.event_ids is None:
        rows = len(table) if hasattr(table, "__len__") else 0
        if rows != logs.n:
            msg = (
                f"{source}: holds {rows:,} rows and the log {logs.n:,}; without event ids in "
                "both, rows are matched in order and their counts must agree"
            )
            raise LogFormatError(msg)
        return table
    where: dict[str, int] = {}
    for k, event_id in enumerate(ids):
        if where.setdefault(event_id, k) != k:
            msg = f"{source}: event id {event_id!r} is given twice (rows {where[event_id]} and {k})"
            raise LogFormatError(msg)
    order = np.empty(logs.n, dtype=np.int64)
    for i, event_id in enumerate(logs.event_ids):
        found = where.get(event_id)
        if found is None:
            msg = f"{source}: row {i}: the log's event id {event_id!r} is not in the file"
            raise LogFormatError(msg)
        order[i] = found
    return np.asarray(table)[order]


def _checked(table: Any, logs: LoggedDecisions, source: str) -> FloatArray:
    """`table` as the log's ``(n, K)`` target probabilities, or a LogFormatError naming the rule."""
    try:
        array = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"{source}: must be an (n, K) table of numbers: {exc}"
        raise LogFormatError(msg) from None
    if array.ndim != 2 or array.shape[0] != logs.n or array.shape[1] < logs.width:
        msg = (
            f"{source}: must have shape ({logs.n}, K) with K >= {logs.width} (the log's rows "
            f"and its widest row's actions), got {array.shape}"
        )
        raise LogFormatError(msg)
    real = np.arange(array.shape[1])[None, :] < logs.n_actions[:, None]
    rules = (
        (~np.isfinite(array).all(axis=1), "probabilities must be finite"),
        ((array < 0.0).any(axis=1), "probabilities must be >= 0"),
        (
            (~real & (array != 0.0)).any(axis=1),
            "probabilities must be 0 past the row's offered actions",
        ),
    )
    for bad, rule in rules:
        if bad.any():
            raise LogFormatError(_at(source, logs, int(np.argmax(bad)), rule))
    sums = array.sum(axis=1)
    off = np.abs(sums - 1.0) > _TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        rule = f"probabilities must sum to 1 (within {_TOLERANCE:g}), got {sums[row]!r}"
        raise LogFormatError(_at(source, logs, row, rule))
    checked: FloatArray = array[:, : logs.width] / sums[:, None]
    return checked


def _at(source: str, logs: LoggedDecisions, row: int, rule: str) -> str:
    named = f" (event id {logs.event_ids[row]!r})" if logs.event_ids is not None else ""
    return f"{source}: row {row}{named}: {rule}"


def _replay(
    parsed: TargetSpec,
    policy: Policy,
    logs: LoggedDecisions,
    progress: Callable[[int], None] | None,
    every: int,
) -> Target:
    """Run `policy` along the log: its pmf is each row's target, then it learns the row."""
    if logs.contexts is None or logs.action_features is None:
        msg = (
            f"target {parsed.spec!r}: a policy target needs the log's contexts and action "
            "features (read the log with features=True)"
        )
        raise LogFormatError(msg)
    probabilities = np.zeros((logs.n, logs.width))
    matched = np.full(logs.n, np.nan)
    for i in range(logs.n):
        context = logs.contexts[i]
        actions = _actions(logs, i)
        pmf = np.fromiter(policy.pmf(context, actions), dtype=np.float64, count=len(actions))
        probabilities[i, : len(actions)] = pmf
        chosen = int(logs.chosen[i])
        if int(np.argmax(pmf)) == chosen:
            matched[i] = logs.reward[i]
        if parsed.learn:
            policy.learn(context, actions, chosen, float(logs.reward[i]), float(logs.propensity[i]))
        if progress is not None and (i + 1) % every == 0:
            progress(i + 1)
    if progress is not None:
        progress(logs.n)
    target = TargetProbabilities(logs, probabilities)
    return Target(parsed, target, _running_value(target), matched)


def _actions(logs: LoggedDecisions, i: int) -> list[Action]:
    n = int(logs.n_actions[i])
    ids = logs.action_ids[i] if logs.action_ids is not None else [str(j) for j in range(n)]
    features: Sequence[Mapping[str, Mapping[str, Any]]] = (
        logs.action_features[i] if logs.action_features is not None else [{}] * n
    )
    return [Action(str(action_id), features[j]) for j, action_id in enumerate(ids)]


def _running_value(target: TargetProbabilities) -> FloatArray:
    """``(n,)`` the IPS estimate over the first ``t + 1`` rows, for every t."""
    terms = target.weights() * target.logs.reward
    steps: npt.NDArray[np.float64] = np.arange(1, terms.size + 1, dtype=np.float64)
    running: FloatArray = np.cumsum(terms) / steps
    return running
