"""Load shedding for the HTTP API: refuse what would cost too much before it costs it.

:class:`Shedding` is an ASGI middleware that sits outside the routes. Before a request
reaches its route (and before a byte of its body is read) it refuses:

- a body declared larger than ``settings.api.max_body_bytes`` (``Content-Length``): 413,
  and the connection is closed, so the rest of the body is never read;
- a body whose ``Content-Type`` is not JSON (``application/json`` or ``*/*+json``): 415;
- a request that arrived with ``settings.api.max_in_flight`` requests or more already in
  flight, or one that waited longer than ``settings.api.max_queue_seconds`` from its
  arrival (its headers read) to its start: 503 with ``Retry-After``, without doing its
  work. Health, readiness and metrics are never refused this way.

In flight means received and not yet answered, the requests waiting to start included:
on one event loop most of a rank runs without yielding, so under overload requests wait
*before* they start (in the loop's queue of ready tasks), where a count of started
requests would not see them. The HTTP protocol that :func:`uvicorn_options` gives
uvicorn (``streambandit api``) stamps each request with its arrival time and the number
of requests the server then held; served otherwise, only the requests started count and
the wait is not bounded. The wait bound is the backstop for requests that cost more
than most (the count bounds how many wait, not how long).

While the route reads the body, the middleware counts its bytes (a chunked body declares
no length): past ``max_body_bytes``, 413 and the connection closed. A body not complete
within ``settings.api.body_timeout_seconds`` of the request's start: 408 and the
connection closed. A request waiting for its body's bytes is not counted among the
requests in flight (it costs no CPU), so slow clients cannot fill them; the body read
time bound is what cuts them off. docs/load-shedding.md describes every bound.

The refusals are Starlette ``HTTPException`` s, answered by the app's own handler for
them (the API's error format); what is refused is counted in
``streambandit_requests_shed`` by reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import h11
from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from bandit.settings import ApiSettings

__all__ = [
    "ARRIVED_SCOPE_KEY",
    "RETRY_AFTER_SECONDS",
    "SHED_RESPONSES",
    "SHED_SCOPE_KEY",
    "Shedding",
    "is_json",
    "uvicorn_options",
]

RETRY_AFTER_SECONDS = 1
"""What a shed request's ``Retry-After`` asks the client to wait."""
ARRIVED_SCOPE_KEY = "streambandit.arrived"
"""In the scope: the event loop's time when the request's headers were read, and the
number of requests the server then held (this one included)."""
SHED_RESPONSES: dict[int | str, dict[str, Any]] = {
    408: {"description": "The body did not arrive in time (settings.api.body_timeout_seconds)."},
    413: {"description": "The body is too large (settings.api.max_body_bytes)."},
    415: {"description": "The body is not JSON (send Content-Type: application/json)."},
    503: {
        "description": (
            "Not now: overloaded (settings.api.max_in_flight, max_queue_seconds) or the "
            "broker or Redis away; retry after Retry-After seconds when given."
        )
    },
}
"""The answers of these bounds, for the OpenAPI document of the routes they guard."""
SHED_SCOPE_KEY = "streambandit.shed"
"""Set in the scope of a request refused before it reached its route."""
_CLOSE = {"Connection": "close"}

