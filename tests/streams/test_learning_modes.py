"""Learning modes in the learner (real Redis): Apprentice learns and counts; LoggingOnly not.

And the switch recommendation on a simulated problem whose truth is known: it appears
only when the learned policy's lower bound beats the baseline action, as it should.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bandit.service.apprentice import MIN_EVENTS, ApprenticeMetrics, apprentice_terms
from bandit.service.state import StateStore
from bandit.wire.schemas import DeadLetter, PolicySettings, TrainingExample
from policies import Action, Policy, decide_ranking
from policies.baselines import FixedOrder
from streams.deadletter import RawRecord
from streams.learner import Learner
from streams.training import decode_training
from tests.streams.test_learner import SETTINGS, _example, _n_learned, _run, record_of

FLOOR = 0.1


def _apprentice_example(i: int, learned: list[float]) -> TrainingExample:
    """An apprentice decision: the baseline action's draw, the model's own probabilities."""
    example = _example(i, "r")
    decision = example.decision
    context = {"user": {"x": 1.0}}
    actions = [Action(action.id) for action in decision.actions]
    distribution = FixedOrder(floor=FLOOR).pmf(context, actions)
    choice = decide_ranking(distribution, decision.event_id)
    ranking = [
        {"id": actions[k].id, "probability": distribution.probabilities[k]} for k in choice.ranking
    ]
    changed = decision.model_validate(
        {
            **decision.model_dump(),
            "ranking": ranking,
            "chosen_action_id": actions[choice.index].id,
            "chosen_index": choice.index,
            "probability": choice.probability,
            "explored": choice.explored,
            "learning_mode": "Apprentice",
            "learned": learned,
        }
    )
    reward = 1.0 if choice.index == 2 else 0.25
    return example.model_copy(update={"decision": changed, "reward": reward})


def test_apprentice_decisions_are_learned_and_their_figures_add_up(redis_url: str) -> None:
    """Every apprentice record is learned; counters and sums are the terms' totals."""
    learned = [0.2, 0.1, 0.7]
    examples = [_apprentice_example(i, learned) for i in range(40)]

    async def body(store: StateStore) -> None:
        await store.set_policy_settings(
            "r", PolicySettings(spec="vw-epsilon", learning_mode="Apprentice")
        )
        learner = Learner(store, SETTINGS)
        await learner.process([record_of(0, i, e) for i, e in enumerate(examples)])
        assert await _n_learned(store, "r") == 40
        counters, sums = await store.counters("r"), await store.sums("r")
        metrics = ApprenticeMetrics.of(counters, sums, started_at=None, last_event_at=None)
        served_baseline = [e.decision.chosen_index == 0 for e in examples]
        assert metrics.events == 40
        assert metrics.baseline_events == sum(served_baseline)
        assert 0 < metrics.baseline_events < 40  # the floor explored the others
        assert metrics.imitated_events == 0  # the model prefers the third action
        assert metrics.rewards == pytest.approx(sum(e.reward for e in examples))
        assert metrics.baseline_rewards == pytest.approx(
            sum(e.reward for e, b in zip(examples, served_baseline, strict=True) if b)
        )
        expected = [
            apprentice_terms(
                reward=e.reward,
                probability=e.decision.probability,
                learned=learned,
                chosen=e.decision.chosen_index,
            ).sums["diff"]
            for e in examples
        ]
        assert metrics.difference == pytest.approx(sum(expected) / 40)
        # a batch seen again (a restart before the offsets moved on) counts nothing twice
        await Learner(store, SETTINGS).process([record_of(0, i, e) for i, e in enumerate(examples)])
        assert (await store.counters("r"))["apprentice.events"] == 40

    _run(redis_url, body)


def test_logging_only_decisions_are_never_learned_and_others_always_are(redis_url: str) -> None:
    """A decision made in LoggingOnly is logged, not learned; one made Online is learned."""

    def logging_only(i: int) -> TrainingExample:
        return _example(i, "r", learning_mode="LoggingOnly")

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("r", PolicySettings(spec="vw-epsilon"))
        learner = Learner(store, SETTINGS)
        await learner.process([record_of(0, i, _example(i, "r")) for i in range(8)])
        assert await _n_learned(store, "r") == 8
        await store.set_policy_settings(
            "r", PolicySettings(spec="vw-epsilon", learning_mode="LoggingOnly")
        )
        await learner.process([record_of(0, i, logging_only(i)) for i in range(8, 20)])
        saved = await store.load_model("r")
        assert saved is not None
        assert Policy.restore(saved.snapshot).n_learned == 8
        assert saved.offsets == {0: 19}  # the skipped records are behind the saved model
        assert (await store.counters("r"))["learn_logging_only"] == 12
        # decided Online before the switch, joined after it: learned all the same
        await learner.process([record_of(0, i, _example(i, "r")) for i in range(20, 25)])
        assert await _n_learned(store, "r") == 13

    _run(redis_url, body)


