"""``streambandit model``: a policy's kept model versions, rollback, export, import, reset.

Every command talks to a running API over HTTP with an admin key
(:mod:`bandit.ops.admin_cli`): ``--url`` and ``--key``, by default the API these
``STREAMBANDIT_*`` settings serve and their first admin key. The policy keeps its last
``learner.model_history`` model versions (docs/runbook.md, "Rolling a model back"):
``list`` shows them, ``rollback`` serves one again as the next version, and ``import``,
``reset`` and ``rollback`` say how to undo them while the version they replaced is kept.

A version or file that breaks a rule ends with a one-line error naming it, exit code 2,
before anything is sent; what the server refuses (a file the policy cannot learn on
from: exit 2; a version it does not keep, a key that is not an admin's, no API: exit 1)
ends with one line giving the server's reason.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from bandit.client import ModelProperties, ModelVersions
from bandit.ops.admin_cli import Key, Name, Url, admin_client, api_errors, stdout
from bandit.service.modelfile import CHECK_SECONDS

__all__ = ["model_app"]

model_app = typer.Typer(
    name="model",
    help=(
        "A served policy's model over the admin API: list its kept versions, roll back "
        "to one, export, import or reset it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

Version = Annotated[
    int,
    typer.Argument(metavar="VERSION", min=1, help="A kept version (`streambandit model list`)."),
]

_IMPORT_TIMEOUT = CHECK_SECONDS + 30.0
"""How long ``import`` waits for its answer: the server checks the file for up to a minute."""


@model_app.command("list")
def list_command(
    name: Name,
    url: Url = None,
    key: Key = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the versions as JSON.")] = False,
) -> None:
    """List the kept versions of a policy's model, newest first, and the one saved last."""
    with admin_client(url, key) as client, api_errors("model list"):
        found = client.model_versions(name)
    out = stdout()
    if as_json:
        out.print(found.model_dump_json(indent=2), highlight=False, markup=False, soft_wrap=True)
        return
    for line in _listing(found):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@model_app.command("rollback")
def rollback_command(name: Name, version: Version, url: Url = None, key: Key = None) -> None:
    """Serve a kept version of a policy's model again, as its next version."""
    with admin_client(url, key) as client, api_errors("model rollback"):
        served = client.rollback_model(name, version)
        undo = _undo(client.model_versions(name), name, served)
    _say(
        f"policy {name!r}: version {version} serves again, as version {served.model_version}", undo
    )


@model_app.command("export")
def export_command(
    name: Name,
    version: Annotated[
        int | None,
        typer.Option("--version", min=1, help="A kept version [default: the version served]."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            metavar="FILE",
            help="Where to write the VW model file [default: ./NAME-VERSION.vw].",
        ),
    ] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Write a policy's model (or a kept version) as the VW model file `vw -i` loads."""
    with admin_client(url, key) as client, api_errors("model export"):
        exported = client.export_model(name, version)
    path = output or Path(f"{name}-{exported.version}.vw")
    try:
        path.write_bytes(exported.data)
    except OSError as exc:
        msg = f"cannot write {str(path)!r}: {exc.strerror or exc}"
        raise typer.BadParameter(msg, param_hint="'--output'") from None
    _say(
        f"policy {name!r}: wrote version {exported.version} ({len(exported.data):,} bytes) "
        f"to {path}"
    )


@model_app.command("import")
def import_command(
    name: Name,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="A VW model file (`vw -f`, or `streambandit model export`).",
        ),
    ],
    url: Url = None,
    key: Key = None,
) -> None:
    """Serve a VW model file trained elsewhere, once the server checked it."""
    data = file.read_bytes()
    if not data:
        raise typer.BadParameter(f"{str(file)!r} is empty", param_hint="'FILE'")
    with admin_client(url, key, timeout=_IMPORT_TIMEOUT) as client, api_errors("model import"):
        served = client.import_model(name, data)
        undo = _undo(client.model_versions(name), name, served)
    _say(f"policy {name!r}: serves {file.name} as version {served.model_version}", undo)


@model_app.command("reset")
def reset_command(name: Name, url: Url = None, key: Key = None) -> None:
    """Serve a fresh model of a policy (it learns again from nothing); its log stays."""
    with admin_client(url, key) as client, api_errors("model reset"):
        served = client.reset_model(name)
        undo = _undo(client.model_versions(name), name, served)
    _say(f"policy {name!r}: serves a fresh model as version {served.model_version}", undo)


# -- helpers -------------------------------------------------------------------------------


def _listing(found: ModelVersions) -> list[str]:
    """Return the lines ``model list`` prints: what is kept, then a row per kept version."""
    served = "none saved yet" if found.model_version is None else f"{found.model_version}"
    every = found.keep_every_seconds
    cadence = "every one" if every == 0 else f"at most one per {every:g} s"
    kept = (
        f"policy {found.policy!r}: model version {served}; keeps the last {found.keep} "
        f"versions (the learner's: {cadence}; imports, resets, rollbacks and the versions "
        "they replaced: all)"
    )
    lines = [kept]
    if not found.versions:
        return [*lines, "no version kept yet"]
    rows = [("version", "source", "saved at", "lineage began", "bytes", "restored")]
    for entry in found.versions:
        mark = " *" if entry.version == found.model_version else ""
        restored = "" if entry.restored_from is None else f"from {entry.restored_from}"
        rows.append(
            (
                f"{entry.version}{mark}",
                entry.source,
                _when(entry.saved_at),
                _when(entry.created_at),
                f"{entry.snapshot_bytes:,}",
                restored,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return lines


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _undo(found: ModelVersions, name: str, served: ModelProperties) -> str:
    """How to undo what served version `served`: roll back to the one before, if kept."""
    before = served.model_version - 1  # the version it replaced (the counter's last)
    if any(entry.version == before for entry in found.versions):
        return f"Undo: streambandit model rollback {name} {before}"
    return "The version it replaced is not kept (learner.model_history): no undo."


def _say(*lines: str) -> None:
    out = stdout()
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)
