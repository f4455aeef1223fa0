"""The hot route: ``POST /v1/rank`` served without the router's work per request.

FastAPI's router matches the path against every route, then solves the route's
dependencies and wraps the endpoint, on every request: for the rank route, which has no
dependency and parses its own body, that costs about a fifth of a rank's CPU.
:class:`HotRoute` is an ASGI middleware mounted innermost (inside the request log, the
load shedding and the port split, so they bound and count it as any route) that calls
the route's own endpoint for the one method and path, with the app's own exception
handlers. Everything else goes on to the router. The route stays declared on the router
too: the OpenAPI document is generated from it, and it answers what the hot route lets
through (another method: 405).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HotRoute"]

Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoute:
    """ASGI middleware: serve ``method path`` with its route's endpoint directly.

    Parameters
    ----------
    app
        The app behind it (the router).
    owner
        The FastAPI app whose route and exception handlers are used.
    path, method
        The route served here: its endpoint must take the request and return a response.
    """

    def __init__(self, app: ASGIApp, *, owner: FastAPI, path: str, method: str = "POST") -> None:
        self.app = app
        self.path = path
        self.method = method
        self.route = _find(owner.router.routes, path, method)
        self.endpoint: Callable[[Request], Awaitable[Response]] = self.route.endpoint
        # As Starlette's ExceptionMiddleware has them: what is left (500, Exception) is for
        # the outermost middleware, which answers and lets the exception go on.
        self.handlers: Mapping[Any, Handler] = {  # (Starlette types them loosely)
            key: cast(Handler, handler)
            for key, handler in owner.exception_handlers.items()
            if key not in (500, Exception)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the hot route, or pass the request on."""
        if (
            scope["type"] != "http"
            or scope["method"] != self.method
            or scope["path"] != scope.get("root_path", "") + self.path
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        scope["endpoint"] = self.endpoint
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        if isinstance(exc, HTTPException) and exc.status_code in self.handlers:
            return self.handlers[exc.status_code]
        for kind in type(exc).__mro__:
            if kind in self.handlers:
                return self.handlers[kind]
        return None


def _find(routes: Iterable[BaseRoute], path: str, method: str) -> APIRoute:
    """Return the declared route of `method path`, among `routes` and the routers included."""
    for route in routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
        included = getattr(route, "original_router", None) or getattr(route, "app", None)
        inner = getattr(included, "routes", None)
        if inner is not None:
            try:
                return _find(inner, path, method)
            except LookupError:
                continue
    msg = f"no route {method} {path} is declared"
    raise LookupError(msg)
