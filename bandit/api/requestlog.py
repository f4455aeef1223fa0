"""The request log: one latency observation, one count and one log line per request.

Handlers and dependencies add to their request's line with :func:`note`; the
:class:`RequestLog` middleware writes it when the request ends (see
:mod:`bandit.api.app`, "Logging").
"""

from __future__ import annotations

import time
from collections.abc import Set
from typing import Any

import structlog
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit.api.shedding import SHED_SCOPE_KEY
from bandit.service.logging import LineLimiter
from bandit.service.metrics import ApiMetrics

__all__ = ["RequestLog", "note"]

_log = structlog.get_logger("bandit.api.requestlog")
_DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/assets/{name}"})
_ALWAYS_LOGGED = frozenset(
    {
        "settings.changed",
        "consent.changed",
        "person.exported",
        "person.erased",
        "report.released",
        "decision_log.deleted",
    }
)
"""Events logged whatever ``settings.api.request_log`` says (an audit trail)."""


def note(request: Request, event: str | None = None, **fields: Any) -> None:
    """Add to the one log line of this request (and name its event)."""
    state: dict[str, Any] = request.scope.setdefault("streambandit.log", {})
    if event is not None:
        state["event"] = event
    state.update(fields)


class RequestLog:
    """ASGI middleware: one latency observation and one count per request, and its log line.

    With `log_all` false, only refused and failed requests (and the events of
    :data:`_ALWAYS_LOGGED`) write their line. Lines of refused and failed requests pass
    `limiter` (by event and status): beyond its rate they are counted, and the next line
    of the kind says how many in ``suppressed``. Requests to `quiet_paths` (health,
    readiness, metrics) and to the documentation log at debug level.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ApiMetrics,
        *,
        quiet_paths: Set[str] = frozenset(),
        log_all: bool = True,
        limiter: LineLimiter | None = None,
    ) -> None:
        self.app = app
        self.quiet_paths = quiet_paths
        self.metrics = metrics
        self.log_all = log_all
        self.limiter = limiter
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # metrics by label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then count it and write its line."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._record(scope, status, time.perf_counter() - started, failure)

    def _limited(self, event: str, status: int, line: dict[str, Any]) -> bool:
        """Whether the limiter drops this line; if not, add what it dropped before it."""
        if self.limiter is None:
            return False
        suppressed = self.limiter.admit((event, status))
        if suppressed is None:
            return True
        if suppressed:
            line["suppressed"] = suppressed
        return False

    def _record(
        self, scope: Scope, status: int, elapsed: float, failure: BaseException | None
    ) -> None:
        route = getattr(scope.get("route"), "path", None)
        if route is None:  # FastAPI serves its documentation routes outside the router
            route = scope["path"] if scope.get("path") in _DOCS_PATHS else "unmatched"
            if scope.get(SHED_SCOPE_KEY):  # refused before routing (bandit.api.shedding)
                route = "shed"
        method = str(scope.get("method", ""))
        children = self._children.get((route, method, status))
        if children is None:  # (routes, methods and statuses are few: kept for good)
            children = self._children[route, method, status] = (
                self.metrics.latency.labels(route, method),
                self.metrics.requests.labels(route, method, str(status)),
            )
        children[0].observe(elapsed)
        children[1].inc()
        noted: dict[str, Any] | None = scope.get("streambandit.log")
        if (
            not self.log_all
            and failure is None
            and status < 400
            and (noted is None or noted.get("event") not in _ALWAYS_LOGGED)
        ):
            return
        fields: dict[str, Any] = dict(noted or {})
        event = fields.pop("event", None)
        if event is None:
            event = "request.handled" if status < 400 else "request.rejected"
            if status >= 500:
                event = "request.failed"
        line = {
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
            **fields,
        }
        if (status >= 400 or failure is not None) and self._limited(event, status, line):
            return
        if failure is not None:
            _log.error(event, exc_info=failure, **line)
        elif route in self.quiet_paths or route in _DOCS_PATHS:
            _log.debug(event, **line)
        elif status >= 500:
            _log.error(event, **line)
        elif status >= 400:
            _log.warning(event, **line)
        else:
            _log.info(event, **line)
