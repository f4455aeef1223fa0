"""Load shedding and request bounds on a real uvicorn server, over real sockets.

The API (:func:`bandit.api.app.create_app`) runs against the session's broker and Redis,
served with the options ``streambandit api`` uses (:func:`bandit.api.shedding.uvicorn_options`)
and small bounds, plus one test route that holds its requests until the test lets them go.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pydantic
import pytest
import uvicorn
import yaml
from fastapi.responses import Response
from starlette.exceptions import HTTPException

import bandit.api.shedding
import bandit.service.logging
from bandit.api.app import create_app
from bandit.api.exposure import bind
from bandit.api.privacy import PageConsent
from bandit.api.shedding import ARRIVED_SCOPE_KEY, Shedding, uvicorn_options
from bandit.ops.runtime import free_port
from bandit.service.logging import LineLimiter, configure_logging
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from tests.bandit.serving import served

APP_KEY = "app-key-limits-0123456789"
APP = {"X-API-Key": APP_KEY}
RANK = {"context": {"user": {"tier": "gold"}}, "actions": [{"id": "a"}, {"id": "b"}]}
PZ_RANK = {"contextFeatures": [{"x": 1}], "actions": [{"id": "a"}, {"id": "b"}]}
MAX_BODY = 16 * 1024


@dataclass
class Gate:
    """A route that holds every request until `opened` is set."""

    opened: threading.Event = field(default_factory=threading.Event)
    entered: int = 0

    async def hold(self) -> Response:
        self.entered += 1
        while not self.opened.is_set():
            await asyncio.sleep(0.01)
        return Response(b"{}", media_type="application/json")


@dataclass
class Block:
    """A route that blocks the event loop for a second (as an expensive step would)."""

    started: threading.Event = field(default_factory=threading.Event)

    async def block(self) -> Response:
        self.started.set()
        time.sleep(1.0)  # the point: nothing else runs meanwhile
        return Response(b"{}", media_type="application/json")


@dataclass(frozen=True)
class Server:
    url: str
    host: str
    port: int
    gate: Gate
    blocker: Block


def _settings(broker: str, redis_url: str, **api: object) -> Settings:
    prefix = f"lim{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=APP_KEY, role="app"),), **api),  # type: ignore[arg-type]
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-limits-tests-01"),
        policies={"default": "uniform"},
    )


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[Server]:
    """The API with 2 requests in flight, 16 KiB bodies, 1 s for a body or headers."""
    settings = _settings(
        broker,
        redis_url,
        max_in_flight=2,
        max_body_bytes=MAX_BODY,
        body_timeout_seconds=1.0,
        header_timeout_seconds=1.0,
    )
    app = create_app(settings)
    gate, blocker = Gate(), Block()
    app.add_api_route("/v1/test-hold", gate.hold, methods=["GET"])
    app.add_api_route("/v1/test-block", blocker.block, methods=["GET"])
    with served(app, "limits-api", **uvicorn_options(settings.api)) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        yield Server(url, parts.hostname, parts.port, gate, blocker)


# -- raw HTTP/1.1 over a socket -------------------------------------------------------------


def _connect(server: Server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=15)


def _head(path: str, *, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        f"X-API-Key: {APP_KEY}",
        "Content-Type: application/json",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def _answer(sock: socket.socket) -> Answer:
    """Read one HTTP/1.1 answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before an answer: {data!r}"
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        assert more, "connection closed inside an answer"
        rest += more
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset) before 15 s."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _shed(server: Server, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.search(rf'^streambandit_requests_shed_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


# -- requests in flight ----------------------------------------------------------------------


