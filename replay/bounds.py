"""Concentration bounds: fixed-sample confidence intervals that never leave a known range.

The normal interval of a mean is symmetric and can leave the range its terms live in
(below 0 on a few dozen clicks); the intervals here hold at their nominal level for any
sample size, given bounds on the terms:

- :func:`bernstein_interval`: the empirical-Bernstein bound of Maurer and Pontil,
  *Empirical Bernstein Bounds and Sample Variance Penalization*, COLT 2009, Theorem 4,
  for terms in a known ``[low, high]``;
- :func:`betting_interval`: the hedged capital process of Waudby-Smith and Ramdas,
  *Estimating means of bounded random variables by betting*, JRSS-B 2023, with their
  predictable plug-in bets tuned to the sample size, for terms in ``[low, high]``;
- :func:`off_policy_betting_interval`: the same bets on importance-weighted rewards, as
  in Karampatziakis, Mineiro and Ramdas, *Off-policy Confidence Sequences*, ICML 2021:
  it uses only that the weights are >= 0 with mean 1 (correct propensities, full
  support), not how large they are, so no largest weight enters it.

Each two-sided interval at level ``1 - alpha`` is two one-sided bounds at ``alpha / 2``.
The betting bounds find where a monotone wealth crosses ``2 / alpha`` with Brent's
method, each wealth a vectorised pass over the rows in chunks.
Anytime-valid sequences for live evaluation live in :mod:`replay.sequential`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize

from policies.errors import ConfigurationError
from replay._data import FloatArray

__all__ = [
    "bernstein_interval",
    "betting_interval",
    "infer_reward_range",
    "off_policy_betting_interval",
]

BET_CAP = 0.5
"""A bet against mean ``m`` stakes at most this share of the wealth (WSR's ``c``)."""

TOLERANCE = 1e-10
"""Root-search error allowed on the ``[0, 1]`` scale (the bound is moved down by it)."""

CHUNK = 2**18
"""Rows evaluated at once by the betting bounds."""


def infer_reward_range(rewards: FloatArray) -> tuple[tuple[float, float], bool]:
    """Return the reward range to assume when none is given, and whether it is only the log's.

    Rewards within ``[0, 1]`` (clicks, conversions, Personalizer-style scores) give
    ``[0, 1]``, the range such services document. Otherwise the smallest and largest
    logged reward are used: that is not a guarantee (a larger reward may simply not have
    been logged), so the second value is True and callers should say so.

    Examples
    --------
    >>> infer_reward_range(np.array([0.0, 1.0, 1.0]))
    ((0.0, 1.0), False)
    >>> infer_reward_range(np.array([2.0, 5.0, 3.5]))
    ((2.0, 5.0), True)
    """
    if rewards.size == 0:
        return (0.0, 1.0), False
    low, high = float(np.min(rewards)), float(np.max(rewards))
    if low >= 0.0 and high <= 1.0:
        return (0.0, 1.0), False
    return (low, high), True


def bernstein_interval(
    values: FloatArray, low: float, high: float, level: float
) -> tuple[float, float]:
    """Empirical-Bernstein interval for the mean of terms in ``[low, high]``.

    Maurer and Pontil (2009), Theorem 4, on ``z = (x - low) / (high - low)`` with
    ``delta = alpha / 2`` each side: the mean is within
    ``sqrt(2 V log(2 / delta) / n) + 7 log(2 / delta) / (3 (n - 1))`` of the sample mean,
    ``V`` the sample variance. Needs n >= 2; clipped to ``[low, high]``.

    Parameters
    ----------
    values
        ``(n,)`` the terms, all in ``[low, high]``.
    low, high
        Bounds on every term (also on terms not observed), ``low <= high``.
    level
        Nominal coverage, in (0, 1).

    Returns
    -------
    tuple of float
        ``(lower, upper)``; ``(low, high)`` when n < 2.

    Examples
    --------
    >>> clicks = np.array([1.0, 0, 0, 1, 0, 0, 0, 1, 0, 0] * 10)  # 30 clicks in 100
    >>> [round(b, 3) for b in bernstein_interval(clicks, 0.0, 1.0, 0.95)]
    [0.06, 0.54]
    """
    _check_terms(values, low, high)
    n = values.size
    if n < 2 or high == low:
        return (low, high) if high > low else (low, low)
    span = high - low
    z = (values - low) / span
    log_term = math.log(4.0 / (1.0 - level))
    variance = float(np.var(z, ddof=1))
    half = math.sqrt(2.0 * variance * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))
    centre = float(np.mean(z))
    return low + span * max(0.0, centre - half), low + span * min(1.0, centre + half)


