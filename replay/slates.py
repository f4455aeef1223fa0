"""Position-aware off-policy estimators: the value of each position of a page, and of slates.

A slate log is a :class:`~replay.LoggedDecisions` whose rows carry a ``position``: one
row per (page, position) — one row a slot of a multi-slot decision
(:func:`~replay.read_log` with ``slot=``), one row a line of the Open Bandit Dataset.
Each row is over the actions that position could show, its ``propensity`` the logging
policy's probability of the row's action *at that position*, and the target's
probabilities (:class:`~replay.TargetProbabilities`) likewise per row. Which probability
that is depends on the estimator:

=========  ==========================================  =====================================
estimator  the per-row probabilities, logged and target  weight of the reward at position k
=========  ==========================================  =====================================
IIPS       marginal: P(action at k)                      ``w_k``
RIPS       conditional on the actions above k            ``w_1 w_2 ... w_k`` (cumulative)
SIPS       conditional on the actions above k            ``w_1 w_2 ... w_L`` (joint)
=========  ==========================================  =====================================

with ``w_k`` the row's target over logged probability. A multi-slot (CCB) slot row is
conditional (each slot's distribution is over what the slots above it left); the Open
Bandit Dataset's ``propensity_score`` is marginal (the item's probability at that
position), so only IIPS is right on it, unless the logger chose positions independently.

Slates are told apart by ``slates``: ``(n,)`` integers, one number per slate (rows of a
slate in any order, each position at most once); :func:`consecutive_slates` numbers rows
listed slate by slate. RIPS and SIPS need them; IIPS without them treats each position's
rows as a sample of pages (the Open Bandit Dataset's rows carry no page id).

Every estimate is the expected **total reward per page** (summed over its positions),
with its per-position parts; the uncertainty is over pages (slates), which are
independent where a page's positions are not.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from policies.errors import ConfigurationError, LogFormatError
from replay._data import FloatArray, IntArray, LoggedDecisions, TargetProbabilities
from replay.estimators import Interval, Intervals

__all__ = [
    "IIPS",
    "RIPS",
    "SIPS",
    "SlateEstimate",
    "SlateEstimator",
    "consecutive_slates",
]


def consecutive_slates(position: IntArray) -> IntArray:
    """Return the slate numbers of rows listed slate by slate, each in increasing position.

    A new slate starts at the first row and wherever the position does not increase.

    Examples
    --------
    >>> consecutive_slates(np.array([0, 1, 2, 0, 1, 1, 2]))
    array([0, 0, 0, 1, 1, 2, 2])
    """
    position = np.asarray(position, dtype=np.int64)
    if position.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[True], np.diff(position) <= 0])
    return np.cumsum(starts).astype(np.int64) - 1


@dataclass(frozen=True, slots=True)
class SlateEstimate:
    """A slate estimator's value of the target, in total reward per page.

    Parameters
    ----------
    estimator
        Which estimator produced it (its class name).
    value
        The estimated expected total reward of a page (the sum of `by_position`).
    std_error
        Standard error over pages (NaN with fewer than 2).
    ci
        Normal-approximation interval, None when undefined.
    bootstrap_ci
        Percentile bootstrap interval over pages, None when ``n_bootstrap`` is 0.
    by_position
        ``((position, value), ...)`` in increasing position: each position's expected
        reward under the target.
    n_slates
        Pages (slates) in the log; without slate numbers, rows.
    n
        Rows in the log.
    weight_max
        The largest weight that multiplied a reward.
    """

    estimator: str
    value: float
    std_error: float
    ci: Interval | None
    bootstrap_ci: Interval | None
    by_position: tuple[tuple[int, float], ...]
    n_slates: int
    n: int
    weight_max: float


class SlateEstimator(ABC):
    """The base of the slate estimators: checks the inputs, then calls one hook.

    A subclass is a frozen dataclass with an `intervals` field and implements
    :meth:`_weights`: the weight of each row's reward, given the rows' importance
    weights grouped by slate. :meth:`estimate` checks the log, the target and the slate
    numbers before the hook runs.

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 2]), chosen=np.array([0, 1]),
    ...     propensity=np.array([0.5, 0.5]), reward=np.array([1.0, 0.0]),
    ...     position=np.array([0, 1]))
    >>> target = TargetProbabilities(logs, np.full((2, 2), 0.5))
    >>> RIPS().estimate(logs, target)
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: RIPS needs `slates`: the slate number of every row
    >>> RIPS().estimate(logs, target, slates=np.array([7, 7])).value
    1.0
    """

    __slots__ = ()

    intervals: Intervals
    """How the intervals are computed (``level``, ``n_bootstrap``, ``chunk_size``, ``seed``)."""

    needs_slates: ClassVar[bool] = True
    """Whether :meth:`estimate` requires `slates` (RIPS and SIPS)."""

    def estimate(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        *,
        slates: IntArray | None = None,
        rng: np.random.Generator | None = None,
    ) -> SlateEstimate:
        """Estimate the target's expected total reward per page on `logs`.

        Parameters
        ----------
        logs
            Rows with a ``position``, at least one.
        target
            The target's per-row probabilities (of the kind the estimator needs), built
            for `logs`.
        slates
            ``(n,)`` slate numbers (:func:`consecutive_slates`); required by RIPS and
            SIPS. Without them every row is its own page-position sample.
        rng
            Draws the bootstrap; default seeded with ``intervals.seed``.

        Raises
        ------
        LogFormatError
            For an empty log, rows without positions, a target built for other logs, or
            a slate holding a position twice.
        ConfigurationError
            When the estimator needs `slates` and none were given.
        """
        name = type(self).__name__
        if logs.n == 0:
            msg = f"{name} needs at least one logged decision, got an empty log"
            raise LogFormatError(msg)
        if logs.position is None:
            msg = f"{name} needs each row's `position`; the log has none"
            raise LogFormatError(msg)
        if target.logs is not logs:
            msg = f"{name}: the target was built for other logs"
            raise LogFormatError(msg)
        position = logs.position
        weights = target.weights()
        if slates is None:
            if self.needs_slates:
                msg = f"{name} needs `slates`: the slate number of every row"
                raise ConfigurationError(msg)
            # Each row is its own unit, scaled so a position's rows average to its value.
            _, inverse, counts = np.unique(position, return_inverse=True, return_counts=True)
            unit = np.arange(logs.n)
            scale = logs.n / counts[inverse]
            row_weights = weights
        else:
            slates = np.asarray(slates)
            if slates.shape != (logs.n,) or slates.dtype.kind not in "iu":
                msg = f"`slates` must be ({logs.n},) integers, got {slates.dtype} {slates.shape}"
                raise LogFormatError(msg)
            _, unit = np.unique(slates, return_inverse=True)
            order = np.lexsort((position, unit))
            sorted_unit, sorted_position = unit[order], position[order]
            repeated = (np.diff(sorted_unit) == 0) & (np.diff(sorted_position) == 0)
            if repeated.any():
                row = int(order[int(np.argmax(repeated)) + 1])
                msg = (
                    f"row {row}: slate {slates[row]} holds position {position[row]} twice; "
                    "each slate shows one action per position"
                )
                raise LogFormatError(msg)
            in_order = self._weights(weights[order], sorted_unit)
            row_weights = np.empty(logs.n)
            row_weights[order] = in_order
            scale = np.ones(logs.n)
        n_units = int(unit.max()) + 1
        contribution = scale * row_weights * logs.reward
        totals: FloatArray = np.bincount(unit, weights=contribution, minlength=n_units).astype(
            np.float64
        )
        value = float(totals.mean())
        positions = np.unique(position)
        by_position = tuple(
            (int(k), float(contribution[position == k].sum() / n_units)) for k in positions
        )
        return SlateEstimate(
            estimator=name,
            value=value,
            std_error=_std_error(totals),
            ci=_normal(value, _std_error(totals), self.intervals.level),
            bootstrap_ci=_bootstrap(totals, self.intervals, rng),
            by_position=by_position,
            n_slates=n_units,
            n=logs.n,
            weight_max=float(row_weights.max()),
        )

    @abstractmethod
    def _weights(self, weights: FloatArray, slate: IntArray) -> FloatArray:
        """Return each row's reward weight from the rows' importance weights.

        Rows come sorted by slate, then position; `slate` holds their slate numbers,
        ``0 .. S-1`` in order.
        """


@dataclass(frozen=True, slots=True)
class IIPS(SlateEstimator):
    """Independent IPS: each position's reward weighted by its own marginal weight.

    ``V = sum_k E[w_k r_k]`` with ``w_k = pi(a_k at k) / mu(a_k at k)``, the target's
    over the logger's marginal probability of the shown action at position k. Unbiased
    when a position's reward depends only on the action shown there (the independence
    click model); biased when a click depends on what is shown above (cascade). Li et
    al., *Offline Evaluation of Ranking Policies with Click Models*, KDD 2018. Its
    per-position parts are per-position IPS. Works without slate numbers.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    Two positions, uniformly logged out of two actions each, a target that always
    shows action 0, which earns 1 at position 0 and 0.5 at position 1:

    >>> logs = LoggedDecisions(
    ...     n_actions=np.full(4, 2), chosen=np.array([0, 1, 1, 0]),
    ...     propensity=np.full(4, 0.5), reward=np.array([1.0, 0.0, 0.0, 0.5]),
    ...     position=np.array([0, 1, 0, 1]))
    >>> target = TargetProbabilities(logs, np.tile([1.0, 0.0], (4, 1)))
    >>> estimate = IIPS(Intervals(n_bootstrap=0)).estimate(logs, target)
    >>> estimate.value, estimate.by_position
    (1.5, ((0, 1.0), (1, 0.5)))
    """

    needs_slates: ClassVar[bool] = False
    intervals: Intervals = field(default_factory=Intervals)

    def _weights(self, weights: FloatArray, slate: IntArray) -> FloatArray:
        return weights


@dataclass(frozen=True, slots=True)
class RIPS(SlateEstimator):
    """Reward-interaction IPS: position k's reward weighted by the weights down to k.

    ``V = sum_k E[(w_1 ... w_k) r_k]``, with each ``w_j`` the target over the logger's
    probability of the action at position j *given the actions above it*, so the product
    is the ratio of the probabilities of the whole ranking down to k. Unbiased under the
    cascade click model (a position's reward depends on it and what is above it), with
    less variance than SIPS. McInerney et al., *Counterfactual Evaluation of Slate
    Recommendations with Sequential Reward Interactions*, KDD 2020 (the unnormalised
    form; Open Bandit Pipeline's ``RIPS``).

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    One slate of two positions; the target would have shown the same at position 0
    with probability 1 (logged 0.5), and at position 1 with 0.5 (logged 0.5):

    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 1]), chosen=np.array([0, 0]),
    ...     propensity=np.array([0.5, 1.0]), reward=np.array([1.0, 1.0]),
    ...     position=np.array([0, 1]))
    >>> target = TargetProbabilities(logs, np.array([[1.0, 0.0], [1.0, 0.0]]))
    >>> RIPS(Intervals(n_bootstrap=0)).estimate(logs, target, slates=np.array([0, 0])).by_position
    ((0, 2.0), (1, 2.0))
    """

    intervals: Intervals = field(default_factory=Intervals)

    def _weights(self, weights: FloatArray, slate: IntArray) -> FloatArray:
        # A cumulative product within each slate: the rows laid out as a (slates, depth)
        # matrix padded with 1, multiplied along each slate, and read back.
        starts = np.flatnonzero(np.concatenate([[True], np.diff(slate) != 0]))
        depth = np.arange(slate.size) - starts[slate]
        laid = np.ones((starts.size, int(depth.max()) + 1))
        laid[slate, depth] = weights
        cumulative: FloatArray = np.cumprod(laid, axis=1)[slate, depth]
        return cumulative


@dataclass(frozen=True, slots=True)
class SIPS(SlateEstimator):
    """Standard slate IPS: every reward of a slate weighted by the whole slate's weight.

    ``V = E[(w_1 ... w_L) sum_k r_k]``, with the per-row weights conditional on the
    actions above (their product is the ratio of the slates' joint probabilities).
    Unbiased under any click model, with the largest variance of the three. Open Bandit
    Pipeline's ``SlateStandardIPS``; Li et al., KDD 2018.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 1]), chosen=np.array([0, 0]),
    ...     propensity=np.array([0.5, 1.0]), reward=np.array([1.0, 1.0]),
    ...     position=np.array([0, 1]))
    >>> target = TargetProbabilities(logs, np.array([[0.5, 0.5], [1.0, 0.0]]))
    >>> SIPS(Intervals(n_bootstrap=0)).estimate(logs, target, slates=np.array([0, 0])).value
    2.0
    """

    intervals: Intervals = field(default_factory=Intervals)

    def _weights(self, weights: FloatArray, slate: IntArray) -> FloatArray:
        joint = np.ones(int(slate.max()) + 1)
        np.multiply.at(joint, slate, weights)
        joint_weights: FloatArray = joint[slate]
        return joint_weights


def _std_error(totals: FloatArray) -> float:
    return float(np.std(totals, ddof=1)) / math.sqrt(totals.size) if totals.size >= 2 else math.nan


def _normal(value: float, std_error: float, level: float) -> Interval | None:
    if math.isnan(std_error):
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    return Interval(value - z * std_error, value + z * std_error, level, "normal")


def _bootstrap(
    totals: FloatArray, settings: Intervals, rng: np.random.Generator | None
) -> Interval | None:
    """Return the percentile interval of the mean over pages (resampled in bounded chunks)."""
    if not settings.n_bootstrap:
        return None
    rng = np.random.default_rng(settings.seed) if rng is None else rng
    size = totals.size
    per_chunk = max(1, settings.chunk_size // size)
    replicates = np.empty(settings.n_bootstrap)
    for start in range(0, settings.n_bootstrap, per_chunk):
        count = min(per_chunk, settings.n_bootstrap - start)
        replicates[start : start + count] = totals[rng.integers(0, size, (count, size))].mean(
            axis=1
        )
    tail = (1.0 - settings.level) / 2
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Interval(float(low), float(high), settings.level, "percentile bootstrap")
