"""Off-policy estimators: correctness on simulations with known values, and their errors.

The simulations draw contexts, a softmax (or uniform) logging policy with full support,
a target policy (another softmax, or greedy) and Bernoulli rewards with known means, so
the true value of the target on the drawn contexts, ``mean_i sum_a pi(a|x_i) mu(x_i, a)``,
is known exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from estimators.bandits import ips as vw_ips
from estimators.bandits import snips as vw_snips
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.errors import ConfigurationError, LogFormatError
from replay import (
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimate,
    Estimator,
    Intervals,
    LoggedDecisions,
    ReplayMethod,
    RewardPredictions,
    SwitchDR,
    TargetProbabilities,
)
from replay.estimators import DROS_LAMBDAS, SWITCH_TAUS

# -- simulation --------------------------------------------------------------------------

N_FEATURES = 3
_PROBLEM = np.random.default_rng(20240601)
THETA = _PROBLEM.normal(size=(N_FEATURES, 4))  # reward model: mu = sigmoid(x @ THETA + b)
BIAS = _PROBLEM.normal(scale=0.5, size=4)
BETA = _PROBLEM.normal(size=(N_FEATURES, 4))  # logging policy's preferences


@dataclass(frozen=True)
class Simulation:
    """A log with the true expected rewards behind it."""

    logs: LoggedDecisions
    target: TargetProbabilities
    mu: np.ndarray  # (n, K) expected reward of every action
    truth: float


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def simulate(
    seed: int, *, n: int = 1000, logger: str = "softmax", target: str = "softmax"
) -> Simulation:
    """Draw one log of `n` decisions among 4 actions (vectorised)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    mu = 1.0 / (1.0 + np.exp(-(x @ THETA + BIAS)))
    k = mu.shape[1]
    # the softmax logger is mixed with 30% uniform: every action has probability >= 0.075
    uniform = logger == "uniform"
    logged = np.full((n, k), 1.0 / k) if uniform else 0.7 * _softmax(x @ BETA) + 0.3 / k
    chosen = np.minimum((logged.cumsum(axis=1) <= rng.random((n, 1))).sum(axis=1), k - 1)
    rows = np.arange(n)
    reward = (rng.random(n) < mu[rows, chosen]).astype(np.float64)
    logs = LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=logged[rows, chosen],
        reward=reward,
        probabilities=logged,
    )
    if target == "greedy":
        probabilities = np.eye(k)[mu.argmax(axis=1)]
    else:  # a softmax that prefers the better actions
        probabilities = _softmax(3.0 * (x @ THETA + BIAS))
    truth = float(np.mean((probabilities * mu).sum(axis=1)))
    return Simulation(logs, TargetProbabilities(logs, probabilities), mu, truth)


def oracle(sim: Simulation) -> RewardPredictions:
    """The true expected rewards, as predictions."""
    return RewardPredictions(sim.logs, sim.mu)


def wrong(sim: Simulation) -> RewardPredictions:
    """A constant, badly wrong reward model."""
    return RewardPredictions.constant(sim.logs, 0.9)


# -- (a) coverage ------------------------------------------------------------------------

RUNS = 150
COVERAGE_FLOOR = 0.90
FAST = Intervals(n_bootstrap=100)
NONE_TUNED = Intervals(n_bootstrap=0)

# (label, estimator, logger, target, reward model): each where its assumptions hold.
SCENARIOS: list[
    tuple[str, Estimator, str, str, Callable[[Simulation], RewardPredictions] | None]
] = [
    ("DirectMethod, oracle model", DirectMethod(FAST), "softmax", "softmax", oracle),
    ("IPS", IPS(FAST), "softmax", "softmax", None),
    ("IPS, greedy target", IPS(FAST), "softmax", "greedy", None),
    ("ClippedIPS(M=50 > max w)", ClippedIPS(50.0, FAST), "softmax", "softmax", None),
    ("SNIPS", SNIPS(FAST), "softmax", "softmax", None),
    ("DoublyRobust, oracle model", DoublyRobust(FAST), "softmax", "softmax", oracle),
    ("DoublyRobust, wrong model", DoublyRobust(FAST), "softmax", "softmax", wrong),
    ("DoublyRobust, wrong, greedy", DoublyRobust(FAST), "softmax", "greedy", wrong),
    ("SNDR, wrong model", SNDR(FAST), "softmax", "softmax", wrong),
    ("SwitchDR(tau=2), oracle", SwitchDR(2.0, FAST), "softmax", "softmax", oracle),
    ("SwitchDR(tau=inf), wrong", SwitchDR(math.inf, FAST), "softmax", "softmax", wrong),
    ("DRos(lambda=1), oracle", DRos(1.0, FAST), "softmax", "softmax", oracle),
    ("ReplayMethod, greedy target", ReplayMethod(intervals=FAST), "uniform", "greedy", None),
    ("ReplayMethod, softmax target", ReplayMethod(intervals=FAST), "uniform", "softmax", None),
]


