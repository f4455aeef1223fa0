"""The policy simulator: environments with a known best action, and fair runs."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits

from bandit.errors import ConfigurationError, DatasetError
from bandit.ops.simulation import (
    DigitsEnvironment,
    Round,
    SyntheticEnvironment,
    make_environment,
    simulate,
)
from bandit.ops.simulation._synthetic import DAYPARTS, DEVICES
from policies import Action, Context, make_policy

CONTEXT_SCHEMA = {
    "user": {"segment", "tenure", "activity"},
    "session": {"referrer", "depth"},
    "device": {"type"},
    "time": {"daypart", "weekend"},
}


def _rounds(env: SyntheticEnvironment | DigitsEnvironment, n: int) -> list[Round]:
    return list(env.rounds(n))


def _with(context: Context, namespace: str, name: str, value: str) -> Context:
    changed = {ns: dict(values) for ns, values in context.items()}
    changed[namespace][name] = value
    return changed


def _argmax(values: Sequence[float] | npt.NDArray[np.float64]) -> int:
    return int(np.argmax(values))


# -- the synthetic environment ----------------------------------------------------------


def test_same_seed_gives_the_same_rounds() -> None:
    """Two environments built with the same seed yield identical rounds."""
    assert _rounds(SyntheticEnvironment(seed=11), 300) == _rounds(
        SyntheticEnvironment(seed=11), 300
    )


def test_rounds_restart_from_the_first_on_every_call() -> None:
    """Calling rounds() twice on one environment replays the same sequence."""
    env = SyntheticEnvironment(seed=4)
    assert _rounds(env, 50) == _rounds(env, 50)


def test_different_seeds_give_different_rounds() -> None:
    """Another seed gives other contexts and offers."""
    first = _rounds(SyntheticEnvironment(seed=1), 20)
    second = _rounds(SyntheticEnvironment(seed=2), 20)
    assert [r.context for r in first] != [r.context for r in second]


def test_context_holds_only_observable_segment_features() -> None:
    """The context has exactly the documented features; no user id or other identifier."""
    for r in _rounds(SyntheticEnvironment(seed=3, n_users=50), 300):
        assert {ns: set(values) for ns, values in r.context.items()} == CONTEXT_SCHEMA
        assert all(set(a.features) == {"item"} for a in r.actions)


def test_every_round_offers_the_configured_number_of_distinct_items() -> None:
    """Each round offers n_actions items with distinct ids and complete item features."""
    for r in _rounds(SyntheticEnvironment(seed=5, n_actions=7), 100):
        assert len(r.actions) == 7
        assert len({a.id for a in r.actions}) == 7
        assert all(
            set(a.features["item"]) == {"topic", "length", "price", "freshness"} for a in r.actions
        )


def test_sessions_devices_and_dayparts_all_occur() -> None:
    """Over a run every device and daypart occurs, and sessions span several decisions."""
    rounds = _rounds(SyntheticEnvironment(seed=6), 3000)
    assert {r.context["device"]["type"] for r in rounds} == set(DEVICES)
    assert {r.context["time"]["daypart"] for r in rounds} == set(DAYPARTS)
    depths = Counter(r.context["session"]["depth"] for r in rounds)
    assert depths[0.0] < len(rounds) / 2  # most decisions are not a session's first


def test_oracle_expected_reward_is_at_least_every_actions() -> None:
    """The best expected reward of a round is >= every offered action's, and in (0, 1)."""
    for r in _rounds(SyntheticEnvironment(seed=8), 500):
        assert all(r.best_expected >= p for p in r.expected)
        assert r.expected[r.best] == r.best_expected
        assert all(0.0 < p < 1.0 for p in r.expected)


def test_rewards_are_bernoulli_draws_of_the_expected_rewards() -> None:
    """Drawn rewards are 0 or 1, and their mean matches the mean expected reward."""
    rounds = _rounds(SyntheticEnvironment(seed=9), 2000)
    rewards = np.array([r.rewards for r in rounds])
    expected = np.array([r.expected for r in rounds])
    assert set(np.unique(rewards)) <= {0.0, 1.0}
    assert abs(rewards.mean() - expected.mean()) < 0.02


