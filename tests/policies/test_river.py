"""River-based policies: what each one's distribution means, and their hyperparameters."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import numpy as np
import pytest

from bandit.errors import (
    ConfigurationError,
    InvalidFeaturesError,
    SnapshotError,
)
from policies import Action, Context, Policy, decide_ranking
from policies._features import joint_features
from policies.river import LinearTS, LinUCB, RiverGreedy

ACTIONS = [Action("a", {"item": {"size": 0.2}}), Action("b"), Action("c", {"item": {"kind": "x"}})]
REGRESSORS = ["linear", "bayesian", "pa", "tree"]


def _context(segment: int) -> Context:
    return {"user": {"segment": f"s{segment}", "activity": 0.5}}


def _best(segment: int) -> int:
    return segment % len(ACTIONS)


def _simulate(policy: Policy, rounds: int, seed: int = 0) -> None:
    """Two segments, each with its own best action (0.8 against 0.2)."""
    rng = random.Random(seed)
    for t in range(rounds):
        segment = rng.randrange(2)
        context = _context(segment)
        choice = decide_ranking(policy.pmf(context, ACTIONS), f"evt-{seed}-{t}")
        pays = 0.8 if choice.index == _best(segment) else 0.2
        reward = float(rng.random() < pays)
        policy.learn(context, ACTIONS, choice.index, reward, choice.probability)


def _teach(policy: Policy, context: Context, rewards: dict[int, float], times: int) -> None:
    """Show `policy` each action in `rewards` with its fixed reward, `times` times."""
    for _ in range(times):
        for index, reward in rewards.items():
            policy.learn(context, ACTIONS, index, reward, 1 / 3)


def _payload(policy: Policy) -> bytes:
    """The learned-state part of a snapshot (after the magic and header lines)."""
    return policy.snapshot().split(b"\n", 2)[2]


# -- LinUCB -------------------------------------------------------------------------------


def test_linucb_puts_the_mass_on_an_untried_action_over_a_well_tried_bad_one() -> None:
    """Optimism: the bonus lifts a never-tried action over a well-tried one with a higher mean."""
    policy = LinUCB(alpha=1.0, floor=0.01)
    context = {"user": {"x": 1.0}}
    actions = [Action("tried"), Action("new")]
    for _ in range(200):
        policy.learn(context, actions, 0, 0.2, 0.5)
    assert policy.pmf(context, actions).probabilities == pytest.approx((0.01, 0.99))
    policy.configure(alpha=0.0)  # the mean alone prefers the tried action
    assert policy.pmf(context, actions).probabilities == pytest.approx((0.99, 0.01))


def test_linucb_with_alpha_zero_is_greedy_on_the_posterior_mean() -> None:
    """With no confidence bonus the action with the best learned mean gets the mass."""
    policy = LinUCB(alpha=0.0, floor=0.01)
    _teach(policy, _context(0), {0: 0.1, 1: 0.9, 2: 0.5}, times=20)
    assert policy.pmf(_context(0), ACTIONS).probabilities == pytest.approx((0.01, 0.98, 0.01))


def test_linucb_splits_ties_evenly() -> None:
    """Actions that score exactly alike share the argmax mass equally."""
    policy = LinUCB()
    actions = [Action("x"), Action("y"), Action("z"), Action("w")]
    assert policy.pmf({"user": {"x": 1.0}}, actions).probabilities == (0.25,) * 4


def test_bayesian_posterior_matches_the_closed_form() -> None:
    """The posterior mean and epistemic variance are Bishop's eqs. 3.53-3.54 and 3.59."""
    prior, noise = 2.0, 4.0
    policy = LinUCB(prior_precision=prior, noise_precision=noise)
    rng = random.Random(5)
    seen: list[dict[str, float]] = []
    targets: list[float] = []
    for _ in range(30):
        context = {"user": {"a": rng.random(), "b": rng.random()}}
        chosen = rng.randrange(3)
        reward = rng.random()
        policy.learn(context, ACTIONS, chosen, reward, 1 / 3)
        seen.append(joint_features(context, ACTIONS[chosen]))
        targets.append(reward)
    query = [joint_features({"user": {"a": 0.3, "new": 1.0}}, action) for action in ACTIONS]
    names = sorted({name for x in seen + query for name in x})
    design = np.array([[x.get(n, 0.0) for n in names] for x in seen])
    covariance = np.linalg.inv(prior * np.eye(len(names)) + noise * design.T @ design)
    mean = noise * covariance @ design.T @ np.array(targets)
    rows = np.array([[x.get(n, 0.0) for n in names] for x in query])
    means, variances = policy._posterior(query)
    assert means == pytest.approx(rows @ mean, abs=1e-9)
    assert variances == pytest.approx(np.einsum("ij,jk,ik->i", rows, covariance, rows), abs=1e-9)


