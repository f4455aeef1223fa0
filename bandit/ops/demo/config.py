"""What the demo runs: its configuration, the served policies' names, its working folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from bandit.errors import ConfigurationError
from bandit.ops.demo._figures import finite, integer

__all__ = [
    "BASELINE_POLICY",
    "DEFAULT_POLICY",
    "DEFAULT_SECONDS",
    "REPLAY_ALTERNATIVES",
    "REPLAY_ESTIMATORS",
    "DemoConfig",
    "default_workdir",
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
            ("seconds", self.seconds, finite(self.seconds) and self.seconds > 0, "> 0"),
            (
                "concurrency",
                self.concurrency,
                integer(self.concurrency) and 1 <= self.concurrency <= _MAX_CONCURRENCY,
                f"an integer in [1, {_MAX_CONCURRENCY}]",
            ),
            ("seed", self.seed, integer(self.seed) and self.seed >= 0, "an integer >= 0"),
            ("policy", self.policy, isinstance(self.policy, str) and bool(self.policy), "a spec"),
            (
                "baseline_share",
                self.baseline_share,
                finite(self.baseline_share) and 0 < self.baseline_share < 1,
                "in (0, 1)",
            ),
            (
                "reward_wait_seconds",
                self.reward_wait_seconds,
                finite(self.reward_wait_seconds) and self.reward_wait_seconds > 0,
                "> 0",
            ),
            (
                "reward_delay_seconds",
                self.reward_delay_seconds,
                finite(self.reward_delay_seconds) and self.reward_delay_seconds >= 0,
                ">= 0",
            ),
            (
                "unreported_share",
                self.unreported_share,
                finite(self.unreported_share) and 0 <= self.unreported_share < 1,
                "in [0, 1)",
            ),
            ("windows", self.windows, integer(self.windows) and self.windows >= 1, ">= 1"),
            (
                "learning_opt_out_share",
                self.learning_opt_out_share,
                finite(self.learning_opt_out_share) and 0 <= self.learning_opt_out_share < 1,
                "in [0, 1)",
            ),
            (
                "explain_share",
                self.explain_share,
                finite(self.explain_share) and 0 <= self.explain_share <= 1,
                "in [0, 1]",
            ),
            ("erasures", self.erasures, integer(self.erasures) and self.erasures >= 0, ">= 0"),
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