def test_best_action_depends_on_the_device() -> None:
    """Showing the same items to the same context on another device often changes the best."""
    env = SyntheticEnvironment(seed=12, taste_spread=0.0)
    changed = 0
    rounds = _rounds(env, 300)
    for r in rounds:
        mobile = env.click_probabilities(_with(r.context, "device", "type", "mobile"), r.actions)
        desktop = env.click_probabilities(_with(r.context, "device", "type", "desktop"), r.actions)
        changed += _argmax(mobile) != _argmax(desktop)
    assert changed > 0.3 * len(rounds)


def test_best_action_depends_on_the_time_of_day_and_segment() -> None:
    """Changing only the daypart, or only the user segment, often changes the best item."""
    env = SyntheticEnvironment(seed=13, taste_spread=0.0)
    rounds = _rounds(env, 300)
    by_time = by_segment = 0
    for r in rounds:
        base = _argmax(env.click_probabilities(r.context, r.actions))
        morning = _with(r.context, "time", "daypart", "morning")
        evening = _with(r.context, "time", "daypart", "evening")
        by_time += _argmax(env.click_probabilities(morning, r.actions)) != _argmax(
            env.click_probabilities(evening, r.actions)
        )
        student = _with(r.context, "user", "segment", "student")
        retired = _with(r.context, "user", "segment", "retired")
        by_segment += _argmax(env.click_probabilities(student, r.actions)) != _argmax(
            env.click_probabilities(retired, r.actions)
        )
        assert 0 <= base < len(r.actions)
    assert by_time > 0.2 * len(rounds)
    assert by_segment > 0.3 * len(rounds)


def test_click_probabilities_reproduce_the_rounds_expected_rewards() -> None:
    """With no individual tastes, the what-if probabilities equal the round's expected ones."""
    env = SyntheticEnvironment(seed=14, taste_spread=0.0, drift=0.5)
    for r in _rounds(env, 200):
        np.testing.assert_allclose(
            env.click_probabilities(r.context, r.actions, round_index=r.index), r.expected
        )


def test_hidden_individual_tastes_matter() -> None:
    """Users of the same segment differ: their hidden tastes change the expected rewards."""
    env = SyntheticEnvironment(seed=15)
    r = next(env.rounds(1))
    first = env.click_probabilities(r.context, r.actions, user=0)
    second = env.click_probabilities(r.context, r.actions, user=1)
    assert not np.allclose(first, second)


def test_change_point_changes_the_best_action() -> None:
    """After a change point the same offers in the same contexts often have another best."""
    stable = _rounds(SyntheticEnvironment(seed=16), 400)
    changed = _rounds(SyntheticEnvironment(seed=16, change_point=200), 400)
    assert [r.context for r in stable] == [r.context for r in changed]
    assert [r.actions for r in stable] == [r.actions for r in changed]
    assert [r.expected for r in stable[:200]] == [r.expected for r in changed[:200]]
    differs = sum(a.best != b.best for a, b in zip(stable[200:], changed[200:], strict=True))
    assert differs > 0.3 * 200


def test_gradual_drift_grows_with_time() -> None:
    """With drift, the best action moves away from the stationary one more later than early."""
    stable = _rounds(SyntheticEnvironment(seed=17), 6000)
    drifting = _rounds(SyntheticEnvironment(seed=17, drift=2.0), 6000)
    early = sum(a.best != b.best for a, b in zip(stable[:500], drifting[:500], strict=True))
    late = sum(a.best != b.best for a, b in zip(stable[-500:], drifting[-500:], strict=True))
    assert early < 0.1 * 500
    assert late > 0.3 * 500


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_actions": 1}, r"`n_actions` must be an integer >= 2, got 1"),
        ({"n_actions": 30, "n_items": 20}, r"`n_actions` must be <= `n_items` \(20\), got 30"),
        ({"n_items": 1}, r"`n_items` must be an integer >= 2, got 1"),
        ({"n_users": 0}, r"`n_users` must be an integer >= 1, got 0"),
        ({"drift": -0.1}, r"`drift` must be finite and >= 0, got -0.1"),
        ({"drift": math.nan}, r"`drift` must be finite and >= 0, got nan"),
        ({"change_point": -1}, r"`change_point` must be None or an integer >= 0, got -1"),
        ({"taste_spread": math.inf}, r"`taste_spread` must be finite and >= 0, got inf"),
    ],
)
def test_synthetic_environment_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    """Each bad setting raises DatasetError naming the argument, the rule and the value."""
    with pytest.raises(DatasetError, match=match):
        SyntheticEnvironment(**kwargs)  # type: ignore[arg-type]


