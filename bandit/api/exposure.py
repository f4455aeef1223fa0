"""What each port serves: the apps' routes on one, the operators' on another.

``/metrics``, ``/docs`` and ``/openapi.json`` need no key. With
``settings.api.ops_port`` set, ``streambandit api`` listens on a second port that
serves those (and health and readiness) and nothing else, and the main port stops
serving them (404): the main port can then be published to the apps while the
operators' port stays on an internal network (docker-compose.yml does this; see
docs/load-shedding.md, "Exposure"). Without it, one port serves everything.

:func:`serve` runs one API process, or several (``--workers``) sharing the ports: each a
whole API, built by the app factory it is given, with its own connections, engine,
shedding bounds and metrics.
"""

from __future__ import annotations

import logging
import socket

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bandit.api.shedding import OnRefused, uvicorn_options
from bandit.service.logging import LimitedLines
from bandit.settings import ApiSettings

__all__ = ["OPS_PATHS", "PortSplit", "bind", "limit_server_lines", "serve"]

OPS_PATHS = frozenset({"/metrics", "/docs", "/openapi.json"})
"""Served on the operators' port only (with everything under ``/docs/``)."""
_BOTH = frozenset({"/healthz", "/readyz"})


class PortSplit:
    """ASGI middleware: the operators' routes on `ops_port` only, the rest elsewhere only.

    Parameters
    ----------
    app
        The app behind it.
    ops_port
        The operators' port (the local port a request arrived on is ``scope["server"]``).
    on_refused
        Makes the 404 answer from the request, as the app answers its other errors.
    """

    def __init__(self, app: ASGIApp, *, ops_port: int, on_refused: OnRefused) -> None:
        self.app = app
        self.ops_port = ops_port
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 404 for a route not served on the port the request came to."""
        if scope["type"] == "http":
            path: str = scope["path"]
            server = scope.get("server")
            on_ops = server is not None and server[1] == self.ops_port
            wanted_ops = path in OPS_PATHS or path.startswith("/docs/")
            if path not in _BOTH and wanted_ops != on_ops:
                request = Request(scope, receive)
                response = await self.on_refused(request, HTTPException(404, "Not Found"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket on `host`:`port`, as uvicorn binds its own.

    Its protocol is named (TCP), so asyncio sets ``TCP_NODELAY`` on each connection it
    accepts (it does only for sockets of protocol TCP): without it, an answer written as
    headers then body waited for the client's delayed ACK, 40 ms, on every request.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (inherited on Linux)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def limit_server_lines(api: ApiSettings) -> None:
    """Limit uvicorn's lines (one per malformed request) to ``api.log_lines_per_second``.

    For each API process, once uvicorn has set up its loggers.
    """
    logging.getLogger("uvicorn.error").addFilter(LimitedLines(api.log_lines_per_second))


def serve(factory: str, api: ApiSettings, *, workers: int = 1) -> None:
    """Serve the app `factory` makes with uvicorn on ``api.port`` (and ``api.ops_port``).

    Parameters
    ----------
    factory
        ``module:function`` returning the app, called in each API process: uvicorn
        starts each worker afresh, so the app is made there, not sent there.
    api
        The ports and uvicorn's options (:func:`~bandit.api.shedding.uvicorn_options`).
    workers
        API processes: the ports are bound here once and shared, and uvicorn's
        supervisor restarts a worker that dies. With 1, this process serves.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        factory,
        factory=True,
        host=api.host,
        port=api.port,
        workers=workers,
        **uvicorn_options(api),
    )
    sockets = [bind(api.host, api.port)]
    if api.ops_port is not None:
        sockets.append(bind(api.host, api.ops_port))
    if workers == 1:
        uvicorn.Server(config).run(sockets=sockets)
    else:
        Multiprocess(config, sockets=sockets).run()
