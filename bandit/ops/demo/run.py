"""Running the demo: start the local stack, drive the simulated app against it, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.live import Live

from bandit.client import AsyncClient, ClientError
from bandit.errors import ConfigurationError, RuntimeServiceError, StreambanditError
from bandit.ops.demo.config import BASELINE_POLICY, DEFAULT_POLICY, DemoConfig, default_workdir
from bandit.ops.demo.live import live_panel, progress_line
from bandit.ops.demo.metrics import (
    DecisionLogSummary,
    ServerView,
    StreamCounts,
    TrustSummary,
    read_decision_log,
)
from bandit.ops.demo.offpolicy import DemoReplay, replay_decision_log
from bandit.ops.demo.report import DemoReport
from bandit.ops.demo.traffic import DecisionRecord, SimulatedApp, summarize
from bandit.settings import Settings, get_settings

__all__ = ["run_demo"]


_PLAIN_PROGRESS_SECONDS: Final = 10.0  # off a terminal: one progress line every 10 s
_DRAIN_EXTRA_SECONDS: Final = 30.0  # after the reward wait, for the join and the learner


def run_demo(
    config: DemoConfig,
    *,
    console: Console | None = None,
    settings: Settings | None = None,
) -> DemoReport:
    """Start a local stack, run simulated traffic against it, and report.

    Everything started is stopped before this returns, also on Ctrl-C or SIGTERM: the
    first one stops the traffic and the partial report is returned
    (``interrupted=True``); a second one stops at once (``KeyboardInterrupt``). The
    working folder is kept.

    Parameters
    ----------
    config
        What to run.
    console
        Where the live progress goes; a console on standard error by default.
    settings
        Base settings of the stack; :func:`~bandit.settings.get_settings` by default.

    Returns
    -------
    DemoReport

    Raises
    ------
    ConfigurationError
        If the configured API keys leave the demo without an admin or an app key.
    RuntimeServiceError
        If a server cannot start, or stops during the run (its log is named).
    """
    from bandit.ops.runtime import LocalStack

    console = console or Console(stderr=True)
    workdir = config.workdir or default_workdir()
    config = replace(config, workdir=workdir)
    env = {
        "STREAMBANDIT_POLICIES": json.dumps(
            {DEFAULT_POLICY: config.policy, BASELINE_POLICY: "uniform"}
        ),
        "STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS": "3",
        "STREAMBANDIT_LOG_FORMAT": "json",
    }
    base = settings or get_settings()
    # Always a free port for the API: a demo must not collide with a running `up`.
    base = base.model_copy(update={"api": base.api.model_copy(update={"port": 0})})
    stack = LocalStack(base, workdir=workdir, extra_env=env)
    if not stack.admin_key or not stack.app_key:
        msg = (
            "the demo needs an admin key and an app key, but STREAMBANDIT_API__KEYS has no "
            f"key with role {'admin' if not stack.admin_key else 'app'}"
        )
        raise ConfigurationError(msg)
    with console.status(f"starting the broker, Redis, a stream worker and the API in {workdir}"):
        stack.start()  # stops what it started if it fails or is interrupted

    def stopped() -> str | None:
        processes = {**stack.services.processes, **stack.processes}
        for name, process in processes.items():
            if not process.running:
                return f"{name} stopped during the demo; its log: {process.log}"
        return None

    try:
        console.print(f"stack up: API {stack.api_url}, logs in {workdir}", highlight=False)
        outcome = asyncio.run(
            _drive(
                config,
                api_url=stack.api_url,
                admin_key=stack.admin_key,
                app_key=stack.app_key,
                console=console,
                stopped=stopped,
            )
        )
    finally:
        with console.status("stopping the stack"):
            stack.stop()
    log = read_decision_log(stack.decision_logs)  # once the workers have closed the files
    try:
        replay, replay_note = _replay(config, outcome, log, workdir=workdir, console=console)
    except KeyboardInterrupt:  # Ctrl-C during the replay: report what the run gathered
        replay, replay_note = None, "interrupted"
        outcome.interrupted = True
    return DemoReport(
        config=config,
        traffic=summarize(outcome.records, seconds=outcome.seconds, windows=config.windows),
        counts=outcome.counts,
        clicks=outcome.clicks,
        rewards_sent=outcome.rewards_sent,
        rewards_unreported=outcome.rewards_unreported,
        events_sent=outcome.events_sent,
        failed_requests=outcome.failed,
        model_version=outcome.model_version,
        learned_examples=outcome.learned_examples,
        decision_log=log,
        workdir=workdir,
        drained=outcome.drained,
        interrupted=outcome.interrupted,
        policy_counts=outcome.policy_counts,
        trust=outcome.trust,
        people=outcome.people,
        learning_opt_outs=outcome.learning_opt_outs,
        replay=replay,
        replay_note=replay_note,
    )


def _replay(
    config: DemoConfig,
    outcome: _Outcome,
    log: DecisionLogSummary,
    *,
    workdir: Path,
    console: Console,
) -> tuple[DemoReplay | None, str | None]:
    """Replay the decision log off-policy; return it, or why it did not run."""
    directory = log.directory
    if log.lines == 0:
        return None, f"no decision was logged in {directory}"
    observed = {
        label: rate
        for label, counts in (
            ("logging", outcome.counts),
            ("uniform", outcome.policy_counts.get(BASELINE_POLICY)),
            (f"policy:{config.policy}", outcome.policy_counts.get(DEFAULT_POLICY)),
        )
        if counts is not None and (rate := counts.reward_rate) is not None
    }
    with console.status("replaying the decision log off-policy") as status:
        try:
            replay = replay_decision_log(
                directory,
                out=workdir,
                policies=(config.policy, *config.replay_policies),
                observed=observed,
                seed=config.seed,
                status=lambda text: status.update(f"off-policy replay: {text}"),
            )
        except StreambanditError as exc:
            return None, f"the replay failed: {exc}"
    return replay, None


@dataclass
class _Outcome:
    """What the traffic and the servers ended with."""

    records: list[DecisionRecord]
    seconds: float
    counts: StreamCounts
    clicks: int
    rewards_sent: int
    rewards_unreported: int
    events_sent: int
    failed: int
    model_version: int
    learned_examples: int
    drained: bool
    interrupted: bool
    policy_counts: dict[str, StreamCounts] = field(default_factory=dict)
    trust: TrustSummary = field(default_factory=TrustSummary)
    people: int = 0
    learning_opt_outs: int = 0


async def _drive(
    config: DemoConfig,
    *,
    api_url: str,
    admin_key: str,
    app_key: str,
    console: Console,
    stopped: Callable[[], str | None],
) -> _Outcome:
    """Configure the policies, run the traffic with live progress, drain, collect."""
    stop = asyncio.Event()
    interrupted = asyncio.Event()

    def interrupt() -> None:
        if interrupted.is_set():  # the second Ctrl-C: stop at once
            raise KeyboardInterrupt
        interrupted.set()
        stop.set()

    with _signals_call(interrupt):
        async with AsyncClient(api_url, api_key=admin_key) as admin:
            for policy in (DEFAULT_POLICY, BASELINE_POLICY):
                current = await admin.get_settings(policy)
                wanted = current.model_copy(
                    update={"reward_wait_seconds": config.reward_wait_seconds}
                )
                await admin.set_settings(policy, wanted)
        async with (
            AsyncClient(api_url, api_key=app_key, timeout=10.0) as client,
            httpx.AsyncClient(base_url=api_url, timeout=5.0) as ops,
        ):
            traffic = SimulatedApp(config, client, stop)
            server = ServerView()
            failure = await _run_traffic(
                traffic, server=server, client=client, ops=ops, console=console, stopped=stopped
            )
            seconds = max(min(traffic.elapsed(), config.seconds), 1e-3)
            if not (failure or interrupted.is_set()):
                with contextlib.suppress(ClientError):
                    await traffic.erase()
            drained = False
            if not (failure or interrupted.is_set()):
                drained = await _drain(
                    traffic,
                    server=server,
                    client=client,
                    ops=ops,
                    console=console,
                    stop=interrupted,
                )
            pending = list(traffic.pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await server.refresh(client, ops)  # the counters and trust metrics at the end
            if failure:
                raise RuntimeServiceError(failure)
    version, learned = server.model()
    return _Outcome(
        records=traffic.records,
        seconds=seconds,
        counts=server.counts(),
        clicks=traffic.clicks,
        rewards_sent=traffic.rewards_sent,
        rewards_unreported=traffic.rewards_unreported,
        events_sent=traffic.events_sent,
        failed=traffic.failed,
        model_version=version,
        learned_examples=learned,
        drained=drained,
        interrupted=interrupted.is_set(),
        policy_counts={p: server.counts(p) for p in (DEFAULT_POLICY, BASELINE_POLICY)},
        trust=server.trust,
        people=len(traffic.people),
        learning_opt_outs=traffic.learning_opt_outs,
    )


async def _run_traffic(
    traffic: SimulatedApp,
    *,
    server: ServerView,
    client: AsyncClient,
    ops: httpx.AsyncClient,
    console: Console,
    stopped: Callable[[], str | None],
) -> str | None:
    """Run the users until the time is up or `traffic.stop` is set; return a failure."""
    config = traffic.config
    users = [asyncio.create_task(traffic.user()) for _ in range(config.concurrency)]
    failure: str | None = None
    last_poll, last_line = -math.inf, 0.0  # the first progress line after 10 s
    live = (
        Live(console=console, transient=True, auto_refresh=False) if console.is_terminal else None
    )
    try:
        if live is not None:
            live.start()
        while not traffic.stop.is_set():
            now = traffic.elapsed()
            if now >= config.seconds:
                break
            failure = stopped()
            if failure:
                break
            if now - last_poll >= 1.0:
                last_poll = now
                await server.refresh(client, ops)
            if live is not None:
                live.update(live_panel(traffic, server), refresh=True)
            elif now - last_line >= _PLAIN_PROGRESS_SECONDS:
                last_line = now
                console.print(progress_line(traffic, server), highlight=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(traffic.stop.wait(), 0.25)
    finally:
        traffic.stop.set()
        if live is not None:
            live.stop()
        await asyncio.gather(*users, return_exceptions=True)
    return failure


async def _drain(
    traffic: SimulatedApp,
    *,
    server: ServerView,
    client: AsyncClient,
    ops: httpx.AsyncClient,
    console: Console,
    stop: asyncio.Event,
) -> bool:
    """Wait for the delayed rewards, the join and the learner; return whether all came.

    Gives up when `stop` is set, or after three reward waits (the longest reward
    delay) plus half a minute.
    """
    config = traffic.config
    decided = len(traffic.records)
    deadline = time.monotonic() + 3 * config.reward_wait_seconds + _DRAIN_EXTRA_SECONDS
    with console.status(
        f"waiting for the last rewards, the join ({config.reward_wait_seconds:g} s reward "
        "wait) and the learner"
    ):
        while time.monotonic() < deadline and not stop.is_set():
            if not traffic.pending:
                await server.refresh(client, ops)
                learning = server.counts(DEFAULT_POLICY)
                _, learned = server.model()
                counts = server.counts()
                if (  # every decision joined, or counted without consent, or erased
                    counts.joined + counts.not_learned >= decided - traffic.erased_pending
                    and learning.joined > 0
                    and learned >= learning.joined
                ):
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return False


@contextlib.contextmanager
def _signals_call(handler: Callable[[], None]) -> Iterator[None]:
    """Within a running loop: SIGINT and SIGTERM call `handler`; restore them afterwards."""
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed[sig] = previous
    try:
        yield
    finally:
        for sig, previous in installed.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
