"""Personalizer's exported configuration, applied as far as this service can."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic

from bandit.errors import ConfigurationError
from bandit.settings import Limits
from bandit.wire.personalizer import PersonalizerServiceConfiguration, configured_settings
from bandit.wire.schemas import PolicySettings

__all__ = ["Configuration", "FieldOutcome", "plan_configuration", "read_configuration"]


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
    retention = None if current.log_retention_days == -1 else current.log_retention_days

    def settings_of(config: PersonalizerServiceConfiguration) -> PolicySettings:
        frequency = current.model_export_frequency
        return configured_settings(
            config,
            settings,
            epsilon=current.exploration_percentage,
            snapshot_seconds=math.inf if frequency is None else frequency.total_seconds(),
            limits=limits,
            retention_days=retention,
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