@cache
def coverage_table() -> list[tuple[str, float, float, float]]:
    """Per scenario: analytic coverage, bootstrap coverage, mean |error| over RUNS seeds."""
    hits = {label: [0, 0, 0.0] for label, *_ in SCENARIOS}
    for seed in range(RUNS):
        sims: dict[tuple[str, str], Simulation] = {}
        for label, estimator, logger, target, model in SCENARIOS:
            key = (logger, target)
            if key not in sims:
                sims[key] = simulate(seed, logger=logger, target=target)
            sim = sims[key]
            rewards = None if model is None else model(sim)
            estimate = estimator.estimate(
                sim.logs, sim.target, rewards=rewards, rng=np.random.default_rng(seed)
            )
            assert estimate.ci is not None
            assert estimate.bootstrap_ci is not None
            hits[label][0] += sim.truth in estimate.ci
            hits[label][1] += sim.truth in estimate.bootstrap_ci
            hits[label][2] += abs(estimate.value - sim.truth)
    return [(label, a / RUNS, b / RUNS, e / RUNS) for label, (a, b, e) in hits.items()]


def format_coverage(table: list[tuple[str, float, float, float]]) -> str:
    """The coverage table as text (for failure messages and the report)."""
    lines = [f"{'scenario':32} {'analytic':>9} {'bootstrap':>9} {'mean |err|':>10}"]
    lines += [f"{s:32} {a:9.3f} {b:9.3f} {e:10.4f}" for s, a, b, e in table]
    return "\n".join(lines)


def test_every_interval_covers_the_truth_where_its_assumptions_hold() -> None:
    """Each estimator's 95% intervals cover the true value in >= 90% of 150 seeded runs."""
    table = coverage_table()
    low = [row for row in table if min(row[1], row[2]) < COVERAGE_FLOOR]
    assert low == [], "\n" + format_coverage(table)


@pytest.mark.parametrize("estimator", [IPS(), SNIPS()], ids=["normal", "delta"])
def test_analytic_and_bootstrap_intervals_agree_in_width(estimator: Estimator) -> None:
    """The analytic interval is as wide as the bootstrap's within 20%, not wider to cover."""
    sim = simulate(0, n=5000)
    estimate = estimator.estimate(sim.logs, sim.target)
    assert estimate.ci is not None
    assert estimate.bootstrap_ci is not None
    analytic = estimate.ci.high - estimate.ci.low
    bootstrap = estimate.bootstrap_ci.high - estimate.bootstrap_ci.low
    assert abs(analytic / bootstrap - 1) < 0.2, (analytic, bootstrap)


# -- (b) agreement with vw-estimators ----------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_ips_and_snips_agree_with_vw_estimators(seed: int) -> None:
    """IPS and SNIPS equal vw-estimators' ips and snips on the same rows (to 1e-12)."""
    sim = simulate(seed, n=2000)
    vw_i, vw_s = vw_ips.Estimator(), vw_snips.Estimator()
    at_chosen = sim.target.at_chosen()
    for p_log, r, p_pred in zip(sim.logs.propensity, sim.logs.reward, at_chosen, strict=True):
        vw_i.add_example(p_log=float(p_log), r=float(r), p_pred=float(p_pred))
        vw_s.add_example(p_log=float(p_log), r=float(r), p_pred=float(p_pred))
    none = Intervals(n_bootstrap=0)
    ours_ips = IPS(none).estimate(sim.logs, sim.target).value
    ours_snips = SNIPS(none).estimate(sim.logs, sim.target).value
    assert ours_ips == pytest.approx(vw_i.get(), rel=1e-12, abs=0)
    assert ours_snips == pytest.approx(vw_s.get(), rel=1e-12, abs=0)