def _simulate(good: bool, n: int, seed: int) -> tuple[ApprenticeMetrics, float, float]:
    """Apprentice decisions on a problem whose truth is known; the figures and true values.

    Three actions; in context k (0, 1, 2) action k pays 0.8 and the others 0.2 (Bernoulli).
    The baseline action (the first) is right a third of the time: worth 0.4. A good
    learned policy puts 0.9 on the right action (worth 0.74); a bad one puts 0.9 on a
    wrong one that is not the baseline (worth 0.26).
    """
    rng = np.random.default_rng(seed)
    counters: dict[str, int] = {}
    sums: dict[str, float] = {}
    baseline = FixedOrder(floor=FLOOR)
    probabilities = baseline.pmf({}, [_A, _B, _C]).probabilities
    for _ in range(n):
        k = int(rng.integers(3))
        target = k if good else (2 if k == 1 else 1)
        learned = [0.05] * 3
        learned[target] = 0.9
        chosen = int(rng.choice(3, p=probabilities))
        reward = float(rng.random() < (0.8 if chosen == k else 0.2))
        terms = apprentice_terms(
            reward=reward, probability=probabilities[chosen], learned=learned, chosen=chosen
        )
        for name, amount in (
            ("events", terms.events),
            ("imitated_events", terms.imitated_events),
            ("baseline_events", terms.baseline_events),
        ):
            counters["apprentice." + name] = counters.get("apprentice." + name, 0) + amount
        for name, value in terms.sums.items():
            sums["apprentice." + name] = sums.get("apprentice." + name, 0.0) + value
    metrics = ApprenticeMetrics.of(counters, sums, started_at=None, last_event_at=None)
    truth_learned = 0.9 * 0.8 + 0.1 * 0.2 if good else 0.9 * 0.2 + 0.05 * 0.8 + 0.05 * 0.2
    return metrics, truth_learned, (0.8 + 0.2 + 0.2) / 3


_A, _B, _C = Action("a"), Action("b"), Action("c")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_switch_is_recommended_only_when_the_bound_beats_the_baseline(seed: int) -> None:
    """A better learned policy is recommended; a worse one never; the estimates are honest."""
    good, truth_good, truth_baseline = _simulate(good=True, n=6000, seed=seed)
    bad, truth_bad, _ = _simulate(good=False, n=6000, seed=seed)
    for metrics, truth in ((good, truth_good), (bad, truth_bad)):
        assert metrics.learned_value is not None
        assert metrics.baseline_value is not None
        assert metrics.difference is not None
        assert metrics.lower_bound is not None
        # within 4 standard errors of the truth (the bound's own width is ~2 of them)
        half_width = metrics.difference - metrics.lower_bound
        assert abs(metrics.difference - (truth - truth_baseline)) < 2.1 * half_width
    assert good.recommend_online
    assert good.lower_bound is not None
    assert good.lower_bound > 0
    assert not bad.recommend_online
    few, _, _ = _simulate(good=True, n=MIN_EVENTS // 2, seed=seed)
    assert not few.recommend_online  # not on too few decisions, whatever the bound


def test_the_lower_bound_is_the_normal_bound_of_the_mean_difference() -> None:
    """The bound is mean - 1.96 * sd / sqrt(n) of the terms, computed from the sums."""
    diffs = [0.5, -0.25, 1.0, 0.0, 0.75]
    counters = {"apprentice.events": len(diffs)}
    sums = {"apprentice.diff": sum(diffs), "apprentice.diff_sq": sum(d * d for d in diffs)}
    metrics = ApprenticeMetrics.of(counters, sums, started_at=None, last_event_at=None)
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    assert metrics.lower_bound == pytest.approx(mean - 1.959963984540054 * sd / math.sqrt(5))


@pytest.mark.parametrize(
    "learned",
    [[0.5, 0.5], [0.2, 0.2, 0.2], [0.0, "x", 1.0], {"a": 1.0}],
    ids=["short", "not-summing", "not-numbers", "not-a-list"],
)
def test_learned_probabilities_that_are_not_a_distribution_are_dead_lettered(
    learned: object,
) -> None:
    """The stream path checks what an Apprentice decision logged, naming the field."""
    example = _apprentice_example(1, [0.2, 0.1, 0.7])
    values = example.model_dump(mode="json")
    values["decision"]["learned"] = learned
    outcome = decode_training(RawRecord("t.training", 0, 0, b"k", json.dumps(values).encode()))
    assert isinstance(outcome, DeadLetter)
    assert "decision.learned" in outcome.reason
