"""Personalizer's exported logs, read line by line into the served policy's fresh model.

A single-slot decision is learned as the service would have learned it had
Personalizer's client sent the request here: the request is rebuilt
(:func:`~bandit.wire.personalizer.logged_rank_request`), mapped as the Personalizer
routes map it (:func:`~bandit.wire.personalizer.to_rank_request`) and minimised with the
policy's feature schema (:class:`~bandit.privacy.minimise.Minimiser`); the labels are
read by :class:`~policies.dsjson.DSJSONReader`, the one DSJSON reader. Every other line
is counted under the reason it was left out (:data:`REASONS`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import pydantic

from bandit.errors import (
    ConfigurationError,
    FeatureRefusedError,
    InvalidModelError,
    LogFormatError,
    StreambanditError,
)
from bandit.privacy.minimise import Dropped, Minimiser
from bandit.settings import Limits
from bandit.wire.personalizer import logged_rank_request, to_rank_request
from bandit.wire.schemas import PolicySettings
from policies import Action
from policies.dsjson import DSJSONReader
from policies.vw import VWPolicy

__all__ = [
    "IMPORT_ID_PREFIX",
    "LOG_SUFFIXES",
    "REASONS",
    "Bounds",
    "ReadReport",
    "export_files",
    "import_id",
    "inputs_digest",
    "learn_export",
]

IMPORT_ID_PREFIX = "import-personalizer:sha256="
"""How the VW model id of an imported model starts; the inputs' digest follows."""
LOG_SUFFIXES = (".json", ".dsjson", ".jsonl", ".ndjson")
"""The files a folder given as logs is read for (Personalizer's blobs end in ``.json``)."""
_FORMAT = 1  # of what is learned from a line: a change re-imports the same files
_CHUNK = 1 << 20

REASONS: dict[str, str] = {
    "too_long": "line too long",
    "not_json": "not JSON",
    "not_a_decision": "not a decision",
    "multi_slot": "multi-slot: not served yet",
    "not_activated": "not activated",
    "sampled": "sampled (pdrop)",
    "bad_propensity": "bad propensity",
    "malformed": "malformed",
    "duplicate": "duplicate event id",
    "no_action_ids": "actions without ids",
    "reward_range": "reward out of range",
    "features": "features refused",
    "policy": "refused by the policy",
}
"""Why a line is not learned, by key: the labels the report shows."""