# -- LinearTS -----------------------------------------------------------------------------


def test_lints_pmf_is_the_same_for_the_same_state_and_input() -> None:
    """Two policies built alike and fed alike give bit-identical distributions."""
    first, second = LinearTS(seed=3), LinearTS(seed=3)
    _simulate(first, 100, seed=1)
    _simulate(second, 100, seed=1)
    context = _context(1)
    assert first.pmf(context, ACTIONS) == second.pmf(context, ACTIONS)
    assert first.pmf(context, ACTIONS) == first.pmf(context, ACTIONS)


def test_lints_pmf_differs_with_the_seed() -> None:
    """Another seed draws other Monte Carlo samples, so the estimate moves."""
    estimates = {LinearTS(seed=seed).pmf(_context(0), ACTIONS) for seed in range(4)}
    assert len(estimates) == 4


def test_lints_seed_depends_on_feature_values_not_their_spelling() -> None:
    """An int and the equal float (as a JSON log may round-trip them) give the same pmf."""
    policy = LinearTS(seed=9)
    assert policy.pmf({"user": {"n": 2}}, ACTIONS) == policy.pmf({"user": {"n": 2.0}}, ACTIONS)


def test_lints_pmf_is_re_derivable_from_its_documented_recipe() -> None:
    """The documented hash, generator and counting rule reproduce the pmf exactly."""
    policy = LinearTS(n_samples=500, seed=11, floor=1e-9)
    _simulate(policy, 50)
    context = {"user": {"segment": "s1", "activity": 0.7}}
    means, variances = policy._posterior([joint_features(context, a) for a in ACTIONS])
    shared = [["user.activity", 0.7], ["user.segment=s1", 1.0]]
    offered = [
        ["a", [["item.size", 0.2]]],
        ["b", []],
        ["c", [["item.kind=x", 1.0]]],
    ]
    text = json.dumps([11, shared, offered], separators=(",", ":"))
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")
    z = np.random.default_rng(seed).standard_normal((500, 3))
    winners = (np.array(means) + z * np.sqrt(variances)).argmax(axis=1)
    expected = np.bincount(winners, minlength=3) / 500
    assert policy.pmf(context, ACTIONS).probabilities == pytest.approx(expected, abs=1e-8)


def test_lints_estimate_is_within_monte_carlo_error_of_the_exact_probability() -> None:
    """With two actions P(first wins) = Phi(gap / sd); the estimate is within 4 / sqrt(n)."""
    policy = LinearTS(n_samples=4000, scale=1.0, floor=1e-9)
    actions = [Action("x"), Action("y")]
    context = {"user": {"k": 1.0}}
    for reward in (0.9, 0.8, 0.9, 0.7):
        policy.learn(context, actions, 0, reward, 0.5)
    policy.learn(context, actions, 1, 0.1, 0.5)
    means, variances = policy._posterior([joint_features(context, a) for a in actions])
    # Independent marginals, as documented: the difference has the summed variance.
    exact = 0.5 * math.erfc(-(means[0] - means[1]) / math.sqrt(2 * (variances[0] + variances[1])))
    assert 0.6 < exact < 0.9  # far from 0 and 1, where any estimate is close
    assert policy.pmf(context, actions)[0] == pytest.approx(exact, abs=4 / math.sqrt(4000))


def test_lints_with_zero_scale_is_greedy_and_splits_ties() -> None:
    """scale=0 puts all mass on the best mean; an untrained model ties every action."""
    policy = LinearTS(scale=0.0, floor=1e-9)
    actions = [Action("x"), Action("y"), Action("z"), Action("w")]
    assert policy.pmf({}, actions).probabilities == pytest.approx((0.25,) * 4)
    _teach(policy, _context(0), {0: 0.1, 1: 0.9, 2: 0.5}, times=10)
    assert policy.pmf(_context(0), ACTIONS).probabilities == pytest.approx((0, 1, 0), abs=1e-8)


def test_lints_converges_toward_the_best_action() -> None:
    """On a two-segment problem the best action of each segment ends with most of the mass."""
    policy = LinearTS(seed=1)
    _simulate(policy, 500, seed=2)
    for segment in (0, 1):
        assert policy.pmf(_context(segment), ACTIONS)[_best(segment)] > 0.8


