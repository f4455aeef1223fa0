"""The ``streambandit`` command: simulate, replay logs offline, run the live demo, serve.

On-call commands live in :mod:`bandit.ops.policy_cli` (``streambandit policy
get|set|baseline|resume``) and :mod:`bandit.ops.model_cli` (``streambandit model
list|rollback|export|import|reset``).

Bad input (an unknown policy, a rule broken by an option) ends with a one-line error
naming the option and the rule, and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bandit.errors import StreambanditError
from bandit.ops.demo import DEFAULT_SECONDS
from bandit.ops.model_cli import model_app
from bandit.ops.policy_cli import policy_app
from bandit.ops.simulation import (
    DEFAULT_N_ACTIONS,
    DEFAULT_N_ITEMS,
    Environment,
    SimulationResult,
    make_environment,
    simulate,
)
from bandit.service.logging import configure_logging
from bandit.settings import get_settings
from policies import Policy, available, make_policy
from policies.registry import parse_spec

if TYPE_CHECKING:
    from replay.estimators import Interval
    from replay.report import Report
    from replay.targets import TargetSpec
    from replay.whatif import WhatIf

__all__ = ["app", "main"]

_DEFAULT_ROUNDS = {"synthetic": 10_000, "digits": 1_797}  # digits: one pass over the data

_log = structlog.get_logger("bandit.ops.cli")

app = typer.Typer(
    name="streambandit",
    help="Self-hosted contextual bandits: run the service, its live demo, or the simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.add_typer(policy_app)
app.add_typer(model_app)


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
    counters and where the decision log is, then replays that log off-policy (the
    logging policy, uniform and learning policies, with IPS, SNIPS and DR) and writes
    replay.json and replay.html next to it. For the offline head-to-head comparison of
    policies, see `simulate`.
    """
    from bandit.ops.demo import DemoConfig, render_report, run_demo

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
def api_command(
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="API processes sharing the port, each a whole API (one per core, say).",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (settings from STREAMBANDIT_* variables)."""
    from bandit.api.app import APP_FACTORY, check_settings
    from bandit.api.exposure import serve

    settings = get_settings()
    configure_logging(settings.log_format)
    check_settings(settings)  # here, once, rather than in every worker as it starts
    serve(APP_FACTORY, settings.api, workers=workers)


@app.command("worker")
def worker_command() -> None:
    """Run a Faust stream worker (settings from STREAMBANDIT_* variables)."""
    from streams.app import run_worker

    run_worker(get_settings())


@app.command("worker-health")
def worker_health_command(
    max_age: Annotated[
        float, typer.Option("--max-age", min=0.0, help="Seconds the heartbeat may be old.")
    ] = 30.0,
) -> None:
    """Exit 0 if the worker's heartbeat file is fresh, 1 if not (a container health check)."""
    import time

    path = get_settings().worker_heartbeat
    if path is None:
        _stderr().print("STREAMBANDIT_WORKER_HEARTBEAT is not set: no heartbeat to check")
        raise typer.Exit(1)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError as exc:
        _stderr().print(f"no heartbeat at {path}: {exc.strerror}", markup=False)
        raise typer.Exit(1) from None
    if age > max_age:
        _stderr().print(f"the heartbeat at {path} is {age:.0f} s old (at most {max_age:g})")
        raise typer.Exit(1)
    _stdout().print(f"alive: heartbeat {age:.1f} s old", highlight=False)


@app.command("up")
def up_command(
    workers: Annotated[int, typer.Option("--workers", min=1, help="Stream workers.")] = 1,
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            file_okay=False,
            help=(
                "Data folder: Redis's append-only file, model copies, decision logs, the "
                "pseudonym key and the servers' logs; kept on stop, reused on the next start."
            ),
        ),
    ] = Path("streambandit-data"),
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=0,
            max=65_535,
            help="API port; 0 picks a free one [default: STREAMBANDIT_API__PORT, 8000].",
        ),
    ] = None,
) -> None:
    """Start a local broker, Redis, stream workers and the API; stop them on Ctrl-C.

    A child that exits is restarted (with backoff); the data folder is kept, so the
    next `up` on it serves the same models, settings and consents.
    """
    from bandit.ops.runtime import LocalStack

    _stop_on_sigterm()
    console = _stdout()
    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"port": port})}
        )
    stack_of = LocalStack(settings, workers=workers, workdir=data, durable=True)
    with _usage_errors(), stack_of as stack:
        console.print(f"API       {stack.api_url}  (OpenAPI: {stack.api_url}/docs)")
        console.print(f"broker    {stack.services.broker}")
        console.print(f"Redis     {stack.services.redis_url}")
        console.print(f"admin key {stack.admin_key}")
        console.print(f"app key   {stack.app_key}")
        console.print(f"data      {stack.workdir.resolve()}")
        console.print("Press Ctrl-C to stop.")
        try:
            while True:
                for line in stack.supervise():
                    console.print(line, highlight=False, markup=False)
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print(f"stopping; the data stays in {stack.workdir.resolve()}")


