"""The replay pipeline: read logs, fit the reward model, build targets, evaluate, write.

:func:`replay_logs` is the one path from decision log files to a written report; the
``streambandit replay`` command and the live demo's closing replay both call it and only
show what it returns. Each step runs inside the context a :class:`StepProgress` gives it,
so a caller can show progress (a bar, a status line) and attribute an error to the input
behind the step that raised it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np

from policies.errors import ConfigurationError, LogFormatError
from replay._data import LoggedDecisions, TargetProbabilities
from replay.estimators import Intervals
from replay.readers import OnError, PathArg, ReadResult, read_log
from replay.report import (
    Evaluation,
    Report,
    evaluate,
    make_estimator,
    needs_rewards,
    render_html,
    to_json,
)
from replay.reward_models import (
    AutoRewardModel,
    RewardModel,
    RewardPredictions,
    make_reward_model,
)
from replay.targets import Target, TargetLike, TargetSpec, build_target, check_target
from replay.whatif import what_if

__all__ = ["ReplayResult", "Step", "StepProgress", "replay_logs"]

Step: TypeAlias = Literal["read", "fit", "target", "whatif", "evaluate", "write"]
"""The pipeline's steps, in the order they run (``target`` once per target policy,
``write`` once per file, ``whatif`` only when asked for)."""


class StepProgress(Protocol):
    """Shows the pipeline's steps; its context wraps each step while it runs.

    Called as a step starts with the step, a label and the step's size; the context
    manager it returns is held while the step runs and gives a callable the step calls
    with how much of it is done. An exception a step raises passes through that context,
    which may turn it into its caller's own error.

    ===========  ======================  =============================  ==================
    step         label                   total                          done
    ===========  ======================  =============================  ==================
    ``read``     the paths read          None                           rows read
    ``fit``      the reward model        decisions x 2                  rows fitted, then
                                                                        predicted (a model
                                                                        whose `cross_fit`
                                                                        takes `progress`)
    ``target``   the target's spec       decisions                      rows replayed
    ``whatif``   the parameter varied    decisions x (settings + 1)     rows replayed
    ``evaluate``  ``""``                 targets x estimators           estimates done
    ``write``    the file written        None                           (not called)
    ===========  ======================  =============================  ==================
    """

    def __call__(
        self, step: Step, label: str, total: int | None
    ) -> AbstractContextManager[Callable[[int], None]]:
        """Return the context the step runs in."""
        ...


@dataclass(frozen=True, eq=False)
class ReplayResult:
    """What :func:`replay_logs` read, estimated and wrote.

    Parameters
    ----------
    report
        Every target's estimate by every estimator, the learning curves and the
        what-if, as written.
    read
        What the reader kept and left out (:func:`replay.readers.read_log`).
    targets
        The target policies, as built on the log.
    rewards
        The reward model's cross-fitted predictions, None when no estimator needed them.
    json_path, html_path
        The files written, None for those not asked for.
    seconds
        Wall-clock time of the whole pipeline.
    """

    report: Report
    read: ReadResult
    targets: tuple[Target, ...]
    rewards: RewardPredictions | None
    json_path: Path | None
    html_path: Path | None
    seconds: float

    @property
    def logs(self) -> LoggedDecisions:
        """The logged decisions evaluated on."""
        return self.read.logs


def replay_logs(
    paths: PathArg | Sequence[PathArg],
    targets: Sequence[TargetLike],
    estimators: Sequence[str] = ("ips", "snips", "dr"),
    *,
    on_error: OnError = "stop",
    intervals: Intervals | None = None,
    reward_model: RewardModel | str | None = None,
    whatif: tuple[str, str, Sequence[Any]] | None = None,
    json_path: Path | None = None,
    html_path: Path | None = None,
    title: str = "streambandit replay",
    json_extra: Mapping[str, Any] | None = None,
    progress: StepProgress | None = None,
    slot: str | int | None = None,
    by_position: bool = False,
    cache: bool = False,
    cache_dir: Path | None = None,
) -> ReplayResult:
    """Estimate what target policies would have earned on decision logs, and write it down.

    Reads the logs (:func:`~replay.readers.read_log`, contexts and features kept),
    cross-fits the reward model once if an estimator needs predictions, builds each
    target on the log (a learning target trained along it in order,
    :func:`~replay.targets.build_target`), estimates every target with every estimator
    (:func:`~replay.report.evaluate`), optionally varies one exploration parameter of a
    learning policy (:func:`~replay.whatif.what_if`, with the first estimator), and
    writes the JSON and HTML reports asked for. Target specs and estimator names are
    checked before anything is read (:func:`~replay.targets.check_target`: functions
    imported, files found).

    Parameters
    ----------
    paths
        Log files or folders of them: DSJSON, JSON lines or Parquet.
    targets
        Target specs (:mod:`replay.targets`), text or parsed, or given as objects: an
        ``(n, K)`` array of probabilities or a function of the log returning one
        (:func:`~replay.targets.target_spec`); a repeated spec is evaluated once.
    estimators
        Estimator names, optionally with hyperparameters (:mod:`replay.report`), at least
        one.
    on_error
        ``"stop"`` at the first bad row, or ``"skip"`` and count it.
    intervals
        Interval settings of every estimator (default :class:`~replay.Intervals()`).
    reward_model
        Fits the predictions of the estimators that need them: a model, or its spec
        (:func:`~replay.reward_models.make_reward_model`: ``"auto"``, ``"ridge"``,
        ``"logistic:C=0.1"``, ``"gbt"``, seeded with ``intervals.seed``). Default
        ``"auto"``: :class:`~replay.HashedLogistic` when every reward is 0 or 1, else
        :class:`~replay.HashedRidge`. Its held-out quality is in the report.
    whatif
        ``(policy spec, parameter, values)``: also replay that learning policy with each
        value of the parameter and recommend one (:attr:`~replay.report.Report.whatif`).
    json_path, html_path
        Where to write every figure as JSON, and the self-contained HTML report (parent
        folders are created); None writes nothing.
    title
        The HTML report's title.
    json_extra
        More top-level keys for the JSON file (JSON-serialisable values).
    progress
        Shows the steps (:class:`StepProgress`); default: nothing shown.
    slot
        Evaluate this slot of multi-slot decisions (its id or 0-based number), each
        line as the decision that slot was (``"*"``: every slot, each a row at its
        position); None evaluates single-slot decisions
        (:func:`~replay.readers.read_log`'s `slot`).
    by_position
        Also estimate every target with every estimator on each position's rows alone,
        labelled ``<estimator>@position=<k>`` (k 0-based): the value of each position of
        a page. For IPS these sum to the page's value (:class:`~replay.slates.IIPS`).
        The log must carry positions.
    cache, cache_dir
        Keep a columnar cache of each log file's read, and where
        (:func:`~replay.readers.read_log`'s).

    Returns
    -------
    ReplayResult

    Raises
    ------
    LogFormatError
        At the first bad row with ``on_error="stop"``, when no decision is left to
        evaluate, or when the log lacks what a target needs.
    ConfigurationError
        For no target or no estimator, a bad target spec, estimator name, what-if grid
        or policy spec.

    Examples
    --------
    A uniformly logged decision log where the first of two items is clicked 80% of the
    time and the second 20%:

    >>> import tempfile
    >>> import numpy as np
    >>> from replay import to_dsjson
    >>> rng = np.random.default_rng(0)
    >>> n = 400
    >>> chosen = rng.integers(0, 2, n)
    >>> logs = LoggedDecisions(
    ...     n_actions=np.full(n, 2), chosen=chosen, propensity=np.full(n, 0.5),
    ...     probabilities=np.full((n, 2), 0.5),
    ...     reward=(rng.random(n) < np.where(chosen == 0, 0.8, 0.2)).astype(float),
    ...     action_ids=[["a", "b"]] * n, contexts=[{"user": {"x": 1.0}}] * n,
    ...     action_features=[[{}, {}]] * n)
    >>> folder = Path(tempfile.mkdtemp())
    >>> to_dsjson(logs, folder / "log.dsjson")
    400
    >>> result = replay_logs(
    ...     folder, ["fixed:a", "uniform"], ["ips", "dr"],
    ...     intervals=Intervals(n_bootstrap=0), json_path=folder / "out" / "replay.json")
    >>> for e in result.report.evaluations:
    ...     print(e.policy, e.estimator, round(e.estimate.value, 2))
    fixed:a ips 0.69
    fixed:a dr 0.77
    uniform ips 0.44
    uniform dr 0.47
    >>> result.read.rows_kept, json.loads(result.json_path.read_text())["log"]["rows_read"]
    (400, 400)
    >>> replay_logs(folder, ["best"])
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: target 'best': must be one of fixed:ID[,ID...], ...
    """
    started = time.perf_counter()
    step = _quiet if progress is None else progress
    intervals = Intervals() if intervals is None else intervals
    specs = _checked_specs(targets, estimators, intervals)
    model = (
        make_reward_model(reward_model or "auto", seed=intervals.seed)
        if reward_model is None or isinstance(reward_model, str)
        else reward_model
    )
    several = isinstance(paths, Sequence) and not isinstance(paths, str)
    where = ", ".join(map(str, paths)) if several else str(paths)  # type: ignore[arg-type]
    with step("read", where, None) as advance:
        read = read_log(
            paths, on_error=on_error, progress=advance, slot=slot, cache=cache, cache_dir=cache_dir
        )
    logs = read.logs
    if logs.n == 0:
        skipped = f", all skipped: {dict(read.skipped)}" if read.rows_read else ""
        msg = f"{where}: no decision to evaluate ({read.rows_read} rows read{skipped})"
        raise LogFormatError(msg)
    rewards = None
    if any(needs_rewards(name) for name in estimators):
        if isinstance(model, AutoRewardModel):
            model = model.choose(logs)
        with step("fit", type(model).__name__, 2 * logs.n) as advance:
            rewards = model.cross_fit(logs, progress=advance)
    built = []
    for spec in specs:
        with step("target", spec.spec, logs.n) as advance:
            built.append(build_target(spec, logs, progress=advance))
    facts = {
        "files": [str(path) for path in read.files],
        "rows_read": read.rows_read,
        "rows_kept": read.rows_kept,
        "skipped": dict(read.skipped),
    }
    with step("evaluate", "", len(built) * len(estimators)) as advance:
        report = evaluate(
            logs,
            built,
            estimators,
            intervals=intervals,
            rewards=rewards,
            log=facts,
            progress=advance,
            anytime=True,
        )
        if by_position:
            every = report.evaluations + _by_position(logs, built, estimators, intervals, rewards)
            ordered = tuple(e for target in built for e in every if e.policy == target.label)
            report = replace(report, evaluations=ordered)
    if whatif is not None:
        policy, parameter, values = whatif
        estimator = estimators[0]
        with step("whatif", parameter, logs.n * (len(values) + 1)) as advance:
            study = what_if(
                logs,
                policy,
                parameter,
                values,
                estimator=make_estimator(estimator, intervals),
                rewards=rewards if needs_rewards(estimator) else None,
                progress=advance,
            )
        report = replace(report, whatif=study)
    if json_path is not None:
        data = {**to_json(report), **(json_extra or {})}
        with step("write", str(json_path), None):
            _write(json_path, json.dumps(data, indent=2, allow_nan=False))
    if html_path is not None:
        with step("write", str(html_path), None):
            _write(html_path, render_html(report, title=title))
    return ReplayResult(
        report=report,
        read=read,
        targets=tuple(built),
        rewards=rewards,
        json_path=json_path,
        html_path=html_path,
        seconds=time.perf_counter() - started,
    )


def _by_position(
    logs: LoggedDecisions,
    targets: Sequence[Target],
    estimators: Sequence[str],
    intervals: Intervals,
    rewards: RewardPredictions | None,
) -> tuple[Evaluation, ...]:
    """Evaluate every target with every estimator on each position's rows alone."""
    if logs.position is None:
        msg = "evaluating by position needs each row's `position`; the log has none"
        raise LogFormatError(msg)
    evaluations: list[Evaluation] = []
    for position in np.unique(logs.position):
        rows = np.flatnonzero(logs.position == position)
        part = logs.take(rows)
        width = part.width
        part_targets = [
            replace(
                target,
                probabilities=TargetProbabilities(
                    part, target.probabilities.probabilities[rows, :width]
                ),
                running_value=None,
            )
            for target in targets
        ]
        part_rewards = (
            None if rewards is None else RewardPredictions(part, rewards.values[rows, :width])
        )
        found = evaluate(part, part_targets, estimators, intervals=intervals, rewards=part_rewards)
        evaluations.extend(
            replace(e, estimator=f"{e.estimator}@position={position}") for e in found.evaluations
        )
    return tuple(evaluations)


def _checked_specs(
    targets: Sequence[TargetLike], estimators: Sequence[str], intervals: Intervals
) -> list[TargetSpec]:
    """Check the targets and estimators before anything is read; the distinct specs."""
    if isinstance(targets, str | np.ndarray) or callable(targets):
        what = type(targets).__name__
        msg = f"`targets` must be a list of targets, got one {what}: put it in a list"
        raise ConfigurationError(msg)
    specs = list({spec.spec: spec for spec in map(check_target, targets)}.values())
    if not specs or not estimators:
        missing = "targets" if not specs else "estimators"
        msg = f"`{missing}` must name at least one, got none"
        raise ConfigurationError(msg)
    for name in estimators:
        make_estimator(name, intervals)
    return specs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _ignore(done: int) -> None:
    """Progress nobody shows."""


def _quiet(
    step: Step, label: str, total: int | None
) -> AbstractContextManager[Callable[[int], None]]:
    """Show nothing."""
    return contextlib.nullcontext(_ignore)
