"""The running service, end to end on the embedded runtime: rank, shed, learner, freshness.

Four measurements, each beside its yardstick in the same run, on one broker and one
Redis started here (:class:`bandit.ops.runtime.LocalServices`), each phase with its own topic
and key prefix:

rank
    ``POST /v1/rank`` on the real API (``python -m bandit api``: uvicorn, one process,
    log level warning, no access log; the decisions are produced to the broker before
    each answer) beside a *trivial endpoint*: a FastAPI app served by uvicorn the same way
    (same server, same options, its own process, the same garbage-collector tuning) whose
    ``POST /v1/rank`` parses the JSON body and answers a JSON of the rank answer's shape
    and size. Both get the same requests (same path, headers and bodies, about 2 KiB, 10
    actions drawn from a catalog of 500 articles whose features stay the same, as an
    app's catalog does; one more rank run offers only never-seen actions, so that no
    work per action is reused) from a load generator in a separate process: an asyncio client on raw
    sockets, HTTP/1.1 keep-alive, a fixed number of connections each with one request in
    flight. Best of the rounds by throughput, the two servers taking turns. No stream
    worker runs in this phase (it would share the same two cores; in production it runs
    elsewhere). Each server's CPU time per request is printed too: on a machine shared
    with other work it moves less than requests/s. Target: rank >= 60 % of the trivial
    endpoint's requests/s. Then the same with ``--processes`` (2 by default) of each:
    ``streambandit api --workers 2`` beside the trivial endpoint under uvicorn's workers
    (each process tuned as before), to show rank scales with cores as the trivial
    endpoint does, at ``--processes`` times the connections (their CPU is that of every
    worker; the load generator and the broker share the same cores).
shed
    ``POST /v1/rank`` on the real API at many connections (256 by default, each sending
    its next request as soon as it has an answer; answered 503, after the ``Retry-After``
    it was given, or at once with ``--shed-retry ignore``), alone and then while 4 more
    clients send, each over and over on a new connection, a 4,000,000-byte rank body the
    API refuses (too many actions; beyond ``settings.api.max_body_bytes``, refused by its
    Content-Length before it is read).
    Printed: good ranks/s, p50 and p99 of the admitted ranks (the 200 answers), the 503s
    (requests shed beyond ``settings.api.max_in_flight``) and how the big bodies were
    answered. Run it against another tree's API with that tree first on ``PYTHONPATH``
    and as the working directory (the API is ``python -m bandit``). No target: figures.
learner
    N training examples (``TrainingExample`` JSON, as the join writes them) are produced
    to the training topic first; then one stream worker (``python -m bandit worker``,
    every agent running, the decision log included) is started on that backlog. The
    learner's rate is examples/s between its first and its last saved model (the
    models' ``saved_at`` and the learned ids saved with them; the last model's
    ``n_learned`` is checked to be N). The worker reads the training topic with one
    batch consumer for the learner and the decision log: each record is read once (its
    schema version and structure checked: the topic is the service's own), into plain
    data and, in the same pass, into the VW text the policy learns through VW's native
    binding and the DSJSON line the log keeps (``streams/training.py``); the next
    batches are fetched and read while the worker learns one, large ones in a helper process
    (``streams.training.TrainingDecoder``, ``settings.learner.decode_processes``), which starts
    on the first large batch. Raw VW learns the same N examples,
    given to ``pyvw.Workspace.learn`` as ready-made text lines with the policy's own VW
    flags, just before and just after the worker runs (the mean is the yardstick). The
    same rates per CPU-second (the CPU time of the worker and of any child process
    between the two saves; raw VW's process time) are printed too: on a machine shared
    with other work they move less.
    Target: learner >= 0.5 x raw VW.
freshness
    API and one worker, the policy's reward wait set short (``--reward-wait``). Each
    round ranks a new event, rewards it at once, then watches Redis for the saved model
    that learned it (its event id in the model's learned ids, read in one transaction
    with the model version) and then ranks until an answer carries that model version
    or a later one. Freshness is the time from sending the reward to that answer; the
    reward wait is inside it. Target: p50 < 1 s.

Run::

    .venv/bin/python bench/service.py             # the full run (about 5 minutes)
    .venv/bin/python bench/service.py --quick     # a quick look
    .venv/bin/python bench/service.py --only rank --seconds 20 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson
import vowpalwabbit
from loadgen import GC_THRESHOLDS, UVICORN_OPTIONS, cpu_seconds, quantile
from redis import Redis
from rich.console import Console
from rich.table import Table
from vowpalwabbit import pyvw

from bandit.ops.runtime import LocalServices, LocalStack, ServiceProcess, free_port
from bandit.service.process import GC_THRESHOLDS as SERVICE_GC_THRESHOLDS
from bandit.service.state import StateStore
from bandit.settings import ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import Decision, PolicySettings, RankRequest, TrainingExample
from policies import Action, Policy, decide_ranking, make_policy
from policies.vw import VWPolicy, reward_to_cost, to_vw_lines

RANK_TARGET = 0.6
"""Rank must reach this share of the trivial endpoint's requests/s."""
LEARNER_TARGET = 0.5
"""The learner must reach this share of raw VW's text learning rate."""
FRESHNESS_TARGET = 1.0
"""Median seconds from a reward to a decision served by a model that learned it."""

N_ACTIONS = 10
CATALOG_SIZE = 500
TOPICS = ("sports", "politics", "tech", "music", "food", "travel", "health", "finance")
POLICY = "default"


WORKDIRS: list[Path] = []
"""Folders of logs and data made by the phases; removed at the end unless --keep."""
LOADGEN = str(Path(__file__).resolve().parent / "loadgen.py")
PY_SPY = Path(sys.executable).parent / "py-spy"


# -- workload ------------------------------------------------------------------------------


