"""The simulated app, and what it saw: decisions, clicks, rates over time, latency."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import random
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from bandit.client import AsyncClient, ClientError
from bandit.errors import ConfigurationError
from bandit.ops.demo._figures import finite, integer, lift, mean
from bandit.ops.demo.config import BASELINE_POLICY, DEFAULT_POLICY, DemoConfig
from bandit.ops.simulation import Round, SyntheticEnvironment

__all__ = [
    "DecisionRecord",
    "SimulatedApp",
    "TrafficSummary",
    "Turn",
    "WindowRates",
    "click_rate",
    "summarize",
]


_DEVICE_OS: Final = {"mobile": "Android 14", "desktop": "Windows 11", "tablet": "iPadOS 17"}


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
        return lift(self.learning_rate, self.baseline_rate)


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
    if not (finite(seconds) and seconds > 0):
        msg = f"`seconds` must be a finite number > 0, got {seconds!r}"
        raise ConfigurationError(msg)
    if not (integer(windows) and windows >= 1):
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
        learning_rate=mean([float(r.clicked) for r in mine]),
        baseline_rate=mean([float(r.clicked) for r in theirs]),
        uniform_expected=mean([r.uniform_expected for r in records]),
        oracle_expected=mean([r.best_expected for r in records]),
    )


@dataclass(frozen=True, slots=True)
class Turn:
    """One round of the environment, with the app's draws for it."""

    index: int
    round: Round
    policy: str
    session_id: str
    user_id: str
    reported: bool
    delay: float


@dataclass
class SimulatedApp:
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

    def next_turn(self) -> Turn:
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
        return Turn(
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

    async def _play(self, turn: Turn) -> None:
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


def click_rate(records: Sequence[DecisionRecord], policy: str) -> float | None:
    """Return the click rate of `policy`'s decisions among `records`; None without any."""
    return mean([float(r.clicked) for r in records if r.policy == policy])
