"""The estimator base class: a subclass writes only its per-row terms and gets the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest

from bandit.errors import ConfigurationError, LogFormatError
from replay import (
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimator,
    Intervals,
    LoggedDecisions,
    ReplayMethod,
    RewardPredictions,
    SwitchDR,
    TargetProbabilities,
)
from replay.estimators import Terms
from replay.report import ESTIMATORS, needs_rewards

SETTINGS = Intervals(n_bootstrap=50)
DEFAULT = Intervals()


@dataclass(frozen=True, slots=True)
class Doubled(Estimator):
    """IPS of twice the reward; counts the calls of its hook."""

    intervals: Intervals = SETTINGS
    calls: list[int] = field(default_factory=list)

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        self.calls.append(logs.n)
        weights = target.weights()
        return Terms(weights=weights, a=2.0 * weights * logs.reward)


@dataclass(frozen=True, slots=True)
class Corrected(Estimator):
    """A direct part only: needs reward predictions."""

    needs_rewards: ClassVar[bool] = True
    intervals: Intervals = DEFAULT

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        assert rewards is not None
        return Terms(weights=target.weights(), a=rewards.at_chosen())


@dataclass(frozen=True, slots=True)
class Short(Estimator):
    """A broken hook: one term for the whole log."""

    intervals: Intervals = DEFAULT

    def _terms(
        self,
        logs: LoggedDecisions,
        target: TargetProbabilities,
        rewards: RewardPredictions | None,
        rng: np.random.Generator,
    ) -> Terms:
        return Terms(weights=target.weights(), a=np.array([1.0]))


def _logs(n: int, seed: int = 0) -> LoggedDecisions:
    rng = np.random.default_rng(seed)
    return LoggedDecisions(
        n_actions=np.full(n, 3),
        chosen=rng.integers(0, 3, n),
        propensity=np.full(n, 1 / 3),
        reward=rng.binomial(1, 0.4, n).astype(float),
    )


def _target(logs: LoggedDecisions) -> TargetProbabilities:
    return TargetProbabilities(logs, np.tile([0.6, 0.3, 0.1], (logs.n, 1)))


def test_a_subclass_gets_the_input_checks_before_its_hook_runs() -> None:
    """Empty logs, and a target or predictions built for other logs, never reach the hook."""
    logs, other = _logs(50), _logs(60, seed=1)
    empty = LoggedDecisions(
        n_actions=np.zeros(0, int),
        chosen=np.zeros(0, int),
        propensity=np.zeros(0),
        reward=np.zeros(0),
    )
    doubled = Doubled()
    with pytest.raises(LogFormatError, match="Doubled needs at least one logged decision"):
        doubled.estimate(empty, TargetProbabilities(empty, np.zeros((0, 0))))
    with pytest.raises(LogFormatError, match=r"`target` was built for 60 rows x 3 actions"):
        doubled.estimate(logs, _target(other))
    with pytest.raises(LogFormatError, match=r"`rewards` was built for 60 rows x 3 actions"):
        doubled.estimate(logs, _target(logs), rewards=RewardPredictions.constant(other, 0.5))
    assert doubled.calls == []
    doubled.estimate(logs, _target(logs))
    assert doubled.calls == [50]


def test_a_subclass_that_needs_rewards_says_so_when_they_are_missing() -> None:
    """needs_rewards makes estimate() refuse a call without predictions, naming the class."""
    logs = _logs(20)
    with pytest.raises(ConfigurationError, match=r"Corrected needs `rewards`: pass "):
        Corrected().estimate(logs, _target(logs))
    estimate = Corrected().estimate(
        logs, _target(logs), rewards=RewardPredictions.constant(logs, 0.25)
    )
    assert estimate.value == pytest.approx(0.25)
    assert not Doubled.needs_rewards


def test_a_subclass_gets_the_intervals_check_on_construction() -> None:
    """A subclass's `intervals` field is checked by the base class's __post_init__."""
    with pytest.raises(ConfigurationError, match=r"`intervals` must be an Intervals, got 0.9"):
        Doubled(intervals=0.9)  # type: ignore[arg-type]


def test_a_subclass_gets_intervals_and_diagnostics_from_its_terms() -> None:
    """The hook's terms become the value, both intervals and the weight diagnostics."""
    logs = _logs(400)
    target = _target(logs)
    settings = SETTINGS
    ips = IPS(settings).estimate(logs, target)
    doubled = Doubled(settings).estimate(logs, target)
    assert doubled.estimator == "Doubled"
    assert doubled.value == pytest.approx(2 * ips.value)
    assert doubled.std_error == pytest.approx(2 * ips.std_error)
    assert ips.bootstrap_ci is not None
    assert doubled.bootstrap_ci is not None
    assert doubled.bootstrap_ci.low == pytest.approx(2 * ips.bootstrap_ci.low)
    assert doubled.diagnostics == ips.diagnostics


def test_terms_that_are_not_one_per_row_are_refused() -> None:
    """A hook returning the wrong number of terms is an error, not a silently wrong value."""
    logs = _logs(5)
    with pytest.raises(
        ConfigurationError,
        match=r"Short._terms must return one value per row: "
        r"`a` has shape \(1,\), the log has 5 rows",
    ):
        Short().estimate(logs, _target(logs))


def test_a_subclass_without_the_hook_cannot_be_built() -> None:
    """The hook is abstract: forgetting it fails at construction."""

    @dataclass(frozen=True, slots=True)
    class Forgot(Estimator):
        intervals: Intervals = DEFAULT

    with pytest.raises(TypeError, match="_terms"):
        Forgot()  # type: ignore[abstract]


def test_the_nine_estimators_share_the_base_and_say_which_need_rewards() -> None:
    """Every built-in estimator is an Estimator; the report's names follow needs_rewards."""
    built: list[type[Estimator]] = [
        DirectMethod,
        IPS,
        ClippedIPS,
        SNIPS,
        DoublyRobust,
        SNDR,
        SwitchDR,
        DRos,
        ReplayMethod,
    ]
    assert all(issubclass(cls, Estimator) for cls in built)
    assert {cls for cls in built if cls.needs_rewards} == {
        DirectMethod,
        DoublyRobust,
        SNDR,
        SwitchDR,
        DRos,
    }
    assert sorted(name for name in ESTIMATORS if needs_rewards(name)) == [
        "dm",
        "dr",
        "dros",
        "sndr",
        "switch-dr",
    ]
