"""What the producer's resend window costs the rank hot path: one send, with and without.

The API produces each decision through :meth:`bandit.service.producer.BufferedProducer.send`;
with ``kafka.resend_window_seconds`` > 0 (the default) it also keeps a copy of the bytes
already built (bandit/service/producer.py, "The resend window"). This benchmark sends the same
records (decision-sized values, about 1.5 KB, keyed by event id) through two producers
on one embedded broker, as the API does (answered once queued), taking turns round by
round, each going first in turn: one without a window (the yardstick) and one with the
default window. Printed: microseconds per ``send`` (wall time of the event loop, best
round of each), the difference (best and median rounds), and the window's size at the
end (records kept and their bytes).

Measured on the project's 2-core machine, shared with other work: a copy kept costs
0.4 us per record (0.6 us once the window is full and the oldest copy goes, timed
alone); a whole send 1.7-3.1 us without the window and 3.0-3.1 us with it (best
rounds of three runs), the rounds spreading from 1.7 to 9 us.

Run::

    .venv/bin/python bench/resend_window.py
    .venv/bin/python bench/resend_window.py --records 50000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bandit.ops.runtime import LocalServices
from bandit.service.producer import BufferedProducer
from bandit.settings import KafkaSettings, RedisSettings, Settings


async def _round(
    producer: BufferedProducer, topic: str, records: list[tuple[bytes, bytes]]
) -> float:
    """Send every record; return the microseconds per send."""
    started = time.perf_counter()
    for key, value in records:
        await producer.send(topic, key, value)
    elapsed = time.perf_counter() - started
    await producer.flush(30.0)
    return elapsed / len(records) * 1e6


async def _measure(broker: str, args: argparse.Namespace) -> None:
    topic = f"bench{uuid.uuid4().hex[:8]}.decisions"
    records = [
        (uuid.uuid4().hex.encode(), os.urandom(args.value_bytes // 2).hex().encode())
        for _ in range(args.records)
    ]
    kafka = KafkaSettings()
    plain = BufferedProducer(broker, capacity=kafka.producer_buffer, acknowledged=False)
    windowed = BufferedProducer(
        broker,
        capacity=kafka.producer_buffer,
        acknowledged=False,
        resend_seconds=kafka.resend_window_seconds,
        resend_bytes=kafka.resend_window_mb * 2**20,
    )
    await plain.start()
    await windowed.start()
    try:
        without, with_window = [], []
        for turn in range(args.rounds):  # taking turns at going first
            if turn % 2:
                with_window.append(await _round(windowed, topic, records))
                without.append(await _round(plain, topic, records))
            else:
                without.append(await _round(plain, topic, records))
                with_window.append(await _round(windowed, topic, records))
        kept, kept_bytes = windowed.window
    finally:
        await plain.stop()
        await windowed.stop()
    best_without, best_with = min(without), min(with_window)
    median_without, median_with = statistics.median(without), statistics.median(with_window)
    print(f"records per round: {args.records} of {args.value_bytes} bytes, {args.rounds} rounds")
    print(f"send, no window (yardstick): {best_without:.2f} us (rounds: {_show(without)})")
    print(f"send, default window:        {best_with:.2f} us (rounds: {_show(with_window)})")
    print(
        f"difference: {best_with - best_without:+.2f} us per send (best), "
        f"{median_with - median_without:+.2f} us (median)"
    )
    print(
        f"window at the end: {kept} records, {kept_bytes / 2**20:.1f} MB (bound "
        f"{kafka.resend_window_mb} MB, {kafka.resend_window_seconds:.0f} s)"
    )


def _show(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per round")
    parser.add_argument("--value-bytes", type=int, default=1_500, help="bytes per value")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per producer")
    args = parser.parse_args(argv)
    settings = Settings(kafka=KafkaSettings(broker=""), redis=RedisSettings(url="redis://unused"))
    with LocalServices(settings) as services:
        asyncio.run(_measure(services.broker, args))


if __name__ == "__main__":
    main()