def _context(rng: random.Random) -> dict[str, dict[str, Any]]:
    """14 shared features in 4 namespaces (as bench/policies.py)."""
    return {
        "user": {
            "age": round(rng.random(), 4),
            "tier": rng.choice(("free", "plus", "gold")),
            "country": rng.choice(("de", "fr", "us", "jp", "br")),
            "visits": rng.randint(1, 40),
        },
        "visit": {
            "device": rng.choice(("mobile", "desktop", "tablet")),
            "hour": round(rng.randint(0, 23) / 23, 4),
            "referrer": rng.choice(("search", "social", "direct", "mail")),
            "depth": rng.randint(1, 12),
        },
        "page": {
            "section": rng.choice(TOPICS),
            "scroll": round(rng.random(), 3),
            "dwell": round(rng.random() * 30, 3),
        },
        "time": {
            "daypart": rng.choice(("morning", "noon", "evening", "night")),
            "weekend": rng.choice((0, 1)),
            "season": rng.choice(("winter", "spring", "summer", "autumn")),
        },
    }


def _item(rng: random.Random, item_id: str) -> dict[str, Any]:
    """One article: 6 features in 2 namespaces."""
    return {
        "id": item_id,
        "features": {
            "item": {
                "topic": rng.choice(TOPICS),
                "length": round(rng.random(), 3),
                "age_days": round(rng.randint(0, 30) / 30, 4),
                "popularity": round(rng.random(), 4),
            },
            "meta": {
                "author": f"author{rng.randrange(40)}",
                "format": rng.choice(("text", "video", "gallery")),
            },
        },
    }


CATALOG = [_item(random.Random(f"catalog-{k}"), f"article-{k}") for k in range(CATALOG_SIZE)]
"""The app's articles: each keeps its features from one request to the next."""


def _actions(rng: random.Random) -> list[dict[str, Any]]:
    """10 distinct articles of the catalog."""
    return rng.sample(CATALOG, N_ACTIONS)


def _unseen_actions(rng: random.Random) -> list[dict[str, Any]]:
    """10 articles never offered before: new ids, new features (no per-action reuse)."""
    return [_item(rng, f"new-{uuid.UUID(int=rng.getrandbits(128)).hex}") for _ in range(N_ACTIONS)]


PEOPLE = [f"reader-{k}@example.com" for k in range(200)]
"""The people the "naming a person" run ranks for (each consented to both)."""


def rank_bodies(
    n: int, seed: int, *, unseen: bool = False, people: Sequence[str] = ()
) -> list[bytes]:
    """`n` distinct rank request bodies (no event id: the API makes one per request).

    With `people`, each body names one of them (``user_id``), in turn.
    """
    rng = random.Random(seed)
    pick = _unseen_actions if unseen else _actions
    bodies = []
    for k in range(n):
        body: dict[str, Any] = {"context": _context(rng), "actions": pick(rng)}
        if people:
            body["user_id"] = people[k % len(people)]
        bodies.append(orjson.dumps(body))
    return bodies


@dataclass(frozen=True, slots=True)
class Training:
    """One training example: its JSON as the join writes it, and VW's text for it."""

    event_id: str
    value: bytes
    lines: list[str]


def training_examples(n: int, seed: int, spec: str) -> list[Training]:
    """`n` training examples decided by a fresh `spec` policy, rewarded on topic match."""
    rng = random.Random(seed)
    policy = make_policy(spec)
    made = []
    for i in range(n):
        request = RankRequest.model_validate(
            {"event_id": f"train-{seed}-{i}", "context": _context(rng), "actions": _actions(rng)}
        )
        context, actions = request.policy_inputs()
        choice = decide_ranking(policy.pmf(context, actions), request.event_id)
        decision = Decision.from_choice(choice, request=request, policy=POLICY, model_version="0")
        chosen = actions[choice.index]
        reward = 1.0 if chosen.features["item"]["topic"] == context["page"]["section"] else 0.0
        example = TrainingExample(
            event_id=decision.event_id,
            decision=decision,
            reward=reward,
            reward_count=1,
            default_reward=False,
        )
        label = (choice.index, reward_to_cost(reward), choice.probability)
        made.append(
            Training(
                event_id=decision.event_id,
                value=example.model_dump_json().encode(),
                lines=to_vw_lines(decision.context, _logged_actions(decision), label),
            )
        )
    return made


def _logged_actions(decision: Decision) -> list[Action]:
    return [Action(action.id, action.features) for action in decision.actions]


# -- processes -----------------------------------------------------------------------------


def _phase_settings(services: LocalServices, prefix: str) -> Settings:
    return Settings(
        kafka=KafkaSettings(broker=services.broker, topic_prefix=prefix),
        redis=RedisSettings(url=services.redis_url, key_prefix=prefix),
        api=ApiSettings(port=0),
    )


def _phase_env(prefix: str, spec: str, **more: str) -> dict[str, str]:
    env = {
        "STREAMBANDIT_KAFKA__TOPIC_PREFIX": prefix,
        "STREAMBANDIT_REDIS__KEY_PREFIX": prefix,
        "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
        "STREAMBANDIT_POLICIES": json.dumps({POLICY: spec}),
        "STREAMBANDIT_LOG_FORMAT": "json",
    }
    env.update(more)
    return env


def _new_prefix(phase: str) -> str:
    return f"bench{phase}{uuid.uuid4().hex[:6]}"


# -- rank -------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One load run against one server."""

    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int]
    error_body: str
    server_cpu: float  # CPU seconds per wall second of the server process
    broker_cpu: float = math.nan
    ok_p50_ms: float = math.nan  # the 200 answers alone (admitted, when load is shed)
    ok_p99_ms: float = math.nan
    bad: dict[str, int] = field(default_factory=dict)  # the refused big bodies' outcomes