# -- RiverGreedy --------------------------------------------------------------------------


@pytest.mark.parametrize("regressor", REGRESSORS)
def test_greedy_pmf_equals_the_closed_form(regressor: str) -> None:
    """epsilon / n on every action, plus 1 - epsilon on the best prediction."""
    policy = RiverGreedy(epsilon=0.3, regressor=regressor, floor=0.01)
    _teach(policy, _context(0), {0: 0.1, 1: 0.9, 2: 0.5}, times=30)
    assert policy.pmf(_context(0), ACTIONS).probabilities == pytest.approx((0.1, 0.8, 0.1))


def test_greedy_splits_ties_evenly() -> None:
    """An untrained regressor predicts alike for all, so the greedy share is split."""
    policy = RiverGreedy(epsilon=0.0, floor=1e-9)
    assert policy.pmf(_context(0), ACTIONS).probabilities == pytest.approx((1 / 3,) * 3)


@pytest.mark.parametrize("regressor", REGRESSORS)
def test_greedy_learns_the_best_action_per_segment(regressor: str) -> None:
    """Each regressor finds each segment's best action on the simulated problem."""
    policy = RiverGreedy(epsilon=0.1, regressor=regressor)
    _simulate(policy, 600, seed=4)
    for segment in (0, 1):
        assert policy.pmf(_context(segment), ACTIONS).argmax() == _best(segment)


# -- shared behaviour ---------------------------------------------------------------------


def _all_policies() -> list[Policy]:
    return [
        LinUCB(),
        LinearTS(),
        *(RiverGreedy(regressor=r) for r in REGRESSORS),
    ]


@pytest.mark.parametrize("policy", _all_policies(), ids=repr)
def test_pmf_leaves_the_learned_state_untouched(policy: Policy) -> None:
    """Scoring unseen features and actions does not grow or change the model."""
    _simulate(policy, 30)
    before = _payload(policy)
    policy.pmf({"new": {"f": 2.0, "g": "h"}}, [Action("unseen", {"z": {"w": 1.0}}), *ACTIONS])
    assert _payload(policy) == before


@pytest.mark.parametrize(
    ("policy", "changes"),
    [
        (LinUCB(alpha=0.0, floor=0.01), {"alpha": 50.0}),
        (LinearTS(scale=1.0, floor=0.01), {"scale": 100.0, "n_samples": 2000}),
        (RiverGreedy(epsilon=0.1, floor=0.01), {"epsilon": 0.6}),
    ],
    ids=["linucb", "lints", "river-greedy"],
)
def test_configure_changes_exploration_and_keeps_what_was_learned(
    policy: Policy, changes: dict[str, Any]
) -> None:
    """Live changes move the distribution; the model is byte-identical and undoes cleanly."""
    _teach(policy, _context(0), {0: 0.2, 1: 0.9}, times=40)
    original = {key: policy.params()[key] for key in changes}
    learned, before = _payload(policy), policy.pmf(_context(0), ACTIONS)
    policy.configure(**changes)
    assert _payload(policy) == learned
    assert policy.pmf(_context(0), ACTIONS) != before
    policy.configure(**original)
    assert policy.pmf(_context(0), ACTIONS) == before


def test_configure_rejects_a_bad_value_and_keeps_the_old_ones() -> None:
    """A refused change leaves every live parameter as it was, even those also named."""
    policy = LinearTS(n_samples=300, scale=2.0)
    with pytest.raises(ConfigurationError, match=r"`scale` must be a finite number >= 0"):
        policy.configure(n_samples=50, scale=-1.0)
    assert (policy.n_samples, policy.scale) == (300, 2.0)


@pytest.mark.parametrize(
    "policy",
    [
        LinUCB(alpha=2.5, prior_precision=3.0, noise_precision=0.5, interactions=False),
        LinearTS(n_samples=333, scale=0.7, seed=-8, prior_precision=2.0),
        RiverGreedy(epsilon=0.25, regressor="tree", interactions=False),
    ],
    ids=repr,
)
def test_restore_keeps_non_default_hyperparameters_and_continues_identically(
    policy: Policy,
) -> None:
    """A restored policy has the same params and gives the same pmfs after learning on."""
    _simulate(policy, 60, seed=6)
    restored = Policy.restore(policy.snapshot())
    assert restored.params() == policy.params()
    _simulate(policy, 40, seed=7)
    _simulate(restored, 40, seed=7)
    for segment in (0, 1):
        assert restored.pmf(_context(segment), ACTIONS) == policy.pmf(_context(segment), ACTIONS)


