"""The live demo: ``streambandit up`` plus simulated app traffic over HTTP, then a report.

:func:`run_demo` starts a :class:`~bandit.runtime.LocalStack` (broker, Redis, a stream
worker and the API, as child processes) serving two policies: ``default``, the learning
one (``vw-squarecb`` unless told otherwise), and ``baseline``, uniform random. It shortens
their reward wait so learning shows within the demo, then plays the app: a fixed number
of concurrent simulated users take turns from the :class:`~bandit.simulation.
SyntheticEnvironment` (users with hidden preferences, sessions, devices, times of day).
Each turn asks ``POST /v1/rank`` (most turns with ``default``, a share with
``baseline``), draws the click from the environment's hidden click probability of the
chosen item, publishes a ``click`` behaviour event, and reports the click as reward 1
after a random delay; some clicks are never reported, and non-clicks never are, so the
default reward applies. Late rewards are counted by the join and not learned.

While it runs, a live panel shows decisions/s, the click rate of each policy over the
last seconds, the served model version and the rank latency. At the end, once every
decision is joined and learned, :class:`DemoReport` holds the click rate over time
windows for both policies against the oracle's and uniform's expected rates, the lift,
client-side latency percentiles, the stream workers' reward counters (``GET /metrics``),
the final model and where the DSJSON decision log is. The working folder is kept.

Then, once the stack has stopped and closed its files, the decision log the live loop
wrote is replayed off-policy with the :mod:`replay` package (:func:`replay_decision_log`,
what ``streambandit replay`` does): the logging policy itself, uniform random, the
served learning policy and :data:`REPLAY_ALTERNATIVES` trained along the log, each
estimated with IPS, SNIPS and DR with 95% intervals and effective sample sizes. The
logging policy's estimate must cover the reward rate the service observed (a sanity
check of the log and the estimators, shown to the user), and uniform's is set against
what the uniform baseline earned. The replay's JSON and HTML report go next to the
decision log, ``replay.json`` and ``replay.html`` in the working folder.

The pieces that need no servers are plain functions: :func:`summarize` turns
:class:`DecisionRecord` objects into a :class:`TrafficSummary`,
:func:`parse_stream_counters` reads the counters out of Prometheus text,
:func:`read_decision_log` counts DSJSON lines, :func:`replay_decision_log` replays a
log, :func:`report_lines`, :func:`replay_table`, :func:`replay_lines` and
:func:`render_report` format a :class:`DemoReport`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import math
import random
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bandit.client import AsyncClient, ClientError, PolicyStatus
from bandit.errors import (
    ConfigurationError,
    LogFormatError,
    RuntimeServiceError,
    StreambanditError,
)
from bandit.settings import Settings, get_settings
from bandit.simulation import Round, SyntheticEnvironment
from policies.dsjson import log_files

if TYPE_CHECKING:
    from replay import Estimate, Interval
    from replay.report import Report

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "BASELINE_POLICY",
    "DEFAULT_POLICY",
    "DEFAULT_SECONDS",
    "DecisionLogSummary",
    "DecisionRecord",
    "DemoConfig",
    "DemoReplay",
    "DemoReport",
    "REPLAY_ALTERNATIVES",
    "REPLAY_ESTIMATORS",
    "StreamCounts",
    "TrafficSummary",
    "WindowRates",
    "default_workdir",
    "parse_stream_counters",
    "read_decision_log",
    "render_report",
    "replay_decision_log",
    "replay_lines",
    "replay_table",
    "report_lines",
    "run_demo",
    "summarize",
]

DEFAULT_POLICY: Final = "default"
"""Served name of the learning policy (the one apps get when they name none)."""
BASELINE_POLICY: Final = "baseline"
"""Served name of the uniform baseline."""
DEFAULT_SECONDS: Final = 90.0
"""Seconds of traffic: ``make demo`` takes about two minutes on 2 cores, startup included."""

REPLAY_ALTERNATIVES: Final = ("vw-squarecb:gamma_scale=100", "vw-epsilon:epsilon=0.1")
"""Policies the replay also trains along the decision log, next to the served one."""
REPLAY_ESTIMATORS: Final = ("ips", "snips", "dr")
"""Estimators of the demo's replay (names as ``streambandit replay --estimator`` takes)."""

