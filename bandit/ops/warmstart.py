"""Warm start from Azure Personalizer: its exported logs train the served model, its settings apply.

``streambandit import-personalizer`` (:mod:`bandit.ops.cli`) runs :func:`import_export`:

1. the served policy's settings are read over the admin API, and a fresh policy of
   the same spec is built here (:func:`bandit.service.engine.configured`), so its VW
   model file is one the service can import;
2. every line of the exported DSJSON files is read (:class:`~policies.dsjson.DSJSONReader`,
   the one reader), in path order. A single-slot decision is learned as the service
   would have learned it had Personalizer's client sent the request here: the request
   is rebuilt (:func:`~bandit.wire.personalizer.logged_rank_request`), mapped as the
   Personalizer routes map it (:func:`~bandit.wire.personalizer.to_rank_request`) and
   minimised with the policy's feature schema (:class:`~bandit.privacy.minimise.Minimiser`).
   Every other line is counted under the reason it was left out (:data:`REASONS`);
3. the exported service configuration is applied through
   ``PUT /personalizer/v1.0/configurations/service``, field by field as far as this
   service can (:func:`plan_configuration`: each field is tried on
   :func:`~bandit.wire.personalizer.configured_settings`, the rules that route applies);
4. the model file is imported through ``PUT /v1/policies/{name}/model``: the API checks
   it in a child process and serves it as a new model lineage, as any import.

Idempotence: the model file carries a digest of what it was trained from (the files'
bytes, the policy's spec and feature schema) as its VW model id (``vw --id``,
:meth:`policies.vw.VWPolicy.model_file`). VW keeps a model's id through every load and
save, so the served model keeps it while it learns on; an import whose digest is the
served model's id reads no line and imports nothing. A reset (``DELETE /model``) or
another import starts a lineage without it. The configuration is sent only when it
changes a setting.
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import pydantic
from rich.table import Table

from bandit.api.admin import ModelProperties
from bandit.errors import (
    APIError,
    ConfigurationError,
    FeatureRefusedError,
    InvalidModelError,
    LogFormatError,
    StreambanditError,
    TransportError,
)
from bandit.privacy.minimise import Dropped, Minimiser
from bandit.service.engine import configured
from bandit.settings import Limits
from bandit.wire.answers import PoliciesResponse
from bandit.wire.personalizer import (
    PersonalizerServiceConfiguration,
    configured_settings,
    logged_rank_request,
    to_rank_request,
)
from bandit.wire.schemas import PolicySettings
from policies import Action, make_policy
from policies.dsjson import DSJSONReader
from policies.vw import VWPolicy, model_file_id

__all__ = [
    "IMPORT_ID_PREFIX",
    "LOG_SUFFIXES",
    "REASONS",
    "AdminApi",
    "Bounds",
    "Configuration",
    "FieldOutcome",
    "ImportReport",
    "ReadReport",
    "export_files",
    "import_export",
    "import_id",
    "inputs_digest",
    "learn_export",
    "plan_configuration",
    "read_configuration",
    "render_report",
]

IMPORT_ID_PREFIX = "import-personalizer:sha256="
"""How the VW model id of an imported model starts; the inputs' digest follows."""
LOG_SUFFIXES = (".json", ".dsjson", ".jsonl", ".ndjson")
"""The files a folder given as logs is read for (Personalizer's blobs end in ``.json``)."""
_FORMAT = 1  # of what is learned from a line: a change re-imports the same files
_CHUNK = 1 << 20
_PUT_TRIES = 3  # a model import answered 409 (the learner saved meanwhile) is sent again

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


# -- the files ---------------------------------------------------------------------------


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


# -- the lines -----------------------------------------------------------------------------


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
            if line[-1:] != b"\n" and len(line) > bounds.max_line_bytes:
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


