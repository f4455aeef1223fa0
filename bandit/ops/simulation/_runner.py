"""Running several policies over the same rounds, and what came of it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import structlog

from bandit.errors import ConfigurationError, DatasetError
from bandit.ops.simulation._round import Environment
from policies import Policy, decide_ranking

__all__ = ["PolicyResult", "SimulationResult", "simulate"]

_log = structlog.get_logger("bandit.ops.simulation")

ProgressCallback = Callable[[int], None]
"""Called with the number of rounds completed so far, now and then and at the end."""


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """How one policy did over a simulation.

    Attributes
    ----------
    label
        The label the policy was run under (its spec, in the CLI).
    rounds
        Decisions made.
    mean_reward
        Mean observed reward.
    mean_expected_reward
        Mean true expected reward of the chosen actions (the observed reward without
        the noise of the draws).
    regret
        Mean over rounds of the oracle's expected reward minus the chosen action's.
    explored_share
        Share of decisions that did not take the policy's most probable action.
    decisions_per_second
        Rounds divided by the wall time spent in this policy's ``pmf``, draw and
        ``learn``.
    window_rewards
        Mean observed reward in consecutive windows of (nearly) equal length, first
        window first.
    """

    label: str
    rounds: int
    mean_reward: float
    mean_expected_reward: float
    regret: float
    explored_share: float
    decisions_per_second: float
    window_rewards: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Every policy's result over one sequence of rounds, with the reference points.

    Attributes
    ----------
    environment
        The environment's one-line description.
    rounds
        Rounds run.
    oracle_reward
        Mean expected reward of always choosing the best action (regret 0).
    uniform_reward
        Mean expected reward of choosing uniformly at random.
    policies
        One result per policy, in the order they were given.
    seconds
        Wall time of the whole run.
    """

    environment: str
    rounds: int
    oracle_reward: float
    uniform_reward: float
    policies: tuple[PolicyResult, ...]
    seconds: float

    def best(self) -> PolicyResult:
        """Return the policy with the lowest regret (the first on ties)."""
        return min(self.policies, key=lambda result: result.regret)

    def result(self, label: str) -> PolicyResult:
        """Return the result of the policy run under `label`.

        Raises
        ------
        KeyError
            If no policy ran under that label.
        """
        for result in self.policies:
            if result.label == label:
                return result
        raise KeyError(label)


def simulate(
    environment: Environment,
    policies: Mapping[str, Policy],
    rounds: int,
    *,
    windows: int = 10,
    progress: ProgressCallback | None = None,
) -> SimulationResult:
    """Run every policy over the same `rounds` rounds of `environment`.

    Each round is drawn once and shown to every policy in turn: the same context and
    actions, the same event id (so the same random number behind the draw), and the
    same reward for the same action. Each decision is drawn with
    :func:`policies.decide_ranking` from ``policy.pmf(context, actions)``, and the
    policy then learns the chosen action's reward with its logged probability.

    Parameters
    ----------
    environment
        Where the rounds come from.
    policies
        The policies by label; they learn as they go, so pass fresh ones for a fair
        comparison.
    rounds
        How many rounds, at least 1.
    windows
        How many consecutive windows to report the mean reward of, at least 1 (at
        most `rounds` are used).
    progress
        Called with the number of rounds done so far, about 200 times a run.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ConfigurationError
        If `rounds` or `windows` is below 1, or `policies` is empty.

    Examples
    --------
    >>> from bandit.service.logging import configure_logging
    >>> from bandit.ops.simulation import DigitsEnvironment
    >>> from policies import make_policy
    >>> configure_logging("json")  # the "simulation.finished" line goes to standard error
    >>> result = simulate(DigitsEnvironment(seed=1), {"uniform": make_policy("uniform")}, 50)
    >>> result.oracle_reward, result.result("uniform").rounds
    (1.0, 50)
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        msg = f"`rounds` must be an integer >= 1, got {rounds!r}"
        raise ConfigurationError(msg)
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        msg = f"`windows` must be an integer >= 1, got {windows!r}"
        raise ConfigurationError(msg)
    if not policies:
        msg = "`policies` must hold at least one policy, got none"
        raise ConfigurationError(msg)

    labels = list(policies)
    rewards = np.zeros((len(labels), rounds))
    expected = np.zeros((len(labels), rounds))
    explored = np.zeros((len(labels), rounds), dtype=bool)
    busy = [0.0] * len(labels)
    best = np.zeros(rounds)
    average = np.zeros(rounds)
    report_every = max(1, rounds // 200)
    started = time.perf_counter()
    done = 0
    for t, round_ in enumerate(environment.rounds(rounds)):
        if t >= rounds:  # pragma: no cover - an environment that overruns is a bug
            break
        best[t] = round_.best_expected
        average[t] = math.fsum(round_.expected) / len(round_.expected)
        for k, label in enumerate(labels):
            policy = policies[label]
            tick = time.perf_counter()
            choice = decide_ranking(policy.pmf(round_.context, round_.actions), round_.event_id)
            reward = round_.reward(choice.index)
            policy.learn(round_.context, round_.actions, choice.index, reward, choice.probability)
            busy[k] += time.perf_counter() - tick
            rewards[k, t] = reward
            expected[k, t] = round_.expected[choice.index]
            explored[k, t] = choice.explored
        done = t + 1
        if progress is not None and (done % report_every == 0 or done == rounds):
            progress(done)
    if done != rounds:
        msg = f"environment {environment.name!r} yielded {done} rounds, {rounds} were asked"
        raise DatasetError(msg)
    seconds = time.perf_counter() - started

    n_windows = min(windows, rounds)
    results = tuple(
        PolicyResult(
            label=label,
            rounds=rounds,
            mean_reward=float(rewards[k].mean()),
            mean_expected_reward=float(expected[k].mean()),
            regret=float((best - expected[k]).mean()),
            explored_share=float(explored[k].mean()),
            decisions_per_second=rounds / max(busy[k], 1e-9),
            window_rewards=tuple(
                float(chunk.mean()) for chunk in np.array_split(rewards[k], n_windows)
            ),
        )
        for k, label in enumerate(labels)
    )
    result = SimulationResult(
        environment=environment.description,
        rounds=rounds,
        oracle_reward=float(best.mean()),
        uniform_reward=float(average.mean()),
        policies=results,
        seconds=seconds,
    )
    _log.info(
        "simulation.finished",
        environment=environment.name,
        rounds=rounds,
        seconds=round(seconds, 3),
        oracle_reward=round(result.oracle_reward, 4),
        uniform_reward=round(result.uniform_reward, 4),
        best=result.best().label,
        policies={
            r.label: {"mean_reward": round(r.mean_reward, 4), "regret": round(r.regret, 4)}
            for r in results
        },
    )
    return result
