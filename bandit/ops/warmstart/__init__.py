"""Warm start from Azure Personalizer: its exported logs train the served model, its settings apply.

``streambandit import-personalizer`` (:mod:`bandit.ops.cli`) runs :func:`import_export`,
step by step in docs/migrating-from-personalizer.md ("Warm start"):

- :mod:`~bandit.ops.warmstart.logs`: the exported DSJSON lines, each learned into a fresh
  model of the served spec as the service would have learned it, or counted under the
  reason it was not (:func:`learn_export`); the digest of what a model is trained from
  (:func:`inputs_digest`);
- :mod:`~bandit.ops.warmstart.configuration`: the exported service configuration, field
  by field on the rules ``PUT /configurations/service`` applies (:func:`plan_configuration`);
- :mod:`~bandit.ops.warmstart.admin`: the admin routes it goes through (:class:`AdminApi`);
  the API checks and serves the model as any import, and never trains;
- :mod:`~bandit.ops.warmstart.run`: the whole import and its report.

Idempotence: the model file carries the digest as its VW model id (``vw --id``,
:meth:`policies.vw.VWPolicy.model_file`), which VW keeps through every load and save;
an import whose digest is the served model's id reads no line and imports nothing.
"""

from __future__ import annotations

from bandit.ops.warmstart.admin import AdminApi
from bandit.ops.warmstart.configuration import (
    Configuration,
    FieldOutcome,
    plan_configuration,
    read_configuration,
)
from bandit.ops.warmstart.logs import (
    IMPORT_ID_PREFIX,
    LOG_SUFFIXES,
    REASONS,
    Bounds,
    ReadReport,
    export_files,
    import_id,
    inputs_digest,
    learn_export,
)
from bandit.ops.warmstart.run import ImportReport, import_export, render_report

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
