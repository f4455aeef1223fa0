"""What the servers counted and left: stream counters and trust metrics, the decision log.

The counters are read out of the API's ``GET /metrics`` text with prometheus_client's
parser (:func:`prometheus_client.parser.text_string_to_metric_families`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bandit.client import AsyncClient, ClientError, PolicyStatus
from bandit.ops.demo.config import BASELINE_POLICY, DEFAULT_POLICY
from policies.dsjson import log_files

__all__ = [
    "DecisionLogSummary",
    "ServerView",
    "StreamCounts",
    "TrustSummary",
    "parse_stream_counters",
    "parse_trust",
    "read_decision_log",
]


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

    @property
    def reward_rate(self) -> float | None:
        """Decisions joined with a reward over decisions joined; None before any join."""
        return self.joined_with_reward / self.joined if self.joined > 0 else None

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
    degraded_decisions
        Decisions made while Redis did not answer in time: a person's consent could not
        be read, so they were served the baseline and not learned from.
    """

    personalisation_share: float = 0.0
    learning_share: float = 0.0
    opt_out_share: float = 0.0
    consent_changes: int = 0
    explanations: int = 0
    erasures: int = 0
    degraded_decisions: int = 0


_SUMMED = {  # counters summed over their labels, and the field they fill
    "streambandit_consent_changes_total": "consent_changes",
    "streambandit_explanations_total": "explanations",
    "streambandit_degraded_decisions_total": "degraded_decisions",
}


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
            elif sample.name in _SUMMED:
                key = _SUMMED[sample.name]
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
        degraded_decisions=int(values.get("degraded_decisions", 0)),
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


@dataclass
class ServerView:
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
