"""The whole import: train, configure, import the model; and its report."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydantic
from rich.table import Table

from bandit.errors import ConfigurationError
from bandit.ops.warmstart.admin import AdminApi
from bandit.ops.warmstart.configuration import Configuration, FieldOutcome, plan_configuration
from bandit.ops.warmstart.logs import Bounds, ReadReport, import_id, inputs_digest, learn_export
from bandit.service.engine import configured
from bandit.settings import Limits
from bandit.wire.personalizer import learning_policy_settings
from bandit.wire.schemas import PolicySettings
from policies import make_policy
from policies.vw import VWPolicy, model_file_id

__all__ = ["ImportReport", "import_export", "render_report"]


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
    replaced
        The model version an import replaced (None: the policy had saved none).
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
    replaced: int | None = None
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
    learning_policy = None
    arguments = None if configuration.policy is None else str(configuration.policy["arguments"])
    if arguments is not None:  # its options are those the model trains with
        settings, learning_policy = _learning_policy(settings, arguments)
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
        report.model = "not imported" if not report.read.learned else "dry run"
    if configuration.service is not None:
        current = api.configuration(name)
        outcomes, wanted = plan_configuration(configuration.service, current, settings, limits)
        report.configuration = outcomes
        if wanted is not None and not dry_run:
            api.configure(name, wanted)
            report.configured = True
    if learning_policy is not None:
        report.configuration.append(learning_policy)
    if report.model == "dry run" and not dry_run:
        if arguments is not None and learning_policy and learning_policy.status == "applied":
            api.set_learning_policy(name, arguments)
        imported = api.import_model(name, trained.model_file(model_id=import_id(digest)))
        report.model = "imported"
        report.replaced = report.model_version
        report.model_version = imported.model_version
    return report


def _learning_policy(
    settings: PolicySettings, arguments: str
) -> tuple[PolicySettings, FieldOutcome]:
    """Read Personalizer's learning policy as ``PUT /configurations/policy`` reads it.

    (:func:`bandit.wire.personalizer.learning_policy_settings`.) Returns the settings
    the model trains with, and what becomes of the field: refused options are reported
    and not sent; applied ones are sent just before the model is imported (never in a
    dry run, nor when no model is), the model trained with their options.
    """
    value = json.dumps(arguments)
    served = configured(make_policy(settings.spec), settings)
    if not isinstance(served, VWPolicy):
        return settings, FieldOutcome("policy", "refused", value, "the served policy is not VW's")
    try:
        wanted, reset = learning_policy_settings(arguments, settings, served)
    except pydantic.ValidationError as exc:
        why = "; ".join(str(error["msg"]) for error in exc.errors())
        return settings, FieldOutcome("policy", "refused", value, why)
    if wanted == settings:
        return settings, FieldOutcome("policy", "unchanged", value, "")
    note = f"spec {wanted.spec}" if reset else f"exploration {wanted.exploration}"
    return wanted, FieldOutcome("policy", "applied", value, note)


def _first_policy(api: AdminApi) -> str:
    names = api.policies()
    if not names:
        msg = "the API key may use no served policy: pass --policy, or another --key"
        raise ConfigurationError(msg)
    return names[0]


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
        "imported": f"imported: {served} serves it"
        + ("" if report.replaced is None else f" (it replaces version {report.replaced})"),
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
