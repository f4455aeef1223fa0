"""Personalizer's exported logs, read line by line into the served policy's fresh model.

A decision is learned as the service would have learned it had Personalizer's client
sent the request here: the request is rebuilt
(:func:`~bandit.wire.personalizer.logged_rank_request`, or for a multi-slot decision
:func:`~bandit.wire.personalizer.logged_multi_slot_rank_request`), mapped as the
Personalizer routes map it (:func:`~bandit.wire.personalizer.to_rank_request`,
:func:`~bandit.wire.personalizer.to_multi_slot_rank_request`) and minimised with the
policy's feature schema (:class:`~bandit.privacy.minimise.Minimiser`, a slot's features
as the multi-slot route minimises them); the labels are read by
:class:`~policies.dsjson.DSJSONReader`, the one DSJSON reader. A single-slot VW policy
learns the single-slot decisions, a ``vw-ccb`` policy the multi-slot ones (each as one
CCB example, :meth:`policies.vwccb.VWCCBPolicy.learn_slots`). Every other line is
counted under the reason it was left out (:data:`REASONS`).
"""

from __future__ import annotations

import hashlib
import json
import os
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
from bandit.wire.personalizer import (
    logged_multi_slot_rank_request,
    logged_rank_request,
    to_multi_slot_rank_request,
    to_rank_request,
)
from bandit.wire.schemas import PolicySettings, RankSlot
from policies import Action
from policies.dsjson import DSJSONReader, LogRow
from policies.vw import VWPolicy
from policies.vwccb import SlotOutcome, VWCCBPolicy
from policies.vwtext import SLOT_NAMESPACE

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
_FORMAT = 2  # of what is learned from a line: a change re-imports the same files
_CHUNK = 1 << 20

