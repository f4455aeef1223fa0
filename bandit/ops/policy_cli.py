"""``streambandit policy``: read and change a served policy's live settings, and its kill switch.

Every command talks to a running API over HTTP with an admin key
(:mod:`bandit.ops.admin_cli`): ``--url`` and ``--key``, by default the API these
``STREAMBANDIT_*`` settings serve (``api.host``, ``api.port``) and their first admin key
(``api.keys``). ``set``, ``baseline`` and ``resume`` read the settings, change the fields
asked for and write them back whole (``PUT /v1/policies/{name}/settings``); what was not
named stays as it was.

A value that breaks a rule ends with a one-line error naming the option and the rule,
exit code 2, before anything is sent; settings the server refuses (an exploration
parameter the policy lacks, say) end the same way with the server's reason. An API that
cannot be reached, a key that is refused, or a server error: exit code 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any

import pydantic
import typer

from bandit.ops.admin_cli import Key, Name, Url, admin_client, api_errors, stdout
from bandit.settings import get_settings
from bandit.wire.schemas import PolicySettings

__all__ = ["policy_app"]

policy_app = typer.Typer(
    name="policy",
    help=(
        "Read and change a served policy's live settings over the admin API, and force "
        "the baseline policy (the kill switch)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_OPTIONS = {
    "exploration": "--exploration",
    "exploration_floor": "--floor",
    "reward_wait_seconds": "--reward-wait",
    "default_reward": "--default-reward",
}
"""The options of ``set``, by the settings field they change."""

AsJson = Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")]


@policy_app.command("get")
def get_command(name: Name, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Print a policy's live settings: exploration, floor, reward wait, default reward, ..."""
    with admin_client(url, key) as client, api_errors("policy get"):
        settings = client.get_settings(name)
    _show(name, settings, as_json=as_json)


@policy_app.command("set")
def set_command(  # noqa: PLR0917 - typer maps each option to a parameter
    name: Name,
    exploration: Annotated[
        list[str] | None,
        typer.Option(
            "--exploration",
            metavar="PARAM=VALUE",
            help=(
                "An exploration parameter of the policy, repeatable, e.g. epsilon=0.1 "
                "(vw-epsilon) or gamma_scale=10 (vw-squarecb); others stay."
            ),
        ),
    ] = None,
    floor: Annotated[
        float | None,
        typer.Option("--floor", help="Smallest probability any offered action gets, in (0, 1]."),
    ] = None,
    reward_wait: Annotated[
        float | None,
        typer.Option(
            "--reward-wait",
            metavar="SECONDS",
            help="How long after a decision its rewards are joined, in (0, 604800].",
        ),
    ] = None,
    default_reward: Annotated[
        float | None,
        typer.Option(
            "--default-reward", help="The reward learned when none arrives within the wait."
        ),
    ] = None,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Change a policy's live settings; they apply at once and the model is kept."""
    changes: dict[str, Any] = {}
    parameters = _exploration(exploration or [])
    if floor is not None:
        changes["exploration_floor"] = floor
    if reward_wait is not None:
        changes["reward_wait_seconds"] = reward_wait
    if default_reward is not None:
        changes["default_reward"] = default_reward
    if not changes and not parameters:
        msg = "give at least one of --exploration, --floor, --reward-wait, --default-reward"
        raise typer.BadParameter(msg)
    _changed(PolicySettings(spec="-"), changes)  # a bad value fails before anything is sent
    with admin_client(url, key) as client:
        with api_errors("policy set"):
            current = client.get_settings(name)
        if parameters:
            changes["exploration"] = {**current.exploration, **parameters}
        wanted = _changed(current, changes)
        with api_errors("policy set"):
            stored = client.set_settings(name, wanted)
    _show(name, stored, as_json=as_json)


@policy_app.command("baseline")
def baseline_command(name: Name, url: Url = None, key: Key = None) -> None:
    """Kill switch: serve the baseline policy now; keep logging, learning and the model."""
    _switch(name, url, key, forced=True)


@policy_app.command("resume")
def resume_command(name: Name, url: Url = None, key: Key = None) -> None:
    """Release the kill switch: the policy's own model serves again."""
    _switch(name, url, key, forced=False)


# -- helpers -------------------------------------------------------------------------------


def _switch(name: str, url: str | None, key: str | None, *, forced: bool) -> None:
    out = stdout()
    command = f"policy {'baseline' if forced else 'resume'}"
    with admin_client(url, key) as client, api_errors(command):
        current = client.get_settings(name)
        if current.baseline_forced != forced:
            client.set_baseline(name, forced)
    baseline = get_settings().privacy.baseline_policy
    if forced:
        was = " (it already was)" if current.baseline_forced else ""
        out.print(
            f"policy {name!r}: the baseline ({baseline}) serves every request{was}; decisions "
            f"are logged with its probabilities. Undo: streambandit policy resume {name}",
            highlight=False,
            markup=False,
        )
    else:
        was = " (it already did)" if not current.baseline_forced else ""
        out.print(
            f"policy {name!r}: its own model serves again{was}.", highlight=False, markup=False
        )


def _exploration(items: list[str]) -> dict[str, float]:
    """Parse ``PARAM=VALUE`` pairs, refusing a malformed one by naming the option."""
    found: dict[str, float] = {}
    for item in items:
        param, sep, value = item.partition("=")
        param = param.strip()
        if not sep or not param:
            msg = f"must be PARAM=VALUE, e.g. epsilon=0.1, got {item!r}"
            raise typer.BadParameter(msg, param_hint="'--exploration'")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            msg = f"the value of {param!r} must be a finite number, got {value!r}"
            raise typer.BadParameter(msg, param_hint="'--exploration'")
        found[param] = number
    return found


def _changed(current: PolicySettings, changes: Mapping[str, Any]) -> PolicySettings:
    """Return `current` with `changes`, checked; a broken rule names the option."""
    try:
        return PolicySettings.model_validate({**current.model_dump(), **changes})
    except pydantic.ValidationError as exc:
        error = exc.errors(include_input=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        option = _OPTIONS.get(field, field)
        value = changes.get(field)
        msg = f"{error['msg'].lower()} (PolicySettings.{field}), got {value!r}"
        raise typer.BadParameter(msg, param_hint=f"'{option}'") from None


def _show(name: str, settings: PolicySettings, *, as_json: bool) -> None:
    out = stdout()
    if as_json:
        out.print(
            json.dumps({"policy": name, **settings.model_dump(mode="json")}, indent=2),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    exploration = ", ".join(f"{k}={v:g}" for k, v in sorted(settings.exploration.items()))
    schema = settings.feature_schema
    rows = [
        ("policy", name),
        ("spec", settings.spec),
        ("baseline_forced", "yes (kill switch on)" if settings.baseline_forced else "no"),
        ("exploration", exploration or "(the spec's)"),
        ("exploration_floor", f"{settings.exploration_floor:g}"),
        ("reward_wait_seconds", f"{settings.reward_wait_seconds:g}"),
        ("default_reward", f"{settings.default_reward:g}"),
        ("reward_aggregation", settings.reward_aggregation),
        ("feature_schema", "none declared" if schema is None else "declared"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.print(f"{label:<{width}}  {value}", highlight=False, markup=False, soft_wrap=True)