@dataclass(frozen=True)
class Bounds:
    """How much an import reads: it refuses more files or bytes, and skips longer lines.

    Attributes
    ----------
    max_files
        Files read at most (a folder's log files count each).
    max_bytes
        Their total size at most, in bytes.
    max_line_bytes
        The longest line learned (its line break not counted); a longer one is skipped
        and counted, without being held in memory.
    """

    max_files: int = 10_000
    max_bytes: int = 20 * 2**30
    max_line_bytes: int = 2**20

    def __post_init__(self) -> None:
        for name in ("max_files", "max_bytes", "max_line_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"`{name}` must be an integer >= 1, got {value!r}"
                raise ConfigurationError(msg)


def export_files(paths: Sequence[Path], bounds: Bounds) -> list[Path]:
    """Return the files to read, in path order: each file given, each folder's log files.

    A folder gives its files ending in :data:`LOG_SUFFIXES` at any depth; a file given
    twice is read once.

    Raises
    ------
    ConfigurationError
        If a path does not exist, nothing is left to read, or the files are more or
        larger than `bounds` allow.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for inner in sorted(path.rglob("*")):
                if inner.is_file() and inner.name.lower().endswith(LOG_SUFFIXES):
                    found.setdefault(inner.resolve())
        elif path.is_file():
            found.setdefault(path.resolve())
        else:
            msg = f"{path}: no such file or folder"
            raise ConfigurationError(msg)
        if len(found) > bounds.max_files:
            msg = (
                f"more than {bounds.max_files:,} log files (--max-files) under "
                f"{', '.join(map(str, paths))}: import them in parts"
            )
            raise ConfigurationError(msg)
    if not found:
        msg = (
            f"no log file (ending in {', '.join(LOG_SUFFIXES)}) under {', '.join(map(str, paths))}"
        )
        raise ConfigurationError(msg)
    files = sorted(found)
    total = sum(path.stat().st_size for path in files)
    if total > bounds.max_bytes:
        msg = (
            f"the {len(files):,} log files hold {total:,} bytes, more than {bounds.max_bytes:,} "
            "(--max-bytes): import them in parts"
        )
        raise ConfigurationError(msg)
    return files


def inputs_digest(files: Sequence[Path], settings: PolicySettings) -> str:
    """Return the SHA-256 (hex) of what a model is trained from, whatever the files' names.

    The digest covers each file's bytes (in any order), the served spec and feature
    schema (they shape what is learned), and the way lines are read here.
    """
    contents = []
    for path in files:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        contents.append(digest.hexdigest())
    schema = settings.feature_schema
    inputs = {
        "format": _FORMAT,
        "spec": settings.spec,
        "feature_schema": None if schema is None else schema.model_dump(mode="json"),
        "files": sorted(contents),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def import_id(digest: str) -> str:
    """Return the VW model id an import of inputs with `digest` gives its model."""
    return IMPORT_ID_PREFIX + digest


@dataclass
class ReadReport:
    """What reading the exported logs did.

    Attributes
    ----------
    files, bytes
        The files read and their size.
    lines
        Lines read (blank lines are not counted).
    learned
        Lines the model learned.
    skipped
        Lines left out, by :data:`REASONS` label.
    first
        For each label, where its first line is and why (``file:line: message``).
    dropped
        Features dropped from the lines learned, as the Personalizer routes drop them.
    """

    files: list[Path]
    bytes: int
    lines: int = 0
    learned: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    dropped: Dropped = field(default_factory=Dropped)

    def skip(self, reason: str, where: str, message: str) -> None:
        """Count one line left out for `reason` (a :data:`REASONS` key)."""
        label = REASONS[reason]
        self.skipped[label] += 1
        self.first.setdefault(label, f"{where}: {message}")


class _Skipped(Exception):  # noqa: N818 - control flow: a line left out, not an error
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Learner:
    """Learns one exported line at a time into `policy`, as the service would have."""

    policy: VWPolicy
    schema_minimiser: Minimiser
    limits: Limits
    identifiers: Literal["refuse", "drop"]
    report: ReadReport
    reader: DSJSONReader = field(default_factory=lambda: DSJSONReader(features=False))
    ours: DSJSONReader = field(default_factory=lambda: DSJSONReader(features=True))
    seen: set[str] = field(default_factory=set)

    def line(self, line: bytes) -> None:
        """Learn `line`, or raise :class:`_Skipped` saying why not."""
        record = _decision(line)
        try:
            row = self.reader.read(record)
        except LogFormatError as exc:
            reason = "bad_propensity" if exc.reason == "bad_probability" else "malformed"
            raise _Skipped(reason, f"{exc} ({exc.reason})") from None
        assert row is not None  # (_skipLearn is handled above)
        if row.event_id is not None:
            if row.event_id in self.seen:
                raise _Skipped("duplicate", f"`EventId` {row.event_id!r} was read already")
            self.seen.add(row.event_id)
        if row.action_ids is None:
            raise _Skipped("no_action_ids", "an action has neither `_tag` nor a string `id`")
        limits = self.limits
        if not limits.min_reward <= row.reward <= limits.max_reward:
            raise _Skipped(
                "reward_range",
                f"reward {row.reward!r} (-`_label_cost`) is outside [{limits.min_reward:g}, "
                f"{limits.max_reward:g}] (limits.min_reward, limits.max_reward)",
            )
        context, actions = self._inputs(record, row.ours, row.action_ids)
        try:
            self.policy.learn(context, actions, row.chosen, row.reward, row.propensity)
        except InvalidModelError:
            raise
        except StreambanditError as exc:
            raise _Skipped("policy", str(exc)) from None
        self.report.learned += 1

    def _inputs(
        self, record: dict[str, Any], ours: bool, ids: list[str]
    ) -> tuple[dict[str, dict[str, Any]], list[Action]]:
        """Return what the served policy sees of this decision, minimised as the route does."""
        if ours:  # streambandit's own log: the features as the policy saw them
            row = self.ours.read(record)
            assert row is not None
            assert row.context is not None
            assert row.action_features is not None
            context: Any = row.context
            actions = [Action(i, f) for i, f in zip(ids, row.action_features, strict=True)]
        else:
            try:
                request = to_rank_request(logged_rank_request(record, ids), self.limits)
            except pydantic.ValidationError as exc:
                error = exc.errors(include_input=False, include_url=False)[0]
                where = ".".join(map(str, error["loc"]))
                raise _Skipped("features", f"{where}: {error['msg']}") from None
            context, actions = request.policy_inputs()
        try:
            kept, seen, dropped = self.schema_minimiser.apply(
                context, actions, identifiers=self.identifiers
            )
        except FeatureRefusedError as exc:
            raise _Skipped("features", str(exc)) from None
        self.report.dropped += dropped
        return kept, seen


def _decision(line: bytes) -> dict[str, Any]:
    """Decode a line that may be a single-slot decision to learn, or raise :class:`_Skipped`."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _Skipped("not_json", f"the line is not valid JSON: {exc}") from None
    if type(record) is not dict:
        raise _Skipped("not_a_decision", "a JSON value that is not an object")
    shared = record.get("c")
    if "_outcomes" in record or (type(shared) is dict and "_slots" in shared):
        raise _Skipped(
            "multi_slot",
            "`_outcomes` / `c._slots`: a multi-slot decision; multi-slot ranking is "
            "not served yet, so no model of it is trained",
        )
    if "_label_cost" not in record and shared is None:
        raise _Skipped(
            "not_a_decision",
            "neither `_label_cost` nor `c`: a reward without its decision, or another record",
        )
    for flag in ("_skipLearn", "_deferred"):
        if record.get(flag) is True:
            raise _Skipped("not_activated", f"`{flag}`: ranked deferred, never activated")
    pdrop = record.get("pdrop")
    if isinstance(pdrop, int | float) and pdrop != 0:
        raise _Skipped("sampled", f"`pdrop` {pdrop!r}: a sampled line VW would weight; not learned")
    return record


def learn_export(
    files: Sequence[Path],
    policy: VWPolicy,
    settings: PolicySettings,
    *,
    limits: Limits,
    identifiers: Literal["refuse", "drop"],
    bounds: Bounds,
    progress: Callable[[int], None] | None = None,
) -> ReadReport:
    """Train `policy` on every single-slot decision of `files`; count the other lines.

    Parameters
    ----------
    files
        The exported DSJSON files, read in this order.
    policy
        A fresh policy of the served spec (it learns in place).
    settings
        The served policy's settings (its feature schema minimises what is learned).
    limits, identifiers
        The service's limits, and what its Personalizer routes do with an
        identifier-like feature (``settings.privacy.personalizer_identifiers``).
    bounds
        The longest line learned.
    progress
        Called with the bytes read so far, now and then.

    Raises
    ------
    InvalidModelError
        If learning a line overflowed the model (it is not imported).
    """
    report = ReadReport(list(files), sum(path.stat().st_size for path in files))
    learner = _Learner(policy, Minimiser(settings.feature_schema), limits, identifiers, report)
    done = 0
    for path in files:
        for number, line in _lines(path, bounds.max_line_bytes):
            done += len(line)
            if not line.strip():
                continue
            report.lines += 1
            if progress is not None and report.lines % 1000 == 0:
                progress(done)
            if len(line.rstrip(b"\r\n")) > bounds.max_line_bytes:
                message = f"longer than {bounds.max_line_bytes:,} bytes (--max-line-bytes)"
                report.skip("too_long", f"{path}:{number}", message)
                continue
            try:
                learner.line(line)
            except _Skipped as skipped:
                report.skip(skipped.reason, f"{path}:{number}", str(skipped))
    if progress is not None:
        progress(done)
    return report


def _lines(path: Path, longest: int) -> Iterator[tuple[int, bytes]]:
    """Yield each line's number and bytes; a line longer than `longest` is cut, its rest read."""
    with path.open("rb") as file:
        number = 0
        while line := file.readline(longest + 2):  # the line and its "\r\n"
            number += 1
            if line[-1:] != b"\n" and len(line) > longest:
                while (rest := file.readline(_CHUNK)) and rest[-1:] != b"\n":
                    pass  # the rest of a line too long, never held whole
            yield number, line
