"""The OpenAPI document, generated from the routes' declarations.

FastAPI documents a request body only when it parses the body itself; the routes here
read and validate theirs with the configured limits (and the rank route without
dependency injection, for speed), so each declares the model it reads with
:func:`reads_body`, and :func:`openapi_document` adds the schemas of those models,
generated from them as FastAPI generates the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

__all__ = ["openapi_document", "reads_body"]

_REF = "#/components/schemas/{model}"
_READ: dict[str, type[BaseModel]] = {}
"""The models routes read, by name (as the document names their schemas)."""


def reads_body(model: type[BaseModel]) -> dict[str, Any]:
    """Declare that a route reads a JSON body of `model` itself (its ``openapi_extra``).

    Parameters
    ----------
    model
        The pydantic model the route validates its body with.

    Returns
    -------
    dict
        The route's ``openapi_extra``: a required ``application/json`` body of `model`.

    Raises
    ------
    ValueError
        If another model of the same name was declared (their schemas would collide).
    """
    known = _READ.setdefault(model.__name__, model)
    if known is not model:
        msg = f"two request models are named {model.__name__!r}: {known!r} and {model!r}"
        raise ValueError(msg)
    ref = _REF.format(model=model.__name__)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref}}},
        }
    }


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """Return `app`'s OpenAPI document: FastAPI's, with the schemas of the bodies read.

    Made once, then kept (``app.openapi_schema``), as FastAPI's own ``app.openapi``.
    """
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in sorted(set(_bodies_read(document))):
        schema = _READ[name].model_json_schema(by_alias=True, ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    app.openapi_schema = document
    return document


def _bodies_read(document: dict[str, Any]) -> Iterator[str]:
    """Yield the names of the models that the document's operations declared they read."""
    prefix = _REF.format(model="")
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            ref = (body or {}).get("schema", {}).get("$ref", "")
            name = ref.removeprefix(prefix)
            if ref.startswith(prefix) and name in _READ:
                yield name