def test_requests_beyond_the_bound_are_shed_at_once_with_retry_after(server: Server) -> None:
    """With 2 requests in flight a third gets 503 + Retry-After; health and metrics answer."""
    shed_before = _shed(server, "in_flight")
    gate = server.gate
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(httpx.get, f"{server.url}/v1/test-hold", timeout=30) for _ in range(2)]
        deadline = time.monotonic() + 20
        while gate.entered < 2:
            assert time.monotonic() < deadline, "the held requests never reached the route"
            time.sleep(0.01)
        try:
            answer = httpx.post(f"{server.url}/v1/rank", json=RANK, headers=APP)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert "settings.api.max_in_flight" in answer.json()["detail"]
            pz = httpx.post(f"{server.url}/personalizer/v1.0/rank", json=PZ_RANK, headers=APP)
            assert pz.status_code == 503
            assert pz.json()["error"]["code"] == "ServiceUnavailable"
            assert httpx.get(f"{server.url}/healthz").status_code == 200
            assert _shed(server, "in_flight") == shed_before + 2
        finally:
            gate.opened.set()
        assert [f.result().status_code for f in held] == [200, 200]
    gate.opened.clear()
    gate.entered = 0
    assert httpx.post(f"{server.url}/v1/rank", json=RANK, headers=APP).status_code == 200


def test_requests_waiting_to_start_count_as_in_flight(server: Server) -> None:
    """Requests that arrive while the loop is busy queue up: past the bound they are shed.

    While a route blocks the event loop, three requests arrive; when it is free, the
    server reads all three before any starts. The third arrived with two ahead of it
    (the bound): it is shed, although no request had started.
    """
    with ThreadPoolExecutor(1) as pool:
        blocking = pool.submit(httpx.get, f"{server.url}/v1/test-block", timeout=30)
        assert server.blocker.started.wait(20)
        sockets = [_connect(server) for _ in range(3)]
        try:
            for sock in sockets:
                sock.sendall(
                    f"GET /v1/policies HTTP/1.1\r\nHost: t\r\nX-API-Key: {APP_KEY}\r\n\r\n".encode()
                )
            answers = [_answer(sock) for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        assert blocking.result().status_code == 200
    assert [answer.status for answer in answers] == [200, 200, 503]
    assert answers[2].headers["retry-after"] == "1"
    assert b"settings.api.max_in_flight" in answers[2].body


def test_a_request_that_waited_too_long_to_start_is_shed() -> None:
    """A request that arrived longer than max_queue_seconds before it starts: 503."""

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("a shed request must not reach the app")

    async def on_refused(request: object, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return Response(str(error.detail), error.status_code, headers=error.headers)

    shedding = Shedding(
        app,  # type: ignore[arg-type]
        on_refused=on_refused,  # type: ignore[arg-type]
        max_in_flight=10,
        max_queue_seconds=0.25,
        max_body_bytes=MAX_BODY,
        body_timeout_seconds=1.0,
    )
    sent: list[dict[str, object]] = []

    async def main() -> None:
        now = asyncio.get_running_loop().time()
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/policies",
            "headers": [],
            "query_string": b"",
            ARRIVED_SCOPE_KEY: (now - 0.3, 1),
        }

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await shedding(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(main())
    assert sent[0]["status"] == 503
    body = sent[1]["body"]
    assert isinstance(body, bytes)
    assert b"settings.api.max_queue_seconds" in body


# -- bodies -----------------------------------------------------------------------------------


def test_a_slow_body_is_cut_off_with_408_and_its_connection_closed(server: Server) -> None:
    """A body that does not arrive within body_timeout_seconds: 408, connection closed."""
    with _connect(server) as sock:
        sock.sendall(_head("/v1/rank", length=200) + b'{"context": ')
        answer = _answer(sock)
        assert answer.status == 408
        assert "settings.api.body_timeout_seconds" in answer.body.decode()
        assert answer.headers["connection"] == "close"
        assert _closed(sock)
    assert _shed(server, "slow_body") >= 1


def test_slow_bodies_do_not_take_the_places_of_requests_in_flight(server: Server) -> None:
    """More slow-body requests than places in flight: a complete rank is still served."""
    sockets = [_connect(server) for _ in range(4)]  # the bound is 2
    try:
        for sock in sockets:
            sock.sendall(_head("/v1/rank", length=200) + b"{")
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # they are in by now
        answer = httpx.post(f"{server.url}/v1/rank", json=RANK, headers=APP)
        assert answer.status_code == 200, answer.text
        assert [_answer(sock).status for sock in sockets] == [408] * 4
    finally:
        for sock in sockets:
            sock.close()


def test_an_oversized_content_length_is_refused_before_the_body_is_sent(server: Server) -> None:
    """413 for a declared 50 MB body although not one byte of it was sent; then closed."""
    with _connect(server) as sock:
        sock.sendall(_head("/v1/rank", length=50_000_000))
        answer = _answer(sock)
        assert answer.status == 413
        detail = answer.json()
        assert isinstance(detail, dict)
        assert f"at most {MAX_BODY} bytes (settings.api.max_body_bytes)" in detail["detail"]
        assert answer.headers["connection"] == "close"
        assert _closed(sock)


def test_a_chunked_body_is_refused_once_it_passes_the_bound(server: Server) -> None:
    """A chunked body declares no length: counted as it streams, refused past the bound."""
    chunk = b" " * 4096
    sent = 0
    with _connect(server) as sock:
        sock.sendall(_head("/v1/rank", chunked=True))
        for _ in range(64):  # 256 KiB if nothing stopped it
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
            if select.select([sock], [], [], 0.2)[0]:
                break
        answer = _answer(sock)
        assert answer.status == 413, answer.body
        assert b"settings.api.max_body_bytes" in answer.body
        assert sent < 64 * len(chunk)  # refused while streaming, not after
        assert _closed(sock)


def test_a_chunked_body_within_the_bound_is_served(server: Server) -> None:
    """Chunked transfer itself is fine: a rank sent in chunks is answered."""
    body = json.dumps(RANK).encode()
    with _connect(server) as sock:
        sock.sendall(_head("/v1/rank", chunked=True))
        for part in (body[:10], body[10:]):
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        assert _answer(sock).status == 200


# -- headers -------------------------------------------------------------------------------


def test_slow_headers_and_silent_connections_are_closed(server: Server) -> None:
    """Headers not complete within header_timeout_seconds: the connection is closed."""
    with _connect(server) as slow, _connect(server) as silent:
        slow.sendall(b"POST /v1/rank HTTP/1.1\r\nHost: test\r\n")
        assert _closed(slow)
        assert _closed(silent)
    with httpx.Client(base_url=server.url) as client:  # keep-alive between requests is fine
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200


# -- media type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        (None, 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=utf-8", 200),
    ],
)
def test_json_routes_refuse_other_media_types(
    server: Server, content_type: str | None, status: int
) -> None:
    """A JSON body must say it is JSON: anything else is 415, naming what to send."""
    headers = dict(APP)
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = httpx.post(f"{server.url}/v1/rank", content=json.dumps(RANK), headers=headers)
    assert answer.status_code == status, answer.text
    if status == 415:
        assert "Content-Type: application/json" in answer.json()["detail"]
        assert (content_type or "none") in answer.json()["detail"]