OnRefused = Callable[[Request, Exception], Awaitable[Response]]


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` value names JSON (``application/json`` or ``+json``).

    Examples
    --------
    >>> is_json("application/json; charset=utf-8"), is_json("application/problem+json")
    (True, True)
    >>> is_json("text/plain"), is_json("")
    (False, False)
    """
    media = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


class Shedding:
    """ASGI middleware: bounds on requests in flight, body size, body read time, media type.

    Parameters
    ----------
    app
        The app (its routes) behind the bounds.
    on_refused
        Makes the answer to a refusal (a Starlette ``HTTPException``) from the request:
        the app's own handler for those, so refusals look like the app's other errors.
    max_in_flight
        Requests in flight at once; more are refused (503, ``Retry-After``).
    max_queue_seconds
        Longest wait from a request's arrival to its start; a later start is refused (503).
    max_body_bytes
        Largest request body (413 beyond it, declared or counted).
    body_timeout_seconds
        Time from a request's start by which its body must be complete (408 after).
    exempt
        Paths never refused for being beyond `max_in_flight` (health, readiness, metrics).
    binary
        Whether a request takes a body of any media type (a model file upload), by its
        method and path; every other body must be JSON.
    shed
        Counts refusals, labelled by reason: ``in_flight``, ``too_large``,
        ``queued``, ``slow_body``, ``media_type``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_refused: OnRefused,
        max_in_flight: int,
        max_queue_seconds: float,
        max_body_bytes: int,
        body_timeout_seconds: float,
        exempt: Collection[str] = (),
        binary: Callable[[str, str], bool] | None = None,
        shed: Counter | None = None,
    ) -> None:
        self.app = app
        self.on_refused = on_refused
        self.max_in_flight = max_in_flight
        self.max_queue_seconds = max_queue_seconds
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.exempt = frozenset(exempt)
        self.binary = binary
        self.in_flight = 0
        """Requests started and not finished (those not exempt)."""
        self.reading = 0
        """Of those, the ones waiting for their body's bytes."""
        self._shed = shed

    def _count(self, reason: str) -> None:
        if self._shed is not None:
            self._shed.labels(reason).inc()

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, error: HTTPException
    ) -> None:
        scope[SHED_SCOPE_KEY] = True
        response = await self.on_refused(Request(scope, receive), error)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request if a bound calls for it, else pass it on with its body bounded."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._refuse(scope, receive, send, refusal)
            return
        counted = scope["path"] not in self.exempt
        if counted:
            busy = self._busy(scope)
            if busy is not None:
                error = HTTPException(503, busy, {"Retry-After": str(RETRY_AFTER_SECONDS)})
                await self._refuse(scope, receive, send, error)
                return
            self.in_flight += 1
        try:
            await self.app(scope, self._bounded(receive, counted), send)
        finally:
            if counted:
                self.in_flight -= 1

    def _busy(self, scope: Scope) -> str | None:
        """Return why the request is shed (too many in flight, waited too long), if it is."""
        arrival: tuple[float, int] | None = scope.get(ARRIVED_SCOPE_KEY)
        ahead = self.in_flight - self.reading
        if arrival is not None:  # those not started yet too
            ahead = max(ahead, arrival[1] - 1 - self.reading)
        if ahead >= self.max_in_flight:
            self._count("in_flight")
            return (
                f"the service is at its bound of {self.max_in_flight} requests in flight "
                "(settings.api.max_in_flight); retry after the Retry-After seconds"
            )
        if arrival is not None:
            waited = asyncio.get_running_loop().time() - arrival[0]
            if waited > self.max_queue_seconds:
                self._count("queued")
                return (
                    f"the service is overloaded: this request waited {waited:.3f} s to start, "
                    f"more than {self.max_queue_seconds:g} s (settings.api.max_queue_seconds); "
                    "retry after the Retry-After seconds"
                )
        return None

    def _refusal(self, scope: Scope) -> HTTPException | None:
        """Return the refusal the request's headers alone call for, if any."""
        length: bytes | None = None
        chunked = False
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-type":
                content_type = value
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > self.max_body_bytes:
            self._count("too_large")
            message = (
                f"request bodies must be at most {self.max_body_bytes} bytes "
                f"(settings.api.max_body_bytes), got Content-Length {declared}"
            )
            return HTTPException(413, message, _CLOSE)
        text = content_type.decode("latin-1")
        takes_any = self.binary is not None and self.binary(scope["method"], scope["path"])
        if (declared or chunked) and not takes_any and not is_json(text):
            self._count("media_type")
            found = text.partition(";")[0].strip()[:64].encode("ascii", "replace").decode()
            message = (
                "request bodies must be JSON: send Content-Type: application/json, "
                f"got {found or 'none'}"
            )
            return HTTPException(415, message)
        return None

    def _bounded(self, receive: Receive, counted: bool) -> Receive:
        """`receive` with the body's size and read time bounded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_seconds
        received = 0
        complete = False

        async def bounded() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is waiting for a disconnect
                return await receive()
            if counted:  # waiting for bytes costs no CPU: it does not hold a place
                self.reading += 1
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                self._count("slow_body")
                text = (
                    f"the request body was not complete within {self.body_timeout_seconds:g} s "
                    "(settings.api.body_timeout_seconds)"
                )
                raise HTTPException(408, text, _CLOSE) from None
            finally:
                if counted:
                    self.reading -= 1
            if message["type"] != "http.request":
                complete = True
                return message
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                self._count("too_large")
                text = (
                    f"request bodies must be at most {self.max_body_bytes} bytes "
                    f"(settings.api.max_body_bytes), got more"
                )
                raise HTTPException(413, text, _CLOSE)
            complete = not message.get("more_body", False)
            return message

        return bounded


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and each request's arrival time.

    uvicorn times out idle keep-alive connections but not a request's headers: a client
    sending them a byte at a time would hold its connection for good. From a connection's
    start, and from the first byte of each request on it, the headers must be complete
    within `header_timeout` seconds, or the connection is closed. A request whose headers
    were just read gets the loop's time and the number of requests the server holds in
    its scope (:data:`ARRIVED_SCOPE_KEY`), before its task starts.
    """

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        scope: Any = self.scope
        if scope is not None and ARRIVED_SCOPE_KEY not in scope:
            scope[ARRIVED_SCOPE_KEY] = (self.loop.time(), len(self.tasks))
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_header_timer()
        elif self._header_timer is None and self.timeout_keep_alive_task is None:
            # (an idle keep-alive connection has uvicorn's own timeout until its next byte)
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


@dataclass(frozen=True, slots=True)
class _GuardedH11Factory:
    """Makes :class:`_GuardedH11` protocols with a header timeout of `header_timeout` seconds.

    An object, not a class made for the timeout, so that it pickles: uvicorn sends its
    configuration to each worker process of ``streambandit api --workers N``.
    """

    header_timeout: float

    def __call__(self, *args: Any, **kwargs: Any) -> _GuardedH11:
        """Make a protocol for a new connection (uvicorn passes its own arguments)."""
        protocol = _GuardedH11(*args, **kwargs)
        protocol.header_timeout = self.header_timeout
        return protocol


def uvicorn_options(api: ApiSettings) -> dict[str, Any]:
    """Return uvicorn's options besides host and port, as ``streambandit api`` runs it.

    The h11 protocol with a header timeout (``api.header_timeout_seconds``) that stamps
    each request's arrival (for ``api.max_queue_seconds``), idle
    keep-alive connections closed after ``api.keep_alive_seconds``, a stop bounded by
    ``api.shutdown_seconds``, no access log (the API writes its own line per refused or
    failed request).
    """
    return {
        "log_level": "warning",
        "access_log": False,
        "http": _GuardedH11Factory(api.header_timeout_seconds),
        "timeout_keep_alive": api.keep_alive_seconds,
        "timeout_graceful_shutdown": api.shutdown_seconds,
    }
