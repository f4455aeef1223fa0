"""The two helper processes of bench/service.py: the load generator and the trivial endpoint.

They run as processes of their own so that neither shares an event loop (or a GIL) with
the server it loads or with the benchmark driving it. This module imports only the
standard library at the top, so the load generator starts light.

``python bench/loadgen.py load SPEC.json``
    Open ``concurrency`` HTTP/1.1 keep-alive connections to ``host:port`` on raw asyncio
    sockets; each sends ``POST path`` with the next body as soon as its previous answer
    is complete (one request in flight per connection: fixed concurrency, closed loop).
    Requests sent during the first ``warmup`` seconds are not counted; counting stops
    ``seconds`` later. Prints one JSON line: requests, answers by status, requests/s of
    200 answers, p50 and p99 latency (ms, from the request's write to its answer's last
    byte), the same for the 200 answers alone (``ok_p50_ms``, ``ok_p99_ms``: the admitted
    requests when the server sheds load), and the CPU share (CPU seconds per second) over
    the counted seconds of each process named in ``watch``. With ``bad_clients`` > 0,
    that many more clients each send, over and over on a new connection, ``POST path``
    with a body of ``bad_bytes`` bytes that the server refuses (a rank with too many
    actions), reading each answer or the connection's reset; their outcomes are counted
    in ``bad``. With ``retry_after`` true, a connection answered 503 with ``Retry-After``
    waits that long before its next request (as the service asks), else it sends at once.
``python bench/loadgen.py trivial PORT [PROCESSES]``
    Serve the trivial endpoint: a FastAPI app whose ``POST /v1/rank`` parses the JSON
    body and answers a JSON of the rank answer's shape (one ranking entry per action),
    served by uvicorn with the options of :data:`UVICORN_OPTIONS`, those ``streambandit
    api`` uses, in a process tuned as the API's is (``bandit.service.process.tune_gc``).
    With PROCESSES > 1, uvicorn's workers share the port, as ``streambandit api
    --workers`` does; each writes ``trivial.started`` and its pid to standard error once
    its app is made.
"""

import asyncio
import contextlib
import json
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

UVICORN_OPTIONS: dict[str, Any] = {"log_level": "warning", "access_log": False}
"""How ``streambandit api`` (``bandit/ops/cli.py``) runs uvicorn, besides host and port."""
GC_THRESHOLDS = (50_000, 20, 50)
"""``bandit.service.process.GC_THRESHOLDS`` (bench/service.py checks they agree)."""


# -- the trivial endpoint ----------------------------------------------------------------