def test_personalizer_routes_refuse_other_media_types_in_their_format(server: Server) -> None:
    """The Personalizer routes answer 415 in Personalizer's error format."""
    answer = httpx.post(
        f"{server.url}/personalizer/v1.0/rank",
        content=json.dumps(PZ_RANK),
        headers={**APP, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 415
    assert answer.json()["error"]["code"] == "UnsupportedMediaType"


# -- strict booleans -----------------------------------------------------------------------


CONSENT = {"user_id": "limits-person", "source": "tests"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/consent", {**CONSENT, "personalisation": "yes"}, "personalisation"),
        ("/v1/consent", {**CONSENT, "learning": 0}, "learning"),
        ("/v1/consent", {**CONSENT, "learning": "true"}, "learning"),
        ("/v1/rank", {**RANK, "explain": "true"}, "explain"),
        ("/v1/rank", {**RANK, "defer_activation": 1}, "defer_activation"),
        ("/personalizer/v1.0/rank", {**PZ_RANK, "deferActivation": "false"}, "deferActivation"),
    ],
)
def test_booleans_are_only_true_or_false(
    server: Server, path: str, body: dict[str, object], field: str
) -> None:
    """ "yes", 0 or "true" for a boolean: 422 naming the field (Personalizer's routes: 400)."""
    answer = httpx.post(f"{server.url}{path}", json=body, headers=APP)
    assert answer.status_code == (400 if path.startswith("/personalizer/") else 422), answer.text
    found = answer.json()
    if path.startswith("/personalizer/"):
        targets = [d["target"] for d in found["error"]["details"]]
        messages = " ".join(d["message"] for d in found["error"]["details"])
    else:
        targets = [".".join(map(str, d["loc"])) for d in found["detail"]]
        messages = " ".join(d["msg"] for d in found["detail"])
    assert any(target.endswith(field) for target in targets), targets
    assert "valid boolean" in messages


def test_json_booleans_are_accepted(server: Server) -> None:
    """true and false are what the booleans take."""
    answer = httpx.post(
        f"{server.url}/v1/consent", json={**CONSENT, "personalisation": True}, headers=APP
    )
    assert answer.status_code == 200, answer.text
    answer = httpx.post(f"{server.url}/v1/rank", json={**RANK, "explain": False}, headers=APP)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("value", ["1", '"yes"', '"false"', '"no"'])
def test_privacy_page_consents_are_strict_booleans(value: str) -> None:
    """The privacy page's consent body takes only true or false."""
    with pytest.raises(pydantic.ValidationError, match="learning"):
        PageConsent.model_validate_json(f'{{"learning": {value}}}')


# -- log lines -------------------------------------------------------------------------------


def test_line_limiter_writes_at_most_n_a_second_per_kind_and_counts_the_rest() -> None:
    """Beyond the rate, lines are dropped and the next written line says how many."""
    now = [100.0]
    limiter = LineLimiter(3, clock=lambda: now[0])
    written = [limiter.admit(("request.rejected", 415)) for _ in range(10)]
    assert written == [0, 0, 0, None, None, None, None, None, None, None]
    assert limiter.admit(("request.failed", 503)) == 0  # another kind: its own budget
    now[0] += 0.5
    assert limiter.admit(("request.rejected", 415)) is None  # same window
    now[0] += 0.6
    assert limiter.admit(("request.rejected", 415)) == 8  # the 8 dropped, said once
    assert limiter.admit(("request.rejected", 415)) == 0
    with pytest.raises(ValueError, match="per_second"):
        LineLimiter(0)


def test_refused_request_lines_are_rate_limited(
    broker: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A burst of refused requests writes a few lines; their counts add up to the burst."""
    configure_logging("json")
    settings = _settings(broker, redis_url, log_lines_per_second=3)
    burst = 20
    with served(create_app(settings), "limits-log-api") as url, httpx.Client() as client:
        capsys.readouterr()
        wrong = {**APP, "Content-Type": "text/plain"}
        for _ in range(burst):
            assert client.post(f"{url}/v1/rank", content=b"{}", headers=wrong).status_code == 415
        time.sleep(1.1)  # a new window: the next line carries the count of dropped ones
        assert client.post(f"{url}/v1/rank", content=b"{}", headers=wrong).status_code == 415
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    refused = [
        line for line in lines if line.get("event") == "request.rejected" and line["status"] == 415
    ]
    assert len(refused) < burst
    assert len(refused) + sum(line.get("suppressed", 0) for line in refused) == burst + 1
    assert refused[-1]["suppressed"] > 0


# -- pages served ----------------------------------------------------------------------------

_URL = re.compile(r"https?://|[\"'(=]\s*//")
"""An absolute or protocol-relative URL: what would load from elsewhere."""


def test_docs_are_served_from_this_origin_only(server: Server) -> None:
    """/docs names no other origin; its scripts and styles are served here, under a CSP."""
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert not _URL.search(page.text)
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(references) == 4
    for reference in references:
        asset = httpx.get(f"{server.url}{reference}")
        assert asset.status_code == 200, reference
        assert asset.headers["content-type"].split("/")[0] in {"text", "image"}
    init = httpx.get(f"{server.url}/docs/assets/init.js").text
    assert "validatorUrl: null" in init
    assert '"/openapi.json"' in init
    assert not _URL.search(init)
    for missing in ("/docs/assets/index.html", "/docs/assets/swagger-initializer.js", "/redoc"):
        assert httpx.get(f"{server.url}{missing}").status_code == 404, missing
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200


def test_the_privacy_page_names_no_other_origin(server: Server) -> None:
    """The other page the service serves loads nothing from elsewhere either."""
    page = httpx.get(f"{server.url}/privacy")
    assert page.status_code == 200
    assert not _URL.search(page.text)


def test_the_operators_routes_are_on_the_ops_port_only(broker: str, redis_url: str) -> None:
    """With ops_port set: metrics and docs there only, the apps' routes on the main port."""
    main_port, ops_port = free_port(), free_port()
    settings = _settings(broker, redis_url, port=main_port, ops_port=ops_port)
    config = uvicorn.Config(create_app(settings), **uvicorn_options(settings.api))
    server = uvicorn.Server(config)
    sockets = [bind("127.0.0.1", main_port), bind("127.0.0.1", ops_port)]
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "the server exited on start"
            assert time.monotonic() < deadline, "the server did not start in 20 s"
            time.sleep(0.02)
        main, ops = f"http://127.0.0.1:{main_port}", f"http://127.0.0.1:{ops_port}"
        for path in ("/metrics", "/docs", "/openapi.json", "/docs/assets/init.js"):
            assert httpx.get(f"{main}{path}").status_code == 404, path
            assert httpx.get(f"{ops}{path}").status_code == 200, path
        assert httpx.get(f"{main}/v1/policies", headers=APP).status_code == 200
        assert httpx.get(f"{ops}/v1/policies", headers=APP).status_code == 404
        assert httpx.post(f"{ops}/v1/rank", json=RANK, headers=APP).status_code == 404
        for base in (main, ops):
            assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(15)
        for sock in sockets:
            sock.close()


def test_connections_to_the_bound_ports_send_without_delay() -> None:
    """Connections accepted on a port from ``bind`` get TCP_NODELAY from asyncio.

    Without it an answer's body waited behind its headers for the client's delayed ACK:
    40 ms a request on a keep-alive connection, whatever the route.
    """

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        found: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                found.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listening = bind("127.0.0.1", 0)
        server = await loop.create_server(Probe, sock=listening)
        try:
            _, writer = await asyncio.open_connection(*listening.getsockname())
            try:
                return await asyncio.wait_for(found, 10)
            finally:
                writer.close()
        finally:
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0


def test_compose_publishes_beyond_loopback_only_the_apps_port() -> None:
    """Only the API's main port is open to other hosts; its operators' port (metrics,
    docs) is on loopback, and Prometheus scrapes it over the compose network."""
    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    published = {
        (name, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", port))
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    }
    api = compose["services"]["api"]["environment"]
    ops, main = api["STREAMBANDIT_API__OPS_PORT"], api["STREAMBANDIT_API__PORT"]
    assert {p for p in published if not p[1].startswith("127.0.0.1:")} == {
        ("api", f"0.0.0.0:{main}:{main}")
    }
    assert ("api", f"127.0.0.1:{ops}:{ops}") in published
    prometheus = yaml.safe_load((root / "deploy" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]  # fmt: skip
    assert f"api:{ops}" in targets


# -- settings and doctests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_in_flight", 0),
        ("max_body_bytes", 10),
        ("body_timeout_seconds", 0),
        ("header_timeout_seconds", -1),
        ("log_lines_per_second", 0),
    ],
)
def test_bounds_out_of_range_are_refused_naming_the_setting(name: str, value: float) -> None:
    """Each bound has a range; a value outside it names the setting."""
    with pytest.raises(pydantic.ValidationError, match=name):
        ApiSettings(**{name: value})  # type: ignore[arg-type]


def test_uvicorn_runs_with_the_configured_timeouts() -> None:
    """``streambandit api`` gives uvicorn the keep-alive and header timeouts of the settings."""
    options = uvicorn_options(ApiSettings(keep_alive_seconds=7, header_timeout_seconds=3))
    assert options["timeout_keep_alive"] == 7
    assert options["http"].header_timeout == 3
    assert options["access_log"] is False


@pytest.mark.parametrize("module", [bandit.api.shedding, bandit.service.logging])
def test_docstring_examples_pass(module: object) -> None:
    """The examples in the modules' docstrings pass as doctests."""
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