def test_click_probabilities_reject_an_unknown_feature_value() -> None:
    """A what-if context with a device the environment never produces is refused by name."""
    env = SyntheticEnvironment(seed=1)
    r = next(env.rounds(1))
    with pytest.raises(DatasetError, match=r"`device.type` must be one of .*, got 'watch'"):
        env.click_probabilities(_with(r.context, "device", "type", "watch"), r.actions)


def test_round_rejects_mismatched_lengths() -> None:
    """A round whose expected rewards do not match its actions is refused."""
    with pytest.raises(DatasetError, match="one `expected` and one `rewards` entry per action"):
        Round(0, "e", {}, (Action("a"), Action("b")), (0.5,), (1.0, 0.0))


# -- the digits environment -------------------------------------------------------------


def test_digits_reward_is_one_exactly_for_the_true_label() -> None:
    """Each round rewards exactly one action: the digit the example really shows."""
    data = load_digits()
    label_of = {
        tuple(round(float(v) / 16.0, 4) for v in row): int(t)
        for row, t in zip(data.data, data.target, strict=True)
    }
    for r in _rounds(DigitsEnvironment(seed=2), 300):
        pixels = tuple(r.context["pixels"].get(f"p{i:02d}", 0.0) for i in range(64))
        label = label_of[pixels]  # type: ignore[index]
        assert r.rewards == tuple(1.0 if k == label else 0.0 for k in range(10))
        assert r.actions[label].id == f"digit-{label}"
        assert r.expected == r.rewards
        assert r.best_expected == 1.0


def test_digits_visit_every_example_once_per_shuffled_pass() -> None:
    """The first pass holds every example once, in a seeded order that differs by seed."""
    env = DigitsEnvironment(seed=5)
    first_pass = _rounds(env, env.n_examples)
    labels = Counter(r.best for r in first_pass)
    assert labels == Counter(int(t) for t in load_digits().target)
    other = _rounds(DigitsEnvironment(seed=6), 20)
    assert [r.context for r in first_pass[:20]] != [r.context for r in other]
    assert _rounds(DigitsEnvironment(seed=5), 20) == first_pass[:20]


def test_digits_features_are_scaled_to_the_unit_interval() -> None:
    """Pixel features lie in (0, 1]: ink 0..16 scaled by 1/16, blank pixels left out."""
    values = [
        v for r in _rounds(DigitsEnvironment(seed=0), 500) for v in r.context["pixels"].values()
    ]
    assert all(isinstance(v, float) and 0.0 < v <= 1.0 for v in values)
    assert max(values) == 1.0


def test_make_environment_refuses_settings_that_do_not_apply() -> None:
    """Digits refuses drift and other action counts; unknown names are refused."""
    with pytest.raises(ConfigurationError, match=r"`drift` applies only to the synthetic"):
        make_environment("digits", drift=0.1)
    with pytest.raises(ConfigurationError, match=r"`n_actions` must be 10 .* got 5"):
        make_environment("digits", n_actions=5)
    with pytest.raises(
        ConfigurationError, match=r"`name` must be one of \['digits', 'synthetic'\], got 'mnist'"
    ):
        make_environment("mnist")


# -- simulate ---------------------------------------------------------------------------


def test_policies_run_under_two_labels_see_identical_rounds() -> None:
    """Two copies of one policy get the same draws and rewards: the comparison is fair."""
    result = simulate(
        SyntheticEnvironment(seed=20),
        {"a": make_policy("uniform"), "b": make_policy("uniform")},
        400,
    )
    a, b = result.result("a"), result.result("b")
    assert (a.mean_reward, a.regret, a.window_rewards) == (
        b.mean_reward,
        b.regret,
        b.window_rewards,
    )


def test_same_seed_gives_the_same_simulation_result() -> None:
    """Rerunning with the same seed and fresh policies gives the same rewards and regrets."""

    def run() -> list[tuple[float, float, float]]:
        result = simulate(
            SyntheticEnvironment(seed=21),
            {"uniform": make_policy("uniform"), "vw": make_policy("vw-epsilon")},
            300,
        )
        return [(r.mean_reward, r.regret, r.explored_share) for r in result.policies]

    assert run() == run()