def _load(
    workdir: Path,
    target: str,
    port: int,
    headers: dict[str, str],
    bodies: list[bytes],
    args: argparse.Namespace,
    pids: dict[str, int],
    **more: Any,
) -> LoadResult:
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "path": "/v1/rank",
        "headers": headers,
        "bodies": [body.decode() for body in bodies],
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "watch": pids,
        **more,
    }
    spec_path = workdir / f"load-{target}.json"
    spec_path.write_text(json.dumps(spec))
    profiler = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pids["server"]), "--format", "raw",
             "--rate", "500",
             "--duration", str(math.ceil(args.warmup + args.seconds + 1)), "--nonblocking",
             "--output", str(args.profile / f"{target}-{time.strftime('%H%M%S')}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    done = subprocess.run(  # noqa: PLW1510 - checked below with its stderr
        [sys.executable, LOADGEN, "load", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=args.warmup + args.seconds + 60,
    )
    if profiler is not None:
        profiler.wait(30)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = found["cpu"]
    errors = {k: v for k, v in found["statuses"].items() if k != "200"}
    return LoadResult(
        target=target,
        rps=found["rps"],
        p50_ms=found["p50_ms"],
        p99_ms=found["p99_ms"],
        requests=found["requests"],
        errors=errors,
        error_body=found["error_body"],
        server_cpu=sum(share for name, share in cpu.items() if name.startswith("server")),
        broker_cpu=cpu.get("broker", math.nan),
        ok_p50_ms=found["ok_p50_ms"],
        ok_p99_ms=found["ok_p99_ms"],
        bad=found["bad"],
    )


@dataclass
class MultiProcess:
    """Best rank and trivial runs with `processes` server processes each."""

    processes: int
    rank: LoadResult
    trivial: LoadResult
    rank_runs: list[float]
    trivial_runs: list[float]

    @property
    def ratio(self) -> float:
        return self.rank.rps / self.trivial.rps if self.trivial.rps else math.nan


@dataclass
class RankPhase:
    """Best rank and trivial runs (by throughput), and every run's throughput."""

    rank: LoadResult
    trivial: LoadResult
    rank_runs: list[float]
    trivial_runs: list[float]
    body_bytes: float
    answer_bytes: tuple[int, int]
    unseen: LoadResult
    """One rank run whose every action is new (nothing reused per action)."""
    named: LoadResult
    """One rank run naming a person who consented to both (consent read, decision noted)."""
    multi: MultiProcess | None = None
    """Rank and trivial with several processes each (``--processes``)."""

    @property
    def ratio(self) -> float:
        return self.rank.rps / self.trivial.rps if self.trivial.rps else math.nan

    @property
    def cpu_ratio(self) -> float:
        """The trivial endpoint's server CPU per request over rank's."""
        rank = self.rank.server_cpu / self.rank.rps if self.rank.rps else math.nan
        trivial = self.trivial.server_cpu / self.trivial.rps if self.trivial.rps else math.nan
        return trivial / rank

    @property
    def passed(self) -> bool:
        return self.ratio >= RANK_TARGET and not self.rank.errors and not self.trivial.errors


def rank_phase(services: LocalServices, args: argparse.Namespace, console: Console) -> RankPhase:
    """Run the API (no worker) and the trivial endpoint; load each in turn."""
    prefix = _new_prefix("rank")
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-rank-"))
    WORKDIRS.append(workdir)
    settings = _phase_settings(services, prefix)
    env = _phase_env(prefix, args.policy)
    bodies = rank_bodies(500, args.seed)
    asyncio.run(_beat(services.redis_url, prefix))
    with LocalStack(settings, workers=0, workdir=workdir / "stack", extra_env=env) as stack:
        port = free_port()
        trivial = ServiceProcess(
            "trivial",
            [sys.executable, LOADGEN, "trivial", str(port)],
            port,
            workdir / "trivial.log",
        )
        trivial.start()
        try:
            headers = {"Content-Type": "application/json", "X-API-Key": stack.app_key}
            answers = (
                len(httpx.post(f"{stack.api_url}/v1/rank", content=bodies[0], headers=headers)
                    .content),
                len(httpx.post(f"http://127.0.0.1:{port}/v1/rank", content=bodies[0],
                               headers=headers).content),
            )  # fmt: skip
            broker = services.processes.get("broker")
            broker_pid = broker.process.pid if broker and broker.process else None
            api_process = stack.processes["api"].process
            trivial_process = trivial.process
            assert api_process is not None
            assert trivial_process is not None
            rank_runs: list[LoadResult] = []
            trivial_runs: list[LoadResult] = []
            for index in range(args.rounds):
                console.print(f"  rank: round {index + 1} of {args.rounds} ...", style="dim")
                pids = {"server": trivial_process.pid}
                trivial_runs.append(_load(workdir, "trivial", port, headers, bodies, args, pids))
                pids = {"server": api_process.pid}
                if broker_pid is not None:
                    pids["broker"] = broker_pid
                rank_runs.append(
                    _load(workdir, "rank", stack.api_port, headers, bodies, args, pids)
                )
            console.print("  rank: unseen actions ...", style="dim")
            unseen = _load(workdir, "rank-unseen", stack.api_port, headers,
                           rank_bodies(500, args.seed, unseen=True), args, pids)  # fmt: skip
            console.print("  rank: naming a consented person ...", style="dim")
            for person in PEOPLE:
                given = httpx.post(
                    f"{stack.api_url}/v1/consent",
                    json={"user_id": person, "personalisation": True, "learning": True,
                          "source": "bench"},
                    headers=headers,
                )  # fmt: skip
                given.raise_for_status()
            named = _load(workdir, "rank-named", stack.api_port, headers,
                          rank_bodies(500, args.seed, people=PEOPLE), args, pids)  # fmt: skip
        finally:
            trivial.stop()
    multi = None
    if args.processes > 1:
        multi = multi_process_runs(services, args, console, bodies)
    return RankPhase(
        rank=max(rank_runs, key=lambda r: r.rps),
        trivial=max(trivial_runs, key=lambda r: r.rps),
        rank_runs=[r.rps for r in rank_runs],
        trivial_runs=[r.rps for r in trivial_runs],
        body_bytes=statistics.fmean(len(body) for body in bodies),
        answer_bytes=answers,
        unseen=unseen,
        named=named,
        multi=multi,
    )


def _workers(supervisor: int, count: int, log: Path, started: str) -> dict[str, int]:
    """Wait until `count` workers of uvicorn's `supervisor` wrote `started` in `log`.

    Returns their pids, named ``server-1`` and on (the load generator sums their CPU).
    """
    deadline = time.monotonic() + 120
    while True:
        pids = []
        for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError):  # multiprocessing's own helper
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    pids.append(int(child))
        if len(pids) == count and log.read_text().count(started) >= count:
            return {f"server-{i}": pid for i, pid in enumerate(sorted(pids), 1)}
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pids)} of {count} workers started; see {log}")
        time.sleep(0.2)


