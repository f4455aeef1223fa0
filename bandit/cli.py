"""The ``streambandit`` command: simulate policies, list them, run the live demo, serve.

Bad input (an unknown policy, a rule broken by an option) ends with a one-line error
naming the option and the rule, and exit code 2, never a traceback.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bandit.demo import DEFAULT_SECONDS
from bandit.errors import StreambanditError
from bandit.logging import configure_logging
from bandit.settings import get_settings
from bandit.simulation import (
    DEFAULT_N_ACTIONS,
    DEFAULT_N_ITEMS,
    Environment,
    SimulationResult,
    make_environment,
    simulate,
)
from policies import Policy, available, make_policy
from policies.registry import parse_spec

__all__ = ["app", "main"]

_DEFAULT_ROUNDS = {"synthetic": 10_000, "digits": 1_797}  # digits: one pass over the data

_log = structlog.get_logger("bandit.cli")

app = typer.Typer(
    name="streambandit",
    help="Self-hosted contextual bandits: run the service, its live demo, or the simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class EnvironmentName(StrEnum):
    """Environments ``simulate`` can run."""

    synthetic = "synthetic"
    digits = "digits"


@app.callback()
def _entry() -> None:
    """Self-hosted contextual bandits: run the service, its live demo, or the simulator."""
    configure_logging()


@app.command("simulate")
def simulate_command(  # noqa: PLR0917 - typer maps each option to a parameter
    policy: Annotated[
        list[str],
        typer.Option(
            "--policy",
            "-p",
            metavar="SPEC",
            help=(
                "Policy spec, repeatable: a name from `streambandit policies`, optionally "
                "with parameters, e.g. vw-squarecb or vw-epsilon:epsilon=0.1."
            ),
        ),
    ],
    env: Annotated[
        EnvironmentName, typer.Option("--env", help="Environment to simulate.")
    ] = EnvironmentName.synthetic,
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds",
            min=1,
            metavar="ROUNDS",
            help="Decisions per policy [default: 10000 synthetic, 1797 (one pass) digits].",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the environment.")] = 0,
    actions: Annotated[
        int | None,
        typer.Option(
            "--actions",
            min=2,
            metavar="N",
            help=f"Items offered per round (synthetic) [default: {DEFAULT_N_ACTIONS}].",
        ),
    ] = None,
    items: Annotated[
        int | None,
        typer.Option(
            "--items",
            min=2,
            metavar="N",
            help=f"Catalog size the offers come from (synthetic) [default: {DEFAULT_N_ITEMS}].",
        ),
    ] = None,
    drift: Annotated[
        float,
        typer.Option(
            "--drift",
            min=0.0,
            metavar="RATE",
            help="Complete turnovers of the hidden preferences per 10,000 rounds (synthetic).",
        ),
    ] = 0.0,
    change_point: Annotated[
        int | None,
        typer.Option(
            "--change-point",
            min=0,
            metavar="ROUND",
            help="Round at which the hidden preferences change completely (synthetic).",
        ),
    ] = None,
) -> None:
    """Run policies head to head on the same rounds and print how each did."""
    _check_environment_options(env, actions, items, drift, change_point)
    built = _build_policies(policy)
    n_rounds = _DEFAULT_ROUNDS[env.value] if rounds is None else rounds
    with _usage_errors():
        environment = make_environment(
            env.value,
            seed=seed,
            n_actions=actions,
            n_items=items,
            drift=drift,
            change_point=change_point,
        )
    _run_and_report(environment, built, n_rounds)


@app.command("policies")
def list_policies() -> None:
    """List the policy names --policy accepts, one per line."""
    console = _stdout()
    for name in available():
        console.print(name, highlight=False)


@app.command("demo")
def demo(
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds", min=1.0, metavar="SECONDS", help="How long the simulated traffic runs."
        ),
    ] = DEFAULT_SECONDS,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seeds the simulated users and the app's draws.")
    ] = 0,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", min=1, max=256, metavar="N", help="Concurrent users."),
    ] = 16,
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            metavar="SPEC",
            help="The learning policy, served as 'default' next to the uniform 'baseline'.",
        ),
    ] = "vw-squarecb",
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            file_okay=False,
            help=(
                "Folder for the servers' logs and the DSJSON decision log, kept afterwards "
                "[default: ./streambandit-data/demo-<timestamp>]."
            ),
        ),
    ] = None,
) -> None:
    """Run the whole service locally, send it simulated app traffic, and report how it learned.

    Starts the broker, Redis, a stream worker and the API (as `up` does), serving a
    learning policy and a uniform baseline; simulated users ask for decisions over HTTP,
    click with hidden probabilities and report rewards after a delay (some never). Ends
    with the click rate over time against the baseline, latency percentiles, the reward
    counters and where the decision log is. For the offline head-to-head comparison of
    policies, see `simulate`.
    """
    from bandit.demo import DemoConfig, render_report, run_demo

    _build_policies([policy])  # a usage error now, not a failing server later
    _stop_on_sigterm()
    with _usage_errors():
        config = DemoConfig(
            seconds=seconds, concurrency=concurrency, seed=seed, policy=policy, workdir=workdir
        )
    console = _stdout()
    try:
        report = run_demo(config, console=_stderr())
    except KeyboardInterrupt:
        _stderr().print("interrupted; the stack is stopped")
        raise typer.Exit(130) from None
    except StreambanditError as exc:  # a server that failed, keys that do not fit, ...
        _stderr().print(f"demo failed: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from exc
    for part in render_report(report):
        console.print(part, highlight=False)
    if report.interrupted:
        raise typer.Exit(130)


@app.command("api")
def api_command() -> None:
    """Serve the HTTP API (settings from STREAMBANDIT_* variables)."""
    import uvicorn

    from bandit.api import create_app

    settings = get_settings()
    configure_logging(settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level="warning",
        access_log=False,
    )


@app.command("worker")
def worker_command() -> None:
    """Run a Faust stream worker (settings from STREAMBANDIT_* variables)."""
    from streams.app import run_worker

    run_worker(get_settings())


@app.command("up")
def up_command(
    workers: Annotated[int, typer.Option("--workers", min=1, help="Stream workers.")] = 1,
) -> None:
    """Start a local broker, Redis, stream workers and the API; stop them on Ctrl-C."""
    from bandit.runtime import LocalStack

    _stop_on_sigterm()
    console = _stdout()
    with _usage_errors(), LocalStack(workers=workers) as stack:
        console.print(f"API       {stack.api_url}  (OpenAPI: {stack.api_url}/docs)")
        console.print(f"broker    {stack.services.broker}")
        console.print(f"Redis     {stack.services.redis_url}")
        console.print(f"admin key {stack.admin_key}")
        console.print(f"app key   {stack.app_key}")
        console.print(f"logs      {stack.workdir}")
        console.print("Press Ctrl-C to stop.")
        try:
            while all(process.running for process in stack.processes.values()):
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping")
        else:
            stopped = [n for n, p in stack.processes.items() if not p.running]
            console.print(f"[red]{', '.join(stopped)} stopped; see the logs in {stack.workdir}")
            raise typer.Exit(1)


def main() -> None:
    """Run the ``streambandit`` command line."""
    app(prog_name="streambandit")


# -- helpers ----------------------------------------------------------------------------


def _stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so the runtime stops what it started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Turn a rule broken by the user's input into a usage error (exit 2, no traceback)."""
    try:
        yield
    except StreambanditError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _check_environment_options(
    env: EnvironmentName,
    actions: int | None,
    items: int | None,
    drift: float,
    change_point: int | None,
) -> None:
    """Refuse environment options that break a rule, naming the option."""
    if env is EnvironmentName.digits:
        for option, value in (
            ("--actions", actions),
            ("--items", items),
            ("--drift", drift or None),
            ("--change-point", change_point),
        ):
            if value is not None:
                msg = (
                    "applies only to --env synthetic (digits has 10 fixed actions, no "
                    f"catalog and no drift), got {value!r}"
                )
                raise typer.BadParameter(msg, param_hint=f"'{option}'")
    max_actions = get_settings().limits.max_actions
    if actions is not None and actions > max_actions:
        msg = f"must be <= {max_actions} (settings limits.max_actions), got {actions!r}"
        raise typer.BadParameter(msg, param_hint="'--actions'")
    catalog = DEFAULT_N_ITEMS if items is None else items
    offered = DEFAULT_N_ACTIONS if actions is None else actions
    if offered > catalog:
        if actions is None:
            msg = f"must be >= the items offered per round, --actions ({offered}), got {catalog!r}"
            raise typer.BadParameter(msg, param_hint="'--items'")
        msg = f"must be <= the catalog size, --items ({catalog}), got {actions!r}"
        raise typer.BadParameter(msg, param_hint="'--actions'")


