"""Structured logging: configured once per entry point, one line per unit of work.

Event names are ``noun.past_verb`` (``simulation.finished``, ``decision.made``). Lines go
to standard error: JSON when it is not a terminal (or when the settings say
``log_format="json"``), a readable console format when it is. Context bound with
:func:`structlog.contextvars.bind_contextvars` appears on every line. An entry point
running libraries that log through :mod:`logging` (the stream worker: Faust, mode,
aiokafka) asks for their records too (``capture_stdlib=True``): they are written the
same way, one line each, with the library's logger name and its message as ``event``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog

from bandit.settings import get_settings

__all__ = ["LimitedLines", "LineLimiter", "configure_logging"]

LogFormat = Literal["auto", "json", "console"]


_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _dumps(data: Any, *, default: Any = None, sort_keys: bool = True) -> str:
    """``json.dumps(data, sort_keys=True, default=default)``, through orjson when it can.

    Several times faster for the API's per-request line. The differences: no spaces
    after separators, and NaN or infinities written as ``null`` (valid JSON, unlike
    json's ``NaN``); what orjson cannot write (an int beyond 64 bits) goes to json.
    """
    try:
        return orjson.dumps(data, default=default, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(data, default=default, sort_keys=sort_keys)


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # Made per log call (loggers are not cached), so it writes to whatever
    # ``sys.stderr`` is then: CLI and test runners swap the stream.
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(
    log_format: LogFormat | None = None,
    *,
    level: int = logging.INFO,
    capture_stdlib: bool = False,
    stdlib_level: int = logging.WARNING,
) -> None:
    """Configure structlog for this process; call once, from the entry point.

    Parameters
    ----------
    log_format
        ``"json"``, ``"console"``, or ``"auto"`` (JSON unless standard error is a
        terminal). ``None`` takes ``log_format`` from the settings.
    level
        The least severe level written.
    capture_stdlib
        Also write the records of :mod:`logging` (every library's) this way: the root
        logger gets one handler, replacing any other.
    stdlib_level
        The least severe level of those records written.

    Notes
    -----
    After ``configure_logging("json")``, ``structlog.get_logger().info("model.saved",
    version=3)`` writes ``{"event": "model.saved", "level": "info", "timestamp": ...,
    "version": 3}`` to standard error. Loggers are not cached, so configuring again
    (another entry point in the same process, a test) takes effect everywhere.
    """
    chosen = get_settings().log_format if log_format is None else log_format
    if chosen == "auto":
        chosen = "console" if sys.stderr.isatty() else "json"
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer = _renderer(chosen)
    if capture_stdlib:
        _capture_stdlib(processors, renderer, stdlib_level)
    structlog.configure(
        processors=[*processors, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


_MAX_KINDS = 1024
"""The most kinds of line a :class:`LineLimiter` keeps windows for at once."""


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0


class LineLimiter:
    """At most `per_second` log lines of each kind a second; the rest counted, not written.

    A flood of refused requests (the same kind of line thousands of times a second) would
    cost CPU and fill disks while saying nothing new. Each kind (for the API: the event and
    the status) may write `per_second` lines in each one-second window; lines beyond are
    dropped and counted, and the next line of that kind written carries the count.

    Parameters
    ----------
    per_second
        Lines of one kind written per second, at most.
    clock
        Seconds, monotonic (tests pass their own).

    Examples
    --------
    >>> now = [0.0]
    >>> limiter = LineLimiter(2, clock=lambda: now[0])
    >>> [limiter.admit("request.rejected") for _ in range(4)]
    [0, 0, None, None]
    >>> now[0] = 1.0
    >>> limiter.admit("request.rejected"), limiter.admit("request.failed")
    (2, 0)
    """

    def __init__(self, per_second: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second < 1:
            msg = f"`per_second` must be >= 1, got {per_second!r}"
            raise ValueError(msg)
        self.per_second = per_second
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, kind: Hashable) -> int | None:
        """Whether a line of `kind` may be written now.

        Returns
        -------
        int or None
            ``None``: drop the line (it is counted). A number: write the line, with that
            many lines of its kind dropped since the last one written (usually 0).
        """
        now = self._clock()
        window = self._windows.get(kind)
        if window is None:
            if len(self._windows) >= _MAX_KINDS:  # kinds made of text: keep the recent ones
                self._windows = {k: w for k, w in self._windows.items() if now - w.start < 1.0}
                if len(self._windows) >= _MAX_KINDS:
                    self._windows.clear()
            window = self._windows[kind] = _Window(now)
        elif now - window.start >= 1.0:
            window.start, window.written = now, 0
        if window.written >= self.per_second:
            window.suppressed += 1
            return None
        window.written += 1
        suppressed, window.suppressed = window.suppressed, 0
        return suppressed


class LimitedLines(logging.Filter):
    """A standard-library logging filter: each message at most `per_second` times a second.

    For the lines a library writes per bad request (uvicorn's "Invalid HTTP request
    received." for each malformed one): the message (its format string) is the kind;
    the next line of a kind written ends with how many were dropped before it.

    Examples
    --------
    >>> now = [0.0]
    >>> limited = LimitedLines(1, clock=lambda: now[0])
    >>> def line():
    ...     text = "Invalid HTTP request received."
    ...     return logging.LogRecord("uvicorn.error", logging.WARNING, "", 0, text, (), None)
    >>> [limited.filter(line()) for _ in range(3)]
    [True, False, False]
    >>> now[0] = 1.0
    >>> late = line()
    >>> limited.filter(late), late.getMessage()
    (True, 'Invalid HTTP request received. (2 more suppressed before this one)')
    """

    def __init__(self, per_second: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._limiter = LineLimiter(per_second, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to write `record` (with the count of those of its kind dropped before)."""
        suppressed = self._limiter.admit(str(record.msg))
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} more suppressed before this one)"
        return True


def _renderer(chosen: str) -> list[structlog.typing.Processor]:
    """Return the last processors: exceptions formatted, then the line rendered."""
    if chosen == "json":
        return [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(_dumps, sort_keys=True),
        ]
    # the console renderer formats exceptions itself, and colours only a terminal
    return [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing to whatever ``sys.stderr`` is when a record comes."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _capture_stdlib(
    processors: list[structlog.typing.Processor],
    renderer: list[structlog.typing.Processor],
    level: int,
) -> None:
    """Give the root logger one handler writing records as structlog writes its lines."""
    last = renderer[-1]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*processors, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *renderer[:-1],
            last,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