# -- (c) DR versus IPS -------------------------------------------------------------------

DR_RUNS = 300


@cache
def dr_errors() -> dict[str, np.ndarray]:
    """Signed errors of IPS, DR (oracle model), DR and DM (wrong model) over DR_RUNS seeds."""
    none = Intervals(n_bootstrap=0)
    errors: dict[str, list[float]] = {"IPS": [], "DR oracle": [], "DR wrong": [], "DM wrong": []}
    for seed in range(DR_RUNS):
        sim = simulate(10_000 + seed, n=500, target="greedy")
        errors["IPS"].append(IPS(none).estimate(sim.logs, sim.target).value - sim.truth)
        for label, model, estimator in (
            ("DR oracle", oracle, DoublyRobust(none)),
            ("DR wrong", wrong, DoublyRobust(none)),
            ("DM wrong", wrong, DirectMethod(none)),
        ):
            value = estimator.estimate(sim.logs, sim.target, rewards=model(sim)).value
            errors[label].append(value - sim.truth)
    return {label: np.asarray(values) for label, values in errors.items()}


def test_dr_with_a_good_model_beats_ips() -> None:
    """With the true reward model, DR's mean squared error is under half of IPS's."""
    errors = dr_errors()
    mse_dr, mse_ips = np.mean(errors["DR oracle"] ** 2), np.mean(errors["IPS"] ** 2)
    assert mse_dr < 0.5 * mse_ips, (mse_dr, mse_ips)


def test_dr_with_a_wrong_model_stays_unbiased() -> None:
    """With a constant wrong model, DR's mean error is within 3 standard errors of 0."""
    errors = dr_errors()
    dr = errors["DR wrong"]
    assert abs(dr.mean()) < 3 * dr.std(ddof=1) / math.sqrt(dr.size)
    dm = errors["DM wrong"]  # the model really is wrong: the direct method is far off
    assert abs(dm.mean()) > 10 * abs(dr.mean())
    assert abs(dm.mean()) > 0.1


# -- tuned thresholds ---------------------------------------------------------------------


def noisy(sim: Simulation) -> RewardPredictions:
    """The true means plus noise (sd 0.2), clipped to [0, 1]: a fair but imperfect model."""
    noise = np.random.default_rng(0).normal(0.0, 0.2, sim.mu.shape)
    return RewardPredictions(sim.logs, np.clip(sim.mu + noise, 0.0, 1.0))


@cache
def tuning_errors(model: str, target: str) -> dict[str, np.ndarray]:
    """Errors over 30 seeds of tuned and fixed Switch-DR and DRos, with one reward model."""
    none = Intervals(n_bootstrap=0)
    estimators: dict[str, Estimator] = {
        "switch small": SwitchDR(1.0, none),
        "switch inf": SwitchDR(math.inf, none),
        "dros small": DRos(1.0, none),
        "dros inf": DRos(math.inf, none),
        **{
            f"{name} {method}": cls(None, none, method)
            for name, cls in (("switch", SwitchDR), ("dros", DRos))
            for method in ("slope", "mse")
        },
    }
    errors: dict[str, list[float]] = {label: [] for label in estimators}
    for seed in range(30):
        sim = simulate(500 + seed, target=target)
        rewards = (wrong if model == "wrong" else noisy)(sim)
        for label, estimator in estimators.items():
            estimate = estimator.estimate(sim.logs, sim.target, rewards=rewards)
            errors[label].append(estimate.value - sim.truth)
    return {label: np.asarray(values) for label, values in errors.items()}


def _rmse(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(errors**2)))