def betting_interval(
    values: FloatArray, low: float, high: float, level: float
) -> tuple[float, float]:
    """Betting interval for the mean of terms in ``[low, high]`` (Waudby-Smith and Ramdas).

    For each candidate mean ``m`` of ``z = (x - low) / (high - low)``, a gambler who
    bets that the mean exceeds ``m`` grows ``prod_i (1 + l_i (z_i - m))`` and one who
    bets it falls short grows ``prod_i (1 - l_i (z_i - m))``; under the true mean both
    are nonnegative martingales, so neither reaches ``2 / alpha`` with probability more
    than ``alpha / 2`` (the hedged capital process with equal shares). The interval is
    the set of means neither gambler rejects. The bets ``l_i`` are WSR's predictable
    plug-in for a fixed n, ``sqrt(2 log(2 / alpha) / (n s_{i-1}^2))`` from the running
    variance of the earlier terms, capped at :data:`BET_CAP` over the room left on
    their side. Terms are taken in the order given.

    Parameters
    ----------
    values
        ``(n,)`` the terms, all in ``[low, high]``, independent (or a martingale
        difference sequence around a common mean).
    low, high
        Bounds on every term, ``low <= high``.
    level
        Nominal coverage, in (0, 1).

    Returns
    -------
    tuple of float
        ``(lower, upper)`` within ``[low, high]``.

    Examples
    --------
    >>> clicks = np.array([1.0, 0, 0, 1, 0, 0, 0, 1, 0, 0] * 10)  # 30 clicks in 100
    >>> [round(b, 3) for b in betting_interval(clicks, 0.0, 1.0, 0.95)]
    [0.187, 0.435]
    >>> few = np.zeros(30)
    >>> few[[3, 17]] = 1.0  # 2 clicks in 30: the normal interval starts at -0.024
    >>> [round(b, 3) for b in betting_interval(few, 0.0, 1.0, 0.95)]
    [0.0, 0.284]
    """
    _check_terms(values, low, high)
    if high == low:
        return low, low
    span = high - low
    z = (values - low) / span
    lower, lower_of_rest = _lower_bounds(np.stack([z, 1.0 - z], axis=1), 1.0 - level)
    return low + span * lower, low + span * (1.0 - lower_of_rest)


def off_policy_betting_interval(
    weights: FloatArray, rewards: FloatArray, low: float, high: float, level: float
) -> tuple[float, float]:
    """Betting interval for a target policy's value from importance-weighted rewards.

    With rewards ``r`` in ``[low, high]`` scaled to ``u = (r - low) / (high - low)`` and
    importance weights ``w >= 0`` whose mean is 1 (the logged propensities are right
    and the logger covers the target), the scaled value is ``E[w u]`` and one minus it
    is ``E[w (1 - u)]``, both means of nonnegative terms. Betting on each from below
    (as in :func:`betting_interval`, with the bets capped by the room below ``m`` only)
    bounds the value on both sides without any bound on the weights: Karampatziakis,
    Mineiro and Ramdas, *Off-policy Confidence Sequences*, ICML 2021, in its
    fixed-sample form. The interval is within ``[low, high]``; it is empty (None) only
    when the weights contradict a mean of 1.

    Parameters
    ----------
    weights
        ``(n,)`` importance weights, >= 0.
    rewards
        ``(n,)`` rewards in ``[low, high]``.
    low, high
        The reward range, ``low <= high``.
    level
        Nominal coverage, in (0, 1).

    Returns
    -------
    tuple of float
        ``(lower, upper)``; ``lower > upper`` when the weights contradict a mean of 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> chosen = rng.integers(0, 2, 200)  # uniform logging over two actions
    >>> reward = rng.binomial(1, np.where(chosen == 0, 0.3, 0.6)).astype(float)
    >>> weights = np.where(chosen == 0, 2.0, 0.0)  # always action 0: value 0.3
    >>> [round(b, 3) for b in off_policy_betting_interval(weights, reward, 0.0, 1.0, 0.95)]
    [0.177, 0.566]
    """
    if weights.shape != rewards.shape or weights.ndim != 1:
        msg = (
            "`weights` and `rewards` must be (n,) arrays alike, got "
            f"{weights.shape} and {rewards.shape}"
        )
        raise ConfigurationError(msg)
    if weights.size and not (np.all(np.isfinite(weights)) and float(np.min(weights)) >= 0.0):
        msg = f"`weights` must be finite and >= 0, got a minimum of {float(np.min(weights))!r}"
        raise ConfigurationError(msg)
    _check_terms(rewards, low, high)
    if high == low:
        return low, low
    span = high - low
    u = (rewards - low) / span
    lower, lower_of_rest = _lower_bounds(
        np.stack([weights * u, weights * (1.0 - u)], axis=1), 1.0 - level
    )
    return low + span * lower, low + span * (1.0 - lower_of_rest)