class OnError(StrEnum):
    """What ``replay`` does with a log row that breaks a rule."""

    stop = "stop"
    skip = "skip"


@app.command("replay")
def replay_command(  # noqa: PLR0917 - typer maps each option to a parameter
    logs: Annotated[
        list[Path],
        typer.Argument(
            metavar="LOG",
            exists=True,
            help=(
                "Decision logs: DSJSON, JSON lines or Parquet files, or folders of them; "
                "or the Open Bandit Dataset's CSV files (item_context.csv beside them)."
            ),
        ),
    ],
    policy: Annotated[
        list[str],
        typer.Option(
            "--policy",
            "-p",
            metavar="SPEC",
            help=(
                "Target policy, repeatable: fixed:ID[,ID...], uniform, logging, "
                "policy:SPEC (trained along the log), snapshot:PATH, snapshot-learn:PATH, "
                "file:PATH[#ARRAY] (every row's probabilities: .jsonl, .parquet, .npy or "
                ".npz), vw-model:PATH (a model VW saved, evaluated as it is) or "
                "callable:MODULE:FUNCTION (a function of the log returning its (n, K) "
                "probabilities; MODULE may be a .py file)."
            ),
        ),
    ],
    estimator: Annotated[
        list[str] | None,
        typer.Option(
            "--estimator",
            "-e",
            metavar="NAME",
            help=(
                "Estimator, repeatable: dm, ips, clipped-ips, snips, dr, sndr, switch-dr, "
                "dros, replay (optionally with parameters, e.g. clipped-ips:max_weight=20; "
                "switch-dr and dros tune their threshold unless given one, "
                "switch-dr:tuning=slope|mse) [default: ips, snips, dr]."
            ),
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", dir_okay=False, metavar="OUT.json", help="Write every figure."),
    ] = None,
    html_out: Annotated[
        Path | None,
        typer.Option(
            "--html", dir_okay=False, metavar="OUT.html", help="Write a self-contained report."
        ),
    ] = None,
    on_error: Annotated[
        OnError,
        typer.Option("--on-error", help="Stop at the first bad log row, or skip and count it."),
    ] = OnError.stop,
    bootstrap: Annotated[
        int,
        typer.Option("--bootstrap", min=0, metavar="N", help="Bootstrap resamples (0: none)."),
    ] = 200,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seeds the bootstrap and the reward model.")
    ] = 0,
    whatif: Annotated[
        str | None,
        typer.Option(
            "--whatif",
            metavar="SPEC",
            help="A learning policy spec whose exploration to vary (with --grid).",
        ),
    ] = None,
    grid: Annotated[
        str | None,
        typer.Option(
            "--grid",
            metavar="PARAM=V1,V2,...",
            help="The values of one exploration parameter to try (with --whatif).",
        ),
    ] = None,
    reward_model: Annotated[
        str,
        typer.Option(
            "--reward-model",
            metavar="NAME",
            help=(
                "Reward model of dm, dr, sndr, switch-dr and dros: auto (logistic for 0/1 "
                "rewards, else ridge), ridge, logistic or gbt, optionally with parameters "
                "(e.g. logistic:C=0.1)."
            ),
        ),
    ] = "auto",
    slot: Annotated[
        str | None,
        typer.Option(
            "--slot",
            metavar="SLOT_ID",
            help=(
                "Evaluate this slot of multi-slot decisions (its id) instead of single-slot "
                "ones; '*' reads every slot, each a row at its position (see --by-position)."
            ),
        ),
    ] = None,
    reward_range: Annotated[
        str | None,
        typer.Option(
            "--reward-range",
            metavar="LO,HI",
            help=(
                "Every reward lies in [LO, HI]: bounds the Bernstein and betting intervals "
                "[default: 0,1 when every logged reward is within it, else the log's "
                "extremes, which is no guarantee]."
            ),
        ),
    ] = None,
    by_position: Annotated[
        bool,
        typer.Option(
            "--by-position",
            help=(
                "Also estimate each position's value on its rows alone (estimator@position=K, "
                "K 0-based; the log must carry positions). IPS's sum to a page's value."
            ),
        ),
    ] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help=(
                "Keep a columnar (Parquet) cache of each log file's read, and read it "
                "instead while the file is unchanged."
            ),
        ),
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            file_okay=False,
            metavar="DIR",
            help="Where the caches go [default: .streambandit-cache beside each log file].",
        ),
    ] = None,
) -> None:
    """Estimate what target policies would have earned on logged decisions.

    Each --policy is evaluated with each --estimator on the same log; learning policies
    (policy:SPEC) are trained along the log in order, as they would have been live.
    With --whatif and --grid, a learning policy is replayed with each exploration
    setting and one is recommended only when its lower confidence bound beats the
    current setting's estimate (the what-if uses the first --estimator).
    """
    from replay import Intervals
    from replay.pipeline import replay_logs
    from replay.reward_models import make_reward_model

    estimators = _replay_estimators(estimator or ["ips", "snips", "dr"])
    bounds = _replay_reward_range(reward_range)
    with _usage_errors_for("'--reward-model'"):
        model = make_reward_model(reward_model, seed=seed)
    targets = _replay_targets(policy)
    study = _replay_whatif_options(whatif, grid)
    console = _stdout()
    started = time.perf_counter()
    with _usage_errors_for("'LOG'"):
        run = replay_logs(
            logs,
            targets,
            estimators,
            on_error=on_error.value,
            intervals=Intervals(n_bootstrap=bootstrap, seed=seed, reward_range=bounds),
            reward_model=model,
            whatif=study,
            json_path=json_out,
            html_path=html_out,
            progress=_ReplaySteps(on_error),
            slot=slot,
            by_position=by_position,
            cache=cache,
            cache_dir=cache_dir,
        )
    report, result, data, built = run.report, run.read, run.logs, run.targets
    table, notes = _replay_table(report, data.n)
    console.print(table, highlight=False)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    if report.reward_quality is not None:
        console.print(report.reward_quality.describe(), highlight=False, markup=False)
    if report.whatif is not None:
        console.print(_whatif_table(report.whatif), highlight=False)
        console.print(report.whatif.reason, highlight=False)
    if result.rows_skipped:
        console.print(f"skipped {result.rows_skipped:,} rows: {dict(result.skipped)}")
    if json_out is not None:
        console.print(f"JSON   {json_out}", highlight=False)
    if html_out is not None:
        console.print(f"HTML   {html_out}", highlight=False)
    console.print(
        f"{data.n:,} decisions x {len(built)} policies x {len(estimators)} estimators "
        f"in {time.perf_counter() - started:.1f} s",
        style="dim",
        highlight=False,
    )


