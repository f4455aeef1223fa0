"""The API's answers: JSON bodies, the errors, their OpenAPI declarations and handlers.

Native routes answer errors FastAPI-style, Personalizer routes Personalizer-style
(:mod:`bandit.api.app`, "Errors"); every refusal raises :class:`RefusedRequestError` and
:func:`add_error_handlers` turns it, and FastAPI's and Starlette's own, into that answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from bandit.api.requestlog import note
from bandit.api.shedding import SHED_RESPONSES
from bandit.errors import RefusedRequestError
from bandit.wire.personalizer import PersonalizerErrorResponse, error_target

__all__ = [
    "ERROR_RESPONSES",
    "PERSONALIZER_ERRORS",
    "POLICY_ERRORS",
    "ErrorDetail",
    "ErrorResponse",
    "RefusedRequestError",
    "add_error_handlers",
    "error_response",
    "error_responses",
    "invalid",
    "json_response",
    "model_response",
    "on_http_error",
]

_PERSONALIZER_PREFIX = "/personalizer/"


class ErrorDetail(BaseModel):
    """One broken rule: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """A native route's error: its message, or (422) every broken rule."""

    detail: str | list[ErrorDetail]


def invalid(exc: pydantic.ValidationError, what: str) -> RefusedRequestError:
    """Return the 422 for a body that breaks its model's rules: every rule, never the input."""
    errors = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    count = len(errors)
    message = f"{what} breaks {count} rule{'s' if count != 1 else ''}"
    return RefusedRequestError(422, "BadRequest", message, details=errors)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Answer `data` as JSON."""
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def model_response(
    model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Answer `model` as JSON, by its aliases."""
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


ERROR_TEXT: dict[int, str] = {
    400: "Invalid input (Personalizer's routes): every broken rule, by field.",
    401: "No API key, or an unknown one (the privacy page: no valid page token).",
    403: "The key may not use this policy or do this.",
    404: "No such served policy.",
    409: "The privacy budget is spent.",
    422: "Invalid input: every broken rule, by field.",
    **{int(status): answer["description"] for status, answer in SHED_RESPONSES.items()},
    503: (
        "Not now: overloaded (settings.api.max_in_flight, max_queue_seconds), Redis or the "
        "broker unavailable, or no pseudonym key configured; retry later (after Retry-After "
        "seconds when given)."
    ),
}


def error_responses(*statuses: int, model: type[BaseModel] = ErrorResponse) -> dict[int | str, Any]:
    """OpenAPI ``responses`` for error `statuses`, answered with `model`."""
    return {status: {"description": ERROR_TEXT[status], "model": model} for status in statuses}


ERROR_RESPONSES = error_responses(401, 403, 408, 413, 415, 422, 503)
PERSONALIZER_ERRORS = error_responses(
    400, 401, 403, 404, 408, 413, 415, 503, model=PersonalizerErrorResponse
)
POLICY_ERRORS = error_responses(404)
"""Routes naming a policy (query, path or body) answer 404 when it is not served."""


def error_response(request: Request, error: RefusedRequestError) -> Response:
    """Answer `error` in the style of the route's surface, and note it in the request log."""
    note(
        request,
        "request.rejected" if error.status < 500 else "request.failed",
        error=error.code,
        reason=error.message,
        invalid=[".".join(map(str, d.get("loc", []))) for d in error.details] or None,
    )
    status = error.status
    if request.url.path.startswith(_PERSONALIZER_PREFIX):
        if status == 422:  # Personalizer's status for invalid input
            status = 400
        details = [
            {"code": d.get("type", error.code), "message": d.get("msg", ""), "target": _target(d)}
            for d in error.details
        ]
        body: Any = {"error": {"code": error.code, "message": error.message, "details": details}}
    elif error.details:
        body = {"detail": error.details}
    else:
        body = {"detail": error.message}
    return json_response(body, status, error.headers)


def _target(detail: Mapping[str, Any]) -> str | None:
    loc = detail.get("loc")
    return error_target(loc) if loc else None


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RefusedRequestError)
    return error_response(request, exc)


async def _on_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    count = len(errors)
    message = f"the request breaks {count} rule{'s' if count != 1 else ''}"
    return error_response(request, RefusedRequestError(422, "BadRequest", message, details=errors))


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Answer Starlette's HTTP errors (and the middlewares' refusals) as the routes do."""
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        404: "ResourceNotFound",
        405: "MethodNotAllowed",
        408: "RequestTimeout",
        413: "PayloadTooLarge",
        415: "UnsupportedMediaType",
        503: "ServiceUnavailable",
    }
    error = RefusedRequestError(
        exc.status_code,
        codes.get(exc.status_code, "BadRequest"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )
    return error_response(request, error)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    error = RefusedRequestError(500, "InternalServerError", "internal error; see the service log")
    return error_response(request, error)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error `app` raises, its own and FastAPI's and Starlette's, as above."""
    app.add_exception_handler(RefusedRequestError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