def _check_terms(values: FloatArray, low: float, high: float) -> None:
    """Refuse bounds that are not finite and ordered, or terms outside them."""
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        msg = f"the bounds must be finite with low <= high, got [{low!r}, {high!r}]"
        raise ConfigurationError(msg)
    if values.ndim != 1:
        msg = f"the terms must be an (n,) array, got shape {values.shape}"
        raise ConfigurationError(msg)
    if values.size:
        smallest, largest = float(np.min(values)), float(np.max(values))
        slack = 1e-9 * max(1.0, abs(low), abs(high))
        if not (smallest >= low - slack and largest <= high + slack):
            msg = (
                f"every term must be in [{low:.6g}, {high:.6g}], got terms from "
                f"{smallest:.6g} to {largest:.6g}"
            )
            raise ConfigurationError(msg)


def _lower_bounds(columns: FloatArray, alpha: float) -> tuple[float, ...]:
    """One-sided lower bounds at ``alpha / 2``, in ``[0, 1]``, for nonnegative columns.

    For a column ``x >= 0`` and a candidate mean ``m`` in ``[0, 1]``, the wealth is
    ``prod_i (1 + min(l_i, BET_CAP / m) (x_i - m))``. Each factor is positive
    (``>= 1 - BET_CAP``) and decreasing in ``m`` (for ``x_i >= m`` the minimum of two
    decreasing functions, for ``x_i < m`` the maximum of two), so the means rejected
    (wealth ``>= 2 / alpha``) form an interval ``[0, m*)``. Brent's method
    (:func:`scipy.optimize.brentq`, a handful of passes over the rows) finds ``m*``; the
    bound returned is moved down by brentq's stated error, so it never exceeds ``m*``.
    """
    n, k = columns.shape
    threshold = math.log(2.0 / alpha)
    if n == 0:
        return tuple(0.0 for _ in range(k))
    bets = _plug_in_bets(columns, threshold)
    bounds = []
    for j in range(k):
        column, bet = columns[:, j], bets[:, j]

        def excess(mean: float, column: FloatArray = column, bet: FloatArray = bet) -> float:
            return _log_wealth(column, bet, mean) - threshold

        if excess(0.0) < 0.0:
            bounds.append(0.0)  # not even a mean of 0 is rejected
        elif excess(1.0) >= 0.0:
            bounds.append(1.0)  # every mean in [0, 1] is rejected
        else:
            root = float(scipy.optimize.brentq(excess, 0.0, 1.0, xtol=TOLERANCE))
            error = TOLERANCE + 4.0 * float(np.finfo(np.float64).eps) * abs(root)
            bounds.append(max(0.0, root - error))
    return tuple(bounds)


def _plug_in_bets(columns: FloatArray, threshold: float) -> FloatArray:
    """WSR's predictable plug-in bets for a fixed n, from the earlier rows only.

    ``mu_t = (1/2 + sum_{i<=t} x_i) / (t + 1)``, ``s_t^2 = (1/4 + sum_{i<=t} (x_i -
    mu_i)^2) / (t + 1)``, and row t bets ``sqrt(2 log(2 / alpha) / (n s_{t-1}^2))``.
    """
    n = columns.shape[0]
    steps = np.arange(1, n + 1, dtype=np.float64)[:, None]
    means = (0.5 + np.cumsum(columns, axis=0)) / (steps + 1.0)
    variances = (0.25 + np.cumsum((columns - means) ** 2, axis=0)) / (steps + 1.0)
    earlier = np.vstack([np.full((1, columns.shape[1]), 0.25), variances[:-1]])
    bets: FloatArray = np.sqrt(2.0 * threshold / (n * earlier))
    return bets


def _log_wealth(column: FloatArray, bets: FloatArray, mean: float) -> float:
    """Return a column's log wealth against the candidate `mean`, in row chunks."""
    cap = BET_CAP / mean if mean > 0.0 else math.inf
    total = 0.0
    for start in range(0, column.size, CHUNK):
        stake = np.minimum(bets[start : start + CHUNK], cap)
        total += float(np.sum(np.log1p(stake * (column[start : start + CHUNK] - mean))))
    return total