_MAX_CONCURRENCY: Final = 256
_LIVE_RATE_SECONDS: Final = 15.0  # click rates on the live panel: over the last 15 s
_LIVE_SPEED_SECONDS: Final = 5.0  # decisions/s and latency on the live panel: last 5 s
_PLAIN_PROGRESS_SECONDS: Final = 10.0  # off a terminal: one progress line every 10 s
_DRAIN_EXTRA_SECONDS: Final = 30.0  # after the reward wait, for the join and the learner
_DEVICE_OS: Final = {"mobile": "Android 14", "desktop": "Windows 11", "tablet": "iPadOS 17"}


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What the demo runs, and how the simulated app behaves.

    Attributes
    ----------
    seconds
        How long the traffic runs.
    concurrency
        Simulated users asking at the same time (each waits for its answer).
    seed
        Seeds the environment and every draw of the app (policy split, delays, losses).
    policy
        Spec of the learning policy, served as ``default``.
    baseline_share
        Share of the decisions asked of the uniform ``baseline`` policy.
    reward_wait_seconds
        The reward wait time set on both policies.
    reward_delay_seconds
        Mean delay (exponential, capped at three reward waits) before a click is
        reported; the ones later than the reward wait are counted late.
    unreported_share
        Share of clicks the app never reports.
    events
        Publish a ``click`` behaviour event for every click.
    windows
        Time windows the report splits the run into.
    workdir
        Folder kept after the demo: servers' logs and the decision log. ``None``:
        :func:`default_workdir`.
    replay_policies
        Policy specs the closing off-policy replay trains along the decision log, next
        to the served `policy` (see :func:`replay_decision_log`).
    learning_opt_out_share
        Share of the simulated people who consent to personalisation but not to
        learning (their decisions are counted, neither learned nor logged).
    explain_share
        Share of the decisions asked with an explanation.
    erasures
        People who ask to be erased when the traffic ends.
    """

    seconds: float = DEFAULT_SECONDS
    concurrency: int = 16
    seed: int = 0
    policy: str = "vw-squarecb"
    baseline_share: float = 0.25
    reward_wait_seconds: float = 2.0
    reward_delay_seconds: float = 0.6
    unreported_share: float = 0.1
    events: bool = True
    windows: int = 6
    workdir: Path | None = None
    replay_policies: tuple[str, ...] = REPLAY_ALTERNATIVES
    learning_opt_out_share: float = 0.1
    explain_share: float = 0.02
    erasures: int = 1

    def __post_init__(self) -> None:
        checks: tuple[tuple[str, object, bool, str], ...] = (
            ("seconds", self.seconds, _finite(self.seconds) and self.seconds > 0, "> 0"),
            (
                "concurrency",
                self.concurrency,
                _integer(self.concurrency) and 1 <= self.concurrency <= _MAX_CONCURRENCY,
                f"an integer in [1, {_MAX_CONCURRENCY}]",
            ),
            ("seed", self.seed, _integer(self.seed) and self.seed >= 0, "an integer >= 0"),
            ("policy", self.policy, isinstance(self.policy, str) and bool(self.policy), "a spec"),
            (
                "baseline_share",
                self.baseline_share,
                _finite(self.baseline_share) and 0 < self.baseline_share < 1,
                "in (0, 1)",
            ),
            (
                "reward_wait_seconds",
                self.reward_wait_seconds,
                _finite(self.reward_wait_seconds) and self.reward_wait_seconds > 0,
                "> 0",
            ),
            (
                "reward_delay_seconds",
                self.reward_delay_seconds,
                _finite(self.reward_delay_seconds) and self.reward_delay_seconds >= 0,
                ">= 0",
            ),
            (
                "unreported_share",
                self.unreported_share,
                _finite(self.unreported_share) and 0 <= self.unreported_share < 1,
                "in [0, 1)",
            ),
            ("windows", self.windows, _integer(self.windows) and self.windows >= 1, ">= 1"),
            (
                "learning_opt_out_share",
                self.learning_opt_out_share,
                _finite(self.learning_opt_out_share) and 0 <= self.learning_opt_out_share < 1,
                "in [0, 1)",
            ),
            (
                "explain_share",
                self.explain_share,
                _finite(self.explain_share) and 0 <= self.explain_share <= 1,
                "in [0, 1]",
            ),
            ("erasures", self.erasures, _integer(self.erasures) and self.erasures >= 0, ">= 0"),
        )
        for name, value, ok, rule in checks:
            if not ok:
                msg = f"`{name}` must be {rule}, got {value!r}"
                raise ConfigurationError(msg)
        specs = self.replay_policies
        if not (isinstance(specs, tuple) and all(isinstance(s, str) and s for s in specs)):
            msg = f"`replay_policies` must be a tuple of policy specs, got {specs!r}"
            raise ConfigurationError(msg)


def default_workdir(now: datetime | None = None, base: Path | None = None) -> Path:
    """Return a fresh ``streambandit-data/demo-<timestamp>`` folder path under `base`.

    Parameters
    ----------
    now
        The timestamp to use; the current local time by default.
    base
        Parent of ``streambandit-data``; the current directory by default.

    Examples
    --------
    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> default_workdir(datetime(2026, 11, 27, 23, 15, 0), base).name
    'demo-20261127-231500'
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")  # local time: for people
    parent = (base or Path.cwd()) / "streambandit-data"
    path = parent / f"demo-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = parent / f"demo-{stamp}-{suffix}"
    return path.resolve()


