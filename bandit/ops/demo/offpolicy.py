"""The demo's closing off-policy replay of its decision log, and how it is told."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from bandit.ops.demo._figures import finite_or_none, interval_text, rate
from bandit.ops.demo.config import (
    BASELINE_POLICY,
    DEFAULT_POLICY,
    REPLAY_ALTERNATIVES,
    REPLAY_ESTIMATORS,
)

if TYPE_CHECKING:
    from replay import Estimate
    from replay.report import Report

__all__ = [
    "DemoReplay",
    "replay_decision_log",
    "replay_lines",
    "replay_table",
]


@dataclass(frozen=True, eq=False)
class DemoReplay:
    """What the replay package estimated on the run's decision log, and where it wrote it.

    Attributes
    ----------
    report
        The evaluations of every target policy by every estimator
        (:func:`replay.report.evaluate`).
    decisions
        Decisions evaluated (rows of the log kept).
    skipped
        Rows of the log left out, by reason.
    observed
        Reward rates observed live, by target label: what the service joined (joined
        with a reward over joined) for the decisions that target stands for.
    json_path, html_path
        The replay's JSON and HTML report.
    seconds
        How long the replay took, reading included.
    """

    report: Report
    decisions: int
    skipped: Mapping[str, int]
    observed: Mapping[str, float]
    json_path: Path
    html_path: Path
    seconds: float

    def estimate(self, policy: str, estimator: str) -> Estimate:
        """Return the estimate of target `policy` by `estimator` (KeyError if absent)."""
        for evaluation in self.report.evaluations:
            if evaluation.policy == policy and evaluation.estimator == estimator:
                return evaluation.estimate
        msg = f"no estimate of {policy!r} by {estimator!r}"
        raise KeyError(msg)

    def covers(self, policy: str, estimator: str = "ips") -> bool | None:
        """Whether the estimate's 95% interval covers the reward rate observed live.

        None when nothing was observed for `policy` or the estimate has no interval.
        """
        observed = self.observed.get(policy)
        interval = self.estimate(policy, estimator).ci
        if observed is None or interval is None:
            return None
        return interval.low <= observed <= interval.high


def replay_decision_log(
    directory: Path,
    *,
    out: Path,
    policies: Sequence[str] = REPLAY_ALTERNATIVES,
    observed: Mapping[str, float] | None = None,
    seed: int = 0,
    n_bootstrap: int = 200,
    status: Callable[[str], None] | None = None,
) -> DemoReplay:
    """Evaluate target policies on a DSJSON decision log, and write the JSON and HTML report.

    The targets are the logging policy itself (every decision's logged distribution,
    whichever served policy drew it), uniform random, and each of `policies` trained
    online along the log (counterfactual learning, ``policy:SPEC``), each estimated
    with :data:`REPLAY_ESTIMATORS`, 95% analytic and bootstrap intervals, and a
    cross-fitted reward model for DR (the default ``auto``: :class:`~replay.HashedLogistic`
    for click rewards), by the one replay
    pipeline (:func:`replay.pipeline.replay_logs`) that ``streambandit replay DIR -p
    logging -p uniform -p policy:SPEC ... --json OUT.json --html OUT.html --on-error skip``
    runs too.

    Parameters
    ----------
    directory
        The decision log: a folder of DSJSON files (any depth) or one file.
    out
        Folder for ``replay.json`` and ``replay.html``; created if absent.
    policies
        Policy specs to train along the log; repeats are evaluated once.
    observed
        Reward rates observed live, by target label, written into the JSON and checked
        against the estimates by :meth:`DemoReplay.covers`.
    seed
        Seeds the bootstrap and the reward model's folds.
    n_bootstrap
        Bootstrap resamples per estimate (0: none).
    status
        Called with what is being done, for a progress display.

    Returns
    -------
    DemoReplay

    Raises
    ------
    StreambanditError
        When the log cannot be read or holds no decision (``LogFormatError``), or a
        policy spec is refused (``ConfigurationError``).

    Examples
    --------
    A uniformly logged decision log where the first of two items is clicked 80% of the
    time and the second 20%:

    >>> import tempfile
    >>> import numpy as np
    >>> from replay import LoggedDecisions, to_dsjson
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
    >>> result = replay_decision_log(
    ...     folder, out=folder / "report", policies=["vw-epsilon"], n_bootstrap=0,
    ...     observed={"logging": float(logs.reward.mean())})
    >>> result.decisions, result.covers("logging")
    (400, True)
    >>> learned = result.estimate("policy:vw-epsilon", "snips")
    >>> round(learned.value, 2), learned.value > result.estimate("uniform", "snips").value
    (0.74, True)
    >>> sorted(p.name for p in (folder / "report").iterdir())
    ['replay.html', 'replay.json']
    """
    from replay import Intervals
    from replay.pipeline import replay_logs

    observed = {k: float(v) for k, v in (observed or {}).items()}
    json_path, html_path = out / "replay.json", out / "replay.html"
    run = replay_logs(
        directory,
        ["logging", "uniform", *(f"policy:{p}" for p in policies)],
        REPLAY_ESTIMATORS,
        on_error="skip",
        intervals=Intervals(n_bootstrap=n_bootstrap, seed=seed),
        json_path=json_path,
        html_path=html_path,
        title="streambandit demo: off-policy replay of the decision log",
        json_extra={"observed": observed},
        progress=None if status is None else _ReplayStatus(status),
    )
    return DemoReplay(
        report=run.report,
        decisions=run.logs.n,
        skipped=dict(run.read.skipped),
        observed=observed,
        json_path=json_path,
        html_path=html_path,
        seconds=run.seconds,
    )


@dataclass(frozen=True)
class _ReplayStatus:
    """Say which step of the replay pipeline runs, on one status line."""

    say: Callable[[str], None]

    @contextlib.contextmanager
    def __call__(self, step: str, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        texts = {
            "read": "reading the decision log",
            "fit": f"fitting the reward model on {total or 0:,} decisions",
            "target": f"replaying {label}",
            "evaluate": "estimating",
        }
        if step in texts:
            self.say(texts[step])

        def progress(done: int) -> None:
            if step == "target":
                self.say(f"replaying {label}: {done:,} / {total or 0:,} decisions")

        yield progress


def replay_table(replay: DemoReplay) -> Table:
    """Lay the replay's estimates out: one row per target policy and estimator.

    Columns: the estimate, its 95% analytic interval, the bootstrap's, the effective
    sample size of the importance weights and, on each policy's first row, the reward
    rate observed live for the decisions that policy stands for.
    """
    table = Table(
        title=(
            f"off-policy replay of the decision log: {replay.decisions:,} decisions\n"
            "what each policy would have earned per decision, 95% intervals"
        )
    )
    table.add_column("policy", no_wrap=True)
    table.add_column("estimator", no_wrap=True)
    for column in ("estimate", "95% CI", "bootstrap CI", "ESS", "observed live"):
        table.add_column(column, justify="right", no_wrap=True)
    previous = None
    for evaluation in replay.report.evaluations:
        first = evaluation.policy != previous
        if first and previous is not None:
            table.add_section()
        previous = evaluation.policy
        estimate = evaluation.estimate
        observed = replay.observed.get(evaluation.policy) if first else None
        table.add_row(
            evaluation.policy if first else "",
            evaluation.estimator,
            rate(finite_or_none(estimate.value)),
            interval_text(estimate.ci),
            interval_text(estimate.bootstrap_ci),
            f"{estimate.diagnostics.ess:,.0f}",
            rate(observed),
        )
    return table


def replay_lines(replay: DemoReplay) -> list[str]:
    """Tell what the replay found: the sanity checks, the warnings and where the report is.

    The logging policy's estimates must cover the reward rate the service observed on
    the same decisions (IPS of the logger is the logged mean reward): a check of the
    log and of the estimators. Uniform's estimates, from every decision, are compared
    with what the uniform baseline earned on its own share.
    """
    lines = [
        f"Off-policy replay: {replay.decisions:,} logged decisions"
        + (
            f" ({sum(replay.skipped.values()):,} rows skipped: {dict(replay.skipped)})"
            if replay.skipped
            else ""
        )
        + f", {len({e.policy for e in replay.report.evaluations})} policies x "
        f"{len(REPLAY_ESTIMATORS)} estimators in {replay.seconds:.1f} s. 'logging' is what "
        "was served (both policies' logged probabilities); policy:SPEC learns along the "
        "log as it would have live, each decision's reward at once. ESS: effective sample "
        "size of the importance weights. Observed live: the reward rate the service "
        f"joined, on all decisions (logging), the {BASELINE_POLICY}'s (uniform) and "
        f"{DEFAULT_POLICY}'s (the served policy, which learned with the reward wait)."
    ]
    for policy, whose in (
        ("logging", "all decisions"),
        ("uniform", f"the {BASELINE_POLICY}'s decisions"),
    ):
        observed = replay.observed.get(policy)
        if observed is None:
            continue
        covered = [replay.covers(policy, name) for name in REPLAY_ESTIMATORS]
        figures = ", ".join(
            f"{name.upper()} {rate(finite_or_none(estimate.value))} ({interval_text(estimate.ci)})"
            for name in REPLAY_ESTIMATORS
            for estimate in (replay.estimate(policy, name),)
        )
        count = sum(c is True for c in covered)
        verdict = (
            "every interval covers it"
            if count == len(covered)
            else f"{count} of {len(covered)} intervals cover it"
            if count
            else "NO interval covers it"
        )
        lines.append(
            f"Check, {policy}: observed live {rate(observed)} on {whose}; {figures}: {verdict}."
        )
    warned: dict[str, list[str]] = {}
    for evaluation in replay.report.evaluations:
        found = warned.setdefault(evaluation.policy, [])
        for warning in evaluation.estimate.diagnostics.warnings:
            headline = warning.split(": ", 1)[0]  # the figure; the advice is in the reports
            if headline not in found:
                found.append(headline)
    lines.extend(
        f"Warning, {policy}: {'; '.join(headlines)}."
        for policy, headlines in warned.items()
        if headlines
    )
    lines.append(f"Replay report: {replay.html_path} (HTML), {replay.json_path} (JSON).")
    return lines
