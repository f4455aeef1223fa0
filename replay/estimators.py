"""Off-policy estimators: what a target policy would have earned on logged decisions.

Every estimator is a small frozen dataclass whose fields are its hyperparameters,
checked on construction, and a subclass of :class:`Estimator`, whose one public method
checks the inputs and turns the per-row terms of a private hook into an estimate::

    estimate(logs, target, *, rewards=None, rng=None) -> Estimate

================  ======================================================  ==============
estimator         value                                                   needs rewards
================  ======================================================  ==============
DirectMethod      mean of sum_a pi(a|x) q(x, a)                           yes
IPS               mean of w r                                             no
ClippedIPS        mean of min(w, M) r                                     no
SNIPS             sum w r / sum w                                         no
DoublyRobust      mean of DM + w (r - q(x, a))                            yes
SNDR              mean of DM + sum w (r - q) / sum w                      yes
SwitchDR          mean of DM + 1{w <= tau} w (r - q)                      yes
DRos              mean of DM + lambda w / (w^2 + lambda) (r - q)          yes
ReplayMethod      mean reward over rows where the target's choice is the  no
                  logged one (uniformly random logs only)
================  ======================================================  ==============

Here ``w = pi(a|x) / mu(a|x)`` is the importance weight of the logged choice (target
over logged probability), ``r`` its reward and ``q`` a reward model's prediction
(:class:`replay.reward_models.RewardPredictions`).

Intervals
---------
Each estimator reduces the log to per-row terms ``c``, ``a`` and ``b`` (its
:class:`Terms`) with::

    value = mean(c) + sum(a) / sum(b)

(``b = 1`` for the plain means, ``c = 0`` unless self-normalising a correction). The
analytic interval is a normal approximation with the standard error of the per-row
influence terms ``c + (a - R b) / mean(b)``, ``R = sum(a) / sum(b)``: the usual
standard error of a mean for the linear estimators, the delta method for the
self-normalised ones. The bootstrap interval is the percentile interval of the same
statistic recomputed on ``n_bootstrap`` resamples of the rows, drawn in chunks so memory
stays bounded; the reward model is not refitted per resample. Both are configured by
:class:`Intervals`, a field of every estimator.

Neither knows the reward range: on a few dozen clicks the normal interval is symmetric
and goes below 0. With rewards in a known ``[lo, hi]`` (``Intervals.reward_range``; by
default ``[0, 1]`` when every logged reward lies there, else the log's smallest and
largest reward, which is no guarantee and is said in the warnings), two more intervals
hold at their level for any sample size (:mod:`replay.bounds`): the empirical-Bernstein
and the betting interval. Each estimator says how its per-row term moves with the
reward, ``offset + slope r`` with ``slope >= 0`` (:class:`Terms`), which bounds every
term given ``[lo, hi]``:

- IPS, SNIPS and the replay method (``slope`` the importance weights, mean 1): the
  betting interval is the tighter, side by side, of the off-policy one (Karampatziakis,
  Mineiro and Ramdas, ICML 2021), which needs no bound on the weights, and the one for
  the terms ``w r`` bounded with the largest weight in the log, each at half the error
  (by the union bound both hold together at the nominal level, so their intersection
  does); the Bernstein interval bounds ``w r`` with the largest weight;
- clipped IPS, the direct method and the doubly robust family (SNDR through its
  linearisation ``DM + w (r - q)``): both intervals bound the terms with the largest
  weight and the reward model's extremes in the log.

A weight or prediction larger than any in the log is possible, so those bounds are a
guarantee only when the log reached the extremes (for a deterministic target the largest
weight is one over the smallest probability the logger gives the target's action). All
intervals assume correct propensities and full support. The new intervals, and the
normal interval when it strays (it is then clipped and says so), are cut to the range
the estimand is known to lie in: ``[lo, hi]``, widened to the reward model's predictions
for the model-based estimators and to 0 for clipped IPS.

Every :class:`Estimate` carries :class:`Diagnostics` on the importance weights: their
effective sample size, statistics, support and warnings.
"""

from __future__ import annotations

import math
import numbers
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import scipy.stats

from policies.errors import ConfigurationError, LogFormatError
from replay._data import FloatArray, IntArray, LoggedDecisions, TargetProbabilities
from replay.bounds import (
    bernstein_interval,
    betting_interval,
    infer_reward_range,
    off_policy_betting_interval,
)
from replay.reward_models import RewardPredictions, _check_int, _check_real

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "ClippedIPS",
    "DRos",
    "Diagnostics",
    "DirectMethod",
    "DoublyRobust",
    "Estimate",
    "Estimator",
    "IPS",
    "Interval",
    "Intervals",
    "ReplayMethod",
    "SNDR",
    "SNIPS",
    "SwitchDR",
    "Terms",
    "Tuning",
]

ESS_WARNING_SHARE = 0.1
"""Warn when the effective sample size is below this share of the rows."""

MAX_WEIGHT_WARNING = 100.0
"""Warn when the largest importance weight is above this."""

MEAN_WEIGHT_WARNING = 0.1
"""Warn when the mean weight is further than this from 1 (and than 4 standard errors)."""

QUANTILES = (0.5, 0.9, 0.99)
"""The weight quantiles reported in :class:`Diagnostics`."""

INTERVAL_KINDS = ("normal", "bootstrap", "bernstein", "betting")
"""The intervals :class:`Intervals` can ask for, all by default."""
SWITCH_TAUS = (math.inf, *(2.0**k for k in range(10, -1, -1)))
""":class:`SwitchDR`'s candidate thresholds when tuned, least biased first: inf, 1024 .. 1."""

DROS_LAMBDAS = tuple(tau * tau for tau in SWITCH_TAUS)
""":class:`DRos`'s candidate shrinkages when tuned: the thresholds squared (the shrunk
weight ``lambda w / (w^2 + lambda)`` peaks at ``w = sqrt(lambda)``), least biased first."""

TUNING_DELTA = 0.05
"""The tuning's confidence: the ``"mse"`` bias bound and SLOPE's widths hold with
probability 1 - delta."""