def _build_policies(specs: Sequence[str]) -> dict[str, Policy]:
    """Build a fresh policy per spec; the settings' exploration floor unless one is given."""
    if not specs:
        msg = "give at least one policy"
        raise typer.BadParameter(msg, param_hint="'--policy'")
    floor = get_settings().exploration_floor
    built: dict[str, Policy] = {}
    for spec in specs:
        if spec in built:
            msg = f"each policy spec must be given once, got {spec!r} twice"
            raise typer.BadParameter(msg, param_hint="'--policy'")
        try:
            name, params = parse_spec(spec)
            if name not in available():
                msg = f"no policy named {name!r}; known: {', '.join(available())}"
                raise typer.BadParameter(msg, param_hint="'--policy'")
            overrides = {} if "floor" in params else {"floor": floor}
            built[spec] = make_policy(spec, **overrides)
        except StreambanditError as exc:
            msg = f"{spec!r}: {exc}"
            raise typer.BadParameter(msg, param_hint="'--policy'") from exc
    return built


def _run_and_report(environment: Environment, built: dict[str, Policy], rounds: int) -> None:
    console = _stdout()
    started = time.perf_counter()
    with _progress_bar(rounds, len(built)) as advance:
        result = simulate(environment, built, rounds, progress=advance)
    console.print(_table(result))
    console.print(_conclusion(result), highlight=False)
    console.print(
        f"{rounds:,} rounds x {len(built)} policies in {time.perf_counter() - started:.1f} s",
        style="dim",
        highlight=False,
    )