def test_restore_refuses_a_payload_holding_another_regressor() -> None:
    """A checksummed payload of the wrong River model type is refused by name."""
    wrong = _payload(RiverGreedy(regressor="linear"))
    magic, header, _ = RiverGreedy(regressor="pa").snapshot().split(b"\n", 2)
    fields = json.loads(header)
    fields["sha256"] = hashlib.sha256(wrong).hexdigest()
    forged = magic + b"\n" + json.dumps(fields).encode() + b"\n" + wrong
    with pytest.raises(SnapshotError, match="holds a LinearRegression, expected a PARegressor"):
        Policy.restore(forged)


def test_learning_a_non_finite_feature_is_refused_and_changes_nothing() -> None:
    """A NaN feature on the chosen action raises, naming it, and the model stays as it was."""
    policy = LinUCB()
    _simulate(policy, 10)
    before = _payload(policy)
    with pytest.raises(InvalidFeaturesError, match=r"'user\.x' = nan"):
        policy.learn({"user": {"x": math.nan}}, ACTIONS, 1, 1.0, 0.5)
    assert _payload(policy) == before


def test_scoring_an_infinite_feature_names_it() -> None:
    """A non-finite score is refused with the feature that caused it, not a vague error."""
    policy = RiverGreedy()
    _simulate(policy, 10)
    with pytest.raises(InvalidFeaturesError, match=r"action 'a' .* 'item\.size' = inf"):
        policy.pmf(_context(0), [Action("a", {"item": {"size": math.inf}}), ACTIONS[1]])


# -- hyperparameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (LinUCB, {"alpha": -1.0}, r"`alpha` must be a finite number >= 0, got -1.0"),
        (LinUCB, {"alpha": math.nan}, r"`alpha` must be a finite number >= 0, got nan"),
        (LinUCB, {"alpha": "wide"}, r"`alpha` must be a finite number >= 0, got 'wide'"),
        (LinUCB, {"prior_precision": 0.0}, r"`prior_precision` must be a finite number > 0, got 0"),
        (
            LinUCB,
            {"noise_precision": math.inf},
            r"`noise_precision` must be a finite number > 0, got inf",
        ),
        (LinUCB, {"interactions": 1}, r"`interactions` must be a bool, got 1"),
        (LinearTS, {"n_samples": 0}, r"`n_samples` must be an integer in \[1, 100000\], got 0"),
        (LinearTS, {"n_samples": 2.5}, r"`n_samples` must be an integer in \[1, 100000\], got 2.5"),
        (LinearTS, {"n_samples": True}, r"`n_samples` must be an integer .*, got True"),
        (LinearTS, {"n_samples": 10**6}, r"`n_samples` must be an integer .*, got 1000000"),
        (LinearTS, {"scale": -0.5}, r"`scale` must be a finite number >= 0, got -0.5"),
        (LinearTS, {"seed": "7"}, r"`seed` must be an integer, got '7'"),
        (LinearTS, {"seed": False}, r"`seed` must be an integer, got False"),
        (RiverGreedy, {"epsilon": 1.5}, r"`epsilon` must be a number in \[0.0, 1.0\], got 1.5"),
        (RiverGreedy, {"epsilon": -0.1}, r"`epsilon` must be a number in \[0.0, 1.0\], got -0.1"),
        (
            RiverGreedy,
            {"regressor": "forest"},
            r"`regressor` must be one of \['linear', 'bayesian', 'pa', 'tree'\], got 'forest'",
        ),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(
    cls: type[Policy], kwargs: dict[str, Any], match: str
) -> None:
    """Construction names the argument, the rule and the value found."""
    with pytest.raises(ConfigurationError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("policy", "changes", "match"),
    [
        (LinUCB(), {"alpha": -2.0}, r"`alpha` must be a finite number >= 0, got -2.0"),
        (LinearTS(), {"n_samples": 0}, r"`n_samples` must be an integer in \[1, 100000\]"),
        (RiverGreedy(), {"epsilon": 2.0}, r"`epsilon` must be a number in \[0.0, 1.0\], got 2.0"),
        (LinearTS(), {"seed": 3}, r"lints cannot change 'seed' while running"),
    ],
    ids=["linucb-alpha", "lints-n_samples", "greedy-epsilon", "lints-seed"],
)
def test_configure_refuses_bad_live_values(
    policy: Policy, changes: dict[str, Any], match: str
) -> None:
    """Live changes follow the constructor's rules, and only live parameters change."""
    with pytest.raises(ConfigurationError, match=match):
        policy.configure(**changes)