# -- what the traffic saw, and its summary -------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One answered rank, as the simulated app saw it.

    Attributes
    ----------
    at
        Seconds from the start of the traffic to the answer.
    policy
        Served policy asked (``default`` or ``baseline``).
    clicked
        Whether the user clicked the chosen item (drawn from its hidden probability).
    expected
        The hidden click probability of the chosen item.
    best_expected
        The best offered item's click probability (the oracle's).
    uniform_expected
        The mean click probability of the offered items (uniform random's).
    latency
        Seconds from sending the rank to its answer.
    """

    at: float
    policy: str
    clicked: bool
    expected: float
    best_expected: float
    uniform_expected: float
    latency: float


@dataclass(frozen=True, slots=True)
class WindowRates:
    """Click rates in one time window of the run.

    Attributes
    ----------
    start, end
        Seconds from the start of the traffic.
    learning_decisions, baseline_decisions
        Decisions each policy made in the window.
    learning_rate, baseline_rate
        Click rate of each policy's decisions; ``None`` without decisions.
    uniform_expected, oracle_expected
        Expected click rate of uniform random and of the oracle over all of the
        window's decisions; ``None`` without decisions.
    """

    start: float
    end: float
    learning_decisions: int
    baseline_decisions: int
    learning_rate: float | None
    baseline_rate: float | None
    uniform_expected: float | None
    oracle_expected: float | None

    @property
    def lift(self) -> float | None:
        """The learning policy's click rate over the baseline's, minus 1."""
        return _lift(self.learning_rate, self.baseline_rate)


@dataclass(frozen=True, slots=True)
class TrafficSummary:
    """The run as the simulated app saw it: rates overall and per window, latency.

    Attributes
    ----------
    seconds
        Duration of the traffic.
    decisions
        Ranks answered.
    overall
        The whole run as one window.
    windows
        Consecutive windows of equal length, first first.
    latency_ms
        Rank latency percentiles p50, p90 and p99 in milliseconds; ``None`` without
        decisions.
    """

    seconds: float
    decisions: int
    overall: WindowRates
    windows: tuple[WindowRates, ...]
    latency_ms: tuple[float, float, float] | None

    @property
    def decisions_per_second(self) -> float:
        """Decisions divided by the duration."""
        return self.decisions / self.seconds


def summarize(
    records: Sequence[DecisionRecord],
    *,
    seconds: float,
    windows: int = 6,
    learning: str = DEFAULT_POLICY,
    baseline: str = BASELINE_POLICY,
) -> TrafficSummary:
    """Summarize the decisions of a run of `seconds` seconds.

    Parameters
    ----------
    records
        The answered ranks, in any order. A record later than `seconds` counts in the
        last window, one earlier than 0 in the first.
    seconds
        Duration of the traffic, > 0.
    windows
        How many windows of equal length, at least 1.
    learning, baseline
        Served names of the two policies; records of other policies count only in the
        decisions, the expected rates and the latency.

    Returns
    -------
    TrafficSummary

    Raises
    ------
    ConfigurationError
        If `seconds` is not a finite number > 0 or `windows` not an integer >= 1.

    Examples
    --------
    >>> records = [
    ...     DecisionRecord(1.0, "default", True, 0.6, 0.7, 0.3, 0.010),
    ...     DecisionRecord(2.0, "baseline", False, 0.2, 0.7, 0.3, 0.020),
    ...     DecisionRecord(3.0, "default", True, 0.7, 0.7, 0.3, 0.030),
    ...     DecisionRecord(3.5, "baseline", True, 0.4, 0.7, 0.3, 0.040),
    ... ]
    >>> summary = summarize(records, seconds=4.0, windows=2)
    >>> summary.overall.learning_rate, summary.overall.baseline_rate, summary.overall.lift
    (1.0, 0.5, 1.0)
    >>> [(w.start, w.end, w.baseline_rate) for w in summary.windows]
    [(0.0, 2.0, None), (2.0, 4.0, 0.5)]
    >>> summary.latency_ms
    (25.0, 37.0, 39.7)
    """
    if not (_finite(seconds) and seconds > 0):
        msg = f"`seconds` must be a finite number > 0, got {seconds!r}"
        raise ConfigurationError(msg)
    if not (_integer(windows) and windows >= 1):
        msg = f"`windows` must be an integer >= 1, got {windows!r}"
        raise ConfigurationError(msg)
    width = seconds / windows
    buckets: list[list[DecisionRecord]] = [[] for _ in range(windows)]
    for record in records:
        index = min(max(int(record.at // width), 0), windows - 1)
        buckets[index].append(record)
    rated = tuple(
        _window_rates(bucket, index * width, (index + 1) * width, learning, baseline)
        for index, bucket in enumerate(buckets)
    )
    latency = None
    if records:
        values = np.percentile([r.latency * 1000.0 for r in records], [50, 90, 99])
        latency = (
            round(float(values[0]), 3),
            round(float(values[1]), 3),
            round(float(values[2]), 3),
        )
    return TrafficSummary(
        seconds=float(seconds),
        decisions=len(records),
        overall=_window_rates(records, 0.0, float(seconds), learning, baseline),
        windows=rated,
        latency_ms=latency,
    )


def _window_rates(
    records: Sequence[DecisionRecord], start: float, end: float, learning: str, baseline: str
) -> WindowRates:
    mine = [r for r in records if r.policy == learning]
    theirs = [r for r in records if r.policy == baseline]
    return WindowRates(
        start=start,
        end=end,
        learning_decisions=len(mine),
        baseline_decisions=len(theirs),
        learning_rate=_mean([float(r.clicked) for r in mine]),
        baseline_rate=_mean([float(r.clicked) for r in theirs]),
        uniform_expected=_mean([r.uniform_expected for r in records]),
        oracle_expected=_mean([r.best_expected for r in records]),
    )


# -- what the servers counted --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """The stream workers' counters of one policy (or a sum of several).

    Attributes
    ----------
    decisions
        Decisions that reached the join.
    rewards
        Rewards that reached the join in time.
    joined
        Decisions joined and sent to learning, with a reward or with the default one.
    default_rewards
        Those joined with the default reward (no reward in time).
    rewards_late
        Rewards that came after their decision was joined: counted, not learned.
    not_learned
        Decisions without learning consent: counted, neither learned nor logged.
    """

    decisions: int = 0
    rewards: int = 0
    joined: int = 0
    default_rewards: int = 0
    rewards_late: int = 0
    not_learned: int = 0

    @property
    def joined_with_reward(self) -> int:
        """Decisions joined with a reported reward."""
        return self.joined - self.default_rewards

    @classmethod
    def from_counters(cls, counters: Mapping[str, int]) -> StreamCounts:
        """Pick the counters this class holds out of a policy's counters (0 when absent).

        Examples
        --------
        >>> counts = StreamCounts.from_counters({"joined": 5, "default_rewards": 3, "other": 9})
        >>> counts.joined, counts.default_rewards, counts.rewards
        (5, 3, 0)
        """
        return cls(
            decisions=int(counters.get("decisions", 0)),
            rewards=int(counters.get("rewards", 0)),
            joined=int(counters.get("joined", 0)),
            default_rewards=int(counters.get("default_rewards", 0)),
            rewards_late=int(counters.get("rewards_late", 0)),
            not_learned=int(counters.get("not_learned", 0)),
        )

    def __add__(self, other: StreamCounts) -> StreamCounts:
        """Add two policies' counters."""
        return StreamCounts(
            decisions=self.decisions + other.decisions,
            rewards=self.rewards + other.rewards,
            joined=self.joined + other.joined,
            default_rewards=self.default_rewards + other.default_rewards,
            rewards_late=self.rewards_late + other.rewards_late,
            not_learned=self.not_learned + other.not_learned,
        )


def parse_stream_counters(text: str) -> dict[str, dict[str, int]]:
    r"""Read the stream workers' counters out of the API's ``/metrics`` text.

    Parameters
    ----------
    text
        Prometheus text exposition, as ``GET /metrics`` answers.

    Returns
    -------
    dict[str, dict[str, int]]
        Counters by scope (a policy, or ``_streams``), then by name; empty when the API
        could not read Redis.

    Examples
    --------
    >>> parse_stream_counters(
    ...     '# TYPE streambandit_stream_counter counter\n'
    ...     'streambandit_stream_counter_total{counter="joined",scope="default"} 12.0\n'
    ... )
    {'default': {'joined': 12}}
    """
    found: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "streambandit_stream_counter_total":
                continue
            scope, name = sample.labels.get("scope"), sample.labels.get("counter")
            if scope is not None and name is not None:
                found.setdefault(scope, {})[name] = int(sample.value)
    return found


@dataclass(frozen=True, slots=True)
class TrustSummary:
    """The API's trust metrics at the end of the demo, and the app's privacy traffic.

    Attributes
    ----------
    personalisation_share, learning_share
        Share of the decisions naming a person made with each consent.
    opt_out_share
        Consent changes that withdrew a consent, over all consent changes.
    consent_changes
        Consents given or withdrawn.
    explanations
        Explanations given with rank answers.
    erasures
        People erased.
    """

    personalisation_share: float = 0.0
    learning_share: float = 0.0
    opt_out_share: float = 0.0
    consent_changes: int = 0
    explanations: int = 0
    erasures: int = 0


def parse_trust(text: str) -> TrustSummary:
    r"""Read the trust metrics out of the API's ``/metrics`` text.

    Examples
    --------
    >>> trust = parse_trust(
    ...     '# TYPE streambandit_consent_share gauge\n'
    ...     'streambandit_consent_share{kind="learning"} 0.9\n'
    ...     '# TYPE streambandit_privacy_requests counter\n'
    ...     'streambandit_privacy_requests_total{kind="erasure"} 1.0\n'
    ... )
    >>> trust.learning_share, trust.erasures, trust.explanations
    (0.9, 1, 0)
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "streambandit_consent_share":
                values[f"{labels.get('kind')}_share"] = sample.value
            elif sample.name == "streambandit_opt_out_share":
                values["opt_out_share"] = sample.value
            elif sample.name in {
                "streambandit_consent_changes_total",
                "streambandit_explanations_total",
            }:
                key = "consent_changes" if "consent" in sample.name else "explanations"
                values[key] = values.get(key, 0.0) + sample.value
            elif (
                sample.name == "streambandit_privacy_requests_total"
                and labels.get("kind") == "erasure"
            ):
                values["erasures"] = sample.value
    return TrustSummary(
        personalisation_share=values.get("personalisation_share", 0.0),
        learning_share=values.get("learning_share", 0.0),
        opt_out_share=values.get("opt_out_share", 0.0),
        consent_changes=int(values.get("consent_changes", 0)),
        explanations=int(values.get("explanations", 0)),
        erasures=int(values.get("erasures", 0)),
    )


@dataclass(frozen=True, slots=True)
class DecisionLogSummary:
    """The DSJSON decision log a run left.

    Attributes
    ----------
    directory
        Folder holding each worker's files.
    files
        ``*.dsjson`` files in it (any depth).
    lines
        Non-empty lines in them: one decision each.
    """

    directory: Path
    files: int
    lines: int


def read_decision_log(directory: Path) -> DecisionLogSummary:
    r"""Count the DSJSON files and decision lines under `directory` (none if it is absent).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.dsjson").write_text('{"EventId": "e1"}\n{"EventId": "e2"}\n')
    >>> read_decision_log(folder).lines
    2
    """
    files = log_files(directory)
    lines = 0
    for path in files:
        with path.open("rb") as handle:
            lines += sum(1 for line in handle if line.strip())
    return DecisionLogSummary(directory=directory, files=len(files), lines=lines)


# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoReport:
    """Everything the demo reports at the end.

    Attributes
    ----------
    config
        What ran.
    traffic
        The run as the simulated app saw it.
    counts
        The stream workers' counters, summed over both policies.
    clicks
        Clicks drawn.
    rewards_sent
        Clicks reported as rewards.
    rewards_unreported
        Clicks never reported.
    events_sent
        Behaviour events published.
    failed_requests
        Requests that got an error or no answer.
    model_version, learned_examples
        The learning policy's served model at the end: its version, examples learned.
    decision_log
        The DSJSON decision log.
    workdir
        The folder kept: servers' logs, Redis data and the decision log.
    drained
        Whether every decision was joined (and the served model had learned them) before
        the report.
    interrupted
        Whether the run was stopped early (Ctrl-C, SIGTERM).
    policy_counts
        The stream workers' counters of each served policy.
    replay
        The off-policy replay of the decision log; None when it did not run.
    replay_note
        Why the replay did not run, when it did not.
    trust
        The API's trust metrics at the end (consent shares, opt-outs, explanations,
        erasures).
    people, learning_opt_outs
        Simulated people who came, and those who declined learning.
    """

    config: DemoConfig
    traffic: TrafficSummary
    counts: StreamCounts
    clicks: int
    rewards_sent: int
    rewards_unreported: int
    events_sent: int
    failed_requests: int
    model_version: int
    learned_examples: int
    decision_log: DecisionLogSummary
    workdir: Path
    drained: bool
    interrupted: bool = False
    policy_counts: Mapping[str, StreamCounts] = field(default_factory=dict)
    replay: DemoReplay | None = None
    replay_note: str | None = None
    trust: TrustSummary = field(default_factory=TrustSummary)
    people: int = 0
    learning_opt_outs: int = 0


def report_lines(report: DemoReport) -> list[str]:
    """Tell the report in plain sentences, one per line.

    Parameters
    ----------
    report
        What to tell.

    Returns
    -------
    list[str]
        Decisions, click rates and lift, latency, rewards, model, decision log (and a
        note when the run was interrupted or not fully joined).
    """
    traffic, counts, config = report.traffic, report.counts, report.config
    overall, last = traffic.overall, traffic.windows[-1]
    lines: list[str] = []
    if report.interrupted:
        lines.append(f"Interrupted after {traffic.seconds:.0f} s: the figures are partial.")
    lines.append(
        f"Decisions: {traffic.decisions:,} in {traffic.seconds:.0f} s "
        f"({traffic.decisions_per_second:,.0f}/s): {overall.learning_decisions:,} by "
        f"{DEFAULT_POLICY} ({config.policy}), {overall.baseline_decisions:,} by {BASELINE_POLICY} "
        f"(uniform); {report.failed_requests:,} requests failed."
    )
    lines.append(
        f"Click rate: {DEFAULT_POLICY} {_rate(overall.learning_rate)}, {BASELINE_POLICY} "
        f"{_rate(overall.baseline_rate)} (lift {_percent(overall.lift)}); last window "
        f"{_rate(last.learning_rate)} against {_rate(last.baseline_rate)} "
        f"(lift {_percent(last.lift)}). Expected: oracle {_rate(overall.oracle_expected)}, "
        f"uniform {_rate(overall.uniform_expected)}."
    )
    trust = report.trust
    lines.append(
        f"Trust, next to that engagement: {report.people:,} people shown the consent banner, "
        f"{report.learning_opt_outs:,} declined learning; of the decisions naming a person "
        f"{trust.personalisation_share:.0%} personalised and {trust.learning_share:.0%} "
        f"learned; opt-out share {trust.opt_out_share:.0%} of {trust.consent_changes:,} "
        f"consent changes; {trust.explanations:,} explanations viewed; {trust.erasures:,} "
        f"erasures ({counts.not_learned:,} decisions counted without learning consent)."
    )
    latency = (
        "no decisions."
        if traffic.latency_ms is None
        else "p50 {:.1f} ms, p90 {:.1f} ms, p99 {:.1f} ms.".format(*traffic.latency_ms)
    )
    lines.append(f"Rank latency seen by the app ({config.concurrency} users): {latency}")
    lines.append(
        f"Rewards: {report.clicks:,} clicks, {report.rewards_sent:,} reported after a delay, "
        f"{report.rewards_unreported:,} never; {report.events_sent:,} click events "
        f"published. Joined: {counts.joined_with_reward:,} with a reward, "
        f"{counts.default_rewards:,} with the default reward; {counts.rewards_late:,} "
        "rewards late (counted, not learned)."
    )
    lines.append(
        f"Model: {DEFAULT_POLICY} served at version {report.model_version}, "
        f"{report.learned_examples:,} examples learned."
    )
    log = report.decision_log
    lines.append(
        f"Decision log: {log.directory} ({log.files} DSJSON files, {log.lines:,} lines), "
        f"kept with the servers' logs in {report.workdir}."
    )
    if not report.drained:
        lines.append(
            "Note: not every decision was joined and learned before the report; "
            "the counters above are from when waiting stopped."
        )
    return lines


def render_report(report: DemoReport) -> list[RenderableType]:
    """Lay the report out for a rich console: a table of click rates over time, then the lines."""
    traffic, config = report.traffic, report.config
    table = Table(
        title=(
            f"streambandit live demo: {config.policy} ({DEFAULT_POLICY}) against uniform "
            f"({BASELINE_POLICY})\nclick rate by time window, {traffic.seconds:.0f} s of traffic"
        )
    )
    table.add_column("window", no_wrap=True)
    table.add_column("decisions", justify="right")
    table.add_column(f"{DEFAULT_POLICY} ({config.policy})", justify="right")
    table.add_column(f"{BASELINE_POLICY} (uniform)", justify="right")
    table.add_column("lift", justify="right")
    table.add_column("uniform (expected)", justify="right")
    table.add_column("oracle (expected)", justify="right")

    def row(label: str, rates: WindowRates) -> None:
        table.add_row(
            label,
            f"{rates.learning_decisions + rates.baseline_decisions:,}",
            _rate(rates.learning_rate),
            _rate(rates.baseline_rate),
            _percent(rates.lift),
            _rate(rates.uniform_expected),
            _rate(rates.oracle_expected),
        )

    for window in traffic.windows:
        row(f"{window.start:.0f}-{window.end:.0f} s", window)
    table.add_section()
    row("whole run", traffic.overall)
    parts: list[RenderableType] = [table, *(Text(line) for line in report_lines(report))]
    if report.replay is not None:
        parts += [Text(""), replay_table(report.replay)]
        parts += [Text(line) for line in replay_lines(report.replay)]
    elif report.replay_note is not None:
        parts.append(Text(f"Off-policy replay: not run, {report.replay_note}."))
    return parts


# -- off-policy replay of the decision log ----------------------------------------------------


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
    cross-fitted :class:`~replay.HashedRidge` reward model for DR. This is what
    ``streambandit replay DIR -p logging -p uniform -p policy:SPEC ... --json OUT.json
    --html OUT.html --on-error skip`` does.

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
    from replay import HashedRidge, Intervals, read_log
    from replay.report import evaluate, needs_rewards, render_html, to_json
    from replay.targets import build_target

    def say(text: str) -> None:
        if status is not None:
            status(text)

    started = time.perf_counter()
    say("reading the decision log")
    result = read_log(directory, on_error="skip")
    logs = result.logs
    if logs.n == 0:
        msg = f"{directory}: no decision to evaluate ({result.rows_read} rows read)"
        raise LogFormatError(msg)
    rewards = None
    if any(needs_rewards(name) for name in REPLAY_ESTIMATORS):
        say(f"fitting the reward model on {logs.n:,} decisions")
        rewards = HashedRidge(seed=seed).cross_fit(logs)
    specs = list(dict.fromkeys(["logging", "uniform", *(f"policy:{p}" for p in policies)]))
    targets = []
    for spec in specs:

        def progress(done: int, spec: str = spec) -> None:
            say(f"replaying {spec}: {done:,} / {logs.n:,} decisions")

        say(f"replaying {spec}")
        targets.append(build_target(spec, logs, progress=progress, progress_every=2_000))
    facts = {
        "files": [str(path) for path in result.files],
        "rows_read": result.rows_read,
        "rows_kept": result.rows_kept,
        "skipped": dict(result.skipped),
    }
    say("estimating")
    report = evaluate(
        logs,
        targets,
        REPLAY_ESTIMATORS,
        intervals=Intervals(n_bootstrap=n_bootstrap, seed=seed),
        rewards=rewards,
        log=facts,
    )
    observed = {k: float(v) for k, v in (observed or {}).items()}
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "replay.json", out / "replay.html"
    data = {**to_json(report), "observed": observed}
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    html_path.write_text(
        render_html(report, title="streambandit demo: off-policy replay of the decision log"),
        encoding="utf-8",
    )
    return DemoReplay(
        report=report,
        decisions=logs.n,
        skipped=dict(result.skipped),
        observed=observed,
        json_path=json_path,
        html_path=html_path,
        seconds=time.perf_counter() - started,
    )


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
            _rate(_finite_or_none(estimate.value)),
            _interval_text(estimate.ci),
            _interval_text(estimate.bootstrap_ci),
            f"{estimate.diagnostics.ess:,.0f}",
            _rate(observed),
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
            f"{name.upper()} {_rate(_finite_or_none(estimate.value))} "
            f"({_interval_text(estimate.ci)})"
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
            f"Check, {policy}: observed live {_rate(observed)} on {whose}; {figures}: {verdict}."
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


# -- running it ----------------------------------------------------------------------------


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
    from bandit.runtime import LocalStack

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
        if counts is not None and (rate := _reward_rate(counts)) is not None
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


@dataclass(frozen=True, slots=True)
class _Turn:
    """One round of the environment, with the app's draws for it."""

    index: int
    round: Round
    policy: str
    session_id: str
    user_id: str
    reported: bool
    delay: float