@contextmanager
def _progress_bar(rounds: int, n_policies: int) -> Iterator[Callable[[int], None]]:
    progress = Progress(
        TextColumn(f"simulating {n_policies} policies"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    )
    task = progress.add_task("rounds", total=rounds)
    with progress:
        yield lambda done: progress.update(task, completed=done)


def _table(result: SimulationResult) -> Table:
    table = Table(title=f"{result.environment}\n{result.rounds:,} rounds")
    table.add_column("policy", no_wrap=True)
    table.add_column("mean reward", justify="right")
    table.add_column("regret vs oracle", justify="right")
    table.add_column("last 10% reward", justify="right")
    table.add_column("explored", justify="right")
    table.add_column("decisions/s", justify="right")
    best = result.best().label
    for r in result.policies:
        table.add_row(
            f"[bold]{r.label}[/bold]" if r.label == best else r.label,
            f"{r.mean_reward:.3f}",
            f"{r.regret:.3f}",
            f"{r.window_rewards[-1]:.3f}",
            f"{r.explored_share:.1%}",
            f"{r.decisions_per_second:,.0f}",
        )
    table.add_section()
    dash = "-"
    table.add_row("oracle (expected)", f"{result.oracle_reward:.3f}", "0.000", dash, dash, dash)
    table.add_row(
        "uniform (expected)",
        f"{result.uniform_reward:.3f}",
        f"{result.oracle_reward - result.uniform_reward:.3f}",
        dash,
        dash,
        dash,
    )
    return table


def _conclusion(result: SimulationResult) -> str:
    best = result.best()
    try:
        baseline, source = result.result("uniform").mean_reward, "the uniform policy"
    except KeyError:
        baseline, source = result.uniform_reward, "uniform random (expected)"
    lift = best.mean_reward / baseline - 1.0 if baseline > 0 else float("inf")
    return (
        f"Best: {best.label}, mean reward {best.mean_reward:.3f} against {baseline:.3f} "
        f"for {source} ({lift:+.0%}), regret {best.regret:.3f} against the oracle."
    )


def _stdout() -> Console:
    # Off a terminal (pipes, tests) rich would assume 80 columns and wrap the table.
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    return console


def _stderr() -> Console:
    return Console(stderr=True)