def trivial_app() -> Any:
    """Make the trivial endpoint's app, in a process tuned as the API's is."""
    import os

    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    app = FastAPI()

    async def trivial(request: Request) -> Response:
        data = orjson.loads(await request.body())
        share = 1.0 / len(data["actions"])
        ranking = [{"id": action["id"], "probability": share} for action in data["actions"]]
        answer = {
            "event_id": uuid.uuid4().hex,
            "policy": "default",
            "model_version": "0",
            "chosen_action_id": ranking[0]["id"],
            "probability": share,
            "ranking": ranking,
            "deferred": False,
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    app.add_api_route("/v1/rank", trivial, methods=["POST"])
    # The API's process tuning (bandit.service.process.tune_gc): both differ in the app only.
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.stderr.write(f"trivial.started {os.getpid()}\n")
    sys.stderr.flush()
    return app


def serve_trivial(port: int, processes: int = 1) -> None:
    """Serve the trivial endpoint on 127.0.0.1:`port` in `processes` until stopped."""
    import uvicorn

    uvicorn.run(
        f"{Path(__file__).stem}:{trivial_app.__name__}",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host="127.0.0.1",
        port=port,
        workers=processes,
        **UVICORN_OPTIONS,
    )


# -- the load generator --------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time."""

    def __init__(self, load: "_Load") -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need: int | None = None
        self.body_at = 0
        self.status = 0
        self.retry_after = 0.0
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.load.next_request(self)

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                self.status = int(head[9:12])
                wait = head.find(b"retry-after:")
                self.retry_after = (
                    float(head[wait + 12 : head.find(b"\r\n", wait) % (len(head) + 1)])
                    if wait >= 0
                    else 0.0
                )
                start = head.find(b"content-length:")
                if start < 0:
                    raise RuntimeError("answers without content-length are not supported")
                stop = head.find(b"\r\n", start)
                length = int(head[start + 15 : stop if stop >= 0 else None])
                self.body_at = end + 4
                self.need = end + 4 + length
            if len(self.buffer) < self.need:
                return
            body = bytes(self.buffer[self.body_at : self.need]) if self.status != 200 else b""
            del self.buffer[: self.need]
            self.need = None
            self.load.done(self, time.perf_counter(), body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost += 1


class _Load:
    """Fixed concurrency: each connection sends its next request when the last is answered."""

    def __init__(self, spec: dict[str, Any]) -> None:
        head = f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in spec["headers"].items()
        )
        self.requests = [
            f"{head}Content-Length: {len(body.encode())}\r\n\r\n".encode() + body.encode()
            for body in spec["bodies"]
        ]
        self.spec = spec
        self.index = 0
        self.measure_from = math.inf
        self.stop_at = math.inf
        self.latencies: list[float] = []
        self.ok_latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.error_body = ""
        self.in_flight = 0
        self.lost = 0
        self.idle = asyncio.Event()

    def next_request(self, connection: _Connection) -> None:
        if time.perf_counter() >= self.stop_at:
            if self.in_flight == 0:
                self.idle.set()
            return
        request = self.requests[self.index % len(self.requests)]
        self.index += 1
        self.in_flight += 1
        connection.send(request)

    def done(self, connection: _Connection, now: float, body: bytes) -> None:
        self.in_flight -= 1
        if self.measure_from <= connection.sent_at and now <= self.stop_at:
            self.latencies.append(now - connection.sent_at)
            if connection.status == 200:
                self.ok_latencies.append(now - connection.sent_at)
            self.statuses[connection.status] += 1
            if connection.status != 200 and not self.error_body:
                self.error_body = body[:500].decode(errors="replace")
        if connection.status == 503 and connection.retry_after and self.spec.get("retry_after"):
            asyncio.get_running_loop().call_later(
                connection.retry_after, self.next_request, connection
            )
            return
        self.next_request(connection)

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        spec = self.spec
        connections = []
        start = time.perf_counter()
        self.measure_from = start + spec["warmup"]
        self.stop_at = self.measure_from + spec["seconds"]
        for _ in range(spec["concurrency"]):
            _, protocol = await loop.create_connection(
                lambda: _Connection(self), spec["host"], spec["port"]
            )
            connections.append(protocol)
        watched: dict[str, int] = spec.get("watch", {})
        bad: Counter[str] = Counter()
        bad_tasks = [
            asyncio.create_task(self._bad_client(bad)) for _ in range(spec.get("bad_clients", 0))
        ]
        await asyncio.sleep(max(self.measure_from - time.perf_counter(), 0.0))
        cpu_from = {name: cpu_seconds(pid) for name, pid in watched.items()}
        await asyncio.sleep(max(self.stop_at - time.perf_counter(), 0.0))
        cpu = {
            name: (cpu_seconds(pid) - cpu_from[name]) / spec["seconds"]
            for name, pid in watched.items()
        }
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), 10.0)
        for task in bad_tasks:
            task.cancel()
        await asyncio.gather(*bad_tasks, return_exceptions=True)
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        latencies = sorted(self.latencies)
        ok_latencies = sorted(self.ok_latencies)
        ok = self.statuses.get(200, 0)
        return {
            "requests": len(latencies),
            "ok": ok,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "error_body": self.error_body,
            "connections_lost_early": max(self.lost - len(connections), 0),
            "cpu": cpu,
            "seconds": spec["seconds"],
            "rps": ok / spec["seconds"],
            "p50_ms": quantile(latencies, 0.50) * 1000,
            "p99_ms": quantile(latencies, 0.99) * 1000,
            "ok_p50_ms": quantile(ok_latencies, 0.50) * 1000,
            "ok_p99_ms": quantile(ok_latencies, 0.99) * 1000,
            "bad": dict(bad),
        }

    async def _bad_client(self, outcomes: Counter[str]) -> None:
        """Send refused bodies of ``bad_bytes`` over and over, each on a new connection."""
        spec = self.spec
        size = spec["bad_bytes"]
        action = b'{"id":"a%07d"},'
        count = (size - 40) // len(action % 0)
        body = b'{"context":{},"actions":[' + b"".join(action % k for k in range(count))
        body = body[:-1] + b"]}"
        body += b" " * (size - len(body))
        head = (
            f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in spec["headers"].items())
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
                writer.write(head + body)
                sending = asyncio.ensure_future(writer.drain())
                sending.add_done_callback(_retrieve)
                line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                outcome = line[9:12].decode()
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                outcome = "reset"
            finally:
                if writer is not None:
                    writer.close()
            if self.measure_from <= time.perf_counter() <= self.stop_at:
                outcomes[outcome] += 1


def _retrieve(future: "asyncio.Future[None]") -> None:
    """Take a finished send's error, if any (a reset after the answer is expected)."""
    if not future.cancelled():
        future.exception()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc); NaN elsewhere."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile of sorted `values` (nearest rank); NaN when empty."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def run_load(spec_path: str) -> None:
    """Read a spec file, run the load, print one JSON line of results."""
    spec = json.loads(Path(spec_path).read_text())
    result = asyncio.run(_Load(spec).run())
    sys.stdout.write(json.dumps(result) + "\n")


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "load":
        run_load(argv[1])
        return 0
    if len(argv) in (2, 3) and argv[0] == "trivial":
        serve_trivial(int(argv[1]), int(argv[2]) if len(argv) == 3 else 1)
        return 0
    sys.stderr.write("usage: loadgen.py load SPEC.json | loadgen.py trivial PORT [PROCESSES]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