def multi_process_runs(
    services: LocalServices, args: argparse.Namespace, console: Console, bodies: list[bytes]
) -> MultiProcess:
    """Rank with ``streambandit api --workers N`` and the trivial endpoint with N workers."""
    prefix = _new_prefix("rankn")
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-rankn-"))
    WORKDIRS.append(workdir)
    settings = _phase_settings(services, prefix)
    env = _phase_env(prefix, args.policy)
    n = args.processes
    with LocalStack(
        settings, workers=0, api_workers=n, workdir=workdir / "stack", extra_env=env
    ) as stack:
        port = free_port()
        trivial = ServiceProcess(
            "trivial",
            [sys.executable, LOADGEN, "trivial", str(port), str(n)],
            port,
            workdir / "trivial.log",
        )
        trivial.start()
        try:
            headers = {"Content-Type": "application/json", "X-API-Key": stack.app_key}
            api_process = stack.processes["api"].process
            trivial_process = trivial.process
            assert api_process is not None
            assert trivial_process is not None
            api_pids = _workers(
                api_process.pid, n, stack.workdir / "api.log", '"event":"api.started"'
            )
            trivial_pids = _workers(
                trivial_process.pid, n, workdir / "trivial.log", "trivial.started"
            )
            broker = services.processes.get("broker")
            if broker and broker.process:
                api_pids["broker"] = broker.process.pid
            connections = n * args.concurrency  # each process loaded as the one was
            rank_runs: list[LoadResult] = []
            trivial_runs: list[LoadResult] = []
            for index in range(args.rounds):
                console.print(
                    f"  rank, {n} processes each: round {index + 1} of {args.rounds} ...",
                    style="dim",
                )
                trivial_runs.append(
                    _load(workdir, f"trivial-{n}", port, headers, bodies, args, trivial_pids,
                          concurrency=connections)
                )  # fmt: skip
                rank_runs.append(
                    _load(workdir, f"rank-{n}", stack.api_port, headers, bodies, args, api_pids,
                          concurrency=connections)
                )  # fmt: skip
        finally:
            trivial.stop()
    return MultiProcess(
        processes=n,
        rank=max(rank_runs, key=lambda r: r.rps),
        trivial=max(trivial_runs, key=lambda r: r.rps),
        rank_runs=[r.rps for r in rank_runs],
        trivial_runs=[r.rps for r in trivial_runs],
    )


# -- shed ------------------------------------------------------------------------------------


@dataclass
class ShedPhase:
    """Rank at many connections: alone, then with clients sending big refused bodies."""

    connections: int
    quiet: LoadResult
    attacked: LoadResult
    bad_clients: int
    bad_bytes: int


def shed_phase(services: LocalServices, args: argparse.Namespace, console: Console) -> ShedPhase:
    """Load the API (no worker) with `args.shed_connections` rank connections, twice."""
    prefix = _new_prefix("shed")
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-shed-"))
    WORKDIRS.append(workdir)
    settings = _phase_settings(services, prefix)
    env = _phase_env(prefix, args.policy)
    bodies = rank_bodies(500, args.seed)
    many = argparse.Namespace(**{**vars(args), "concurrency": args.shed_connections})
    asyncio.run(_beat(services.redis_url, prefix))
    with LocalStack(settings, workers=0, workdir=workdir / "stack", extra_env=env) as stack:
        headers = {"Content-Type": "application/json", "X-API-Key": stack.app_key}
        api_process = stack.processes["api"].process
        assert api_process is not None
        pids = {"server": api_process.pid}
        console.print(f"  shed: {args.shed_connections} connections ...", style="dim")
        quiet = _load(workdir, "shed-quiet", stack.api_port, headers, bodies, many, pids,
                      retry_after=args.shed_retry == "honour")  # fmt: skip
        console.print(
            f"  shed: {args.shed_connections} connections and {args.bad_clients} clients "
            f"sending {args.bad_bytes:,} B bodies ...",
            style="dim",
        )
        attacked = _load(
            workdir, "shed-attacked", stack.api_port, headers, bodies, many, pids,
            bad_clients=args.bad_clients, bad_bytes=args.bad_bytes,
            retry_after=args.shed_retry == "honour",
        )  # fmt: skip
    return ShedPhase(args.shed_connections, quiet, attacked, args.bad_clients, args.bad_bytes)


