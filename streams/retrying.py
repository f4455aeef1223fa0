"""Work that touches Redis or the broker, retried with a growing pause until it succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

__all__ = ["retry"]

T = TypeVar("T")

_RETRY_FIRST_PAUSE = 0.05
_RETRY_MAX_PAUSE = 5.0

_log = structlog.get_logger("streams.retrying")


async def retry(
    what: str,
    work: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = None,
    first_pause: float = _RETRY_FIRST_PAUSE,
) -> T:
    """Run ``work()`` until it succeeds, pausing longer after each failure.

    Parameters
    ----------
    what
        Names the work in the log line of each failure.
    work
        Coroutine function to run.
    attempts
        Give up after this many failures and raise the last error (never, when None).
    first_pause
        Seconds before the first retry; doubled after each failure, up to 5 s.
    """
    pause, failures = first_pause, 0
    while True:
        try:
            return await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            _log.exception("work.failed", work=what, failures=failures, retry_in=pause)
            if attempts is not None and failures >= attempts:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RETRY_MAX_PAUSE)