@pytest.mark.parametrize("method", ["slope", "mse"])
@pytest.mark.parametrize("name", ["switch", "dros"])
def test_a_tuned_threshold_beats_a_small_one_under_a_wrong_model(name: str, method: str) -> None:
    """With a badly wrong model, tuning keeps the correction a small threshold drops."""
    errors = tuning_errors("wrong", "softmax")
    assert _rmse(errors[f"{name} {method}"]) < 0.6 * _rmse(errors[f"{name} small"])


@pytest.mark.parametrize("method", ["slope", "mse"])
@pytest.mark.parametrize("name", ["switch", "dros"])
def test_a_tuned_threshold_is_no_worse_than_none_under_a_fair_model(name: str, method: str) -> None:
    """With a fair model and a greedy target, tuning does no worse than plain DR."""
    errors = tuning_errors("noisy", "greedy")
    assert _rmse(errors[f"{name} {method}"]) <= 1.05 * _rmse(errors[f"{name} inf"])


@pytest.mark.parametrize(
    ("estimator", "parameter", "grid"),
    [
        (SwitchDR(intervals=NONE_TUNED), "tau", SWITCH_TAUS),
        (SwitchDR(intervals=NONE_TUNED, tuning="mse"), "tau", SWITCH_TAUS),
        (DRos(intervals=NONE_TUNED), "lambda_", DROS_LAMBDAS),
        (DRos(intervals=NONE_TUNED, tuning="mse"), "lambda_", DROS_LAMBDAS),
    ],
)
def test_the_tuned_value_is_reported_and_used(
    estimator: SwitchDR | DRos, parameter: str, grid: tuple[float, ...]
) -> None:
    """The diagnostics name the value chosen; the estimate is the one with that value fixed."""
    sim = simulate(7)
    rewards = wrong(sim)
    estimate = estimator.estimate(sim.logs, sim.target, rewards=rewards)
    tuning = estimate.diagnostics.tuning
    assert tuning is not None
    assert (tuning.parameter, tuning.method, tuning.grid) == (parameter, estimator.tuning, grid)
    assert tuning.value in grid
    fixed = type(estimator)(tuning.value, NONE_TUNED)
    assert fixed.estimate(sim.logs, sim.target, rewards=rewards).value == estimate.value
    assert fixed.estimate(sim.logs, sim.target, rewards=rewards).diagnostics.tuning is None


# -- exact relations between estimators --------------------------------------------------

NONE = Intervals(n_bootstrap=0)


@pytest.mark.parametrize(
    ("special", "general"),
    [
        (ClippedIPS(math.inf, NONE), IPS(NONE)),
        (SwitchDR(math.inf, NONE), DoublyRobust(NONE)),
        (SwitchDR(0.0, NONE), DirectMethod(NONE)),
        (DRos(math.inf, NONE), DoublyRobust(NONE)),
        (DRos(0.0, NONE), DirectMethod(NONE)),
    ],
    ids=["clip-inf=IPS", "switch-inf=DR", "switch-0=DM", "dros-inf=DR", "dros-0=DM"],
)
def test_limiting_hyperparameters_give_the_simpler_estimator(
    special: Estimator, general: Estimator
) -> None:
    """Each family reduces to its limit: no clipping is IPS, no switching or shrinkage DR."""
    sim = simulate(3)
    a = special.estimate(sim.logs, sim.target, rewards=wrong(sim))
    b = general.estimate(sim.logs, sim.target, rewards=wrong(sim))
    assert a.value == pytest.approx(b.value, rel=1e-12)
    assert a.std_error == pytest.approx(b.std_error, rel=1e-9)


def test_clipping_lowers_the_weights_that_exceed_the_cap() -> None:
    """ClippedIPS with a binding cap equals IPS computed on capped weights."""
    sim = simulate(4)
    weights = np.minimum(sim.target.weights(), 2.0)
    value = ClippedIPS(2.0, NONE).estimate(sim.logs, sim.target).value
    assert value == pytest.approx(np.mean(weights * sim.logs.reward), rel=1e-12)


def test_replay_equals_snips_on_uniform_logs_with_a_deterministic_target() -> None:
    """Li et al.'s replay is SNIPS when every propensity is 1/K and the target is greedy."""
    sim = simulate(5, logger="uniform", target="greedy")
    replay = ReplayMethod(intervals=NONE).estimate(sim.logs, sim.target)
    snips = SNIPS(NONE).estimate(sim.logs, sim.target)
    assert replay.value == pytest.approx(snips.value, rel=1e-12)
    assert replay.std_error == pytest.approx(snips.std_error, rel=1e-9)
    matched = int(np.sum(sim.target.at_chosen() == 1.0))
    assert replay.diagnostics.ess == pytest.approx(matched)