def test_uniform_result_matches_the_exact_uniform_expectation() -> None:
    """The uniform policy's mean expected reward is close to the exact uniform reference."""
    result = simulate(SyntheticEnvironment(seed=22), {"uniform": make_policy("uniform")}, 3000)
    uniform = result.result("uniform")
    assert abs(uniform.mean_expected_reward - result.uniform_reward) < 0.02
    assert math.isclose(uniform.regret, result.oracle_reward - uniform.mean_expected_reward)


def test_regret_is_never_negative_and_oracle_is_an_upper_bound() -> None:
    """Every policy's regret is >= 0 and its expected reward <= the oracle's."""
    result = simulate(
        SyntheticEnvironment(seed=23),
        {"uniform": make_policy("uniform"), "fixed": make_policy("fixed")},
        500,
    )
    for r in result.policies:
        assert r.regret >= 0.0
        assert r.mean_expected_reward <= result.oracle_reward
    assert result.uniform_reward < result.oracle_reward


def test_fixed_policy_explores_only_at_its_floor() -> None:
    """A policy that never explores beyond its floor has an explored share near that floor."""
    result = simulate(
        SyntheticEnvironment(seed=24, n_actions=5),
        {"fixed": make_policy("fixed", floor=0.02)},
        2000,
    )
    assert 0.03 < result.result("fixed").explored_share < 0.13  # 4 actions x 0.02 = 0.08


def test_windows_split_the_run_and_average_to_the_mean() -> None:
    """Window rewards cover the run: equal windows average to the overall mean reward."""
    result = simulate(DigitsEnvironment(seed=1), {"u": make_policy("uniform")}, 500, windows=5)
    r = result.result("u")
    assert len(r.window_rewards) == 5
    assert math.isclose(sum(r.window_rewards) / 5, r.mean_reward)


def test_progress_is_reported_up_to_the_last_round() -> None:
    """The progress callback sees increasing counts that end at the number of rounds."""
    seen: list[int] = []
    simulate(DigitsEnvironment(seed=1), {"u": make_policy("uniform")}, 450, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 450


def test_digits_oracle_earns_one_and_regret_is_the_error_rate() -> None:
    """On digits the oracle reward is 1 and regret equals 1 minus the mean reward."""
    result = simulate(DigitsEnvironment(seed=3), {"u": make_policy("uniform")}, 400)
    r = result.result("u")
    assert result.oracle_reward == 1.0
    assert math.isclose(r.regret, 1.0 - r.mean_reward)


@pytest.mark.slow
def test_vw_squarecb_beats_uniform_on_the_synthetic_environment() -> None:
    """Within 2,000 rounds VW with SquareCB earns clearly more than uniform random."""
    result = simulate(
        SyntheticEnvironment(seed=25),
        {"uniform": make_policy("uniform"), "vw": make_policy("vw-squarecb")},
        2000,
    )
    uniform, vw = result.result("uniform"), result.result("vw")
    assert vw.mean_reward > uniform.mean_reward + 0.1
    assert vw.regret < 0.6 * uniform.regret
    assert vw.window_rewards[-1] > vw.window_rewards[0]  # it learned as it went


@pytest.mark.slow
def test_vw_learns_the_digits_bandit_problem() -> None:
    """On digits, VW epsilon-greedy far exceeds uniform's 10% accuracy in one pass."""
    result = simulate(DigitsEnvironment(seed=4), {"vw": make_policy("vw-epsilon")}, 1797)
    assert result.result("vw").mean_reward > 0.4


@pytest.mark.parametrize(
    ("rounds", "windows", "policies", "match"),
    [
        (0, 10, True, r"`rounds` must be an integer >= 1, got 0"),
        (10, 0, True, r"`windows` must be an integer >= 1, got 0"),
        (10, 10, False, r"`policies` must hold at least one policy, got none"),
    ],
)
def test_simulate_rejects_bad_arguments(
    rounds: int, windows: int, policies: bool, match: str
) -> None:
    """Bad rounds, windows or an empty policy set raise ConfigurationError naming them."""
    chosen = {"u": make_policy("uniform")} if policies else {}
    with pytest.raises(ConfigurationError, match=match):
        simulate(DigitsEnvironment(seed=0), chosen, rounds, windows=windows)


def test_results_are_frozen() -> None:
    """A simulation result cannot be changed after the fact."""
    result = simulate(DigitsEnvironment(seed=0), {"u": make_policy("uniform")}, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rounds = 3  # type: ignore[misc]
