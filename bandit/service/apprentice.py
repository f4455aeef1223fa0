r"""Apprentice mode: how the learned policy compares with the baseline action it watched.

In ``Apprentice`` mode (:data:`bandit.wire.schemas.LearningMode`) every decision is served
by the baseline action: the first offered action, with the policy's exploration floor on
the others (:class:`policies.baselines.FixedOrder`), so the propensities of record are
honest and every action keeps some support. The decision also logs what the served
policy would have done (``Decision.learned``), and the learner learns from the outcome
as in ``Online`` mode. For each such decision made since the policy last entered the
mode (:data:`STARTED_AT`), the learner adds, in the transaction that saves the model (so
a crash neither loses nor doubles them), the terms below; :class:`ApprenticeMetrics`
reads them.

Personalizer's own figures: events, imitated events (the learned policy's most probable
action is the baseline action), rewards, imitated rewards (rewards of imitated events
the baseline action served) and baseline rewards (rewards of events it served).

Beyond them, an off-policy estimate. With the logged probability :math:`p_i` of the
served action :math:`a_i`, its reward :math:`r_i`, the learned probability
:math:`\pi_i = \pi(a_i \mid x_i)` and :math:`b_i = 1` when :math:`a_i` is the baseline
action (else 0), each decision gives the unbiased term

.. math:: d_i = r_i \, (\pi_i - b_i) / p_i

of the learned policy's value minus the baseline's (inverse propensity scoring). Their
mean, and a normal lower confidence bound :math:`\bar d - z\, s_d / \sqrt{n}`, say by how
much the learned policy beats the baseline; switching to ``Online`` is recommended only
when that bound is above 0 over at least :data:`MIN_EVENTS` decisions. Its variance
grows as :math:`1/\text{floor}`: a smaller floor serves the baseline more often and
takes longer to show a difference.

Examples
--------
>>> terms = apprentice_terms(reward=1.0, probability=0.9, learned=[0.1, 0.9], chosen=1)
>>> terms.events, terms.imitated_events, round(terms.sums["diff"], 4)
(1, 0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "COUNT_NAMES",
    "MIN_EVENTS",
    "STARTED_AT",
    "SUM_NAMES",
    "SUM_PREFIX",
    "Z_LOWER",
    "ApprenticeMetrics",
    "ApprenticeTerms",
    "apprentice_terms",
]

SUM_PREFIX = "apprentice."
"""Prefix of the apprentice figures among a policy's counters and sums."""
MIN_EVENTS = 200
"""Fewest apprentice decisions before a switch to ``Online`` can be recommended."""
Z_LOWER = 1.959963984540054
"""The normal quantile of the lower bound: a two-sided 95% interval's."""
BASELINE_INDEX = 0
"""The baseline action: the first offered (Personalizer's baseline)."""
COUNT_NAMES = tuple(SUM_PREFIX + name for name in ("events", "imitated_events", "baseline_events"))
"""The apprentice figures among a policy's counters."""
SUM_NAMES = tuple(
    SUM_PREFIX + name
    for name in (
        "rewards", "imitated_rewards", "baseline_rewards", "learned_value", "baseline_value",
        "diff", "diff_sq",
    )
)  # fmt: skip
"""The apprentice figures among a policy's sums."""
STARTED_AT = SUM_PREFIX + "started_at"
"""The sum holding when the policy last entered Apprentice mode (seconds since the epoch):
the learner counts only decisions made since."""


@dataclass(frozen=True, slots=True)
class ApprenticeTerms:
    """What one apprentice decision adds: integer counts and float sums (without prefix)."""

    events: int
    imitated_events: int
    baseline_events: int
    sums: dict[str, float] = field(default_factory=dict)


