"""The demo's report: everything it found, told in sentences and laid out for a console."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from bandit.ops.demo._figures import percent, rate
from bandit.ops.demo.config import BASELINE_POLICY, DEFAULT_POLICY, DemoConfig
from bandit.ops.demo.metrics import DecisionLogSummary, StreamCounts, TrustSummary
from bandit.ops.demo.offpolicy import DemoReplay, replay_lines, replay_table
from bandit.ops.demo.traffic import TrafficSummary, WindowRates

__all__ = [
    "DemoReport",
    "render_report",
    "report_lines",
]


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
        f"Click rate: {DEFAULT_POLICY} {rate(overall.learning_rate)}, {BASELINE_POLICY} "
        f"{rate(overall.baseline_rate)} (lift {percent(overall.lift)}); last window "
        f"{rate(last.learning_rate)} against {rate(last.baseline_rate)} "
        f"(lift {percent(last.lift)}). Expected: oracle {rate(overall.oracle_expected)}, "
        f"uniform {rate(overall.uniform_expected)}."
    )
    trust = report.trust
    lines.append(
        f"Trust, next to that engagement: {report.people:,} people shown the consent banner, "
        f"{report.learning_opt_outs:,} declined learning; of the decisions naming a person "
        f"{trust.personalisation_share:.0%} personalised and {trust.learning_share:.0%} "
        f"learned; opt-out share {trust.opt_out_share:.0%} of {trust.consent_changes:,} "
        f"consent changes; {trust.explanations:,} explanations viewed; {trust.erasures:,} "
        f"erasures ({counts.not_learned:,} decisions counted without learning consent)"
        + (
            f"; {trust.degraded_decisions:,} decisions made while Redis was slow to answer "
            "served the baseline without reading consent."
            if trust.degraded_decisions
            else "."
        )
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
            rate(rates.learning_rate),
            rate(rates.baseline_rate),
            percent(rates.lift),
            rate(rates.uniform_expected),
            rate(rates.oracle_expected),
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
