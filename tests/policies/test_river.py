"""River-based policies: what each one's distribution means, and their hyperparameters."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import numpy as np
import pytest
from river import linear_model as river_linear_model

from bandit.errors import (
    ConfigurationError,
    InvalidFeaturesError,
    SnapshotError,
)
from policies import Action, Context, Policy, decide_ranking
from policies.river import LinearTS, LinUCB, RiverGreedy

_Bayesian = LinUCB | LinearTS

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
        seen.append(policy._rows(context, ACTIONS)[chosen])
        targets.append(reward)
    query = policy._rows({"user": {"a": 0.3, "new": 1.0}}, ACTIONS)
    names = sorted({name for x in seen + query for name in x})
    design = np.array([[x.get(n, 0.0) for n in names] for x in seen])
    covariance = np.linalg.inv(prior * np.eye(len(names)) + noise * design.T @ design)
    mean = noise * covariance @ design.T @ np.array(targets)
    rows = np.array([[x.get(n, 0.0) for n in names] for x in query])
    means, variances = policy._posterior(query)
    assert means == pytest.approx(rows @ mean, abs=1e-9)
    assert variances == pytest.approx(np.einsum("ij,jk,ik->i", rows, covariance, rows), abs=1e-9)
    joint_means, joint = policy._joint_posterior(query)
    assert joint_means == pytest.approx(rows @ mean, abs=1e-9)
    assert joint == pytest.approx(rows @ covariance @ rows.T, abs=1e-9)


def _trained_with_unseen_query(cls: type[_Bayesian]) -> tuple[_Bayesian, list[dict[str, float]]]:
    """A policy trained on the two-segment problem, and rows mixing seen and unseen features."""
    policy = cls(prior_precision=2.0, noise_precision=3.0)
    _simulate(policy, 80, seed=8)
    context = {"user": {"segment": "s1", "activity": 0.7, "new": -1.5}, "time": {"hour": "9"}}
    actions = [*ACTIONS, Action("unseen", {"item": {"size": 0.4, "kind": "y"}})]
    return policy, policy._rows(context, actions)


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
def test_posterior_read_from_river_internals_equals_river_public_predictions(
    cls: type[_Bayesian],
) -> None:
    """Means and epistemic variances match predict_one(with_dist=True), unseen features too."""
    policy, rows = _trained_with_unseen_query(cls)
    assert policy._fast  # the installed River keeps the arrays the fast path reads
    means, variances = policy._posterior(rows)
    public = [policy._model.predict_one(x, with_dist=True) for x in rows]
    assert means == pytest.approx([p.mu for p in public], rel=0, abs=1e-9)
    noise = 1 / policy.noise_precision
    assert variances == pytest.approx([p.sigma**2 - noise for p in public], rel=0, abs=1e-9)
    assert min(variances) > 0.0


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
def test_joint_covariance_equals_the_one_from_river_public_predictions(
    cls: type[_Bayesian],
) -> None:
    """Cov(a, b) from the internals is (Var(a + b) - Var(a) - Var(b)) / 2 from predict_one."""
    policy, rows = _trained_with_unseen_query(cls)
    means, covariance = policy._joint_posterior(rows)

    def variance(x: dict[str, float]) -> float:
        sigma = float(policy._model.predict_one(x, with_dist=True).sigma)
        return sigma**2 - 1 / policy.noise_precision

    expected = np.empty((len(rows), len(rows)))
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            both = {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}
            expected[i, j] = (variance(both) - variance(a) - variance(b)) / 2
    assert covariance == pytest.approx(expected, rel=0, abs=1e-9)
    assert means == pytest.approx([policy._model.predict_one(x) for x in rows], rel=0, abs=1e-9)


_RIVER_BAYESIAN = river_linear_model.BayesianLinearRegression


class _PublicOnly:
    """River's public regressor API over a model whose private arrays it hides."""

    def __init__(self, alpha: float, beta: float) -> None:
        self._inner = _RIVER_BAYESIAN(alpha=alpha, beta=beta)

    def learn_one(self, x: dict[str, float], y: float) -> None:
        self._inner.learn_one(x, y)

    def predict_one(self, x: dict[str, float], with_dist: bool = False) -> Any:
        return self._inner.predict_one(x, with_dist=with_dist)


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
def test_without_river_internals_the_public_path_gives_the_same_pmf(
    cls: type[_Bayesian], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A River lacking the private arrays is detected on construction and scored alike."""
    fast, rows = _trained_with_unseen_query(cls)
    monkeypatch.setattr(river_linear_model, "BayesianLinearRegression", _PublicOnly)
    slow = cls(prior_precision=2.0, noise_precision=3.0)
    monkeypatch.undo()
    assert not slow._fast
    assert isinstance(slow._model, _PublicOnly)
    _simulate(slow, 80, seed=8)
    for got, want in zip(slow._posterior(rows), fast._posterior(rows), strict=True):
        assert got == pytest.approx(want, rel=0, abs=1e-9)
    for got, want in zip(slow._joint_posterior(rows), fast._joint_posterior(rows), strict=True):
        assert got == pytest.approx(want, rel=0, abs=1e-9)
    for segment in (0, 1):
        assert slow.pmf(_context(segment), ACTIONS).probabilities == pytest.approx(
            fast.pmf(_context(segment), ACTIONS).probabilities, abs=1e-12
        )


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
    # 1000 samples: at 500, two of these seeds happen to count the same wins.
    estimates = {LinearTS(seed=seed, n_samples=1000).pmf(_context(0), ACTIONS) for seed in range(4)}
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
    means, covariance = policy._joint_posterior(policy._rows(context, ACTIONS))
    shared = [["user.activity", 0.7], ["user.segment=s1", 1.0]]
    offered = [
        ["a", [["item.size", 0.2]]],
        ["b", []],
        ["c", [["item.kind=x", 1.0]]],
    ]
    text = json.dumps([11, shared, offered], separators=(",", ":"))
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")
    z = np.random.default_rng(seed).standard_normal((500, 3))
    winners = (means + z @ np.linalg.cholesky(covariance).T).argmax(axis=1)
    expected = np.bincount(winners, minlength=3) / 500
    assert policy.pmf(context, ACTIONS).probabilities == pytest.approx(expected, abs=1e-8)


def test_lints_estimate_is_within_monte_carlo_error_of_the_exact_joint_probability() -> None:
    """With two actions P(first wins) = Phi(gap / sd(difference)), shared weights cancelling."""
    policy = LinearTS(n_samples=4000, scale=1.0, floor=1e-9, interactions=False)
    actions = [Action("x"), Action("y")]
    for reward in (0.9, 0.8, 0.9, 0.7):
        policy.learn({"user": {"k": 1.0}}, actions, 0, reward, 0.5)
    policy.learn({"user": {"k": 1.0}}, actions, 1, 0.1, 0.5)
    context = {"user": {"k": 1.0, "new": 2.0}}  # an unseen weight both actions share
    means, cov = policy._joint_posterior(policy._rows(context, actions))
    gap = means[0] - means[1]
    exact = 0.5 * math.erfc(-gap / math.sqrt(2 * (cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])))
    independent = 0.5 * math.erfc(-gap / math.sqrt(2 * (cov[0, 0] + cov[1, 1])))
    tolerance = 4 / math.sqrt(4000)
    assert 0.6 < exact < 0.9  # far from 0 and 1, where any estimate is close
    assert abs(exact - independent) > 2 * tolerance  # joint and marginal draws disagree here
    assert policy.pmf(context, actions)[0] == pytest.approx(exact, abs=tolerance)


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


# -- features -----------------------------------------------------------------------------


@pytest.mark.parametrize(("interactions", "per_item"), [("features", 1), ("all", 4)])
def test_feature_count_grows_with_the_catalog_only_when_ids_are_crossed(
    interactions: str, per_item: int
) -> None:
    """Under "features" each item adds only its id; under "all" also its 3 context products."""
    for n_items in (8, 40):
        policy = LinUCB(interactions=interactions)
        catalog = [
            Action(f"item-{i}", {"item": {"topic": f"t{i % 4}", "size": 0.1 + i / n_items}})
            for i in range(n_items)
        ]
        for segment in (0, 1):
            for chosen in range(n_items):
                policy.learn(_context(segment), catalog, chosen, 0.5, 1 / n_items)
        # bias, 3 context features (two segments, activity), 5 item features, and their
        # 3 x 5 products: 24 whatever the catalog; then the items themselves.
        assert len(policy._model._idx) == 24 + per_item * n_items


def test_an_action_without_features_is_crossed_with_its_id() -> None:
    """Under "features", featureless actions can still depend on the context, as in "all"."""
    policy = LinUCB(alpha=0.0, floor=0.01)
    actions = [Action("news"), Action("sport")]
    for t in range(40):
        young = t % 2
        for chosen in (0, 1):
            policy.learn(
                {"user": {"young": float(young)}}, actions, chosen, float(chosen == young), 0.5
            )
    assert policy.pmf({"user": {"young": 1.0}}, actions).argmax() == 1
    assert policy.pmf({"user": {"young": 0.0}}, actions).argmax() == 0


@pytest.mark.parametrize(("given", "meaning"), [(True, "all"), (False, "none")])
def test_bool_interactions_of_earlier_snapshots_keep_their_meaning(
    given: bool, meaning: str
) -> None:
    """True and False, as earlier snapshots record them, mean "all" and "none"."""
    policy = LinUCB(interactions=given)
    assert policy.params()["interactions"] == meaning
    assert policy._rows(_context(0), ACTIONS) == LinUCB(interactions=meaning)._rows(
        _context(0), ACTIONS
    )
    _simulate(policy, 20)
    magic, header, payload = policy.snapshot().split(b"\n", 2)
    fields = json.loads(header)
    fields["params"]["interactions"] = given  # as a snapshot from before the modes
    old = magic + b"\n" + json.dumps(fields).encode() + b"\n" + payload
    assert Policy.restore(old).pmf(_context(1), ACTIONS) == policy.pmf(_context(1), ACTIONS)


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
    with pytest.raises(InvalidFeaturesError, match=r"feature user\.x must be a finite.*got nan"):
        policy.learn({"user": {"x": math.nan}}, ACTIONS, 1, 1.0, 0.5)
    assert _payload(policy) == before


@pytest.mark.parametrize("policy", [RiverGreedy(), LinUCB(), LinearTS()], ids=repr)
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_scoring_a_non_finite_feature_names_it(policy: Policy, value: float) -> None:
    """A non-finite score is refused with the feature that caused it, not a vague error."""
    _simulate(policy, 10)
    with pytest.raises(InvalidFeaturesError, match=rf"action 'a' .* 'item\.size' = {value}"):
        policy.pmf(_context(0), [Action("a", {"item": {"size": value}}), ACTIONS[1]])


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
        (
            LinUCB,
            {"interactions": 1},
            r"`interactions` must be one of \['features', 'all', 'none'\] or a bool, got 1",
        ),
        (RiverGreedy, {"interactions": "both"}, r"`interactions` must be one of .*, got 'both'"),
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