@app.command("import-personalizer")
def import_personalizer_command(  # noqa: PLR0917 - typer maps each option to a parameter
    logs: Annotated[
        list[Path],
        typer.Option(
            "--logs",
            metavar="DIR_OR_FILE",
            help=(
                "Personalizer's exported DSJSON logs, repeatable: files, or folders read "
                "for their .json/.dsjson/.jsonl/.ndjson files at any depth."
            ),
        ),
    ],
    configuration: Annotated[
        list[Path],
        typer.Option(
            "--configuration",
            metavar="FILE",
            dir_okay=False,
            help=(
                "Personalizer's exported configuration, repeatable: its service "
                "configuration (JSON with rewardWaitTime) and/or its learning policy "
                "(JSON with arguments)."
            ),
        ),
    ],
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", metavar="NAME", help="The served policy [default: the key's first]."
        ),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            "--url",
            metavar="URL",
            help="The API's base URL [default: http://API__HOST:API__PORT from STREAMBANDIT_*].",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="An admin API key [default: the first admin key in STREAMBANDIT_API__KEYS].",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Read, train and check everything; change nothing."),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace a served model that has learned since its lineage began.",
        ),
    ] = False,
    max_files: Annotated[
        int | None,
        typer.Option(
            "--max-files", min=1, metavar="N", help="Refuse more log files [default: 10,000]."
        ),
    ] = None,
    max_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-bytes", min=1, metavar="BYTES", help="Refuse larger logs [default: 20 GiB]."
        ),
    ] = None,
    max_line_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-line-bytes",
            min=1,
            metavar="BYTES",
            help="Skip (and count) longer lines [default: 1 MiB].",
        ),
    ] = None,
) -> None:
    """Warm start from Azure Personalizer: train the served model on its exported logs.

    Reads every line of the exported DSJSON logs, trains a fresh model of the served
    policy's spec on its decisions (as the service would have learned them from
    Personalizer's client): the single-slot ones, or for a vw-ccb policy the multi-slot
    ones; applies the exported service configuration as far as this service can, and
    imports the model through the admin API, which checks it and serves it. Lines not
    learned (not activated, of the other kind of slots, bad propensities, malformed...)
    are counted by reason. Importing the same files again changes nothing.
    """
    from bandit.ops.admin_cli import api_endpoint
    from bandit.ops.warmstart import (
        AdminApi,
        Bounds,
        export_files,
        import_export,
        read_configuration,
        render_report,
    )

    settings = get_settings()
    given = {"max_files": max_files, "max_bytes": max_bytes, "max_line_bytes": max_line_bytes}
    bounds = Bounds(**{name: value for name, value in given.items() if value is not None})
    with _usage_errors_for("'--logs'"):
        files = export_files(logs, bounds)
    with _usage_errors_for("'--configuration'"):
        exported = read_configuration(configuration)
    url, admin_key = api_endpoint(api, key)
    with _import_errors():
        admin = AdminApi(url, admin_key)
    try:
        with _usage_errors(), _import_errors(), _spinner_bytes() as advance:
            report = import_export(
                admin,
                files,
                exported,
                policy=policy,
                limits=settings.limits,
                identifiers=settings.privacy.personalizer_identifiers,
                bounds=bounds,
                dry_run=dry_run,
                replace=replace,
                progress=advance,
            )
    finally:
        admin.close()
    console = _stdout()
    for part in render_report(report):
        console.print(part, highlight=False, markup=False)
    if report.model == "not imported":
        raise typer.Exit(1)