@dataclass
class _Traffic:
    """The simulated app: users taking turns, clicks, delayed rewards, events."""

    config: DemoConfig
    client: AsyncClient
    stop: asyncio.Event
    started: float = field(default_factory=time.monotonic)
    records: list[DecisionRecord] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    clicks: int = 0
    rewards_sent: int = 0
    rewards_unreported: int = 0
    events_sent: int = 0
    failed: int = 0
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    people: list[str] = field(default_factory=list)  # in the order they first came
    learning_opt_outs: int = 0
    explained: int = 0
    erased_pending: int = 0  # decisions of erased people the join dropped while pending

    def __post_init__(self) -> None:
        environment = SyntheticEnvironment(seed=self.config.seed)
        self._rounds: Iterator[Round] = environment.rounds(10**12)
        self._rng = random.Random(self.config.seed)  # simulation, not security
        self._run = secrets.token_hex(4)
        self._pseudonym_key = secrets.token_bytes(16)
        self._sessions = 0
        self._consents: dict[str, asyncio.Future[None]] = {}
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the traffic started."""
        return time.monotonic() - self.started

    def next_turn(self) -> _Turn:
        """Take the next round and make every draw for it, in round order."""
        round_ = next(self._rounds)
        if round_.context["session"]["depth"] == 0:
            self._sessions += 1
        user = round_.context["user"]
        who = f"{user['segment']}|{user['tenure']}|{user['activity']}".encode()
        digest = hashlib.blake2b(who, key=self._pseudonym_key, digest_size=8).hexdigest()
        config = self.config
        policy = BASELINE_POLICY if self._rng.random() < config.baseline_share else DEFAULT_POLICY
        reported = self._rng.random() >= config.unreported_share
        delay = min(
            self._rng.expovariate(1.0 / config.reward_delay_seconds)
            if config.reward_delay_seconds > 0
            else 0.0,
            3 * config.reward_wait_seconds,
        )
        return _Turn(
            index=round_.index,
            round=round_,
            policy=policy,
            session_id=f"demo-{self._run}-s{self._sessions}",
            user_id=f"u-{digest}",
            reported=reported,
            delay=delay,
        )

    async def user(self) -> None:
        """One simulated user: take turns until told to stop."""
        while not self.stop.is_set():
            turn = self.next_turn()
            try:
                await self._play(turn)
            except ClientError:
                self.failed += 1
                await asyncio.sleep(0.1)

    async def _consent(self, user_id: str) -> None:
        """Show a person the consent banner on their first visit (some decline learning)."""
        self.people.append(user_id)
        share = self.config.learning_opt_out_share
        learning = int(user_id.rsplit("-", 1)[-1], 16) % 1000 >= share * 1000
        await self.client.set_consent(
            user_id, personalisation=True, learning=learning, source="demo-consent-banner"
        )
        self.learning_opt_outs += not learning

    async def erase(self) -> None:
        """Erase the first `config.erasures` people, as they asked."""
        for user_id in self.people[: self.config.erasures]:
            erased = await self.client.erase(user_id)
            self.erased_pending += int(erased.get("pending_decisions", 0))

    async def _play(self, turn: _Turn) -> None:
        round_ = turn.round
        actions = [{"id": a.id, "features": a.features} for a in round_.actions]
        consented = self._consents.get(turn.user_id)
        if consented is None:  # their first visit (another turn of theirs waits for it too)
            consented = self._consents[turn.user_id] = asyncio.ensure_future(
                self._consent(turn.user_id)
            )
        await asyncio.shield(consented)
        share = self.config.explain_share
        explain = share > 0 and turn.index % max(round(1 / share), 1) == 0
        sent = time.monotonic()
        result = await self.client.rank(
            round_.context,
            actions,
            event_id=f"demo-{self._run}-r{turn.index}",
            policy=turn.policy,
            user_id=turn.user_id,
            explain=explain,
        )
        answered = time.monotonic()
        self.explained += result.explanation is not None
        chosen = next(i for i, a in enumerate(round_.actions) if a.id == result.action_id)
        clicked = round_.reward(chosen) > 0
        self.records.append(
            DecisionRecord(
                at=answered - self.started,
                policy=turn.policy,
                clicked=clicked,
                expected=round_.expected[chosen],
                best_expected=round_.best_expected,
                uniform_expected=math.fsum(round_.expected) / len(round_.expected),
                latency=answered - sent,
            )
        )
        self.times.append(answered - self.started)
        if not clicked:
            return
        self.clicks += 1
        if turn.reported:
            task = asyncio.create_task(self._reward(result.event_id, result.action_id, turn.delay))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        else:
            self.rewards_unreported += 1
        if self.config.events:
            device = str(round_.context["device"]["type"])
            await self.client.event(
                kind="click",
                user_id=turn.user_id,
                session_id=turn.session_id,
                device={"type": device, "os": _DEVICE_OS.get(device, "other")},
                item_id=result.action_id,
            )
            self.events_sent += 1

    async def _reward(self, event_id: str, action_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.client.reward(event_id, 1.0, action_id=action_id)
        except ClientError:
            self.failed += 1
        else:
            self.rewards_sent += 1

    def recent(self, seconds: float) -> list[DecisionRecord]:
        """Return the records answered in the last `seconds` seconds."""
        start = bisect.bisect_left(self.times, self.elapsed() - seconds)
        return self.records[start:]


@dataclass
class _ServerView:
    """The latest the servers told: served models and stream counters."""

    policies: dict[str, PolicyStatus] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    trust: TrustSummary = field(default_factory=TrustSummary)

    def counts(self, policy: str | None = None) -> StreamCounts:
        """Counters of `policy`, or of both demo policies summed."""
        if policy is not None:
            return StreamCounts.from_counters(self.counters.get(policy, {}))
        return self.counts(DEFAULT_POLICY) + self.counts(BASELINE_POLICY)

    def model(self) -> tuple[int, int]:
        """Return the learning policy's served model version and examples learned."""
        status = self.policies.get(DEFAULT_POLICY)
        return (0, 0) if status is None else (status.model_version, status.learned_examples)

    async def refresh(self, client: AsyncClient, ops: httpx.AsyncClient) -> None:
        """Ask the API for its policies and counters; keep the old values on failure."""
        with contextlib.suppress(ClientError, TimeoutError):
            async with asyncio.timeout(2.0):
                self.policies = {p.name: p for p in await client.list_policies()}
        with contextlib.suppress(httpx.HTTPError, ValueError, TimeoutError):
            async with asyncio.timeout(2.0):
                answer = await ops.get("/metrics")
                answer.raise_for_status()
                self.counters = parse_stream_counters(answer.text)
                self.trust = parse_trust(answer.text)


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
            traffic = _Traffic(config, client, stop)
            server = _ServerView()
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
    traffic: _Traffic,
    *,
    server: _ServerView,
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
                live.update(_live_panel(traffic, server), refresh=True)
            elif now - last_line >= _PLAIN_PROGRESS_SECONDS:
                last_line = now
                console.print(_progress_line(traffic, server), highlight=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(traffic.stop.wait(), 0.25)
    finally:
        traffic.stop.set()
        if live is not None:
            live.stop()
        await asyncio.gather(*users, return_exceptions=True)
    return failure


async def _drain(
    traffic: _Traffic,
    *,
    server: _ServerView,
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


def _live_panel(traffic: _Traffic, server: _ServerView) -> RenderableType:
    config = traffic.config
    elapsed = min(traffic.elapsed(), config.seconds)
    speed = traffic.recent(_LIVE_SPEED_SECONDS)
    rates = traffic.recent(_LIVE_RATE_SECONDS)
    version, learned = server.model()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=config.seconds, completed=elapsed, width=30),
        f"{elapsed:.0f} / {config.seconds:.0f} s, {config.concurrency} users",
    )
    grid.add_row("traffic", bar)
    grid.add_row(
        "decisions",
        f"{len(traffic.records):,} ({_per_second(speed, traffic):,.0f}/s), "
        f"{traffic.failed:,} failed requests",
    )
    grid.add_row(
        f"click rate, last {_LIVE_RATE_SECONDS:.0f} s",
        f"{DEFAULT_POLICY} ({config.policy}) {_rate(_click_rate(rates, DEFAULT_POLICY))}   "
        f"{BASELINE_POLICY} (uniform) {_rate(_click_rate(rates, BASELINE_POLICY))}",
    )
    grid.add_row("rank latency", _latency_text(speed))
    counts = server.counts()
    grid.add_row(
        "rewards",
        f"{traffic.rewards_sent:,} sent; joined {counts.joined_with_reward:,} with a reward, "
        f"{counts.default_rewards:,} default, {counts.rewards_late:,} late",
    )
    grid.add_row("model", f"{DEFAULT_POLICY} version {version}, {learned:,} examples learned")
    return grid