REASONS: dict[str, str] = {
    "too_long": "line too long",
    "not_json": "not JSON",
    "not_a_decision": "not a decision",
    "multi_slot": "multi-slot: the served policy is not vw-ccb",
    "single_slot": "single-slot: the served policy is vw-ccb",
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
        shared = record.get("c")
        multi_slot = "_outcomes" in record or (type(shared) is dict and "_slots" in shared)
        if multi_slot != isinstance(self.policy, VWCCBPolicy):
            if multi_slot:
                raise _Skipped(
                    "multi_slot",
                    "`_outcomes` / `c._slots`: a multi-slot decision, and the served policy "
                    "is single-slot (cb_explore_adf): only a vw-ccb policy learns multi-slot "
                    "decisions",
                )
            raise _Skipped(
                "single_slot",
                "a single-slot decision, and the served policy is vw-ccb: it learns the "
                "multi-slot decisions (import the single-slot ones into a single-slot VW policy)",
            )
        if multi_slot:
            self._slots(record)
            return
        try:
            row = self.reader.read(record)
        except LogFormatError as exc:
            raise _format_skipped(exc) from None
        assert row is not None  # (_skipLearn is handled above)
        ids = self._checked(row.event_id, row.action_ids, [row])
        context, actions = self._inputs(record, row.ours, ids)
        self._learn(
            lambda: self.policy.learn(context, actions, row.chosen, row.reward, row.propensity)
        )

    def _checked(
        self, event_id: str | None, ids: list[str] | None, rows: list[LogRow]
    ) -> list[str]:
        """Check a decision's event id, action ids and rewards; return its action ids."""
        if event_id is not None:
            if event_id in self.seen:
                raise _Skipped("duplicate", f"`EventId` {event_id!r} was read already")
            self.seen.add(event_id)
        if ids is None:
            raise _Skipped("no_action_ids", "an action has neither `_tag` nor a string `id`")
        limits = self.limits
        for row in rows:
            if not limits.min_reward <= row.reward <= limits.max_reward:
                where = "" if row.slot_id is None else f"slot {row.slot_id!r}: "
                raise _Skipped(
                    "reward_range",
                    f"{where}reward {row.reward!r} (-`_label_cost`) is outside "
                    f"[{limits.min_reward:g}, {limits.max_reward:g}] "
                    "(limits.min_reward, limits.max_reward)",
                )
        return ids

    def _learn(self, learn: Callable[[], None]) -> None:
        """Run `learn`; count the line learned, or skip it when the policy refused it."""
        try:
            learn()
        except InvalidModelError:
            raise
        except StreambanditError as exc:
            raise _Skipped("policy", str(exc)) from None
        self.report.learned += 1

    def _slots(self, record: dict[str, Any]) -> None:
        """Learn a multi-slot decision into the vw-ccb policy, as one CCB example."""
        policy = self.policy
        assert isinstance(policy, VWCCBPolicy)
        try:
            read = self.reader.read_slots(record)
        except LogFormatError as exc:
            raise _format_skipped(exc) from None
        ids = self._checked(read.event_id, read.action_ids, read.slots)
        context, actions, features = self._slot_inputs(record, read.ours, ids, read.slots)
        outcomes = []
        for row, slot in zip(read.slots, features, strict=True):
            assert row.include is not None
            outcomes.append(
                SlotOutcome(
                    {SLOT_NAMESPACE: slot}, tuple(row.include), row.include[row.chosen],
                    row.reward, row.propensity,
                )
            )  # fmt: skip
        self._learn(lambda: policy.learn_slots(context, actions, outcomes))

    def _slot_inputs(
        self, record: dict[str, Any], ours: bool, ids: list[str], rows: list[LogRow]
    ) -> tuple[dict[str, dict[str, Any]], list[Action], list[dict[str, Any]]]:
        """Return what the vw-ccb policy sees of a multi-slot decision: shared, actions, slots.

        Minimised as the multi-slot route minimises them: the context and actions with
        the feature schema, each slot's features as the context's.
        """
        if ours:  # streambandit's own log: the features as the policy saw them
            read = self.ours.read_slots(record)
            assert read.context is not None
            assert read.action_features is not None
            context: Any = read.context
            actions = [Action(i, f) for i, f in zip(ids, read.action_features, strict=True)]
            slots = [
                {} if s.context is None else s.context.get(SLOT_NAMESPACE, {}) for s in read.slots
            ]
            kept_context, kept_actions = self._minimised(context, actions)
            return kept_context, kept_actions, slots
        slot_ids = [row.slot_id or str(number) for number, row in enumerate(rows)]
        try:
            request = to_multi_slot_rank_request(
                logged_multi_slot_rank_request(record, ids, slot_ids), self.limits
            )
        except pydantic.ValidationError as exc:
            raise _features_skipped(exc) from None
        context, actions = request.policy_inputs()
        kept_context, kept_actions = self._minimised(context, actions)
        slots = []
        for number, slot in enumerate(request.slots):
            try:
                kept, dropped = self.schema_minimiser.slot(
                    slot.features, number, identifiers=self.identifiers
                )
            except FeatureRefusedError as exc:
                raise _Skipped("features", str(exc)) from None
            self.report.dropped += dropped
            slots.append(RankSlot.flat(kept))
        return kept_context, kept_actions, slots

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
                raise _features_skipped(exc) from None
            context, actions = request.policy_inputs()
        return self._minimised(context, actions)

    def _minimised(
        self, context: Any, actions: list[Action]
    ) -> tuple[dict[str, dict[str, Any]], list[Action]]:
        """Apply the feature schema and the identifier rule, as the routes do."""
        try:
            kept, seen, dropped = self.schema_minimiser.apply(
                context, actions, identifiers=self.identifiers
            )
        except FeatureRefusedError as exc:
            raise _Skipped("features", str(exc)) from None
        self.report.dropped += dropped
        return kept, seen


def _format_skipped(exc: LogFormatError) -> _Skipped:
    """Return the skip of a line the DSJSON reader refused, under its reason."""
    reason = "bad_propensity" if exc.reason == "bad_probability" else "malformed"
    return _Skipped(reason, f"{exc} ({exc.reason})")


def _features_skipped(exc: pydantic.ValidationError) -> _Skipped:
    """Return the skip of a line whose rebuilt request the route refuses (its first error)."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(map(str, error["loc"]))
    return _Skipped("features", f"{where}: {error['msg']}")


def _decision(line: bytes) -> dict[str, Any]:
    """Decode a line that may be a decision to learn, or raise :class:`_Skipped`."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _Skipped("not_json", f"the line is not valid JSON: {exc}") from None
    if type(record) is not dict:
        raise _Skipped("not_a_decision", "a JSON value that is not an object")
    shared = record.get("c")
    if "_label_cost" not in record and "_outcomes" not in record and shared is None:
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
    """Train `policy` on every decision of `files` it can learn; count the other lines.

    A single-slot VW policy learns the single-slot decisions; a ``vw-ccb`` policy
    (:class:`~policies.vwccb.VWCCBPolicy`) the multi-slot ones.

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
    base = _common_folder(files)
    for path in files:
        shown = path.relative_to(base) if base is not None else path  # short, as the user gave
        for number, line in _lines(path, bounds.max_line_bytes):
            done += len(line)
            if not line.strip():
                continue
            report.lines += 1
            if progress is not None and report.lines % 1000 == 0:
                progress(done)
            if len(line.rstrip(b"\r\n")) > bounds.max_line_bytes:
                message = f"longer than {bounds.max_line_bytes:,} bytes (--max-line-bytes)"
                report.skip("too_long", f"{shown}:{number}", message)
                continue
            try:
                learner.line(line)
            except _Skipped as skipped:
                report.skip(skipped.reason, f"{shown}:{number}", str(skipped))
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


def _common_folder(files: Sequence[Path]) -> Path | None:
    """Return the folder every file is under (to name them shortly), or None."""
    try:
        return Path(os.path.commonpath([path.parent for path in files])) if files else None
    except ValueError:  # (relative and absolute paths mixed)
        return None