@contextmanager
def _import_errors() -> Iterator[None]:
    """End an import on an API error with one line: exit 2 when refused, else 1."""
    from bandit.errors import APIError, ClientError, InvalidArgumentError, InvalidModelError

    try:
        yield
    except (APIError, InvalidArgumentError) as exc:
        refused = isinstance(exc, InvalidArgumentError) or exc.status in (
            400,
            401,
            403,
            404,
            409,
            422,
        )
        code = 2 if refused else 1
        _stderr().print(f"import-personalizer: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(code) from None
    except (ClientError, InvalidModelError) as exc:
        _stderr().print(
            f"import-personalizer failed: {exc}", style="red", highlight=False, markup=False
        )
        raise typer.Exit(1) from None


@contextmanager
def _spinner_bytes() -> Iterator[Callable[[int], None]]:
    progress = Progress(
        TextColumn("reading the logs"),
        BarColumn(),
        TextColumn("{task.completed:,} bytes"),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    )
    task = progress.add_task("read", total=None)
    with progress:
        yield lambda done: progress.update(task, completed=done)


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
    with _progress_bar(f"simulating {len(built)} policies", rounds) as advance:
        result = simulate(environment, built, rounds, progress=advance)
    console.print(_table(result))
    console.print(_conclusion(result), highlight=False)
    console.print(
        f"{rounds:,} rounds x {len(built)} policies in {time.perf_counter() - started:.1f} s",
        style="dim",
        highlight=False,
    )


@contextmanager
def _progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a transient progress bar on stderr; yield a callback taking the count done."""
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    )
    task = progress.add_task(label, total=total)
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
        console = Console(width=160)
    return console


def _stderr() -> Console:
    return Console(stderr=True)


# -- replay helpers -----------------------------------------------------------------------


def _replay_estimators(specs: Sequence[str]) -> list[str]:
    from replay.report import make_estimator

    if len(set(specs)) != len(specs):
        repeated = sorted({s for s in specs if list(specs).count(s) > 1})
        msg = f"each estimator must be given once, got {', '.join(map(repr, repeated))} twice"
        raise typer.BadParameter(msg, param_hint="'--estimator'")
    for spec in specs:
        with _usage_errors_for("'--estimator'"):
            make_estimator(spec)
    return list(specs)


def _replay_reward_range(text: str | None) -> tuple[float, float] | None:
    """Parse ``--reward-range LO,HI`` (None: infer it from the log)."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        low = high = math.nan
    if len(parts) != 2 or not (math.isfinite(low) and math.isfinite(high) and low < high):
        msg = f"must be LO,HI with finite LO < HI, got {text!r}"
        raise typer.BadParameter(msg, param_hint="'--reward-range'")
    return low, high


def _replay_targets(specs: Sequence[str]) -> list[TargetSpec]:
    """Parse the target specs and build their policies once, so a bad one fails first."""
    from policies import Policy as AnyPolicy
    from replay.targets import check_target, parse_target

    if len(set(specs)) != len(specs):
        msg = "each policy spec must be given once"
        raise typer.BadParameter(msg, param_hint="'--policy'")
    parsed = []
    for spec in specs:
        with _usage_errors_for("'--policy'"):
            target = parse_target(spec)
            if target.kind == "policy":
                make_policy(target.argument)
            elif target.kind == "snapshot":
                try:
                    AnyPolicy.restore(Path(target.argument).read_bytes())
                except OSError as exc:
                    msg = f"{spec!r}: cannot read the snapshot: {exc.strerror or exc}"
                    raise typer.BadParameter(msg, param_hint="'--policy'") from exc
            else:  # a function imported, a file found
                target = check_target(target)
        parsed.append(target)
    return parsed


def _replay_whatif_options(
    whatif: str | None, grid: str | None
) -> tuple[str, str, list[Any]] | None:
    from replay.whatif import parse_grid

    if whatif is None and grid is None:
        return None
    if whatif is None or grid is None:
        option, other = ("'--grid'", "--whatif") if whatif is None else ("'--whatif'", "--grid")
        msg = f"needs {other} too"
        raise typer.BadParameter(msg, param_hint=option)
    with _usage_errors_for("'--whatif'"):
        policy = make_policy(whatif)
    with _usage_errors_for("'--grid'"):
        parameter, values = parse_grid(grid)
    if parameter not in policy.params():
        msg = f"{whatif!r} has no parameter {parameter!r}; it has {sorted(policy.params())}"
        raise typer.BadParameter(msg, param_hint="'--grid'")
    return whatif, parameter, values


@dataclasses.dataclass(frozen=True)
class _ReplaySteps:
    """Show the replay pipeline's steps; turn an error into a usage error naming its option."""

    on_error: OnError

    @contextmanager
    def __call__(self, step: str, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if step == "read":
            with _spinner("reading") as advance:
                try:
                    yield advance
                except StreambanditError as exc:
                    stop = self.on_error is OnError.stop
                    hint = " (--on-error skip leaves such rows out)" if stop else ""
                    raise typer.BadParameter(f"{exc}{hint}", param_hint="'LOG'") from exc
        elif step in ("target", "whatif") and total is not None:
            title = f"replaying {label}" if step == "target" else f"replaying what-if {label}"
            option = "'--policy'" if step == "target" else "'--grid'"
            with _progress_bar(title, total) as advance, _usage_errors_for(option):
                yield advance
        elif step == "fit" and total is not None:
            with _progress_bar(f"fitting {label}", total) as advance, _usage_errors():
                yield advance
        elif step == "evaluate" and total is not None:
            with _progress_bar("estimating", total) as advance:
                yield advance
        else:
            yield _no_progress


def _no_progress(done: int) -> None:
    """Progress of a step that shows none."""


@contextmanager
def _usage_errors_for(param_hint: str) -> Iterator[None]:
    """Turn a rule broken by one option's value into a usage error naming the option."""
    try:
        yield
    except StreambanditError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from exc


@contextmanager
def _spinner(what: str) -> Iterator[Callable[[int], None]]:
    progress = Progress(
        TextColumn(f"{what} the log"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    )
    task = progress.add_task(what, total=None)
    with progress:
        yield lambda done: progress.update(task, completed=done)


def _cell(value: float | None, scale: float | None = None) -> str:
    from replay.report import format_figure

    return format_figure(value, scale)


def _scale(*intervals: Interval | None) -> float | None:
    """Return the scale of a row's figures: its first interval's width (``format_figure``)."""
    from replay.report import interval_scale

    return next(filter(None, map(interval_scale, intervals)), None)


def _replay_table(report: Report, rows: int) -> tuple[Table, list[str]]:
    """Tabulate the estimates, a row per policy and estimator; warnings as numbered notes.

    A warning repeats across a policy's estimators (and often across policies): the row
    shows its number, the notes below the table say it once. Each interval is one cell
    (``low to high``); figures are never cut: a column of figures is as wide as its
    widest, and the policy and estimator names fold instead.
    """
    from replay.report import estimator_label

    notes: list[str] = []
    lines: list[tuple[str, ...] | None] = []  # None: a new policy's section
    previous = None
    for e in report.evaluations:
        if previous is not None and e.policy != previous:
            lines += [*_anytime_row(report, previous), None]
        est = e.estimate
        ci, boot, bern, bet = est.ci, est.bootstrap_ci, est.bernstein_ci, est.betting_ci
        scale = _scale(ci, boot, bet, bern)
        marks = []
        for warning in est.diagnostics.warnings:
            if warning not in notes:
                notes.append(warning)
            marks.append(f"[{notes.index(warning) + 1}]")
        lines.append(
            (
                e.policy if e.policy != previous else "",
                estimator_label(e),
                _cell(est.value, scale),
                *(_interval_text(interval, scale) for interval in (ci, boot, bern, bet)),
                f"{est.diagnostics.ess:,.0f}",
                f"{est.diagnostics.weight_max:.3g}",
                " ".join(marks),
            )
        )
        previous = e.policy
    if previous is not None:
        lines += _anytime_row(report, previous)
    level = f"{report.level:.0%}"
    table = Table(title=f"off-policy estimates\n{rows:,} logged decisions")
    for column in ("policy", "estimator"):
        table.add_column(column, overflow="fold")
    figures = ("estimate", f"normal {level}", "bootstrap", "Bernstein", "betting", "ESS", "max w")
    for k, column in enumerate(figures, 2):
        widest = max((len(line[k]) for line in lines if line is not None), default=0)
        table.add_column(column, justify="right", no_wrap=True, min_width=max(widest, 1))
    table.add_column("notes", no_wrap=True)
    for line in lines:
        if line is None:
            table.add_section()
        else:
            table.add_row(*line)
    return table, [f"[{i}] {note}" for i, note in enumerate(notes, 1)]


def _interval_text(interval: Interval | None, scale: float | None) -> str:
    """Return an interval as one cell, ``low to high``, or ``-``."""
    if interval is None:
        return "-"
    return f"{_cell(interval.low, scale)} to {_cell(interval.high, scale)}"


def _anytime_row(report: Report, policy: str) -> list[tuple[str, ...]]:
    """Return `policy`'s anytime-valid confidence sequence as a row (under ``betting``)."""
    reading = report.anytime.get(policy)
    if reading is None:
        return []
    bounds = f"{_cell(reading.lower)} to {_cell(reading.upper)}"
    return [("", "anytime-valid", _cell(reading.estimate), "-", "-", "-", bounds, "", "", "")]


def _whatif_table(whatif: WhatIf) -> Table:
    table = Table(title=f"what-if: {whatif.parameter}")
    table.add_column(whatif.parameter, no_wrap=True)
    for column in ("estimate", "CI low", "CI high", "ESS"):
        table.add_column(column, justify="right")
    table.add_column("", no_wrap=True)
    for row in whatif.rows:
        est = row.estimate
        scale = _scale(est.ci, est.bootstrap_ci)
        mark = "current" if row.current else ""
        if whatif.recommended is row:
            mark = "recommended"
        table.add_row(
            str(row.value),
            _cell(est.value, scale),
            _cell(est.ci.low if est.ci else None, scale),
            _cell(est.ci.high if est.ci else None, scale),
            f"{est.diagnostics.ess:,.0f}",
            mark,
        )
    return table