def test_replay_of_a_stochastic_target_is_seeded_and_says_so() -> None:
    """A stochastic target's draws come from `rng`: same seed, same value, and a warning."""
    sim = simulate(6, logger="uniform")
    replay = ReplayMethod(intervals=NONE)
    first = replay.estimate(sim.logs, sim.target, rng=np.random.default_rng(1))
    again = replay.estimate(sim.logs, sim.target, rng=np.random.default_rng(1))
    other = replay.estimate(sim.logs, sim.target, rng=np.random.default_rng(2))
    assert first.value == again.value != other.value
    assert any("stochastic" in w for w in first.diagnostics.warnings)


def test_replay_may_estimate_a_non_uniform_log_with_a_warning() -> None:
    """With on_nonuniform='warn' the replay method runs and flags the bias."""
    sim = simulate(7, target="greedy")
    estimate = ReplayMethod("warn", NONE).estimate(sim.logs, sim.target)
    assert math.isfinite(estimate.value)
    assert any("not logged uniformly" in w for w in estimate.diagnostics.warnings)


# -- intervals ---------------------------------------------------------------------------


def test_bootstrap_is_reproducible_and_independent_of_chunking() -> None:
    """The same rng gives the same bootstrap interval, however the resamples are chunked."""
    sim = simulate(8)
    big = SNIPS(Intervals(n_bootstrap=50)).estimate(sim.logs, sim.target)
    small = SNIPS(Intervals(n_bootstrap=50, chunk_size=1)).estimate(sim.logs, sim.target)
    again = SNIPS(Intervals(n_bootstrap=50)).estimate(sim.logs, sim.target)
    assert big.bootstrap_ci == again.bootstrap_ci
    assert big.bootstrap_ci is not None
    assert small.bootstrap_ci is not None  # same resamples, summed in another order
    assert small.bootstrap_ci.low == pytest.approx(big.bootstrap_ci.low, rel=1e-12)
    assert small.bootstrap_ci.high == pytest.approx(big.bootstrap_ci.high, rel=1e-12)
    other = SNIPS(Intervals(n_bootstrap=50, seed=1)).estimate(sim.logs, sim.target)
    assert other.bootstrap_ci != big.bootstrap_ci


def test_level_and_n_bootstrap_are_honoured() -> None:
    """A 90% interval is inside the 99% one; n_bootstrap=0 gives no bootstrap interval."""
    sim = simulate(9)
    narrow = SNDR(Intervals(level=0.9, n_bootstrap=0)).estimate(
        sim.logs, sim.target, rewards=wrong(sim)
    )
    wide = SNDR(Intervals(level=0.99, n_bootstrap=0)).estimate(
        sim.logs, sim.target, rewards=wrong(sim)
    )
    assert narrow.bootstrap_ci is None
    assert narrow.ci is not None
    assert wide.ci is not None
    assert wide.ci.low < narrow.ci.low < narrow.value < narrow.ci.high < wide.ci.high
    assert (narrow.ci.level, narrow.ci.method) == (0.9, "delta")


def test_one_row_has_a_value_but_no_interval() -> None:
    """With a single row the standard error is undefined: NaN, and no analytic interval."""
    logs = _logs([2], [0], [0.5], [1.0])
    estimate = IPS().estimate(logs, TargetProbabilities(logs, np.array([[1.0, 0.0]])))
    assert estimate.value == 2.0
    assert math.isnan(estimate.std_error)
    assert estimate.ci is None


# -- diagnostics -------------------------------------------------------------------------


def _logs(
    n_actions: list[int],
    chosen: list[int],
    propensity: list[float],
    reward: list[float],
    probabilities: list[list[float]] | None = None,
) -> LoggedDecisions:
    return LoggedDecisions(
        n_actions=np.array(n_actions),
        chosen=np.array(chosen),
        propensity=np.array(propensity),
        reward=np.array(reward),
        probabilities=None if probabilities is None else np.array(probabilities),
    )