def _progress_line(traffic: _Traffic, server: _ServerView) -> str:
    config = traffic.config
    rates = traffic.recent(_LIVE_RATE_SECONDS)
    speed = traffic.recent(_LIVE_SPEED_SECONDS)
    version, learned = server.model()
    return (
        f"{min(traffic.elapsed(), config.seconds):.0f}/{config.seconds:.0f} s: "
        f"{len(traffic.records):,} decisions ({_per_second(speed, traffic):,.0f}/s), "
        f"click rate {DEFAULT_POLICY} {_rate(_click_rate(rates, DEFAULT_POLICY))} "
        f"{BASELINE_POLICY} {_rate(_click_rate(rates, BASELINE_POLICY))}, "
        f"model v{version} ({learned:,} learned), "
        f"latency {_latency_text(speed)}"
    )


def _per_second(recent: Sequence[DecisionRecord], traffic: _Traffic) -> float:
    return len(recent) / max(min(traffic.elapsed(), _LIVE_SPEED_SECONDS), 0.5)


def _latency_text(records: Sequence[DecisionRecord]) -> str:
    if not records:
        return "-"
    p50, p99 = np.percentile([r.latency * 1000.0 for r in records], [50, 99])
    return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"


def _click_rate(records: Sequence[DecisionRecord], policy: str) -> float | None:
    return _mean([float(r.clicked) for r in records if r.policy == policy])


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


# -- small helpers -------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _lift(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference - 1.0


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _interval_text(interval: Interval | None) -> str:
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "-"
    return f"{interval.low:.3f} - {interval.high:.3f}"


def _reward_rate(counts: StreamCounts) -> float | None:
    return counts.joined_with_reward / counts.joined if counts.joined > 0 else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
