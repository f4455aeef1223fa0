"""Differential privacy: a local-DP reward channel and noisy aggregate reports.

Randomised response (local DP)
    A binary reward (clicked or not) can leave the app already privatised:
    :class:`RandomisedResponse` reports the true bit with probability
    ``p = e^ε / (1 + e^ε)`` and the other bit otherwise, so no single report says
    much about what the person did (ε-local differential privacy). The app must
    report every decision this way, not only clicks: a missing report would say "no
    click". The API turns each report into the unbiased estimate
    ``(y - (1 - p)) / (2p - 1)`` of the true reward (its expectation is the true
    reward), and the join, the learner and replay use that value as they would any
    reward: averages over many decisions come out right, one decision tells little.
Aggregate reports (central DP)
    Reward and consent rates released outside the service carry Laplace noise of
    scale ``sensitivity / ε`` (:func:`laplace`) on each count, and each release spends
    its ε from a privacy budget kept in Redis (:class:`PrivacyLedger`); once the budget
    is spent, releases are refused.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from bandit.errors import BudgetExhaustedError

__all__ = ["BudgetExhaustedError", "PrivacyLedger", "RandomisedResponse", "laplace"]


@dataclass(frozen=True, slots=True)
class RandomisedResponse:
    """Randomised response on one bit, with privacy parameter `epsilon`.

    Examples
    --------
    >>> rr = RandomisedResponse(math.log(3))   # tell the truth 3 times in 4
    >>> round(rr.truth_probability, 6), rr.debias(1), rr.debias(0)
    (0.75, 1.5, -0.5)
    """

    epsilon: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            msg = f"`epsilon` must be finite and > 0, got {self.epsilon!r}"
            raise ValueError(msg)

    @property
    def truth_probability(self) -> float:
        """Probability that the reported bit is the true one: ``e^ε / (1 + e^ε)``."""
        return 1.0 / (1.0 + math.exp(-self.epsilon))

    def privatise(self, bit: int, rng: random.Random | None = None) -> int:
        """Return the bit to report for the true `bit` (0 or 1)."""
        if bit not in (0, 1):
            msg = f"randomised response reports 0 or 1, got {bit!r}"
            raise ValueError(msg)
        draw = (rng or _SYSTEM).random()
        return bit if draw < self.truth_probability else 1 - bit

    def debias(self, reported: int) -> float:
        """Return the unbiased estimate of the true bit from one reported bit."""
        p = self.truth_probability
        return (reported - (1.0 - p)) / (2.0 * p - 1.0)


_SYSTEM = random.SystemRandom()


def laplace(
    value: float, *, sensitivity: float, epsilon: float, rng: random.Random | None = None
) -> float:
    """Return `value` plus Laplace noise of scale ``sensitivity / epsilon``.

    Examples
    --------
    >>> noisy = laplace(100.0, sensitivity=1.0, epsilon=1.0, rng=random.Random(1))
    >>> round(noisy, 3)
    98.686
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        msg = f"`epsilon` must be finite and > 0, got {epsilon!r}"
        raise ValueError(msg)
    scale = sensitivity / epsilon
    u = (rng or _SYSTEM).random() - 0.5
    return value - scale * math.copysign(1.0, u) * math.log(1.0 - 2.0 * abs(u))


_SPEND = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local budget = tonumber(ARGV[1])
local epsilon = tonumber(ARGV[2])
if spent + epsilon > budget + 1e-12 then
  return {0, tostring(spent)}
end
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return {1, tostring(spent + epsilon)}
"""


class PrivacyLedger:
    """The privacy budget of aggregate releases, kept in Redis.

    Each release names what it released and the ε it spent; a release that would take
    the total past `budget` is refused, atomically (one Lua script).
    """

    def __init__(self, redis: Redis, prefix: str, budget: float) -> None:
        self.redis = redis
        self.budget = budget
        self._totals = f"{prefix}:privacy:budget"
        self._entries = f"{prefix}:privacy:ledger"

    async def spend(self, epsilon: float, what: str) -> float:
        """Spend `epsilon` on `what`; return the budget left.

        Raises
        ------
        BudgetExhaustedError
            If less than `epsilon` is left.
        """
        entry = orjson.dumps({"what": what, "epsilon": epsilon, "at": time.time()})
        ok, spent = await self.redis.eval(
            _SPEND, 2, self._totals, self._entries, repr(self.budget), repr(epsilon), entry
        )
        if not int(ok):
            left = self.budget - float(spent)
            msg = (
                f"the privacy budget has {max(left, 0.0):.4g} of {self.budget:g} left; "
                f"this release needs {epsilon:g} (settings.privacy.report_budget)"
            )
            raise BudgetExhaustedError(msg)
        return self.budget - float(spent)

    async def entries(self) -> list[dict[str, object]]:
        """Return every release so far, oldest first."""
        return [orjson.loads(raw) for raw in await self.redis.lrange(self._entries, 0, -1)]