def test_diagnostics_report_the_weights() -> None:
    """ESS is (sum w)^2 / sum w^2; mean, max and quantiles describe the weights."""
    logs = _logs([2] * 4, [0, 0, 1, 1], [0.5] * 4, [1.0, 0.0, 1.0, 0.0])
    target = TargetProbabilities(logs, np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]))
    weights = np.array([2.0, 1.0, 2.0, 0.0])
    diagnostics = IPS(NONE).estimate(logs, target).diagnostics
    assert diagnostics.ess == pytest.approx(weights.sum() ** 2 / (weights**2).sum())
    assert diagnostics.weight_mean == pytest.approx(1.25)
    assert diagnostics.weight_max == 2.0
    assert dict(diagnostics.weight_quantiles)[0.5] == pytest.approx(1.5)
    assert (diagnostics.n, diagnostics.support_known, diagnostics.unsupported_share) == (
        4,
        False,
        0.0,
    )


def test_a_well_supported_target_gets_no_warnings() -> None:
    """A softmax target on a softmax log with full support raises no warning."""
    sim = simulate(10)
    diagnostics = SNIPS(NONE).estimate(sim.logs, sim.target).diagnostics
    assert diagnostics.warnings == ()
    assert diagnostics.support_known


def test_small_ess_and_huge_weights_are_flagged() -> None:
    """A target on an action the logger almost never takes triggers ESS and weight warnings."""
    n = 1000
    probabilities = np.tile([0.999, 0.001], (n, 1))
    chosen = np.r_[np.ones(2, dtype=int), np.zeros(n - 2, dtype=int)]
    logs = LoggedDecisions(
        n_actions=np.full(n, 2),
        chosen=chosen,
        propensity=probabilities[np.arange(n), chosen],
        reward=np.ones(n),
        probabilities=probabilities,
    )
    target = TargetProbabilities(logs, np.tile([0.0, 1.0], (n, 1)))
    warnings = IPS(NONE).estimate(logs, target).diagnostics.warnings
    assert any("effective sample size 2.0 is 0.2% of 1000 rows" in w for w in warnings)
    assert any("largest importance weight 1000 exceeds 100" in w for w in warnings)


def test_wrong_propensities_are_flagged_by_the_mean_weight() -> None:
    """Propensities logged as half their real value make the mean weight about 2."""
    sim = simulate(11)
    logs = sim.logs
    halved = LoggedDecisions(
        n_actions=logs.n_actions,
        chosen=logs.chosen,
        propensity=logs.propensity / 2,
        reward=logs.reward,
    )
    target = TargetProbabilities(halved, sim.target.probabilities)
    diagnostics = IPS(NONE).estimate(halved, target).diagnostics
    assert diagnostics.weight_mean == pytest.approx(2.0, rel=0.1)
    assert any("is far from 1" in w for w in diagnostics.warnings)


def test_support_deficiency_is_what_can_be_known_from_the_chosen_propensity() -> None:
    """With only chosen propensities, a deterministic logger's other actions are unsupported."""
    logs = _logs([2, 2, 2, 2], [0, 0, 1, 0], [1.0, 1.0, 0.5, 0.5], [1.0, 0.0, 1.0, 0.0])
    target = TargetProbabilities(logs, np.tile([0.5, 0.5], (4, 1)))
    diagnostics = IPS(NONE).estimate(logs, target).diagnostics
    assert diagnostics.support_known is False
    assert diagnostics.unsupported_share == 0.5  # rows 0 and 1; rows 2-3 cannot be known
    assert any("in 50.0% of rows the target puts mass" in w for w in diagnostics.warnings)


def test_snips_with_all_weights_zero_is_undefined_and_says_so() -> None:
    """If the target never takes a logged choice, SNIPS is NaN with a warning, not an error."""
    logs = _logs([2, 2], [0, 0], [0.5, 0.5], [1.0, 0.0])
    target = TargetProbabilities(logs, np.tile([0.0, 1.0], (2, 1)))
    estimate = SNIPS().estimate(logs, target)
    assert math.isnan(estimate.value)
    assert estimate.ci is None
    assert estimate.bootstrap_ci is None
    assert any("every importance weight is 0" in w for w in estimate.diagnostics.warnings)