def apprentice_terms(
    *, reward: float, probability: float, learned: Sequence[float], chosen: int
) -> ApprenticeTerms:
    """Return the terms of one apprentice decision.

    Parameters
    ----------
    reward
        Its (aggregated or default) reward.
    probability
        The logged probability of the served action (the baseline's draw).
    learned
        The learned policy's probabilities of the offered actions, in their order.
    chosen
        The served action's index among them.
    """
    served_baseline = chosen == BASELINE_INDEX
    imitated = max(range(len(learned)), key=learned.__getitem__) == BASELINE_INDEX
    learned_value = reward * learned[chosen] / probability
    baseline_value = reward / probability if served_baseline else 0.0
    diff = learned_value - baseline_value
    return ApprenticeTerms(
        events=1,
        imitated_events=int(imitated),
        baseline_events=int(served_baseline),
        sums={
            "rewards": reward,
            "imitated_rewards": reward if imitated and served_baseline else 0.0,
            "baseline_rewards": reward if served_baseline else 0.0,
            "learned_value": learned_value,
            "baseline_value": baseline_value,
            "diff": diff,
            "diff_sq": diff * diff,
        },
    )


@dataclass(frozen=True, slots=True)
class ApprenticeMetrics:
    """A policy's apprentice figures since it last entered ``Apprentice`` mode.

    Attributes
    ----------
    events, imitated_events, baseline_events
        Decisions learned, those whose learned policy's most probable action was the
        baseline action, and those the baseline action served.
    rewards, imitated_rewards, baseline_rewards
        Their rewards: of all; of imitated events the baseline action served; of events
        the baseline action served.
    learned_value, baseline_value
        Off-policy (IPS) estimates of the mean reward per decision of the learned
        policy and of always serving the baseline action.
    difference, lower_bound
        Their difference and its lower 95% confidence bound (None below 2 events).
    recommend_online
        Whether switching to ``Online`` is recommended: at least :data:`MIN_EVENTS`
        decisions and `lower_bound` above 0.
    started_at, last_event_at
        When the mode was entered, and when the last counted decision was saved.
    """

    events: int
    imitated_events: int
    baseline_events: int
    rewards: float
    imitated_rewards: float
    baseline_rewards: float
    learned_value: float | None
    baseline_value: float | None
    difference: float | None
    lower_bound: float | None
    recommend_online: bool
    started_at: datetime | None
    last_event_at: datetime | None

    @classmethod
    def of(
        cls,
        counters: Mapping[str, int],
        sums: Mapping[str, float],
        *,
        started_at: datetime | None,
        last_event_at: datetime | None,
    ) -> ApprenticeMetrics:
        """Read the figures from a policy's counters and sums (their prefixed entries).

        Examples
        --------
        >>> counters = {"apprentice.events": 4, "apprentice.baseline_events": 4}
        >>> sums = {"apprentice.diff": 0.4, "apprentice.diff_sq": 0.04}
        >>> metrics = ApprenticeMetrics.of(counters, sums, started_at=None, last_event_at=None)
        >>> metrics.difference, metrics.lower_bound, metrics.recommend_online
        (0.1, 0.1, False)
        """
        n = counters.get(COUNT_NAMES[0], 0)

        def total(name: str) -> float:
            return float(sums.get(SUM_PREFIX + name, 0.0))

        mean = total("diff") / n if n else None
        lower = None
        if mean is not None and n >= 2:
            variance = max(0.0, (total("diff_sq") - n * mean * mean) / (n - 1))
            lower = mean - Z_LOWER * math.sqrt(variance / n)
        return cls(
            events=n,
            imitated_events=counters.get(SUM_PREFIX + "imitated_events", 0),
            baseline_events=counters.get(SUM_PREFIX + "baseline_events", 0),
            rewards=total("rewards"),
            imitated_rewards=total("imitated_rewards"),
            baseline_rewards=total("baseline_rewards"),
            learned_value=total("learned_value") / n if n else None,
            baseline_value=total("baseline_value") / n if n else None,
            difference=mean,
            lower_bound=lower,
            recommend_online=lower is not None and n >= MIN_EVENTS and lower > 0.0,
            started_at=started_at,
            last_event_at=last_event_at if n else None,
        )
