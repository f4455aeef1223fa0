"""What the on-call commands (``streambandit policy``, ``streambandit model``) share.

Each talks to a running API over HTTP with an admin key (:class:`bandit.client.Client`):
``--url`` and ``--key``, by default the API these ``STREAMBANDIT_*`` settings serve
(``api.host``, ``api.port``) and their first admin key (``api.keys``). An answer that
refuses the input ends the command with one line and exit code 2; an API that cannot be
reached, a key that is refused, a server error or anything else the server refuses:
one line and exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

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

__all__ = ["Key", "Name", "Url", "admin_client", "api_endpoint", "api_errors", "stderr", "stdout"]

Name = Annotated[str, typer.Argument(metavar="NAME", help="The served policy's name.")]
"""The served policy a command is about."""
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
"""``--url`` and ``--key``: the API and the admin key (see the module docstring)."""


def api_endpoint(url: str | None, key: str | None) -> tuple[str, str]:
    """Return the API's URL and an admin key: those given, else those the settings name.

    The URL defaults to the API that ``api.host`` and ``api.port`` serve (a listening
    address such as ``0.0.0.0`` read as loopback), the key to the first admin key of
    ``api.keys``.

    Raises
    ------
    typer.BadParameter
        If no key is given and the settings hold no admin key (naming ``--key``).
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
def admin_client(url: str | None, key: str | None, *, timeout: float = 10.0) -> Iterator[Client]:
    """Yield a client of the admin API: `url` and `key`, else those the settings name.

    The default URL is the API that ``api.host`` and ``api.port`` serve, the default key
    the first admin key of ``api.keys``; with neither given, a usage error names
    ``--key``. Each call waits `timeout` seconds for its answer.
    """
    url, key = api_endpoint(url, key)
    try:
        client = Client(url, key, timeout=timeout)
    except InvalidArgumentError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--url'") from None
    with client:
        yield client


@contextmanager
def api_errors(command: str) -> Iterator[None]:
    """End on an API error with one line: exit 2 when the input was refused, else 1."""
    try:
        yield
    except (UnprocessableRequestError, BadRequestError, InvalidArgumentError) as exc:
        stderr().print(
            f"{command}: refused: {_one_line(exc)}", style="red", highlight=False, markup=False
        )
        raise typer.Exit(2) from None
    except ClientError as exc:
        stderr().print(
            f"{command} failed: {_one_line(exc)}", style="red", highlight=False, markup=False
        )
        raise typer.Exit(1) from None


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def stdout() -> Console:
    """Return the console a command prints its result to."""
    return Console(soft_wrap=True)


def stderr() -> Console:
    """Return the console a command prints its errors to."""
    return Console(stderr=True, soft_wrap=True)