# -- (d) bad inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ClippedIPS(0.0), r"`max_weight` must be > 0, got 0.0"),
        (lambda: ClippedIPS(-1), r"`max_weight` must be > 0, got -1"),
        (lambda: ClippedIPS(math.nan), r"`max_weight` must be > 0, got nan"),
        (lambda: ClippedIPS("3"), r"`max_weight` must be > 0, got '3'"),
        (lambda: SwitchDR(-0.5), r"`tau` must be >= 0, got -0.5"),
        (lambda: SwitchDR(math.nan), r"`tau` must be >= 0, got nan"),
        (lambda: DRos(-1.0), r"`lambda_` must be >= 0, got -1.0"),
        (lambda: DRos(True), r"`lambda_` must be >= 0, got True"),
        (lambda: SwitchDR(tuning="best"), r"`tuning` must be 'slope' or 'mse', got 'best'"),
        (
            lambda: ReplayMethod("ignore"),  # type: ignore[arg-type]
            r"`on_nonuniform` must be 'raise' or 'warn', got 'ignore'",
        ),
        (lambda: IPS(0.95), r"`intervals` must be an Intervals, got 0.95"),  # type: ignore[arg-type]
        (lambda: Intervals(level=0.0), r"`level` must be in \(0, 1\), got 0.0"),
        (lambda: Intervals(level=1.0), r"`level` must be in \(0, 1\), got 1.0"),
        (lambda: Intervals(n_bootstrap=-1), r"`n_bootstrap` must be an integer >= 0, got -1"),
        (lambda: Intervals(n_bootstrap=2.5), r"`n_bootstrap` must be an integer >= 0, got 2.5"),
        (lambda: Intervals(n_bootstrap=True), r"`n_bootstrap` must be an integer >= 0, got True"),
        (lambda: Intervals(chunk_size=0), r"`chunk_size` must be an integer >= 1, got 0"),
        (lambda: Intervals(seed=-1), r"`seed` must be an integer >= 0, got -1"),
    ],
)
def test_bad_hyperparameters_are_refused(build: Callable[[], object], match: str) -> None:
    """Construction names the argument, the rule and the value it refuses."""
    with pytest.raises(ConfigurationError, match=match):
        build()


def _two_rows() -> tuple[LoggedDecisions, TargetProbabilities]:
    logs = _logs([2, 3], [1, 0], [0.5, 0.2], [1.0, 0.0])
    return logs, TargetProbabilities(logs, np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))


