"""The interactive API documentation at ``/docs``, served from this process alone.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts and styles from a CDN: a
browser opening them tells a third party who reads the documentation of which service,
and runs whatever that CDN serves. Here ``/docs`` is Swagger UI from the
``swagger-ui-bundle-v2`` package (its files served under ``/docs/assets/``, an allow-list
of four), configured by a script file rather than inline code, under a Content Security
Policy that allows this origin only. ReDoc is not served (no package ships it); the
OpenAPI document stays at ``/openapi.json``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Path
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

__all__ = ["ASSETS", "DOCS_HEADERS", "DOCS_PAGE", "add_docs"]

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>streambandit API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
"""
"""The ``/docs`` page: every URL in it is on this origin."""

_INIT = b"""window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
"""
"""Swagger UI's configuration; ``validatorUrl: null``: no badge fetched from elsewhere."""

ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "init.js": "text/javascript; charset=utf-8",
}
"""The files served under ``/docs/assets/``, with their media types."""

DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""Headers of the page and its assets. Swagger UI sets style attributes from its script
(``'unsafe-inline'`` for styles only); scripts, images and requests: this origin only."""


@cache
def _asset(name: str) -> bytes:
    if name == "init.js":
        return _INIT
    folder: Traversable = swagger_ui_path
    return folder.joinpath(name).read_bytes()


async def docs_page() -> Response:
    """Swagger UI for this API's OpenAPI document."""
    return Response(DOCS_PAGE, media_type="text/html; charset=utf-8", headers=DOCS_HEADERS)


async def docs_asset(name: str = Path(description="One of the files of ASSETS.")) -> Response:
    """One file of Swagger UI (404 for any name not in :data:`ASSETS`)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "Not Found")
    headers = {**DOCS_HEADERS, "Cache-Control": "public, max-age=86400"}
    return Response(_asset(name), media_type=media_type, headers=headers)


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets on `app` (made with ``docs_url=None, redoc_url=None``)."""
    app.add_api_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs/assets/{name}", docs_asset, methods=["GET"], include_in_schema=False)
