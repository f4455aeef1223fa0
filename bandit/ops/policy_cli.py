"""``streambandit policy``: read and change a served policy's live settings, and its kill switch.

Every command talks to a running API over HTTP with an admin key
(:class:`bandit.client.Client`): ``--url`` and ``--key``, by default the API these
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import pydantic
import typer
from rich.console import Console

from bandit.client import (
    BadRequestError,
    Client,
    ClientError,
    InvalidArgumentError,
    UnprocessableRequestError,
)
from bandit.settings import get_settings
from bandit.wire.schemas import PolicySettings

__all__ = ["api_endpoint", "policy_app"]

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

Name = Annotated[str, typer.Argument(metavar="NAME", help="The served policy's name.")]
Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        help="The API's base URL [default: http://API__HOST:API__PORT from STREAMBANDIT_*].",
    ),
]
Key = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="KEY",
        help="An admin API key [default: the first admin key in STREAMBANDIT_API__KEYS].",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the settings as JSON.")]


@policy_app.command("get")
def get_command(name: Name, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Print a policy's live settings: exploration, floor, reward wait, default reward, ..."""
    with _client(url, key) as client, _api_errors("policy get"):
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
    with _client(url, key) as client:
        with _api_errors("policy set"):
            current = client.get_settings(name)
        if parameters:
            changes["exploration"] = {**current.exploration, **parameters}
        wanted = _changed(current, changes)
        with _api_errors("policy set"):
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
    out = _stdout()
    command = f"policy {'baseline' if forced else 'resume'}"
    with _client(url, key) as client, _api_errors(command):
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


def api_endpoint(url: str | None, key: str | None) -> tuple[str, str]:
    """Return the API's URL and an admin key: those given, else the ``STREAMBANDIT_*`` ones.

    The URL defaults to ``http://API__HOST:API__PORT`` (a listening address such as
    ``0.0.0.0`` read as loopback), the key to the first admin key in ``API__KEYS``.

    Raises
    ------
    typer.BadParameter
        If no key is given and the settings hold no admin key.
    """
    settings = get_settings()
    if url is None:
        host = settings.api.host
        if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - a listening address, not a bind
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{settings.api.port}"
    if key is None:
        admins = [k.key for k in settings.api.keys if k.role == "admin"]
        if not admins:
            msg = "no admin key: pass --key, or set one in STREAMBANDIT_API__KEYS"
            raise typer.BadParameter(msg, param_hint="'--key'")
        key = admins[0]
    return url, key


@contextmanager
def _client(url: str | None, key: str | None) -> Iterator[Client]:
    url, key = api_endpoint(url, key)
    try:
        client = Client(url, key, timeout=10.0)
    except InvalidArgumentError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--url'") from None
    with client:
        yield client


@contextmanager
def _api_errors(command: str) -> Iterator[None]:
    """End on an API error with one line: exit 2 when the input was refused, else 1."""
    try:
        yield
    except (UnprocessableRequestError, BadRequestError, InvalidArgumentError) as exc:
        _stderr().print(
            f"{command}: refused: {_one_line(exc)}", style="red", highlight=False, markup=False
        )
        raise typer.Exit(2) from None
    except ClientError as exc:
        _stderr().print(
            f"{command} failed: {_one_line(exc)}", style="red", highlight=False, markup=False
        )
        raise typer.Exit(1) from None


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _show(name: str, settings: PolicySettings, *, as_json: bool) -> None:
    out = _stdout()
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


def _stdout() -> Console:
    return Console(soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)