def _bad_call(kind: str) -> Callable[[], Estimate]:
    logs, target = _two_rows()
    other = _logs([2, 3, 2], [1, 0, 0], [0.5, 0.2, 0.5], [1.0, 0.0, 1.0])
    swapped = _logs([2, 3], [0, 0], [0.5, 0.2], [1.0, 0.0])
    empty = _logs([], [], [], [])
    calls: dict[str, Callable[[], Estimate]] = {
        "dm-no-rewards": lambda: DirectMethod().estimate(logs, target),
        "dr-no-rewards": lambda: DoublyRobust().estimate(logs, target),
        "target-other-shape": lambda: IPS().estimate(other, target),
        "target-other-choices": lambda: SNIPS().estimate(swapped, target),
        "rewards-other-shape": lambda: DoublyRobust().estimate(
            logs, target, rewards=RewardPredictions.constant(other, 0.0)
        ),
        "empty": lambda: IPS().estimate(empty, TargetProbabilities(empty, np.zeros((0, 0)))),
        "replay-nonuniform": lambda: ReplayMethod().estimate(logs, target),
        "replay-nonuniform-full": lambda: ReplayMethod().estimate(
            full := _logs([2], [0], [0.9], [1.0], [[0.9, 0.1]]),
            TargetProbabilities(full, np.array([[1.0, 0.0]])),
        ),
    }
    return calls[kind]


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        (
            "dm-no-rewards",
            ConfigurationError,
            (
                r"DirectMethod needs `rewards`: pass RewardPredictions\(logs, values\) or "
                r"HashedRidge\(\)\.cross_fit\(logs\)"
            ),
        ),
        ("dr-no-rewards", ConfigurationError, r"DoublyRobust needs `rewards`"),
        (
            "target-other-shape",
            LogFormatError,
            r"`target` was built for 2 rows x 3 actions, but `logs` has 3 x 3",
        ),
        ("target-other-choices", LogFormatError, r"`target` was built for other logs"),
        (
            "rewards-other-shape",
            LogFormatError,
            r"`rewards` was built for 3 rows x 3 actions, but `logs` has 2 x 3",
        ),
        ("empty", LogFormatError, r"IPS needs at least one logged decision, got an empty log"),
        (
            "replay-nonuniform",
            LogFormatError,
            (
                r"row 1: the replay method needs uniformly random logs: `propensity` must be "
                r"1/n_actions = 0.333333, got 0.2 \(use IPS, SNIPS or DoublyRobust, or "
                r"ReplayMethod\(on_nonuniform='warn'\)"
            ),
        ),
        (
            "replay-nonuniform-full",
            LogFormatError,
            (
                r"row 0: the replay method needs uniformly random logs: `probabilities` must "
                r"all be 1/n_actions = 0.5"
            ),
        ),
    ],
)
def test_bad_inputs_are_refused(kind: str, error: type[Exception], match: str) -> None:
    """Missing rewards, inputs built for other logs and non-uniform replay logs are refused."""
    with pytest.raises(error, match=match):
        _bad_call(kind)()


# -- properties --------------------------------------------------------------------------


@st.composite
def logged(draw: st.DrawFn) -> tuple[LoggedDecisions, np.ndarray]:
    """Logs with full logged distributions, and a target distribution for them."""
    n = draw(st.integers(1, 20))
    k = draw(st.integers(1, 4))
    unit = st.floats(0.01, 1.0)
    raw = np.array(draw(st.lists(st.lists(unit, min_size=k, max_size=k), min_size=n, max_size=n)))
    probabilities = raw / raw.sum(axis=1, keepdims=True)
    chosen = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    reward = np.array(draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n)))
    logs = LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=probabilities[np.arange(n), chosen],
        reward=reward,
        probabilities=probabilities,
    )
    target_raw = np.array(
        draw(
            st.lists(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k), min_size=n, max_size=n)
        )
    )
    target_raw[:, 0] += 1e-3  # keep every row a distribution
    return logs, target_raw / target_raw.sum(axis=1, keepdims=True)


@settings(max_examples=100, deadline=None)
@given(case=logged())
def test_ips_with_the_logger_as_target_is_the_logged_mean(
    case: tuple[LoggedDecisions, np.ndarray],
) -> None:
    """IPS of the logging policy itself is exactly the mean logged reward."""
    logs, _ = case
    assert logs.probabilities is not None
    target = TargetProbabilities(logs, logs.probabilities)
    assert IPS(NONE).estimate(logs, target).value == np.mean(logs.reward)


@settings(max_examples=100, deadline=None)
@given(case=logged())
def test_ips_is_bounded_by_the_largest_reward_times_the_largest_weight(
    case: tuple[LoggedDecisions, np.ndarray],
) -> None:
    """|IPS| <= max |reward| x max weight."""
    logs, probabilities = case
    target = TargetProbabilities(logs, probabilities)
    bound = np.max(np.abs(logs.reward)) * np.max(target.weights())
    assert abs(IPS(NONE).estimate(logs, target).value) <= bound * (1 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(case=logged())
def test_snips_lies_within_the_reward_range(case: tuple[LoggedDecisions, np.ndarray]) -> None:
    """SNIPS is a weighted mean of the rewards, so within [min reward, max reward]."""
    logs, probabilities = case
    target = TargetProbabilities(logs, probabilities)
    value = SNIPS(NONE).estimate(logs, target).value
    if math.isnan(value):  # every weight 0: undefined (tested above)
        assert not target.weights().any()
        return
    low, high = logs.reward.min(), logs.reward.max()
    slack = 1e-12 * max(1.0, abs(low), abs(high))
    assert low - slack <= value <= high + slack
