"""Differential privacy: the noise matches ε, the debiased estimates are unbiased.

Randomised response and the Laplace mechanism are checked against their definitions
on many seeded draws; the debiased rewards are checked for unbiasedness on simulated
data where the truth is known (their mean, an IPS replay's coverage, a policy learning
from them); the budget ledger and the API's channel run on the real Redis and broker.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid

import httpx
import numpy as np
import pytest
from redis.asyncio import Redis

from bandit.api import create_app
from bandit.dp import BudgetExhaustedError, PrivacyLedger, RandomisedResponse, laplace
from bandit.schemas import RewardReported
from bandit.settings import (
    ApiKey,
    ApiSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from policies import Action, make_policy
from replay import IPS, TrustedDecisions, TargetProbabilities
from tests.bandit.test_api import _consume

APP_KEY = "app-key-dp-0123456789abc"
ADMIN_KEY = "admin-key-dp-0123456789a"


@pytest.mark.parametrize("epsilon", [0.25, 1.0, 3.0])
def test_randomised_response_lies_as_often_as_epsilon_says(epsilon: float) -> None:
    """The reported bit differs from the true one with probability 1 / (1 + e^ε)."""
    rr = RandomisedResponse(epsilon)
    rng = random.Random(7)
    n = 100_000
    flips = sum(rr.privatise(1, rng) == 0 for _ in range(n)) + sum(
        rr.privatise(0, rng) == 1 for _ in range(n)
    )
    expected = 1.0 / (1.0 + math.exp(epsilon))
    sd = math.sqrt(expected * (1 - expected) / (2 * n))
    assert abs(flips / (2 * n) - expected) < 4 * sd
    # the likelihood ratio of any report is bounded by e^ε: ε-local DP
    p = rr.truth_probability
    assert p / (1 - p) == pytest.approx(math.exp(epsilon))


@pytest.mark.parametrize(("epsilon", "rate"), [(0.5, 0.3), (1.0, 0.05), (2.0, 0.8)])
def test_debiased_rewards_are_unbiased(epsilon: float, rate: float) -> None:
    """The mean of debiased reports is the true reward rate, within its standard error."""
    rr = RandomisedResponse(epsilon)
    rng = random.Random(11)
    n = 100_000
    truth = [int(rng.random() < rate) for _ in range(n)]
    debiased = [rr.debias(rr.privatise(bit, rng)) for bit in truth]
    mean = math.fsum(debiased) / n
    p = rr.truth_probability
    variance = p * (1 - p) / (2 * p - 1) ** 2 + rate * (1 - rate)  # per report, in theory
    se = math.sqrt(variance / n)
    assert abs(mean - rate) < 4 * se
    empirical = math.fsum((d - mean) ** 2 for d in debiased) / (n - 1)
    assert empirical == pytest.approx(variance, rel=0.05)


def test_replay_on_debiased_rewards_covers_the_true_value() -> None:
    """IPS on logs whose rewards went through randomised response: 95% CIs cover the truth."""
    rr = RandomisedResponse(1.0)
    means = np.array([0.2, 0.5, 0.7])
    covered, estimates = 0, []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        n = 3000
        chosen = rng.integers(0, 3, n)  # uniform logging
        clicks = rng.random(n) < means[chosen]
        truthful = rng.random(n) < rr.truth_probability
        reported = np.where(truthful, clicks, ~clicks).astype(float)
        debiased = (reported - (1 - rr.truth_probability)) / (2 * rr.truth_probability - 1)
        logs = TrustedDecisions(
            n_actions=np.full(n, 3), chosen=chosen, propensity=np.full(n, 1 / 3), reward=debiased
        )
        target = TargetProbabilities(logs, np.tile([0.0, 0.0, 1.0], (n, 1)))  # true value 0.7
        estimate = IPS().estimate(logs, target)
        estimates.append(estimate.value)
        covered += estimate.ci.low <= 0.7 <= estimate.ci.high
    assert covered >= 88  # 95% intervals, 100 runs
    assert abs(float(np.mean(estimates)) - 0.7) < 0.01  # no bias beyond noise


def test_a_policy_learning_from_debiased_rewards_finds_the_best_action() -> None:
    """VW learns the better action from randomised-response rewards, debiased."""
    rr = RandomisedResponse(1.0)
    policy = make_policy("vw-epsilon")
    actions = [Action("poor", {"item": {"q": "low"}}), Action("good", {"item": {"q": "high"}})]
    rng = random.Random(5)
    for _ in range(4000):
        chosen = rng.randrange(2)
        clicked = int(rng.random() < (0.2, 0.6)[chosen])
        policy.learn({}, actions, chosen, rr.debias(rr.privatise(clicked, rng)), 0.5)
    assert policy.pmf({}, actions).argmax() == 1


def test_laplace_noise_has_the_scale_epsilon_calls_for() -> None:
    """Noise of scale sensitivity/ε: mean 0, mean absolute value the scale, variance 2b²."""
    rng = random.Random(3)
    n = 200_000
    noise = [laplace(0.0, sensitivity=1.0, epsilon=0.5, rng=rng) for _ in range(n)]
    scale = 2.0
    assert abs(math.fsum(noise) / n) < 4 * math.sqrt(2 * scale**2 / n)
    assert math.fsum(abs(x) for x in noise) / n == pytest.approx(scale, rel=0.02)
    assert math.fsum(x * x for x in noise) / n == pytest.approx(2 * scale**2, rel=0.03)
    tail = sum(abs(x) > 3 * scale for x in noise) / n  # P(|X| > t) = exp(-t / b)
    assert tail == pytest.approx(math.exp(-3), rel=0.1)


def test_the_ledger_refuses_releases_past_the_budget(redis_url: str) -> None:
    """Releases spend ε until the budget is gone; then they are refused, and listed."""

    async def run() -> tuple[list[float], list[dict[str, object]]]:
        redis = Redis.from_url(redis_url)
        try:
            ledger = PrivacyLedger(redis, f"l{uuid.uuid4().hex[:8]}", budget=1.0)
            left = [await ledger.spend(0.4, "reward_rate"), await ledger.spend(0.4, "consent")]
            with pytest.raises(BudgetExhaustedError, match=r"0\.2 of 1 left"):
                await ledger.spend(0.4, "one too many")
            left.append(await ledger.spend(0.2, "the rest"))
            return left, await ledger.entries()
        finally:
            await redis.aclose()

    left, entries = asyncio.run(run())
    assert left == pytest.approx([0.6, 0.2, 0.0])
    assert [entry["what"] for entry in entries] == ["reward_rate", "consent", "the rest"]


def test_the_api_debiases_ldp_rewards_and_releases_noisy_reports(
    broker: str, redis_url: str
) -> None:
    """A randomised bit is learned as its debiased value; reports spend the budget."""
    prefix = f"d{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(ApiKey(key=APP_KEY, role="app"), ApiKey(key=ADMIN_KEY, role="admin"))
        ),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-dp-tests-0123", report_budget=1.0),
        policies={"default": "vw-epsilon"},
    )
    rr = RandomisedResponse(1.0)

    async def run() -> list[bytes]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                app_headers, admin = {"X-API-Key": APP_KEY}, {"X-API-Key": ADMIN_KEY}
                for bit in (0, 1):
                    sent = await http.post(
                        "/v1/reward",
                        json={"event_id": f"dp-{bit}", "reward": bit, "ldp_epsilon": 1.0},
                        headers=app_headers,
                    )
                    assert sent.status_code == 202, sent.text
                bad = await http.post(
                    "/v1/reward",
                    json={"event_id": "dp-x", "reward": 0.5, "ldp_epsilon": 1.0},
                    headers=app_headers,
                )
                assert bad.status_code == 422
                assert bad.json()["detail"][0]["loc"] == ["body", "reward"]
                tiny = await http.post(  # an ε this small would scale one bit past any reward
                    "/v1/reward",
                    json={"event_id": "dp-y", "reward": 1, "ldp_epsilon": 1e-12},
                    headers=app_headers,
                )
                assert tiny.status_code == 422
                assert "ldp_epsilon" in tiny.text
                request = {"metric": "reward_rate", "policy": "default", "epsilon": 0.4}
                refused = await http.post("/v1/privacy/reports", json=request, headers=app_headers)
                assert refused.status_code == 403
                first = await http.post("/v1/privacy/reports", json=request, headers=admin)
                assert first.status_code == 200, first.text
                report = first.json()
                assert 0.0 <= report["value"] <= 1.0
                assert report["noise_scale"] == pytest.approx(5.0)  # 1 / (0.4 / 2)
                assert report["budget_left"] == pytest.approx(0.6)
                second = await http.post("/v1/privacy/reports", json=request, headers=admin)
                assert second.json()["budget_left"] == pytest.approx(0.2)
                spent = await http.post("/v1/privacy/reports", json=request, headers=admin)
                assert spent.status_code == 409
                assert "privacy budget" in spent.text
                ledger = (await http.get("/v1/privacy/ledger", headers=admin)).json()
                assert ledger["spent"] == pytest.approx(0.8)
                assert len(ledger["releases"]) == 2
        return await _consume(broker, f"{prefix}.rewards", {"dp-0", "dp-1"})

    records = [RewardReported.model_validate_json(raw) for raw in asyncio.run(run())]
    learned = {record.event_id: record for record in records}
    assert learned["dp-1"].reward == pytest.approx(rr.debias(1))
    assert learned["dp-0"].reward == pytest.approx(rr.debias(0))
    assert learned["dp-0"].ldp_epsilon == 1.0