# -- results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval.

    Parameters
    ----------
    low, high
        The bounds.
    level
        Nominal coverage, e.g. 0.95.
    method
        ``"normal"`` (mean of per-row terms), ``"delta"`` (delta method, for the
        self-normalised estimators), ``"percentile bootstrap"``, ``"empirical
        Bernstein"`` or ``"betting"`` (see :mod:`replay.bounds`).
    clipped
        True when the interval left the range the estimand lies in and was cut to it
        (only the normal and delta intervals can).
    """

    low: float
    high: float
    level: float
    method: str
    clipped: bool = False

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class Diagnostics:
    """How far the log supports the target, from the importance weights.

    The weights are ``w = pi(a|x) / mu(a|x)`` of each logged choice, before any
    clipping or shrinkage (for :class:`ReplayMethod`, its own acceptance weights
    ``1{target's choice = logged choice} / mu(a|x)``, whose ESS is the number of
    accepted rows).

    Parameters
    ----------
    n
        Rows in the log.
    ess
        Effective sample size ``(sum w)^2 / sum w^2`` (0 if every weight is 0).
    weight_mean, weight_max
        Mean and largest weight. Under full support the mean weight is 1 in
        expectation; far from 1 (by more than :data:`MEAN_WEIGHT_WARNING` and 4
        standard errors) means wrong propensities or deficient support.
    weight_quantiles
        ``((q, quantile), ...)`` for q in :data:`QUANTILES`.
    unsupported_share
        Share of rows where the target puts mass on an offered action the logger gave
        probability 0. Target probabilities only cover offered actions, so mass on
        actions the logger did not offer cannot be expressed and is not counted.
    support_known
        True when the log holds every offered action's logged probability. False when
        it holds only the chosen one's: then only rows where the logger was certain
        (propensity 1) can be known to be unsupported, and `unsupported_share` is a
        lower bound.
    warnings
        Plain-language warnings: small ESS (below :data:`ESS_WARNING_SHARE` of n),
        huge weights (above :data:`MAX_WEIGHT_WARNING`), mean weight far from 1,
        deficient support, a reward model no better than a constant, and
        estimator-specific ones.
    tuning
        The hyperparameter an estimator chose from the data (:class:`SwitchDR`'s `tau`,
        :class:`DRos`'s `lambda_`, when not given), None otherwise.
    """

    n: int
    ess: float
    weight_mean: float
    weight_max: float
    weight_quantiles: tuple[tuple[float, float], ...]
    unsupported_share: float
    support_known: bool
    warnings: tuple[str, ...]
    tuning: Tuning | None = None


@dataclass(frozen=True, slots=True)
class Tuning:
    """A hyperparameter chosen from the data, and how.

    Parameters
    ----------
    parameter
        Its name (``"tau"``, ``"lambda_"``).
    value
        The value chosen.
    method
        ``"slope"`` or ``"mse"`` (see :class:`SwitchDR`).
    grid
        The candidates, from the least biased to the most.
    """

    parameter: str
    value: float
    method: str
    grid: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimator's value of the target policy, with its uncertainty and diagnostics.

    Parameters
    ----------
    estimator
        Which estimator produced it (its class name).
    value
        The estimated mean reward per decision under the target (NaN when undefined,
        e.g. a self-normalised estimator whose weights are all 0; see the warnings).
    std_error
        Standard error from the per-row influence terms (NaN when n < 2).
    ci
        Analytic interval (normal approximation or delta method), None when undefined or
        not asked for; clipped to the range the estimand lies in (see the module
        docstring), and then marked so.
    bootstrap_ci
        Percentile bootstrap interval, None when ``n_bootstrap`` is 0 or undefined.
    n
        Rows in the log.
    diagnostics
        Weight diagnostics and warnings.
    bernstein_ci
        Empirical-Bernstein interval within the reward range, None when not asked for,
        n < 2, or the estimator gives no bounds on its terms.
    betting_ci
        Betting interval within the reward range, None when not asked for, the
        estimator gives no bounds on its terms, or the weights contradict a mean of 1.
    """

    estimator: str
    value: float
    std_error: float
    ci: Interval | None
    bootstrap_ci: Interval | None
    n: int
    diagnostics: Diagnostics
    bernstein_ci: Interval | None = None
    betting_ci: Interval | None = None


@dataclass(frozen=True, slots=True)
class Intervals:
    """How every estimator computes its intervals.

    Parameters
    ----------
    level
        Nominal coverage of both intervals, in (0, 1).
    n_bootstrap
        Bootstrap resamples, >= 0 (0 skips the bootstrap). 200 keeps a million-row
        evaluation within seconds; prefer 1000 or more for a final report.
    chunk_size
        Resampled row indices held in memory at once, >= 1: bounds the bootstrap's
        memory to about ``24 * chunk_size`` bytes whatever n is (a chunk holds at least
        one resample, so at least ``n`` indices).
    seed
        Seeds the bootstrap (and :class:`ReplayMethod`'s draws) when the call passes no
        `rng`, >= 0.
    reward_range
        ``(lo, hi)`` every reward lies in, finite, ``lo < hi``; None infers it
        (:func:`replay.bounds.infer_reward_range`: ``[0, 1]`` when every logged reward
        is there, else the log's extremes, with a warning that they are no guarantee).
        Bounds the Bernstein and betting intervals and clips the normal one.
    kinds
        Which intervals to compute, a subset of :data:`INTERVAL_KINDS`: ``"normal"``
        (normal or delta), ``"bootstrap"`` (also needs ``n_bootstrap`` > 0),
        ``"bernstein"`` and ``"betting"``.

    Examples
    --------
    >>> Intervals(level=0.9, n_bootstrap=1000, kinds=("normal", "betting"))
    ... # doctest: +NORMALIZE_WHITESPACE
    Intervals(level=0.9, n_bootstrap=1000, chunk_size=2097152, seed=0, reward_range=None,
              kinds=('normal', 'betting'))
    >>> Intervals(level=95)
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `level` must be in (0, 1), got 95
    >>> Intervals(reward_range=(1, 0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `reward_range` must be (lo, hi), finite, ... got (1, 0)
    """

    level: float = 0.95
    n_bootstrap: int = 200
    chunk_size: int = 2**21
    seed: int = 0
    reward_range: tuple[float, float] | None = None
    kinds: tuple[str, ...] = INTERVAL_KINDS

    def __post_init__(self) -> None:
        _check_real("level", self.level, lambda v: 0.0 < v < 1.0, "in (0, 1)")
        _check_int("n_bootstrap", self.n_bootstrap, 0, None)
        _check_int("chunk_size", self.chunk_size, 1, None)
        _check_int("seed", self.seed, 0, None)
        if self.reward_range is not None:
            pair = self.reward_range
            if not (
                isinstance(pair, tuple)
                and len(pair) == 2
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in pair)
                and math.isfinite(pair[0])
                and math.isfinite(pair[1])
                and pair[0] < pair[1]
            ):
                msg = f"`reward_range` must be (lo, hi), finite, with lo < hi, got {pair!r}"
                raise ConfigurationError(msg)
            object.__setattr__(self, "reward_range", (float(pair[0]), float(pair[1])))
        if not (
            isinstance(self.kinds, tuple)
            and self.kinds
            and all(kind in INTERVAL_KINDS for kind in self.kinds)
        ):
            msg = (
                f"`kinds` must be a non-empty tuple of {', '.join(INTERVAL_KINDS)}, "
                f"got {self.kinds!r}"
            )
            raise ConfigurationError(msg)

    def range_of(self, rewards: FloatArray) -> tuple[tuple[float, float], bool]:
        """Return the reward range `rewards` lie in, and whether it was only read off them.

        The given `reward_range`, else :func:`replay.bounds.infer_reward_range`'s.
        """
        if self.reward_range is not None:
            return self.reward_range, False
        return infer_reward_range(rewards)


@dataclass(frozen=True, slots=True)
class Terms:
    """An estimator's per-row terms, from which :class:`Estimator` computes everything.

    ``value = mean(c) + sum(a) / sum(b)``: ``b`` None stands for every row 1 (a plain
    mean), ``c`` None for every row 0. The standard error, the normal interval and the
    bootstrap come from these arrays (see the module docstring), the diagnostics from
    `weights`. The range-respecting intervals come from ``offset + slope * reward``, an
    unbiased (or linearised) per-row term of the same estimand.

    Parameters
    ----------
    weights
        ``(n,)`` the importance weights the diagnostics describe, before any clipping
        or shrinkage.
    a
        ``(n,)`` the numerator terms.
    b
        ``(n,)`` the denominator terms of a self-normalised estimator, or None.
    c
        ``(n,)`` terms averaged on their own (the direct part of SNDR), or None.
    notes
        Estimator-specific warnings, reported before the weight diagnostics' own.
    slope
        ``(n,)`` how much each row's term moves per unit of reward, >= 0, or None
        (no Bernstein or betting interval).
    offset
        ``(n,)`` the rest of each row's term, or None for 0.
    importance
        True when `slope` holds importance weights (mean 1) and `offset` is None: the
        terms estimate the target's value and the off-policy betting interval applies.
    spans
        ``(low, high)`` values the estimand may reach besides the reward range (the
        reward model's predictions, 0 for clipped weights), or None.
    tuning
        The hyperparameter the estimator chose from the data, if it did.
    """

    weights: FloatArray
    a: FloatArray
    b: FloatArray | None = None
    c: FloatArray | None = None
    notes: tuple[str, ...] = ()
    slope: FloatArray | None = None
    offset: FloatArray | None = None
    importance: bool = False
    spans: tuple[float, float] | None = None
    tuning: Tuning | None = None


class Estimator(ABC):
    """The base of every off-policy estimator: checks the inputs, then calls one hook.

    A subclass is a frozen dataclass whose fields are its hyperparameters, with an
    `intervals` field (checked by :meth:`__post_init__`; a subclass that checks its own
    hyperparameters calls ``Estimator.__post_init__(self)`` too), and implements
    :meth:`_terms`. :meth:`estimate` refuses an empty log, a target or predictions built
    for other logs, and missing predictions when :attr:`needs_rewards` is set, before
    the hook runs; then it turns the hook's :class:`Terms` into an :class:`Estimate`.

    Examples
    --------
    Inverse propensity scoring with the rewards halved, in four lines:

    >>> @dataclass(frozen=True, slots=True)
    ... class HalfIPS(Estimator):
    ...     intervals: Intervals = Intervals(n_bootstrap=0)
    ...
    ...     def _terms(self, logs, target, rewards, rng):
    ...         weights = target.weights()
    ...         return Terms(weights=weights, a=weights * logs.reward / 2)
    >>> logs = LoggedDecisions(n_actions=np.array([2, 2]), chosen=np.array([0, 1]),
    ...                        propensity=np.array([0.5, 0.5]), reward=np.array([1.0, 0.0]))
    >>> HalfIPS().estimate(logs, TargetProbabilities(logs, np.array([[1.0, 0], [1, 0]]))).value
    0.5
    >>> empty = LoggedDecisions(n_actions=np.zeros(0, int), chosen=np.zeros(0, int),
    ...                         propensity=np.zeros(0), reward=np.zeros(0))
    >>> HalfIPS().estimate(empty, TargetProbabilities(empty, np.zeros((0, 0))))
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: HalfIPS needs at least one logged decision, got an empty log
    """

    __slots__ = ()

    intervals: Intervals
    """How the estimator computes its intervals."""

    needs_rewards: ClassVar[bool] = False
    """Whether :meth:`estimate` requires `rewards` (the estimators with a direct part)."""

    def __post_init__(self) -> None:
        """Refuse an `intervals` that is not an :class:`Intervals`."""
        if not isinstance(self.intervals, Intervals):
            msg = f"`intervals` must be an Intervals, got {self.intervals!r}"
            raise ConfigurationError(msg)

    def estimate(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        *,
        rewards: RewardPredictions | None = None,
        rng: np.random.Generator | None = None,
    ) -> Estimate:
        """Estimate the target's mean reward per decision on `logs`.

        Parameters
        ----------
        logs
            The logged decisions, at least one.
        target
            The target's probabilities, built for `logs`.
        rewards
            Reward predictions built for `logs`; required when :attr:`needs_rewards`,
            ignored otherwise.
        rng
            Draws the bootstrap's resamples (and any draw the estimator makes); default
            seeded with ``intervals.seed``.

        Returns
        -------
        Estimate

        Raises
        ------
        LogFormatError
            For an empty log, or a target or predictions built for other logs.
        ConfigurationError
            When `rewards` is required and missing, or the hook returns terms that are
            not one value per row.
        """
        name = type(self).__name__
        if logs.n == 0:
            msg = f"{name} needs at least one logged decision, got an empty log"
            raise LogFormatError(msg)
        _check_same_logs("target", target.logs, logs)
        if rewards is not None:
            _check_same_logs("rewards", rewards.logs, logs)
        elif self.needs_rewards:
            msg = (
                f"{name} needs `rewards`: pass RewardPredictions(logs, values) "
                "or HashedRidge().cross_fit(logs)"
            )
            raise ConfigurationError(msg)
        if rng is None:
            rng = np.random.default_rng(self.intervals.seed)
        terms = self._terms(logs, target, rewards, rng)
        for field_name in ("weights", "a", "b", "c", "slope", "offset"):
            values = getattr(terms, field_name)
            if values is not None and np.shape(values) != (logs.n,):
                msg = (
                    f"{name}._terms must return one value per row: `{field_name}` has shape "
                    f"{np.shape(values)}, the log has {logs.n} rows"
                )
                raise ConfigurationError(msg)
        if terms.slope is not None and not np.all(terms.slope >= 0.0):  # also rejects NaN
            msg = f"{name}._terms must return `slope` >= 0 on every row (the terms' bounds need it)"
            raise ConfigurationError(msg)
        if terms.importance and (terms.slope is None or terms.offset is not None):
            msg = f"{name}._terms: `importance` needs `slope` (the weights) and no `offset`"
            raise ConfigurationError(msg)
        if self.needs_rewards and rewards is not None and rewards.quality is not None:
            poor = rewards.quality.warning()
            if poor is not None:
                terms = replace(terms, notes=(*terms.notes, poor))
        return _finish(name, self.intervals, terms, logs, target, rng=rng)

    @abstractmethod
    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        """Return the per-row terms of the estimate (the inputs are already checked).

        `rewards` is not None when :attr:`needs_rewards` is set; `rng` is the one
        :meth:`estimate` then draws the bootstrap from.
        """


# -- the estimators ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectMethod(Estimator):
    """The direct method: average the reward model's value of the target's choices.

    ``V = mean_i sum_a pi(a|x_i) q(x_i, a)``. Unbiased only if the reward model is;
    its interval reflects the sampling of contexts, not the model's error. See Dudík,
    Langford and Li, *Doubly Robust Policy Evaluation and Learning*, ICML 2011.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> rewards = RewardPredictions(logs, np.tile([0.7, 0.2], (1000, 1)))
    >>> round(DirectMethod().estimate(logs, target, rewards=rewards).value, 3)
    0.65
    """

    needs_rewards: ClassVar[bool] = True
    intervals: Intervals = Intervals()

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        assert rewards is not None  # needs_rewards: checked by estimate()
        direct = _direct(target, rewards)
        return Terms(
            weights=target.weights(),
            a=direct,
            slope=np.zeros_like(direct),
            offset=direct,
            spans=_span(rewards),
        )


@dataclass(frozen=True, slots=True)
class IPS(Estimator):
    """Inverse propensity scoring: the mean of importance-weighted rewards.

    ``V = mean_i w_i r_i`` with ``w_i = pi(a_i|x_i) / mu(a_i|x_i)``. Unbiased when the
    logged propensities are right and the logger covers the target's support; its
    variance grows with the weights. Horvitz and Thompson, *A generalization of sampling
    without replacement from a finite universe*, JASA 1952; for contextual bandits see
    Dudík, Langford and Li, ICML 2011.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> estimate = IPS().estimate(logs, target)
    >>> round(estimate.value, 3), round(estimate.std_error, 3)
    (0.651, 0.027)
    >>> round(estimate.ci.low, 3), round(estimate.ci.high, 3), estimate.ci.method
    (0.599, 0.704, 'normal')
    >>> round(estimate.betting_ci.low, 3), round(estimate.betting_ci.high, 3)  # within [0, 1]
    (0.575, 0.692)
    >>> round(estimate.diagnostics.ess), estimate.diagnostics.warnings
    (617, ())
    """

    intervals: Intervals = Intervals()

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        weights = target.weights()
        return Terms(weights=weights, a=weights * logs.reward, slope=weights, importance=True)


@dataclass(frozen=True, slots=True)
class ClippedIPS(Estimator):
    """Inverse propensity scoring with weights capped at `max_weight`.

    ``V = mean_i min(w_i, M) r_i``: less variance, bias where weights exceed ``M``
    (the interval is for the clipped estimand). Ionides, *Truncated importance
    sampling*, JCGS 2008; Bottou et al., *Counterfactual Reasoning and Learning
    Systems*, JMLR 2013.

    Parameters
    ----------
    max_weight
        The cap ``M``, > 0 (inf: plain IPS).
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> round(ClippedIPS(max_weight=1.5).estimate(logs, target).value, 3)
    0.546
    >>> ClippedIPS(max_weight=0)
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `max_weight` must be > 0, got 0
    """

    max_weight: float = math.inf
    intervals: Intervals = Intervals()

    def __post_init__(self) -> None:
        _check_real("max_weight", self.max_weight, lambda v: v > 0, "> 0")
        Estimator.__post_init__(self)

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        weights = target.weights()
        clipped = np.minimum(weights, float(self.max_weight))
        return Terms(weights=weights, a=clipped * logs.reward, slope=clipped, spans=(0.0, 0.0))


@dataclass(frozen=True, slots=True)
class SNIPS(Estimator):
    """Self-normalised inverse propensity scoring.

    ``V = sum_i w_i r_i / sum_i w_i``: a weighted mean of the rewards, so always within
    their range; slightly biased, often much less variable than IPS. Swaminathan and
    Joachims, *The Self-Normalized Estimator for Counterfactual Learning*, NeurIPS 2015.
    The analytic interval uses the delta method.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> estimate = SNIPS().estimate(logs, target)
    >>> round(estimate.value, 3), estimate.ci.method
    (0.642, 'delta')
    """

    intervals: Intervals = Intervals()

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        weights = target.weights()
        return Terms(
            weights=weights, a=weights * logs.reward, b=weights, slope=weights, importance=True
        )


@dataclass(frozen=True, slots=True)
class DoublyRobust(Estimator):
    """The doubly robust estimator: the direct method plus an IPS correction of its error.

    ``V = mean_i [sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i))]``. Unbiased if
    either the propensities or the reward model are right; the better the model, the
    smaller the variance. Dudík, Langford and Li, *Doubly Robust Policy Evaluation and
    Learning*, ICML 2011.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> good = RewardPredictions(logs, np.tile([0.7, 0.2], (1000, 1)))
    >>> estimate = DoublyRobust().estimate(logs, target, rewards=good)
    >>> round(estimate.value, 3), round(estimate.std_error, 3)  # IPS: 0.651, 0.027
    (0.64, 0.019)
    """

    needs_rewards: ClassVar[bool] = True
    intervals: Intervals = Intervals()

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        assert rewards is not None  # needs_rewards: checked by estimate()
        weights = target.weights()
        residual = logs.reward - rewards.at_chosen()
        direct = _direct(target, rewards)
        return Terms(
            weights=weights,
            a=direct + weights * residual,
            slope=weights,
            offset=direct - weights * rewards.at_chosen(),
            spans=_span(rewards),
        )


@dataclass(frozen=True, slots=True)
class SNDR(Estimator):
    """Self-normalised doubly robust: the DR correction averaged with normalised weights.

    ``V = mean_i DM_i + sum_i w_i (r_i - q_i) / sum_i w_i``, as in Open Bandit
    Pipeline's ``SelfNormalizedDoublyRobust``; Kallus and Uehara, *Intrinsically
    Efficient, Stable, and Bounded Off-Policy Evaluation for Reinforcement Learning*,
    NeurIPS 2019 (self-normalised DR). Delta-method interval.

    Parameters
    ----------
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> poor = RewardPredictions.constant(logs, 0.5)
    >>> round(SNDR().estimate(logs, target, rewards=poor).value, 3)
    0.642
    """

    needs_rewards: ClassVar[bool] = True
    intervals: Intervals = Intervals()

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        assert rewards is not None  # needs_rewards: checked by estimate()
        weights = target.weights()
        residual = logs.reward - rewards.at_chosen()
        direct = _direct(target, rewards)
        return Terms(
            weights=weights,
            a=weights * residual,
            b=weights,
            c=direct,
            slope=weights,  # the linearisation DM + w (r - q), whose mean is the value
            offset=direct - weights * rewards.at_chosen(),
            spans=_span(rewards),
        )


@dataclass(frozen=True, slots=True)
class SwitchDR(Estimator):
    """SWITCH doubly robust: drop the IPS correction where the weight exceeds `tau`.

    ``V = mean_i [DM_i + 1{w_i <= tau} w_i (r_i - q_i)]``: rows with huge weights rely
    on the reward model alone. Wang, Agarwal and Dudík, *Optimal and Adaptive
    Off-policy Evaluation in Contextual Bandits*, ICML 2017; this is the row-wise
    SWITCH-DR of Open Bandit Pipeline's ``SwitchDoublyRobust`` (only the chosen
    action's weight is needed). Biased where the model is and rows are switched.

    Parameters
    ----------
    tau
        Weight threshold, >= 0 (0: the direct method; inf: DR); None (the default)
        chooses it from :data:`SWITCH_TAUS` by `tuning`.
    intervals
        How the intervals are computed.
    tuning
        How `tau` is chosen when not given:

        - ``"slope"``: SLOPE (Su, Srinath and Krishnamurthy, *Adaptive Estimator
          Selection for Off-Policy Evaluation*, ICML 2020), Lepski's method, in the
          form Open Bandit Pipeline implements (SLOPE++, Tucker and Lee, *Improved
          Estimator Selection for Off-Policy Evaluation*, 2021): the candidates in
          order of decreasing width ``cnf = t(0.95, n - 1) SE`` (the least biased,
          most variable first), each accepted while ``|V_i - V_j| <= cnf_i + (sqrt(6)
          - 1) cnf_j`` for every candidate ``j`` accepted before it; the last accepted
          is chosen;
        - ``"mse"``: the smallest estimated mean squared error, the estimate's variance
          plus a high-probability bound on its squared bias, as Open Bandit Pipeline
          tunes SWITCH-DR and DRos (Su, Dimakopoulou, Krishnamurthy and Dudík, ICML
          2020): bias ``|mean((w - w') (r - q))| + sqrt(2 mean(w^2) log(2/delta) / n)
          + 2 max(w) log(2/delta) / (3 n)`` with ``w'`` the weight kept, delta 0.05.

        The choice is reported in the estimate's ``diagnostics.tuning``. The intervals
        are those of the estimator with the chosen value: they do not widen for the
        choice, and the bootstrap does not choose again per resample.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> good = RewardPredictions(logs, np.tile([0.7, 0.2], (1000, 1)))
    >>> round(SwitchDR(tau=1.5).estimate(logs, target, rewards=good).value, 3)
    0.65
    >>> tuned = SwitchDR(tuning="mse").estimate(logs, target, rewards=good)
    >>> round(tuned.value, 3), tuned.diagnostics.tuning.value
    (0.64, inf)
    """

    needs_rewards: ClassVar[bool] = True
    tau: float | None = None
    intervals: Intervals = Intervals()
    tuning: Literal["slope", "mse"] = "slope"

    def __post_init__(self) -> None:
        if self.tau is not None:
            _check_real("tau", self.tau, lambda v: v >= 0, ">= 0")
        _check_tuning(self.tuning)
        Estimator.__post_init__(self)

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        assert rewards is not None  # needs_rewards: checked by estimate()
        return _modified_dr(self, "tau", self.tau, SWITCH_TAUS, _switched, logs, target, rewards)


@dataclass(frozen=True, slots=True)
class DRos(Estimator):
    """Doubly robust with optimistic shrinkage of the weights.

    ``V = mean_i [DM_i + lambda w_i / (w_i^2 + lambda) (r_i - q_i)]``: large weights are
    shrunk towards 0, trading bias for variance. Su, Dimakopoulou, Krishnamurthy and
    Dudík, *Doubly Robust Off-policy Evaluation with Shrinkage*, ICML 2020
    ("optimistic shrinkage").

    Parameters
    ----------
    lambda_
        Shrinkage, >= 0 (0: the direct method; inf: DR); None (the default) chooses it
        from :data:`DROS_LAMBDAS` by `tuning`.
    intervals
        How the intervals are computed.
    tuning
        How `lambda_` is chosen when not given: ``"slope"`` or ``"mse"``, as for
        :class:`SwitchDR`; reported in the estimate's ``diagnostics.tuning``.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> good = RewardPredictions(logs, np.tile([0.7, 0.2], (1000, 1)))
    >>> round(DRos(lambda_=2.0).estimate(logs, target, rewards=good).value, 3)
    0.646
    >>> DRos(lambda_=float("nan"))
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `lambda_` must be >= 0, got nan
    """

    needs_rewards: ClassVar[bool] = True
    lambda_: float | None = None
    intervals: Intervals = Intervals()
    tuning: Literal["slope", "mse"] = "slope"

    def __post_init__(self) -> None:
        if self.lambda_ is not None:
            _check_real("lambda_", self.lambda_, lambda v: v >= 0, ">= 0")
        _check_tuning(self.tuning)
        Estimator.__post_init__(self)

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        assert rewards is not None  # needs_rewards: checked by estimate()
        return _modified_dr(
            self, "lambda_", self.lambda_, DROS_LAMBDAS, _shrunk, logs, target, rewards
        )


@dataclass(frozen=True, slots=True)
class ReplayMethod(Estimator):
    """The replay method: keep the rows where the target picks the logged choice.

    ``V = mean of r_i over rows with target's choice = a_i``. Li, Chu, Langford and
    Wang, *Unbiased Offline Evaluation of Contextual-bandit-based News Article
    Recommendation Algorithms*, WSDM 2011: unbiased when the log was collected
    uniformly at random (each row's propensity ``1 / n_actions``) with the same number
    of actions per row. For a deterministic target (one-hot rows) the choice is the
    target's; for a stochastic target each row's choice is drawn once from the target's
    distribution with `rng` (the paper's rejection sampling applied to a randomised
    policy, unbiased in expectation over the draws). On uniform logs with a
    deterministic target it equals :class:`SNIPS`. Delta-method interval (a ratio of
    means); its diagnostics use the acceptance weights, whose ESS is the number of
    accepted rows.

    Parameters
    ----------
    on_nonuniform
        ``"raise"`` (default): refuse a log that is not uniformly random;
        ``"warn"``: estimate anyway and say so in the diagnostics' warnings (the value is
        then biased; use IPS, SNIPS or DR instead).
    intervals
        How the intervals are computed.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> chosen = rng.integers(0, 2, 1000)  # uniformly random logging, two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.7, 0.2)).astype(float)
    >>> logs = LoggedDecisions(n_actions=np.full(1000, 2), chosen=chosen,
    ...                        propensity=np.full(1000, 0.5), reward=reward)
    >>> target = TargetProbabilities(logs, np.tile([0.9, 0.1], (1000, 1)))  # true value 0.65
    >>> greedy = TargetProbabilities(logs, np.tile([1.0, 0.0], (1000, 1)))
    >>> estimate = ReplayMethod().estimate(logs, greedy)
    >>> round(estimate.value, 3), round(estimate.diagnostics.ess)
    (0.69, 509)
    >>> skewed = LoggedDecisions(n_actions=np.array([2]), chosen=np.array([0]),
    ...                          propensity=np.array([0.9]), reward=np.array([1.0]))
    >>> ReplayMethod().estimate(skewed, TargetProbabilities(skewed, np.array([[1.0, 0.0]])))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: row 0: the replay method needs uniformly random logs: ...
    """

    on_nonuniform: Literal["raise", "warn"] = "raise"
    intervals: Intervals = Intervals()

    def __post_init__(self) -> None:
        if self.on_nonuniform not in ("raise", "warn"):
            msg = f"`on_nonuniform` must be 'raise' or 'warn', got {self.on_nonuniform!r}"
            raise ConfigurationError(msg)
        Estimator.__post_init__(self)

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        notes = self._check_uniform(logs)
        probabilities = target.probabilities
        if np.all(probabilities.max(axis=1) == 1.0):
            choice = probabilities.argmax(axis=1)
        else:
            notes.append(
                "the target is stochastic: its choice was drawn once per row, so the "
                "value varies with the seed"
            )
            choice = _draw(probabilities, logs.n_actions, rng)
        accepted = (choice == logs.chosen).astype(np.float64)
        if not accepted.any():
            notes.append("the target's choice matches no logged choice: nothing to replay")
        weights = accepted / logs.propensity
        return Terms(
            weights=weights,
            a=accepted * logs.reward,
            b=accepted,
            notes=tuple(notes),
            slope=weights,  # accepted / propensity: mean 1, and mean reward the value
            importance=True,
        )

    def _check_uniform(self, logs: LoggedDecisions) -> list[str]:
        """Refuse (or note) logs that are not uniformly random, naming the first bad row."""
        uniform = 1.0 / logs.n_actions
        if logs.probabilities is None:
            bad: npt.NDArray[np.bool_] = np.abs(logs.propensity - uniform) > 1e-9
        else:
            off = np.abs(logs.probabilities - uniform[:, None]) > 1e-9
            bad = np.asarray((off & logs.mask()).any(axis=1))
        notes = []
        if bad.any():
            row = int(np.argmax(bad))
            rule = (
                f"the replay method needs uniformly random logs: `propensity` must be "
                f"1/n_actions = {uniform[row]:.6g}, got {logs.propensity[row]:.6g}"
                if logs.probabilities is None
                else "the replay method needs uniformly random logs: `probabilities` must "
                f"all be 1/n_actions = {uniform[row]:.6g}"
            )
            if self.on_nonuniform == "raise":
                msg = (
                    f"row {row}: {rule} (use IPS, SNIPS or DoublyRobust, or "
                    "ReplayMethod(on_nonuniform='warn') to accept a biased value)"
                )
                raise LogFormatError(msg)
            share = float(bad.mean())
            notes.append(f"{share:.1%} of rows were not logged uniformly at random: biased")
        if logs.n and np.any(logs.n_actions != logs.n_actions[0]):
            notes.append(
                "rows offer different numbers of actions: rows with fewer actions are "
                "accepted more often, which biases the replay method; prefer SNIPS"
            )
        return notes


# -- shared machinery --------------------------------------------------------------------


def _finish(
    name: str,
    settings: Intervals,
    terms: Terms,
    logs: LoggedDecisions,
    target: TargetProbabilities,
    *,
    rng: np.random.Generator,
) -> Estimate:
    """Value, standard error, both intervals and diagnostics from the per-row terms."""
    n = logs.n
    warnings = list(terms.notes)
    value, influence = _value_and_influence(terms)
    if math.isnan(value):
        warnings.append("every importance weight is 0: the self-normalised value is undefined")
    (lo, hi), inferred = settings.range_of(logs.reward)
    outside = (logs.reward < lo) | (logs.reward > hi)
    if outside.any():
        row = int(np.argmax(outside))
        msg = (
            f"row {row}: `reward` must be in the reward range [{lo:.6g}, {hi:.6g}], got "
            f"{logs.reward[row]:.6g} (give the range every reward lies in)"
        )
        raise LogFormatError(msg)
    if inferred:
        warnings.append(
            f"reward range [{lo:.6g}, {hi:.6g}] taken from the log's rewards: no guarantee "
            "that others stay within it; give the range for intervals that hold"
        )
    estimand = _estimand_range(terms, lo, hi)
    std_error = math.nan
    ci = None
    if n >= 2 and influence is not None:
        std_error = float(np.std(influence, ddof=1)) / math.sqrt(n)
    if "normal" in settings.kinds and n >= 2 and influence is not None:
        z = statistics.NormalDist().inv_cdf(0.5 + settings.level / 2)
        method = "normal" if terms.b is None else "delta"
        low, high = value - z * std_error, value + z * std_error
        clipped = low < estimand[0] or high > estimand[1]
        if clipped:
            low, high = max(low, estimand[0]), min(high, estimand[1])
            warnings.append(
                f"the {method} interval left [{estimand[0]:.6g}, {estimand[1]:.6g}], "
                "where the estimate's target lies, and was clipped to it: prefer the "
                "betting interval"
            )
        ci = Interval(low, high, settings.level, method, clipped=clipped)
    bernstein_ci = betting_ci = None
    if terms.slope is not None and not math.isnan(value):
        bernstein_ci, betting_ci = _bounded(terms, logs.reward, (lo, hi), estimand, settings)
        if "betting" in settings.kinds and betting_ci is None:
            warnings.append(
                "no betting interval: the importance weights contradict a mean of 1 "
                "(wrong propensities, or the logger misses the target's actions)"
            )
    bootstrap_ci = None
    if "bootstrap" in settings.kinds and settings.n_bootstrap and not math.isnan(value):
        replicates = _bootstrap(terms, settings.n_bootstrap, settings.chunk_size, rng)
        replicates = replicates[~np.isnan(replicates)]
        if replicates.size:
            tail = (1.0 - settings.level) / 2
            low, high = np.quantile(replicates, [tail, 1.0 - tail])
            bootstrap_ci = Interval(float(low), float(high), settings.level, "percentile bootstrap")
    return Estimate(
        estimator=name,
        value=value,
        std_error=std_error,
        ci=ci,
        bootstrap_ci=bootstrap_ci,
        n=n,
        diagnostics=_diagnose(terms.weights, logs, target, warnings, terms.tuning),
        bernstein_ci=bernstein_ci,
        betting_ci=betting_ci,
    )


def _estimand_range(terms: Terms, lo: float, hi: float) -> tuple[float, float]:
    """Return the range the estimand lies in: the reward range, widened by the terms' `spans`."""
    if terms.spans is None:
        return lo, hi
    return min(lo, terms.spans[0]), max(hi, terms.spans[1])


def _bounded(
    terms: Terms,
    reward: FloatArray,
    reward_range: tuple[float, float],
    estimand: tuple[float, float],
    settings: Intervals,
) -> tuple[Interval | None, Interval | None]:
    """Return the Bernstein and betting intervals of ``offset + slope * reward``, cut."""
    assert terms.slope is not None  # checked by the caller
    lo, hi = reward_range
    slope = terms.slope
    offset = np.zeros_like(slope) if terms.offset is None else terms.offset
    values = offset + slope * reward
    low = float(np.min(offset + slope * lo))
    high = float(np.max(offset + slope * hi))
    level = settings.level

    def cut(bounds: tuple[float, float], method: str) -> Interval:
        return Interval(
            min(max(bounds[0], estimand[0]), estimand[1]),
            max(min(bounds[1], estimand[1]), estimand[0]),
            level,
            method,
        )

    bernstein = betting = None
    if "bernstein" in settings.kinds and values.size >= 2:
        bernstein = cut(bernstein_interval(values, low, high, level), "empirical Bernstein")
    if "betting" in settings.kinds:
        if terms.importance:  # both ways at half the error each: the tighter bound wins
            half = 1.0 - (1.0 - level) / 2.0
            weighted = off_policy_betting_interval(slope, reward, lo, hi, half)
            bounded = betting_interval(values, low, high, half)
            bounds = (max(weighted[0], bounded[0]), min(weighted[1], bounded[1]))
        else:
            bounds = betting_interval(values, low, high, level)
        if bounds[0] <= bounds[1]:
            betting = cut(bounds, "betting")
    return bernstein, betting


def _span(rewards: RewardPredictions) -> tuple[float, float]:
    """Return the smallest and largest prediction over every offered action."""
    real = rewards.values[rewards.logs.mask()]
    if real.size == 0:
        return 0.0, 0.0
    return float(np.min(real)), float(np.max(real))


def _value_and_influence(terms: Terms) -> tuple[float, FloatArray | None]:
    """Return the estimate and its per-row influence terms (None if the value is undefined)."""
    a, b, c = terms.a, terms.b, terms.c
    if b is None:
        total = a if c is None else a + c
        return float(np.mean(total)), total
    denominator = float(np.sum(b))
    if denominator == 0.0:
        return math.nan, None
    ratio = float(np.sum(a)) / denominator
    influence = (a - ratio * b) / (denominator / b.size)
    if c is None:
        return ratio, influence
    return float(np.mean(c)) + ratio, influence + c


def _bootstrap(
    terms: Terms, n_bootstrap: int, chunk_size: int, rng: np.random.Generator
) -> FloatArray:
    """Recompute the statistic on `n_bootstrap` resamples of the rows, chunk by chunk.

    A resample is drawn as row indices, turned into per-row counts (``bincount``) and
    applied to every term array at once with one matrix product, so the cost does not
    grow with the number of term arrays and memory stays at a few ``chunk_size`` arrays.
    """
    a, b, c = terms.a, terms.b, terms.c
    if b is None and c is not None:
        a, c = a + c, None
    matrix = np.stack([x for x in (a, b, c) if x is not None], axis=1)  # (n, terms)
    n = a.size
    per_chunk = max(1, chunk_size // n)
    replicates = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, per_chunk):
        count = min(per_chunk, n_bootstrap - start)
        rows = rng.integers(0, n, size=(count, n))
        rows += (np.arange(count) * n)[:, None]
        counts = np.bincount(rows.ravel(), minlength=count * n).reshape(count, n)
        sums = counts.astype(np.float64) @ matrix  # (count, terms)
        if b is None:
            statistic = sums[:, 0] / n
        else:
            denominator = sums[:, 1]
            safe = np.where(denominator == 0.0, 1.0, denominator)
            statistic = np.where(denominator == 0.0, math.nan, sums[:, 0] / safe)
            if c is not None:
                statistic = statistic + sums[:, 2] / n
        replicates[start : start + count] = statistic
    return replicates


def _diagnose(
    weights: FloatArray,
    logs: LoggedDecisions,
    target: TargetProbabilities,
    warnings: list[str],
    tuning: Tuning | None = None,
) -> Diagnostics:
    """Weight statistics, support and warnings."""
    n = logs.n
    total, squares = float(np.sum(weights)), float(np.sum(weights * weights))
    ess = total * total / squares if squares > 0 else 0.0
    mean, largest = total / n, float(np.max(weights))
    quantiles = np.quantile(weights, QUANTILES)
    if logs.probabilities is not None:
        unsupported = ((target.probabilities > 0) & (logs.probabilities == 0) & logs.mask()).any(
            axis=1
        )
    else:
        elsewhere = target.probabilities.sum(axis=1) - target.at_chosen()
        unsupported = (logs.propensity == 1.0) & (elsewhere > 1e-12)
    unsupported_share = float(np.mean(unsupported))
    out = list(warnings)
    if ess < ESS_WARNING_SHARE * n:
        out.append(
            f"effective sample size {ess:.1f} is {ess / n:.1%} of {n} rows: the estimate "
            "rests on few rows (prefer SNIPS, a doubly robust estimator, or clipping)"
        )
    if largest > MAX_WEIGHT_WARNING:
        out.append(
            f"largest importance weight {largest:.4g} exceeds {MAX_WEIGHT_WARNING:g}: "
            "a few rows dominate IPS-type estimates"
        )
    spread = float(np.std(weights, ddof=1)) / math.sqrt(n) if n >= 2 else 0.0
    if abs(mean - 1.0) > max(MEAN_WEIGHT_WARNING, 4.0 * spread):
        out.append(
            f"mean importance weight {mean:.4g} is far from 1: the logged propensities "
            "may be wrong, or the logger rarely takes the target's actions"
        )
    if unsupported_share > 0:
        out.append(
            f"in {unsupported_share:.1%} of rows the target puts mass on actions the logger "
            "never takes: every estimator but the direct method is biased there"
        )
    return Diagnostics(
        n=n,
        ess=ess,
        weight_mean=mean,
        weight_max=largest,
        weight_quantiles=tuple((q, float(v)) for q, v in zip(QUANTILES, quantiles, strict=True)),
        unsupported_share=unsupported_share,
        support_known=logs.probabilities is not None,
        warnings=tuple(out),
        tuning=tuning,
    )


def _check_tuning(tuning: object) -> None:
    """Refuse a tuning method other than ``"slope"`` and ``"mse"``."""
    if tuning not in ("slope", "mse"):
        msg = f"`tuning` must be 'slope' or 'mse', got {tuning!r}"
        raise ConfigurationError(msg)


def _modified_dr(  # noqa: PLR0917 - the two estimators' parts
    estimator: SwitchDR | DRos,
    parameter: str,
    given: float | None,
    grid: tuple[float, ...],
    modified: Callable[[FloatArray, float], FloatArray],
    logs: LoggedDecisions,
    target: TargetProbabilities,
    rewards: RewardPredictions,
) -> Terms:
    """DR with the weights `modified` by a parameter: its `given` value, or one tuned on `grid`."""
    weights = target.weights()
    residual = logs.reward - rewards.at_chosen()
    direct = _direct(target, rewards)
    tuning = None
    value = given
    if value is None:
        tuning = _tune(
            parameter,
            grid,
            lambda candidate: modified(weights, candidate),
            weights=weights,
            residual=residual,
            direct=direct,
            estimator=estimator,
        )
        value = tuning.value
    kept = modified(weights, float(value))
    return Terms(
        weights=weights,
        a=direct + kept * residual,
        slope=kept,
        offset=direct - kept * rewards.at_chosen(),
        spans=_span(rewards),
        tuning=tuning,
    )


def _switched(weights: FloatArray, tau: float) -> FloatArray:
    """Switch-DR's weights: those above `tau` set to 0."""
    switched: FloatArray = np.where(weights <= tau, weights, 0.0)
    return switched


def _shrunk(weights: FloatArray, lam: float) -> FloatArray:
    """DRos's weights: ``lam w / (w^2 + lam)`` (w itself at inf, 0 at 0)."""
    if math.isinf(lam):
        return weights
    if lam == 0.0:
        return np.zeros_like(weights)
    shrunk: FloatArray = lam * weights / (weights * weights + lam)
    return shrunk


def _tune(
    parameter: str,
    grid: tuple[float, ...],
    kept: Callable[[float], FloatArray],
    *,
    weights: FloatArray,
    residual: FloatArray,
    direct: FloatArray,
    estimator: SwitchDR | DRos,
) -> Tuning:
    """Choose the candidate of `grid` (least biased first) by the estimator's `tuning`.

    Each candidate's per-row terms are ``direct + kept(value) * residual``; see
    :class:`SwitchDR` for the two methods.
    """
    n = weights.size
    values, errors, bounds = [], [], []
    log_term = math.log(2.0 / TUNING_DELTA)
    spread = math.sqrt(2.0 * float(np.mean(weights * weights)) * log_term / n)
    spread += 2.0 * float(np.max(weights)) * log_term / (3.0 * n)
    for candidate in grid:
        shrunk = kept(candidate)
        terms = direct + shrunk * residual
        values.append(float(np.mean(terms)))
        variance = float(np.var(terms, ddof=1)) / n if n >= 2 else math.inf
        errors.append(math.sqrt(variance))
        bias = abs(float(np.mean((weights - shrunk) * residual))) + spread
        bounds.append(variance + bias * bias)
    if estimator.tuning == "mse":
        best = int(np.argmin(bounds))  # the first (least biased) of equal bounds
    else:
        t = float(scipy.stats.t.ppf(1.0 - TUNING_DELTA, max(n - 1, 1)))
        width = [t * error for error in errors]
        order = sorted(range(len(grid)), key=lambda i: -width[i])  # stable: ties by grid
        best = order[0]
        accepted: list[int] = []
        for i in order:
            if any(abs(values[j] - values[i]) > width[i] + _SLOPE_C * width[j] for j in accepted):
                break
            accepted.append(i)
            best = i
    return Tuning(parameter, grid[best], estimator.tuning, grid)


_SLOPE_C = math.sqrt(6.0) - 1.0
"""SLOPE++'s constant (Tucker and Lee, 2021), as in Open Bandit Pipeline."""


def _direct(target: TargetProbabilities, rewards: RewardPredictions) -> FloatArray:
    """``(n,)`` the reward model's value of the target's distribution, row by row."""
    direct: FloatArray = np.einsum("ij,ij->i", target.probabilities, rewards.values)
    return direct


def _draw(probabilities: FloatArray, n_actions: IntArray, rng: np.random.Generator) -> IntArray:
    """One draw per row from each row's distribution (inverse CDF, vectorised)."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(size=(probabilities.shape[0], 1)) * cumulative[:, -1:]
    choice = (cumulative <= u).sum(axis=1)
    last = np.minimum(choice, n_actions - 1)
    drawn: IntArray = last.astype(np.int64)
    return drawn


def _check_same_logs(name: str, theirs: LoggedDecisions, logs: LoggedDecisions) -> None:
    """Raise unless `theirs` is `logs` or holds the same rows."""
    if theirs is logs:
        return
    if (theirs.n, theirs.width) != (logs.n, logs.width):
        msg = (
            f"`{name}` was built for {theirs.n} rows x {theirs.width} actions, but `logs` "
            f"has {logs.n} x {logs.width}: build it from these logs"
        )
        raise LogFormatError(msg)
    if not (
        np.array_equal(theirs.n_actions, logs.n_actions)
        and np.array_equal(theirs.chosen, logs.chosen)
    ):
        msg = f"`{name}` was built for other logs (their actions differ): build it from these logs"
        raise LogFormatError(msg)
