"""What-if exploration: a grid of settings replayed on one log, and when to recommend one."""

from __future__ import annotations

import numpy as np
import pytest

from bandit.errors import ConfigurationError
from replay import DoublyRobust, HashedRidge, TrustedDecisions
from replay.whatif import parse_grid, what_if
from tests.replay.test_targets import segment_log


def flat_log(n: int) -> TrustedDecisions:
    """A uniformly random log where every action pays the same."""
    logs, _ = segment_log(n, seed=4)
    rng = np.random.default_rng(5)
    return TrustedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity,
        reward=rng.binomial(1, 0.5, n).astype(float),
        probabilities=logs.probabilities,
        action_ids=logs.action_ids,
        contexts=logs.contexts,
        action_features=logs.action_features,
    )


def test_equivalent_settings_recommend_nothing() -> None:
    """When every setting is worth the same, no setting is recommended."""
    result = what_if(flat_log(1500), "vw-epsilon:epsilon=0.1", "epsilon", [0.05, 0.1, 0.2])
    assert [row.value for row in result.rows] == [0.05, 0.1, 0.2]
    assert result.current.value == 0.1
    assert result.recommended is None
    assert "keep it" in result.reason


def test_a_clearly_better_setting_is_recommended() -> None:
    """Exploring less beats exploring always when the segment decides the best action."""
    logs, _ = segment_log(2000, seed=6)
    result = what_if(logs, "vw-epsilon:epsilon=1.0", "epsilon", [0.05, 0.5])
    assert result.rows[0].current
    assert result.recommended is not None
    assert result.recommended.value == 0.05
    current = result.current.estimate.value
    ci = result.recommended.estimate.ci
    assert ci is not None
    assert ci.low > current
    assert "beats the current epsilon=1.0" in result.reason


def test_what_if_accepts_a_reward_model_estimator() -> None:
    """A doubly robust what-if uses the reward predictions it is given."""
    logs, _ = segment_log(600, seed=7)
    rewards = HashedRidge().cross_fit(logs)
    result = what_if(
        logs, "vw-squarecb", "gamma_scale", [1.0, 100.0], estimator=DoublyRobust(), rewards=rewards
    )
    assert {row.estimate.estimator for row in result.rows} == {"DoublyRobust"}
    assert len(result.rows) == 3  # the default gamma_scale is added as the current setting


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda logs: what_if(logs, "vw-epsilon", "epsilon", []), "at least one value"),
        (lambda logs: what_if(logs, "vw-epsilon", "nope", [1]), "no parameter `nope`"),
        (lambda logs: what_if(logs, "vw-epsilon", "epsilon", [7.0]), "epsilon"),
        (lambda logs: parse_grid("epsilon="), "must look like param=v1,v2"),
    ],
)
def test_bad_grids_are_refused(call: object, match: str) -> None:
    """An empty grid, an unknown parameter or a refused value raise naming it."""
    logs, _ = segment_log(20)
    with pytest.raises(ConfigurationError, match=match):
        call(logs)  # type: ignore[operator]


def test_parse_grid_reads_numbers_and_strings() -> None:
    """Grid values are JSON where they parse, else strings."""
    assert parse_grid("exploration=epsilon, squarecb") == ("exploration", ["epsilon", "squarecb"])
    assert parse_grid("gamma_scale=10,20") == ("gamma_scale", [10, 20])
