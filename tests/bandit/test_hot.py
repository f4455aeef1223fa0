"""The hot route serves its one route as the router would, and passes the rest on."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bandit.api.hot import HotRoute


class _RefusedError(Exception):
    pass


class _Seen:
    """Innermost-but-one middleware: which route each request reached the router with."""

    routes: ClassVar[list[Any]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        self.routes.append(scope.get("route"))


def _app() -> FastAPI:
    app = FastAPI()
    calls: list[str] = []

    async def rank(request: Request) -> Response:
        body = await request.body()
        calls.append("rank")
        if body == b"refuse":
            raise _RefusedError
        if body == b"missing":
            raise HTTPException(404, "nothing here")
        if body == b"boom":
            raise RuntimeError("a bug")
        return Response(body[::-1], media_type="text/plain")

    async def on_refused(request: Request, exc: Exception) -> Response:
        return JSONResponse({"refused": True}, status_code=422)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"http": exc.detail}, status_code=exc.status_code)

    router = APIRouter(prefix="/v1")
    router.add_api_route("/rank", rank, methods=["POST"])
    app.include_router(router)
    app.add_exception_handler(_RefusedError, on_refused)
    app.add_exception_handler(HTTPException, on_http)
    app.add_middleware(HotRoute, owner=app, path="/v1/rank")
    app.add_middleware(_Seen)
    app.state.calls = calls
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def test_the_hot_route_answers_as_the_router_would() -> None:
    """Its endpoint, its route in the scope, the app's handlers; others go on to the router."""
    asyncio.run(_answers())


async def _answers() -> None:
    _Seen.routes = []
    app = _app()
    async with _client(app) as client:
        served = await client.post("/v1/rank", content=b"abc")
        assert (served.status_code, served.content) == (200, b"cba")
        assert getattr(_Seen.routes[-1], "path", None) == "/v1/rank"  # what the log labels
        refused = await client.post("/v1/rank", content=b"refuse")
        assert (refused.status_code, refused.json()) == (422, {"refused": True})
        missing = await client.post("/v1/rank", content=b"missing")
        assert (missing.status_code, missing.json()) == (404, {"http": "nothing here"})
        assert (await client.post("/v1/rank", content=b"boom")).status_code == 500
        assert app.state.calls == ["rank"] * 4
        # another method, another path: the router's answers
        assert (await client.get("/v1/rank")).status_code == 405
        assert (await client.post("/v1/rank/x", content=b"abc")).status_code == 404
        assert app.state.calls == ["rank"] * 4


def test_a_route_that_is_not_declared_is_refused_at_once() -> None:
    """The hot route serves a declared route only (its OpenAPI and fallback)."""
    app = FastAPI()
    app.add_middleware(HotRoute, owner=app, path="/v1/rank")

    async def post() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.post("/v1/rank")

    with pytest.raises(LookupError, match="no route POST /v1/rank"):
        asyncio.run(post())
