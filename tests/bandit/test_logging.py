"""Logging configured once per entry point: one plain JSON object per line off a terminal."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bandit.service.logging import configure_logging


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level put back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_library_records_are_json_lines_beside_our_own(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """With capture_stdlib, a library's warning is one JSON line (logger, level, message
    as event); its info is below the level; our own lines are JSON too; no escape codes."""
    configure_logging("json", capture_stdlib=True)
    library = logging.getLogger("aiokafka.consumer.group_coordinator")
    library.warning("Heartbeat failed for group %s because it is rebalancing", "g1")
    library.info("Joined group %s", "g1")  # below the libraries' level: not written
    structlog.get_logger("streams.test").info("worker.started", workers=2)
    try:
        raise ValueError("bad offset")
    except ValueError:
        logging.getLogger("faust.worker").exception("Error: %s", "boom")
    err = capsys.readouterr().err
    assert "\x1b" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["event"] for line in lines] == [
        "Heartbeat failed for group g1 because it is rebalancing",
        "worker.started",
        "Error: boom",
    ]
    first, ours, failed = lines
    assert (first["level"], first["logger"]) == ("warning", "aiokafka.consumer.group_coordinator")
    assert "timestamp" in first
    assert ours["workers"] == 2
    assert failed["level"] == "error"
    assert "ValueError: bad offset" in failed["exception"]
    assert len(root_logger.handlers) == 1  # one handler, whatever was there before
