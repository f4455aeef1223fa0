"""Explained ranks against good ranks: does one expensive request slow everyone else?

On the embedded runtime (``bandit.ops.runtime.LocalStack``: broker, Redis and the API as
``python -m bandit api``, no stream worker), three measurements:

good alone
    ``POST /v1/rank`` without ``explain`` (about 1 KiB, 10 actions), one request in
    flight at a time from this process for ``--seconds``: latency p50 and p99.
good beside explained
    The same, while ``--explainers`` clients each send the most expensive explained rank
    the limits allow (``STREAMBANDIT_EXPLAIN__*``, defaults) back to back; its own
    latency and how many of its answers carried an explanation are printed too. The
    yardsticks, from the same run: the first row, and good ranks beside the same
    requests sent without ``explain`` (what the request itself costs the API: its
    body, its decision).
big explained rank
    One rank with ``explain: true``, 16 namespaces x 64 features in its context and in
    each of its 20 actions (about 250 KB, inside every request limit): how long until it
    is answered, and with what status. Before the explanation limits it was answered
    after the whole explanation ran on the event loop; now it is refused (422).

Run::

    .venv/bin/python bench/explain.py                 # all three (about a minute)
    .venv/bin/python bench/explain.py --only big      # the big explained rank alone

``--only big`` also runs against code without the explanation settings (the older
``main``: ``PYTHONPATH=/path/to/old/tree``), to measure the before figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bandit.ops.runtime import LocalStack
from bandit.settings import ApiSettings, Settings

POLICY = "default"


def good_body(rng: random.Random) -> dict[str, Any]:
    """A typical rank: a small context, 10 actions with two features each."""
    topics = ("sports", "politics", "tech", "music", "food")
    return {
        "context": {
            "user": {"tier": rng.choice(["gold", "basic"]), "age": round(rng.random(), 2)},
            "page": {"section": rng.choice(topics)},
        },
        "actions": [
            {"id": f"item-{i}", "features": {"item": {"topic": topics[i % 5], "len": i / 10}}}
            for i in range(10)
        ],
    }


def allowed_explained_body(max_features: int, max_actions: int) -> dict[str, Any]:
    """The most expensive explained rank the limits allow.

    Every feature in the context (``max_features`` of them, 16 to a namespace): each is
    one more prediction, and each prediction crosses the whole context with each of
    ``max_actions`` actions (the ``ca`` and ``ci`` interactions).
    """
    rng = random.Random(7)
    context: dict[str, dict[str, float]] = {}
    for index in range(max_features):
        context.setdefault(f"ns{index // 16}", {})[f"f{index % 16}"] = round(rng.random(), 3)
    actions = [{"id": f"a{i}", "features": {}} for i in range(max_actions)]
    return {"context": context, "actions": actions, "explain": True}


def big_explained_body() -> dict[str, Any]:
    """16 namespaces x 64 features in the context and in each of 20 actions."""
    rng = random.Random(5)

    def features() -> dict[str, dict[str, float]]:
        return {f"n{i}": {f"f{j}": round(rng.random(), 3) for j in range(64)} for i in range(16)}

    actions = [{"id": f"a{i}", "features": features()} for i in range(20)]
    return {"context": features(), "actions": actions, "explain": True}


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _good_ranks(http: httpx.AsyncClient, seconds: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        answer = await http.post("/v1/rank", json=good_body(rng))
        latencies.append(time.perf_counter() - started)
        answer.raise_for_status()
    return latencies


async def _explained_ranks(
    http: httpx.AsyncClient, body: dict[str, Any], stop: asyncio.Event, found: dict[str, Any]
) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        answer = await http.post("/v1/rank", json=body, timeout=120)
        found["latencies"].append(time.perf_counter() - started)
        answer.raise_for_status()
        found["explained"] += answer.json().get("explanation") is not None


async def latency_rows(url: str, key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Good-rank latency alone, then beside back-to-back expensive explained ranks."""
    headers = {"X-API-Key": key}
    body = allowed_explained_body(args.max_features, args.max_actions)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        await _good_ranks(http, 1.0, 0)  # warm up
        started = await http.post("/v1/rank", json=body, timeout=120)  # starts the helpers
        started.raise_for_status()
        alone = await _good_ranks(http, args.seconds, 1)
        stop = asyncio.Event()
        found: dict[str, Any] = {"latencies": [], "explained": 0}
        async with httpx.AsyncClient(base_url=url, headers=headers) as other:
            explainers = [
                asyncio.create_task(_explained_ranks(other, body, stop, found))
                for _ in range(args.explainers)
            ]
            await asyncio.sleep(0.5)
            beside = await _good_ranks(http, args.seconds, 2)
            stop.set()
            await asyncio.gather(*explainers)
            stop = asyncio.Event()
            plain: dict[str, Any] = {"latencies": [], "explained": 0}
            senders = [
                asyncio.create_task(
                    _explained_ranks(other, {**body, "explain": False}, stop, plain)
                )
                for _ in range(args.explainers)
            ]
            await asyncio.sleep(0.5)
            beside_plain = await _good_ranks(http, args.seconds, 3)
            stop.set()
            await asyncio.gather(*senders)
    return [
        {"row": "good ranks alone", "latencies": alone},
        {"row": f"good ranks beside {args.explainers} explaining", "latencies": beside},
        {"row": "good ranks beside the same, unexplained", "latencies": beside_plain},
        {
            "row": "the explained ranks themselves",
            "latencies": found["latencies"],
            "note": f"{found['explained']} of {len(found['latencies'])} carried an explanation",
        },
    ]


def big_row(url: str, key: str) -> dict[str, Any]:
    """Time one 16x64 x 20-action explained rank."""
    body = json.dumps(big_explained_body()).encode()
    started = time.perf_counter()
    answer = httpx.post(
        f"{url}/v1/rank",
        content=body,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        timeout=600,
    )
    seconds = time.perf_counter() - started
    detail = answer.json().get("detail") if answer.status_code == 422 else None
    return {"bytes": len(body), "status": answer.status_code, "seconds": seconds, "detail": detail}


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["latency", "big"], default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--explainers", type=int, default=1)
    parser.add_argument("--max-features", type=int, default=256)
    parser.add_argument("--max-actions", type=int, default=20)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-explain-"))
    env = {"STREAMBANDIT_POLICIES": json.dumps({POLICY: "vw-squarecb"})}
    settings = Settings(api=ApiSettings(port=0))
    with LocalStack(settings, workers=0, workdir=workdir, extra_env=env) as stack:
        if args.only in (None, "latency"):
            rows = asyncio.run(latency_rows(stack.api_url, stack.app_key, args))
            print(f"{'':40} {'n':>6} {'p50':>11} {'p99':>11}")
            for row in rows:
                lat = row["latencies"]
                print(
                    f"{row['row']:40} {len(lat):>6} {_ms(statistics.median(lat)):>11} "
                    f"{_ms(_quantile(lat, 0.99)):>11}  {row.get('note', '')}"
                )
        if args.only in (None, "big"):
            found = big_row(stack.api_url, stack.app_key)
            print(
                f"16x64 x 20-action explained rank ({found['bytes']:,} bytes): "
                f"HTTP {found['status']} after {found['seconds']:.2f} s"
            )
            if found["detail"]:
                print(f"  refused: {found['detail']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