# -- the configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """What Personalizer's exported configuration files held.

    Attributes
    ----------
    service
        Its service configuration (``GET /configurations/service``), if given.
    policy
        Its learning policy (``GET /configurations/policy``: ``name`` and VW
        ``arguments``), if given.
    """

    service: PersonalizerServiceConfiguration | None = None
    policy: dict[str, Any] | None = None


def read_configuration(paths: Sequence[Path]) -> Configuration:
    """Read Personalizer's exported configuration: service configuration and policy files.

    A file holding ``rewardWaitTime`` is a service configuration, one holding
    ``arguments`` a learning policy; each may be given once.

    Raises
    ------
    ConfigurationError
        If a file cannot be read, is not one of them, or breaks their rules (naming
        the field).
    """
    service: PersonalizerServiceConfiguration | None = None
    policy: dict[str, Any] | None = None
    for path in paths:
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            msg = f"{path}: cannot read it: {exc.strerror or exc}"
            raise ConfigurationError(msg) from None
        except ValueError as exc:
            msg = f"{path}: not JSON: {exc}"
            raise ConfigurationError(msg) from None
        if isinstance(data, dict) and "rewardWaitTime" in data and service is None:
            try:
                service = PersonalizerServiceConfiguration.model_validate(data)
            except pydantic.ValidationError as exc:
                rules = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_input=False, include_url=False)
                )
                msg = f"{path}: not a Personalizer service configuration: {rules}"
                raise ConfigurationError(msg) from None
        elif isinstance(data, dict) and isinstance(data.get("arguments"), str) and policy is None:
            policy = {"name": str(data.get("name", "")), "arguments": data["arguments"]}
        else:
            msg = (
                f"{path}: neither Personalizer's service configuration (with rewardWaitTime) "
                "nor its learning policy (with arguments), or one of them given twice"
            )
            raise ConfigurationError(msg)
    return Configuration(service, policy)


Status = Literal["applied", "unchanged", "refused", "ignored"]


@dataclass(frozen=True)
class FieldOutcome:
    """What became of one field of the exported configuration.

    Attributes
    ----------
    field
        Its name in Personalizer's configuration (``policy`` for the learning policy).
    status
        ``applied`` (it changes a setting), ``unchanged`` (the service does so
        already), ``refused`` (the service does not do it), ``ignored`` (nothing here
        reads it, e.g. ``lastConfigurationEditDate``).
    value
        The exported value, as JSON.
    note
        The value it replaces (applied) or why it was refused.
    """

    field: str
    status: Status
    value: str
    note: str = ""


def plan_configuration(
    exported: PersonalizerServiceConfiguration,
    current: PersonalizerServiceConfiguration,
    settings: PolicySettings,
    limits: Limits,
) -> tuple[list[FieldOutcome], PersonalizerServiceConfiguration | None]:
    """Say what each exported field does here, and the configuration to send (None: none).

    Each field given in `exported` is tried alone on `current` with
    :func:`~bandit.wire.personalizer.configured_settings`, the rules
    ``PUT /configurations/service`` applies: a field it refuses keeps the current value,
    one that changes the policy's settings is applied. The configuration returned is
    `current` with every applied field, or None when it would change nothing.

    Parameters
    ----------
    exported
        Personalizer's exported service configuration.
    current
        The service's (``GET /configurations/service``): its exploration percentage
        and model export frequency are the served policy's epsilon and snapshot interval.
    settings
        The served policy's live settings.
    limits
        The service's limits (the reward range).

    Raises
    ------
    ConfigurationError
        If `current` itself does not pass (the service and this code disagree).
    """

    def settings_of(config: PersonalizerServiceConfiguration) -> PolicySettings:
        frequency = current.model_export_frequency
        return configured_settings(
            config,
            settings,
            epsilon=current.exploration_percentage,
            snapshot_seconds=math.inf if frequency is None else frequency.total_seconds(),
            limits=limits,
        )

    try:
        settings_of(current)
    except pydantic.ValidationError as exc:
        msg = f"the service's own configuration does not pass its rules here: {exc}"
        raise ConfigurationError(msg) from None
    given = exported.model_dump(mode="json", by_alias=True)
    now = current.model_dump(mode="json", by_alias=True)
    outcomes: list[FieldOutcome] = []
    applied: dict[str, Any] = {}
    for name, info in PersonalizerServiceConfiguration.model_fields.items():
        if name not in exported.model_fields_set:
            continue
        alias = info.alias or name
        value = json.dumps(given[alias])
        trial = current.model_copy(update={name: getattr(exported, name)})
        try:
            changed = settings_of(trial) != settings
        except pydantic.ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors(include_input=False))
            outcomes.append(FieldOutcome(alias, "refused", value, reason))
            continue
        if changed:
            applied[name] = getattr(exported, name)
            outcomes.append(FieldOutcome(alias, "applied", value, f"was {json.dumps(now[alias])}"))
        elif given[alias] == now[alias]:
            outcomes.append(FieldOutcome(alias, "unchanged", value))
        else:
            outcomes.append(FieldOutcome(alias, "ignored", value, "not a setting here"))
    if not applied:
        return outcomes, None
    return outcomes, current.model_copy(update=applied)


# -- the admin API ---------------------------------------------------------------------------


class AdminApi:
    """The admin routes an import uses, over HTTP with an admin key.

    Raises
    ------
    APIError
        From each call answered with an error status (``.status``, the server's message).
    TransportError
        From each call that got no answer.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=timeout)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def policies(self) -> list[str]:
        """Return the served policies this key may use, the first one first."""
        answer = PoliciesResponse.model_validate_json(self._send("GET", "/v1/policies").content)
        return [entry.name for entry in answer.policies]

    def settings(self, name: str) -> PolicySettings:
        """Return the policy's live settings."""
        answer = self._send("GET", f"/v1/policies/{_segment(name)}/settings")
        return PolicySettings.model_validate_json(answer.content)

    def configuration(self, name: str) -> PersonalizerServiceConfiguration:
        """Return the policy's settings as Personalizer's service configuration."""
        answer = self._send("GET", _CONFIGURATION, params={"policy": name})
        return PersonalizerServiceConfiguration.model_validate_json(answer.content)

    def configure(
        self, name: str, config: PersonalizerServiceConfiguration
    ) -> PersonalizerServiceConfiguration:
        """Change the policy's settings as `config` asks (``PUT /configurations/service``)."""
        body = config.model_dump_json(by_alias=True).encode()
        answer = self._send(
            "PUT",
            _CONFIGURATION,
            params={"policy": name},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        return PersonalizerServiceConfiguration.model_validate_json(answer.content)

    def model_file(self, name: str) -> bytes | None:
        """Return the served VW model file; None before the policy saved a model."""
        answer = self._send("GET", f"/v1/policies/{_segment(name)}/model", missing_ok=True)
        return None if answer.status_code == 404 else answer.content

    def model_properties(self, name: str) -> ModelProperties | None:
        """Return which model the policy serves; None before it saved one."""
        path = f"/v1/policies/{_segment(name)}/model/properties"
        answer = self._send("GET", path, missing_ok=True)
        if answer.status_code == 404:
            return None
        return ModelProperties.model_validate_json(answer.content)

    def import_model(self, name: str, model: bytes) -> ModelProperties:
        """Serve `model` (``PUT /v1/policies/{name}/model``); sent again on a 409."""
        path = f"/v1/policies/{_segment(name)}/model"
        headers = {"Content-Type": "application/octet-stream"}
        for attempt in range(_PUT_TRIES):
            try:
                answer = self._send("PUT", path, content=model, headers=headers)
            except APIError as exc:
                if exc.status != 409 or attempt == _PUT_TRIES - 1:
                    raise
                continue
            return ModelProperties.model_validate_json(answer.content)
        raise AssertionError  # (the loop returns or raises)

    def _send(
        self, method: str, path: str, *, missing_ok: bool = False, **options: Any
    ) -> httpx.Response:
        try:
            answer = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            msg = f"{method} {self.url}{path}: no answer ({type(exc).__name__}: {exc})"
            raise TransportError(msg) from exc
        if answer.is_success or (missing_ok and answer.status_code == 404):
            return answer
        raise APIError(_message(answer), status=answer.status_code, body=answer.text)


_CONFIGURATION = "/personalizer/v1.0/configurations/service"


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _message(answer: httpx.Response) -> str:
    """Return the server's message: a native ``detail``, or Personalizer's ``error``."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:500] or answer.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        parts = [str(error.get("message", ""))]
        parts += [
            f"{detail.get('target')}: {detail.get('message')}"
            for detail in error.get("details") or []
            if isinstance(detail, dict)
        ]
        return "; ".join(part for part in parts if part)
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                for d in detail
                if isinstance(d, dict)
            )
        return str(detail)
    return answer.text.strip()[:500]


# -- the whole import ----------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import read, changed and left as it was.

    Attributes
    ----------
    policy, spec
        The served policy imported into, and its spec.
    files, bytes, digest
        The files given, their size and the digest of what they train
        (:func:`inputs_digest`).
    read
        What reading the lines did; None when they were not read (imported before).
    configuration
        Each exported configuration field and what became of it.
    configured
        Whether the configuration was sent (it changed a setting).
    model
        ``imported``, ``unchanged`` (the served model's lineage began with these
        inputs), ``not imported`` (nothing was learned) or ``dry run``.
    model_version
        The model version served after the import (None: none saved yet).
    dry_run
        Nothing was changed.
    """

    policy: str
    spec: str
    files: list[Path]
    bytes: int
    digest: str
    read: ReadReport | None = None
    configuration: list[FieldOutcome] = field(default_factory=list)
    configured: bool = False
    model: str = "unchanged"
    model_version: int | None = None
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        """Whether the import changed anything on the service."""
        return self.configured or self.model == "imported"


def import_export(
    api: AdminApi,
    files: Sequence[Path],
    configuration: Configuration,
    *,
    policy: str | None,
    limits: Limits,
    identifiers: Literal["refuse", "drop"],
    bounds: Bounds,
    dry_run: bool = False,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Train the served policy's model on `files`, apply `configuration`, import the model.

    Parameters
    ----------
    api
        The service's admin API.
    files
        The exported logs (:func:`export_files`).
    configuration
        The exported configuration (:func:`read_configuration`).
    policy
        The served policy to import into; None: the key's first.
    limits, identifiers, bounds
        As :func:`learn_export` takes them.
    dry_run
        Read, train and plan, but change nothing.
    replace
        Replace a served model that learned since its lineage began (else refused).
    progress
        Given to :func:`learn_export`.

    Raises
    ------
    ConfigurationError
        If the served policy is not VW's, or (without `replace`) its model learned
        from live traffic and would be lost.
    APIError, TransportError
        From the admin API.
    InvalidModelError
        If training overflowed the model.
    """
    name = policy if policy is not None else _first_policy(api)
    settings = api.settings(name)
    trained = configured(make_policy(settings.spec), settings)
    if not isinstance(trained, VWPolicy):
        msg = (
            f"policy {name!r} serves {settings.spec!r}, not a VW policy: a model trained "
            "from Personalizer's logs can only be imported into a VW policy"
        )
        raise ConfigurationError(msg)
    digest = inputs_digest(files, settings)
    report = ImportReport(
        name, settings.spec, list(files), sum(p.stat().st_size for p in files), digest,
        dry_run=dry_run,
    )  # fmt: skip
    served = api.model_file(name)
    properties = api.model_properties(name)
    report.model_version = None if properties is None else properties.model_version
    if served is not None and model_file_id(served) == import_id(digest):
        report.model = "unchanged"
    else:
        if properties is not None and properties.n_learned > 0 and not replace:
            msg = (
                f"policy {name!r} serves model version {properties.model_version}, which "
                f"learned {properties.n_learned:,} examples since its lineage began: "
                "importing would replace it (pass --replace to do so)"
            )
            raise ConfigurationError(msg)
        report.read = learn_export(
            files,
            trained,
            settings,
            limits=limits,
            identifiers=identifiers,
            bounds=bounds,
            progress=progress,
        )
        report.model = "dry run" if dry_run else "not imported"
    if configuration.service is not None:
        current = api.configuration(name)
        outcomes, wanted = plan_configuration(configuration.service, current, settings, limits)
        report.configuration = outcomes
        if wanted is not None and not dry_run:
            api.configure(name, wanted)
            report.configured = True
    if configuration.policy is not None:
        report.configuration.append(
            FieldOutcome(
                "policy",
                "refused",
                json.dumps(configuration.policy["arguments"]),
                f"not set from Personalizer's VW arguments: the model trains with the "
                f"served spec's own options ({settings.spec}); choose the served policy "
                "with STREAMBANDIT_POLICIES",
            )
        )
    if report.read is not None and report.read.learned and not dry_run:
        imported = api.import_model(name, trained.model_file(model_id=import_id(digest)))
        report.model = "imported"
        report.model_version = imported.model_version
    return report


def _first_policy(api: AdminApi) -> str:
    names = api.policies()
    if not names:
        msg = "the API key may use no served policy: pass --policy, or another --key"
        raise ConfigurationError(msg)
    return names[0]


# -- the report ----------------------------------------------------------------------------


def render_report(report: ImportReport) -> list[str | Table]:
    """Say what an import read, skipped, configured and imported: lines and tables."""
    size = f"{report.bytes:,} bytes"
    parts: list[str | Table] = [
        f"policy         {report.policy} ({report.spec})",
        f"files          {len(report.files):,} ({size}), digest {report.digest[:16]}",
    ]
    read = report.read
    if read is None:
        parts.append(
            "lines          not read again: the served model's lineage began with an import "
            "of these very files"
        )
    else:
        parts += [
            f"lines read     {read.lines:,}",
            f"learned        {read.learned:,}",
            f"skipped        {read.lines - read.learned:,}",
        ]
        if read.skipped:
            table = Table(title="lines skipped, by reason")
            table.add_column("reason", no_wrap=True)
            table.add_column("lines", justify="right")
            table.add_column("first", overflow="fold")
            for label, count in read.skipped.most_common():
                table.add_row(label, f"{count:,}", read.first[label])
            parts.append(table)
        dropped = read.dropped
        if dropped.identifier or dropped.undeclared or dropped.invalid:
            parts.append(
                f"features dropped: {dropped.identifier:,} identifier-like, "
                f"{dropped.undeclared:,} undeclared, {dropped.invalid:,} invalid "
                "(as the Personalizer routes drop them)"
            )
    if report.configuration:
        table = Table(title="configuration")
        table.add_column("field", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("value", overflow="fold", max_width=28)
        table.add_column("note", overflow="fold", ratio=1)
        for outcome in report.configuration:
            table.add_row(outcome.field, outcome.status, outcome.value, outcome.note)
        parts.append(table)
    served = "none yet" if report.model_version is None else f"version {report.model_version}"
    model = {
        "imported": f"imported: {served} serves it",
        "unchanged": f"unchanged ({served}): imported from these files before",
        "not imported": "not imported: no line could be learned",
        "dry run": f"dry run: not imported ({served} serves)",
    }[report.model]
    parts.append(f"model          {model}")
    if report.dry_run:
        parts.append("dry run: nothing was changed")
    elif not report.changed and report.model == "unchanged":
        parts.append("nothing changed: these files and this configuration were imported already")
    return parts
