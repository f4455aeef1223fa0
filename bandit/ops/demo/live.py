"""What the demo shows while its traffic runs: a live panel, or a progress line off a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

from bandit.ops.demo._figures import rate
from bandit.ops.demo.config import BASELINE_POLICY, DEFAULT_POLICY
from bandit.ops.demo.metrics import ServerView
from bandit.ops.demo.traffic import DecisionRecord, SimulatedApp, click_rate

__all__ = [
    "live_panel",
    "progress_line",
]


_LIVE_RATE_SECONDS: Final = 15.0  # click rates on the live panel: over the last 15 s
_LIVE_SPEED_SECONDS: Final = 5.0  # decisions/s and latency on the live panel: last 5 s


def live_panel(traffic: SimulatedApp, server: ServerView) -> RenderableType:
    """Lay out the live panel: progress, decisions/s, click rates, latency, rewards, model."""
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
        f"{DEFAULT_POLICY} ({config.policy}) {rate(click_rate(rates, DEFAULT_POLICY))}   "
        f"{BASELINE_POLICY} (uniform) {rate(click_rate(rates, BASELINE_POLICY))}",
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


def progress_line(traffic: SimulatedApp, server: ServerView) -> str:
    """Tell the live panel in one line, for a console that is not a terminal."""
    config = traffic.config
    rates = traffic.recent(_LIVE_RATE_SECONDS)
    speed = traffic.recent(_LIVE_SPEED_SECONDS)
    version, learned = server.model()
    return (
        f"{min(traffic.elapsed(), config.seconds):.0f}/{config.seconds:.0f} s: "
        f"{len(traffic.records):,} decisions ({_per_second(speed, traffic):,.0f}/s), "
        f"click rate {DEFAULT_POLICY} {rate(click_rate(rates, DEFAULT_POLICY))} "
        f"{BASELINE_POLICY} {rate(click_rate(rates, BASELINE_POLICY))}, "
        f"model v{version} ({learned:,} learned), "
        f"latency {_latency_text(speed)}"
    )


def _per_second(recent: Sequence[DecisionRecord], traffic: SimulatedApp) -> float:
    return len(recent) / max(min(traffic.elapsed(), _LIVE_SPEED_SECONDS), 0.5)


def _latency_text(records: Sequence[DecisionRecord]) -> str:
    if not records:
        return "-"
    p50, p99 = np.percentile([r.latency * 1000.0 for r in records], [50, 99])
    return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