def report_shed(phase: ShedPhase, args: argparse.Namespace, console: Console) -> None:
    retry = "after Retry-After when shed" if args.shed_retry == "honour" else "at once, a 503 too"
    table = Table(
        title=(
            f"Shed: POST /v1/rank on {phase.connections} connections, each sending again once "
            f"answered ({retry}), {args.seconds:g} s after {args.warmup:g} s warm-up"
        ),
        title_justify="left",
    )
    table.add_column("load", no_wrap=True)
    for column in ("good ranks/s", "admitted p50 ms", "admitted p99 ms", "all p99 ms",
                   "503 (shed)", "other non-200", "big bodies: answers", "server CPU"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, row in (
        ("ranks alone", phase.quiet),
        (f"+ {phase.bad_clients} clients, {phase.bad_bytes:,} B bodies", phase.attacked),
    ):
        shed = row.errors.get("503", 0)
        table.add_row(
            name,
            _rate(row.rps),
            _ms(row.ok_p50_ms),
            _ms(row.ok_p99_ms),
            _ms(row.p99_ms),
            f"{shed:,}",
            f"{sum(row.errors.values()) - shed:,}",
            " ".join(f"{k}: {v:,}" for k, v in sorted(row.bad.items())) or "—",
            f"{row.server_cpu:.0%}",
        )
    console.print(table)
    for row in (phase.quiet, phase.attacked):
        if set(row.errors) - {"503"}:
            console.print(f"[red]{row.target}: non-200 answers {row.errors}: {row.error_body}")


# -- learner ---------------------------------------------------------------------------------


@dataclass
class LearnerPhase:
    """The learner's rate in a worker, and raw VW's on the same examples."""

    examples: int
    learner_rate: float
    raw_vw_rate: float
    raw_vw_runs: tuple[float, float]
    learner_cpu_rate: float
    raw_vw_cpu_rate: float
    saves: int
    first_saved: int
    n_learned: int
    counters: dict[str, int]
    dead_letters: int
    produce_rate: float
    decode_rate: float
    learn_rate: float

    @property
    def ratio(self) -> float:
        return self.learner_rate / self.raw_vw_rate

    @property
    def passed(self) -> bool:
        return self.ratio >= LEARNER_TARGET and self.n_learned == self.examples


async def _produce(broker: str, topic: str, partitions: int, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=broker,
        acks="all",
        enable_idempotence=False,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        key = POLICY.encode()
        sent = [await producer.send(topic, value, key=key) for value in values]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of its live children (none, today: the worker reads
    its records itself).

    Children that ended are not counted.
    """
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the parent's pid
            total += cpu_seconds(int(stat.parent.name))
    return total


def _vw_arguments(spec: str) -> str:
    policy = make_policy(spec)
    if not isinstance(policy, VWPolicy):
        raise SystemExit(f"--policy must be a Vowpal Wabbit policy, got {spec!r}")
    return policy._arguments()


def _learn_raw_vw(arguments: str, examples: list[Training], *, cpu: bool = False) -> float:
    """Examples/s of pyvw learning `examples` as text lines, on a fresh model."""
    clock = time.process_time if cpu else time.perf_counter
    vw = pyvw.Workspace(arguments, enable_logging=False)
    try:
        gc.collect()
        started = clock()
        for example in examples:
            vw.learn(example.lines)
        return len(examples) / (clock() - started)
    finally:
        vw.finish()


def _in_process_rates(spec: str, examples: list[Training]) -> tuple[float, float]:
    """For reference: decoding the records as the worker does, and learning them as it does.

    The worker reads each record once (``streams.training.decode_training``: its schema
    version and structure checked into plain data, and written as VW text and as a
    DSJSON line in one pass); a VW policy then learns the text
    (``VWPolicy.learn_logged``), any other policy goes through ``policy.learn``.
    """
    from bandit.service.process import tune_gc
    from streams.deadletter import RawRecord
    from streams.training import TrainingRecord, decode_training

    sample = examples[: min(len(examples), 2000)]
    records = [RawRecord("t", 0, i, b"k", e.value) for i, e in enumerate(sample)]
    tune_gc()  # as the worker is (streams/app.py): the collector, not decoding, cost most
    started = time.perf_counter()
    decoded = [decode_training(record) for record in records]
    decode_rate = len(records) / (time.perf_counter() - started)
    policy = make_policy(spec)
    started = time.perf_counter()
    for record in decoded:
        assert isinstance(record, TrainingRecord)
        if isinstance(policy, VWPolicy) and record.written is not None:
            policy.learn_logged(record.written)
        else:
            policy.learn(*record.learn_inputs())
    learn_rate = len(decoded) / (time.perf_counter() - started)
    return decode_rate, learn_rate


def learner_phase(
    services: LocalServices, args: argparse.Namespace, console: Console
) -> LearnerPhase:
    """Produce a backlog of training examples, start a worker on it, time the saves."""
    prefix = _new_prefix("learn")
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-learn-"))
    WORKDIRS.append(workdir)
    settings = _phase_settings(services, prefix)
    console.print(f"  learner: making {args.examples:,} training examples ...", style="dim")
    examples = training_examples(args.examples, args.seed, args.policy)
    topic = f"{prefix}.training"
    started = time.perf_counter()
    asyncio.run(
        _produce(services.broker, topic, settings.kafka.partitions, [e.value for e in examples])
    )
    produce_rate = len(examples) / (time.perf_counter() - started)
    env = dict(os.environ)
    env.update(
        _phase_env(
            prefix,
            args.policy,
            STREAMBANDIT_KAFKA__BROKER=services.broker,
            STREAMBANDIT_REDIS__URL=services.redis_url,
            STREAMBANDIT_DECISION_LOG__DIRECTORY=str(workdir / "decisions"),
        )
    )
    worker = ServiceProcess(
        "worker", [sys.executable, "-m", "bandit", "worker"], None, workdir / "worker.log", env=env
    )
    store = StateStore(Redis.from_url(services.redis_url), prefix)  # type: ignore[arg-type]
    redis: Any = store.redis
    model_key, learned_key = store.key("model", POLICY), store.key("learned", POLICY)
    saves: list[tuple[float, int, int, float]] = []  # saved_at, version, learned, worker CPU
    vw_arguments = _vw_arguments(args.policy)
    console.print("  learner: raw VW learns the same examples (before) ...", style="dim")
    raw_before = max(_learn_raw_vw(vw_arguments, examples) for _ in range(2))
    console.print(f"  learner: a worker learns {len(examples):,} examples ...", style="dim")
    worker.start()
    assert worker.process is not None
    worker_pid = worker.process.pid
    profiler = None
    if args.profile and worker.process is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(worker.process.pid), "--format", "raw",
             "--nonblocking", "--output",
             str(args.profile / f"worker-{time.strftime('%H%M%S')}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60 + len(examples) / 300
        while time.monotonic() < deadline:
            pipe = redis.pipeline(transaction=True)
            pipe.hget(model_key, "version")
            pipe.hget(model_key, "saved_at")
            pipe.zcard(learned_key)
            version, saved_at, learned = pipe.execute()
            if version is not None and (not saves or int(version) != saves[-1][1]):
                cpu = _tree_cpu_seconds(worker_pid)
                saves.append((float(saved_at), int(version), int(learned), cpu))
                if int(learned) >= len(examples):
                    break
            if not worker.running:
                raise RuntimeError(f"the worker exited; its log: {worker.log}")
            time.sleep(0.01)
        else:
            raise RuntimeError(f"the learner did not finish in time; its log: {worker.log}")
    finally:
        worker.stop()
        if profiler is not None:
            profiler.wait(30)
    record = asyncio.run(_load_model(services.redis_url, prefix))
    n_learned = Policy.restore(record).n_learned if record else 0
    counters = asyncio.run(_counters(services.redis_url, prefix, POLICY))
    dead = asyncio.run(_counters(services.redis_url, prefix, "_streams")).get("dead_letters", 0)
    redis.close()
    first, last = saves[0], saves[-1]
    learner_rate = (last[2] - first[2]) / (last[0] - first[0]) if len(saves) > 1 else math.nan
    learner_cpu_rate = (last[2] - first[2]) / (last[3] - first[3]) if len(saves) > 1 else math.nan
    console.print("  learner: raw VW learns the same examples (after) ...", style="dim")
    raw_after = max(_learn_raw_vw(vw_arguments, examples) for _ in range(2))
    raw_cpu = max(_learn_raw_vw(vw_arguments, examples, cpu=True) for _ in range(2))
    decode_rate, learn_rate = _in_process_rates(args.policy, examples)
    return LearnerPhase(
        examples=len(examples),
        learner_rate=learner_rate,
        raw_vw_rate=(raw_before + raw_after) / 2,
        raw_vw_runs=(raw_before, raw_after),
        learner_cpu_rate=learner_cpu_rate,
        raw_vw_cpu_rate=raw_cpu,
        saves=len(saves),
        first_saved=first[2],
        n_learned=n_learned,
        counters=counters,
        dead_letters=dead,
        produce_rate=produce_rate,
        decode_rate=decode_rate,
        learn_rate=learn_rate,
    )


async def _load_model(url: str, prefix: str) -> bytes | None:
    from redis.asyncio import Redis as AsyncRedis

    client = AsyncRedis.from_url(url)
    try:
        record = await StateStore(client, prefix).load_model(POLICY)
    finally:
        await client.aclose()
    return None if record is None else record.snapshot


async def _beat(url: str, prefix: str) -> None:
    """Beat once as a consuming stream worker: an API without workers is then ready.

    The rank and shed phases run no worker (it would share the cores), and ``/readyz``
    waits for one (:mod:`bandit.service.learning`); the beat is good for ``stall_seconds``.
    """
    from redis.asyncio import Redis as AsyncRedis

    from bandit.service.learning import LearningMonitor

    client = AsyncRedis.from_url(url)
    try:
        await LearningMonitor(StateStore(client, prefix), 30.0).beat("bench", consuming=True)
    finally:
        await client.aclose()


async def _counters(url: str, prefix: str, name: str) -> dict[str, int]:
    from redis.asyncio import Redis as AsyncRedis

    client = AsyncRedis.from_url(url)
    try:
        return await StateStore(client, prefix).counters(name)
    finally:
        await client.aclose()


# -- freshness -----------------------------------------------------------------------------


@dataclass
class FreshnessPhase:
    """Seconds from each reward to the model that learned it: learned, then served."""

    reward_wait: float
    learned: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)
    probes: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.served) if self.served else math.nan

    @property
    def passed(self) -> bool:
        return self.p50 < FRESHNESS_TARGET


def freshness_phase(
    services: LocalServices, args: argparse.Namespace, console: Console
) -> FreshnessPhase:
    """API and a worker; rank, reward, and time until a served model learned it."""
    prefix = _new_prefix("fresh")
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-fresh-"))
    WORKDIRS.append(workdir)
    settings = _phase_settings(services, prefix)
    env = _phase_env(prefix, args.policy)
    rng = random.Random(args.seed)
    result = FreshnessPhase(reward_wait=args.reward_wait)
    console.print("  freshness: starting the API and a worker ...", style="dim")
    with (
        LocalStack(settings, workers=1, workdir=workdir / "stack", extra_env=env) as stack,
        httpx.Client(base_url=stack.api_url, timeout=10.0) as http,
    ):
        admin = {"X-API-Key": stack.admin_key}
        app = {"X-API-Key": stack.app_key}
        wanted = PolicySettings(spec=args.policy, reward_wait_seconds=args.reward_wait)
        answer = http.put(
            f"/v1/policies/{POLICY}/settings",
            content=wanted.model_dump_json(),
            headers={**admin, "Content-Type": "application/json"},
        )
        answer.raise_for_status()
        redis: Any = Redis.from_url(services.redis_url)
        store = StateStore(redis, prefix)
        model_key, learned_key = store.key("model", POLICY), store.key("learned", POLICY)

        def round_trip(timeout: float) -> tuple[float, float, int]:
            event_id = f"fresh-{uuid.uuid4().hex}"
            body = {"event_id": event_id, "context": _context(rng), "actions": _actions(rng)}
            http.post("/v1/rank", json=body, headers=app).raise_for_status()
            sent = time.perf_counter()
            reward = {"event_id": event_id, "reward": 1.0}
            http.post("/v1/reward", json=reward, headers=app).raise_for_status()
            deadline = sent + timeout
            version = None
            while version is None:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"event {event_id} was not learned within {timeout} s")
                pipe = redis.pipeline(transaction=True)
                pipe.zscore(learned_key, event_id)
                pipe.hget(model_key, "version")
                score, saved = pipe.execute()
                if score is not None:
                    version = int(saved)
                else:
                    time.sleep(0.005)
            learned = time.perf_counter()
            probes = 0
            while True:
                probe = {"context": _context(rng), "actions": _actions(rng)}
                answer = http.post("/v1/rank", json=probe, headers=app)
                answer.raise_for_status()
                probes += 1
                if int(answer.json()["model_version"]) >= version:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"model {version} was not served within {timeout} s")
                time.sleep(0.005)
            served = time.perf_counter()
            return learned - sent, served - sent, probes

        console.print("  freshness: warming up (the worker joins its group) ...", style="dim")
        round_trip(90.0)
        for index in range(args.freshness_rounds):
            if index % 5 == 0:
                console.print(
                    f"  freshness: round {index + 1} of {args.freshness_rounds} ...", style="dim"
                )
            time.sleep(rng.uniform(0.1, 0.6))  # not in step with the workers' timers
            learned, served, probes = round_trip(30.0)
            result.learned.append(learned)
            result.served.append(served)
            result.probes += probes
        redis.close()
    return result


# -- report ----------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.1f}"


def _verdict(console: Console, passed: bool, text: str) -> None:
    colour, word = ("green", "PASS") if passed else ("red", "FAIL")
    console.print(f"[{colour}]{word}[/{colour}] {text}")


def report_rank(phase: RankPhase, args: argparse.Namespace, console: Console) -> None:
    table = Table(
        title=(
            f"Rank: {args.concurrency} connections, {args.seconds:g} s after {args.warmup:g} s "
            f"warm-up, best of {args.rounds} by requests/s; bodies {phase.body_bytes:,.0f} B, "
            f"answers {phase.answer_bytes[0]:,} B (rank) / {phase.answer_bytes[1]:,} B (trivial)"
        ),
        title_justify="left",
    )
    table.add_column("endpoint", no_wrap=True)
    for column in ("requests/s", "p50 ms", "p99 ms", "requests", "non-200", "server CPU",
                   "server CPU ms/request", "broker CPU", "every run, requests/s"):  # fmt: skip
        table.add_column(column, justify="right")
    rows = [
        ("trivial FastAPI", phase.trivial, phase.trivial_runs),
        ("POST /v1/rank", phase.rank, phase.rank_runs),
        ("  every action unseen", phase.unseen, [phase.unseen.rps]),
        ("  naming a consented person", phase.named, [phase.named.rps]),
    ]
    multi = phase.multi
    if multi is not None:
        rows += [
            (f"trivial FastAPI, {multi.processes} processes", multi.trivial, multi.trivial_runs),
            (f"POST /v1/rank, {multi.processes} API processes", multi.rank, multi.rank_runs),
        ]
    for name, row, runs in rows:
        table.add_row(
            name,
            _rate(row.rps),
            _ms(row.p50_ms),
            _ms(row.p99_ms),
            f"{row.requests:,}",
            str(sum(row.errors.values())),
            f"{row.server_cpu:.0%}",
            f"{row.server_cpu / row.rps * 1000:.3f}" if row.rps else "—",
            "—" if math.isnan(row.broker_cpu) else f"{row.broker_cpu:.0%}",
            " ".join(_rate(r) for r in runs),
        )
    console.print(table)
    console.print(
        f"Server: uvicorn {uvicorn_version()}, options {UVICORN_OPTIONS}, one process each "
        "(but in the last two rows); "
        "load: asyncio raw-socket client in its own process, HTTP/1.1 keep-alive. "
        "CPU = CPU seconds per second of the run."
    )
    console.print(
        f"Actions: {N_ACTIONS} per request drawn from a catalog of {CATALOG_SIZE} articles "
        "whose features stay the same (an app's catalog), so rank reuses its work per action "
        "(validation, policy input, VW text); the last row offers only never-seen actions, "
        f"for which nothing is reused ({phase.unseen.rps / phase.trivial.rps:.2f}x trivial). "
        f"The last row names one of {len(PEOPLE)} people who consented to both: each rank "
        "also reads their consent and notes the decision for them in Redis "
        f"({phase.named.rps / phase.trivial.rps:.2f}x trivial)."
    )
    if multi is not None:
        console.print(
            f"With {multi.processes} processes each (streambandit api --workers "
            f"{multi.processes}; uvicorn's workers for the trivial endpoint) and "
            f"{multi.processes * args.concurrency} connections: rank "
            f"{multi.rank.rps:,.0f} requests/s = {multi.ratio:.2f}x the trivial endpoint's "
            f"{multi.trivial.rps:,.0f}; from one process to {multi.processes}, rank "
            f"{multi.rank.rps / phase.rank.rps:.2f}x, trivial "
            f"{multi.trivial.rps / phase.trivial.rps:.2f}x, on {os.cpu_count()} CPUs shared "
            "with the load generator and the broker."
        )
    for _, row, _ in rows:
        if row.errors:
            console.print(f"[red]{row.target}: non-200 answers {row.errors}: {row.error_body}")


def uvicorn_version() -> str:
    import uvicorn

    return str(uvicorn.__version__)


def report_learner(phase: LearnerPhase, console: Console) -> None:
    table = Table(
        title=f"Learner: {phase.examples:,} training examples, backlog produced first",
        title_justify="left",
    )
    table.add_column("what", no_wrap=True)
    table.add_column("examples/s", justify="right")
    table.add_column("notes")
    table.add_row(
        "learner (stream worker)",
        _rate(phase.learner_rate),
        f"{phase.saves} saved models, first with {phase.first_saved:,} examples; "
        f"n_learned {phase.n_learned:,}",
    )
    table.add_row(
        "raw VW (pyvw text)",
        _rate(phase.raw_vw_rate),
        f"mean of before ({_rate(phase.raw_vw_runs[0])}) and after "
        f"({_rate(phase.raw_vw_runs[1])}) the worker, each best of 2 on a fresh model",
    )
    table.add_row(
        "  learner per worker CPU-second",  # any child process's CPU included
        _rate(phase.learner_cpu_rate),
        f"ratio {phase.learner_cpu_rate / phase.raw_vw_cpu_rate:.2f} to raw VW per CPU-second "
        f"({_rate(phase.raw_vw_cpu_rate)}); less sensitive to other load on the machine",
    )
    table.add_row(
        "  decode (in-process)",
        _rate(phase.decode_rate),
        "the worker's training reader (schema version and structure, VW text and DSJSON line)",
    )
    table.add_row(
        "  learn (in-process)", _rate(phase.learn_rate), "decoded examples, as the worker learns"
    )
    table.add_row("  produce", _rate(phase.produce_rate), "aiokafka, before the worker starts")
    console.print(table)
    counters = {k: v for k, v in sorted(phase.counters.items()) if k.startswith("learn")}
    console.print(f"Learner counters: {counters}; dead letters: {phase.dead_letters}")


def report_freshness(phase: FreshnessPhase, console: Console) -> None:
    table = Table(
        title=(
            f"Freshness: {len(phase.served)} rounds, reward wait {phase.reward_wait:g} s "
            "(inside the figures), seconds from the reward"
        ),
        title_justify="left",
    )
    table.add_column("until", no_wrap=True)
    for column in ("p50", "p90", "max", "min"):
        table.add_column(column, justify="right")
    for name, values in (
        ("a saved model learned it", phase.learned),
        ("rank served that model", phase.served),
    ):
        ordered = sorted(values)
        table.add_row(
            name,
            f"{statistics.median(ordered):.3f}",
            f"{quantile(ordered, 0.9):.3f}",
            f"{ordered[-1]:.3f}",
            f"{ordered[0]:.3f}",
        )
    console.print(table)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, fewer examples")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("rank", "shed", "learner", "freshness"),
        help="only these phases",
    )
    parser.add_argument(
        "--shed-connections", type=int, default=256, help="connections in the shed phase"
    )
    parser.add_argument(
        "--bad-clients", type=int, default=4, help="clients sending refused big bodies (shed)"
    )
    parser.add_argument("--bad-bytes", type=int, default=4_000_000, help="their body size")
    parser.add_argument(
        "--shed-retry",
        choices=("honour", "ignore"),
        default="honour",
        help="shed clients wait Retry-After before sending again, or send at once",
    )
    parser.add_argument("--policy", default="vw-squarecb", help="policy spec served")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in flight")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=3, help="runs per endpoint (best kept)")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="server processes of each in the rank phase's second part (1: skip it)",
    )
    parser.add_argument("--examples", type=int, default=20_000, help="training examples")
    parser.add_argument("--reward-wait", type=float, default=0.2, help="seconds")
    parser.add_argument("--freshness-rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the servers and worker into DIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and data")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.examples, args.freshness_rounds = 3.0, 1, 6_000, 6
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if GC_THRESHOLDS != SERVICE_GC_THRESHOLDS:
        raise SystemExit("bench/loadgen.py's GC_THRESHOLDS differ from bandit.service.process's")
    phases = args.only or ["rank", "shed", "learner", "freshness"]
    console = Console(width=max(Console().width, 150))
    console.print(
        f"Python {platform.python_version()}, vowpalwabbit {vowpalwabbit.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, policy {args.policy}, load average "
        + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    verdicts: list[tuple[bool, str]] = []
    with LocalServices(Settings()) as services:
        if "rank" in phases:
            rank = rank_phase(services, args, console)
            report_rank(rank, args, console)
            verdicts.append(
                (
                    rank.passed,
                    (
                        f"rank: {rank.rank.rps:,.0f} requests/s = {rank.ratio:.2f}x the trivial "
                        f"endpoint's {rank.trivial.rps:,.0f} (target >= {RANK_TARGET}x); p50 "
                        f"{rank.rank.p50_ms:.1f} ms, p99 {rank.rank.p99_ms:.1f} ms; by server CPU "
                        f"per request {rank.cpu_ratio:.2f}x"
                    ),
                )
            )
        if "shed" in phases:
            shed = shed_phase(services, args, console)
            report_shed(shed, args, console)
        if "learner" in phases:
            learner = learner_phase(services, args, console)
            report_learner(learner, console)
            verdicts.append(
                (
                    learner.passed,
                    (
                        f"learner: {learner.learner_rate:,.0f} examples/s = {learner.ratio:.2f}x "
                        f"raw VW's {learner.raw_vw_rate:,.0f} (target >= {LEARNER_TARGET}x); "
                        f"n_learned {learner.n_learned:,} of {learner.examples:,}; by CPU "
                        f"{learner.learner_cpu_rate / learner.raw_vw_cpu_rate:.2f}x"
                    ),
                )
            )
        if "freshness" in phases:
            fresh = freshness_phase(services, args, console)
            report_freshness(fresh, console)
            verdicts.append(
                (
                    fresh.passed,
                    (
                        f"freshness: p50 {fresh.p50:.2f} s from reward to a decision served by a "
                        f"model that learned it (target < {FRESHNESS_TARGET:g} s; reward wait "
                        f"{fresh.reward_wait:g} s included)"
                    ),
                )
            )
    for passed, text in verdicts:
        _verdict(console, passed, text)
    if args.keep:
        console.print(f"Logs and data kept in {', '.join(map(str, WORKDIRS))}")
    else:
        for workdir in WORKDIRS:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if args.check and not all(passed for passed, _ in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
