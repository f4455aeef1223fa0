"""Serve an app with uvicorn on a free loopback port, in a thread, for a test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from bandit.ops.runtime import free_port


@contextmanager
def served(app: FastAPI, name: str, **options: Any) -> Iterator[str]:
    """Run `app` (its lifespan included) until the block ends; yield its base URL.

    `options` are more of uvicorn's (``bandit.api.shedding.uvicorn_options``, say).
    """
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, **{"log_level": "warning", "lifespan": "on", **options}
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), f"{name} exited on start"
        assert time.monotonic() < deadline, f"{name} did not start in 20 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
