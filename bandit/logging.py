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
from typing import Any, Literal

import orjson
import structlog

from bandit.settings import get_settings

__all__ = ["configure_logging"]

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
