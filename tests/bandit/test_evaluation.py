"""Offline evaluations and feature importance on a simulated log whose answer is known."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pydantic
import pytest

from bandit.service.evaluation import (
    EvaluationJob,
    FeatureImportanceJob,
    PolicyToEvaluate,
    experiment_policies,
    run_evaluation,
    run_feature_importance,
)
from bandit.wire.personalizer import PersonalizerEvaluationRequest
from policies import format_spec
from policies.errors import LogFormatError
from policies.vw import VWPolicy
from policies.vwargs import parse_arguments
from replay import read_log
from replay.targets import TargetSpec, build_target
from tests.bandit.simulated_log import START, click_rate, write_log

LEARNER = "--cb_explore_adf --epsilon 0.05 -q ca"
N = 3000


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    folder = tmp_path_factory.mktemp("decisions")
    groups = write_log(folder / "w1" / "decisions-1.dsjson", N, policy="main")
    write_log(folder / "w2" / "decisions-1.dsjson", 500, policy="other", seed=1)
    write_log(folder / "w2" / "decisions-2.dsjson", 200, policy="main", seed=2, offset=10 * N)
    return folder, groups


def _job(folder: Path, *policies: PolicyToEvaluate) -> EvaluationJob:
    built_in = (
        PolicyToEvaluate("online", "--cb_explore_adf --epsilon 0.2", "Online"),
        PolicyToEvaluate("baseline", "", "Baseline"),
        PolicyToEvaluate("random", "", "Random"),
    )
    end = START + timedelta(seconds=N - 1)
    return EvaluationJob(folder, "main", START, end, (*built_in, *policies), max_rows=10 * N)


def _truth(folder: Path, groups: list[int]) -> float:
    """The learner's expected reward along this log: its own probabilities times the click rates."""
    logs = read_log(folder / "w1").logs
    spec = format_spec(VWPolicy.name, parse_arguments(LEARNER))
    target = build_target(TargetSpec("t", "policy", spec, learn=True), logs)
    rates = np.array([[click_rate(g, 0), click_rate(g, 1)] for g in groups])
    return float((target.probabilities.probabilities * rates).sum(axis=1).mean())


def test_the_better_custom_policy_ranks_above_the_baseline_with_intervals_covering_the_truth(
    log: tuple[Path, list[int]],
) -> None:
    folder, groups = log
    result = run_evaluation(_job(folder, PolicyToEvaluate("interactions", LEARNER, "Custom")))
    found = {r["name"]: r for r in result["policyResults"]}
    assert result["log"]["rowsEvaluated"] == N  # only this policy's lines in the window
    truths = {"online": 0.5, "baseline": 0.5, "random": 0.5, "interactions": _truth(folder, groups)}
    assert truths["interactions"] > 0.7
    for name, truth in truths.items():
        for estimator in ("ips", "snips"):
            low, high = found[name]["estimates"][estimator]["confidenceInterval"]
            assert low <= truth <= high, (name, estimator, low, truth, high)
    custom = found["interactions"]["estimates"]["snips"]["confidenceInterval"]
    baseline = found["baseline"]["estimates"]["snips"]["confidenceInterval"]
    assert custom[0] > baseline[1]
    assert result["optimalPolicy"] == "interactions"
    summary = found["random"]["totalSummary"]
    assert summary["ipsEstimatorDenominator"] == N
    assert summary["snipsEstimatorDenominator"] == pytest.approx(N, rel=1e-9)  # weights of 1
    assert summary["averageReward"] == pytest.approx(summary["ipsEstimatorNumerator"] / N)
    assert summary["nonZeroProbability"] == N
    assert summary["aggregateTimeWindow"] == f"PT{N - 1}S"


def test_the_summaries_per_interval_add_up_to_the_total(log: tuple[Path, list[int]]) -> None:
    """3000 decisions a second apart: ten 5-minute intervals, Personalizer's shortest."""
    folder, _ = log
    result = run_evaluation(_job(folder, PolicyToEvaluate("interactions", LEARNER, "Custom")))
    assert result["log"]["intervalInMinutes"] == 5
    for found in result["policyResults"]:
        summaries, total = found["summary"], found["totalSummary"]
        assert [s["aggregateTimeWindow"] for s in summaries] == ["PT300S"] * 10
        assert [s["ipsEstimatorDenominator"] for s in summaries] == [300] * 10
        numerators = sum(s["ipsEstimatorNumerator"] for s in summaries)
        assert numerators == pytest.approx(total["ipsEstimatorNumerator"])
        assert summaries[0]["timeStamp"] == (START + timedelta(minutes=5)).isoformat()
        assert len(found["timeseries"]["data"]) == 10


def test_offline_experimentation_tries_each_exploration_rate(log: tuple[Path, list[int]]) -> None:
    folder, _ = log
    grid = experiment_policies(LEARNER)
    assert [p.name for p in grid] == ["epsilon-0.01", "epsilon-0.05", "epsilon-0.1", "epsilon-0.2"]
    assert all(" -q ca" in p.arguments or "--interactions ca" in p.arguments for p in grid)
    result = run_evaluation(_job(folder, *grid))
    values = {r["name"]: r["estimates"]["snips"]["value"] for r in result["policyResults"]}
    assert values["epsilon-0.01"] > values["epsilon-0.2"]  # less exploring earns more here


def test_feature_importance_finds_the_namespaces_the_reward_depends_on(
    log: tuple[Path, list[int]],
) -> None:
    folder, _ = log
    end = START + timedelta(seconds=N - 1)
    result = run_feature_importance(
        FeatureImportanceJob(folder, "main", START, end, LEARNER, max_rows=10 * N)
    )
    scores = {s["namespace"]: s["score"] for s in result["namespaceScores"]}
    assert set(scores) == {"user", "item", "noise"}
    assert scores["user"] > 0.15
    assert scores["item"] > 0.15
    assert abs(scores["noise"]) < 0.05
    features = {(s["namespace"], s["featureName"]): s["score"] for s in result["featureScores"]}
    assert features == {("user", "group"): scores["user"], ("item", "kind"): scores["item"],
                        ("noise", "x"): scores["noise"]}  # fmt: skip


def test_feature_importance_tells_a_feature_from_a_noise_feature_in_its_namespace(
    tmp_path: Path,
) -> None:
    """The reward depends on the user's group, not on the shoe beside it in ``user``."""
    write_log(tmp_path / "w1" / "decisions-1.dsjson", N, policy="main", user_noise=True)
    end = START + timedelta(seconds=N - 1)
    job = FeatureImportanceJob(tmp_path, "main", START, end, LEARNER, max_rows=N)
    result = run_feature_importance(job)
    scores = {(s["namespace"], s["featureName"]): s for s in result["featureScores"]}
    assert set(scores) == {("item", "kind"), ("user", "group"), ("user", "shoe"), ("noise", "x")}
    group, shoe = scores["user", "group"], scores["user", "shoe"]
    assert group["score"] > 0.15
    assert abs(shoe["score"]) < 0.05
    assert group["withoutFeature"]["confidenceInterval"][1] < shoe["withoutFeature"]["value"]
    assert {s["namespace"] for s in result["namespaceScores"]} == {"user", "item", "noise"}


def test_feature_importance_scores_only_the_most_frequent_features(
    log: tuple[Path, list[int]],
) -> None:
    """Action features count once an action: ``item.kind`` (two a decision) comes first."""
    folder, _ = log
    end = START + timedelta(seconds=N - 1)
    job = FeatureImportanceJob(folder, "main", START, end, LEARNER, max_rows=N, max_features=1)
    result = run_feature_importance(job)
    assert [(s["namespace"], s["featureName"]) for s in result["featureScores"]] == [
        ("item", "kind")
    ]
    assert len(result["namespaceScores"]) == 3


def test_a_feature_importance_refuses_a_negative_feature_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`max_features` must be >= 0, got -1"):
        FeatureImportanceJob(tmp_path, "main", START, START, LEARNER, max_rows=1, max_features=-1)


def test_a_window_without_decisions_fails_naming_the_policy_and_window(
    log: tuple[Path, list[int]],
) -> None:
    folder, _ = log
    job = _job(folder)
    empty = EvaluationJob(folder, "nobody", job.start, job.end, job.policies, max_rows=10)
    with pytest.raises(LogFormatError, match="no decision of policy 'nobody' between"):
        run_evaluation(empty)


def test_a_long_window_is_cut_at_the_row_bound(log: tuple[Path, list[int]]) -> None:
    folder, _ = log
    job = _job(folder)
    bounded = EvaluationJob(folder, "main", job.start, job.end, job.policies, max_rows=100)
    assert run_evaluation(bounded)["log"]["rowsEvaluated"] == 100
    assert run_evaluation(bounded)["log"]["truncatedAt"] == 100


@pytest.mark.parametrize(
    ("body", "where", "rule"),
    [
        ({"policies": [{"name": "x", "arguments": "--cb_explore_adf -d a.dsjson"}]},
         ("policies", 0, "arguments"), "must not name files"),
        ({"policies": [{"name": "Online", "arguments": "--cb_explore_adf"}]},
         ("policies",), "is taken"),
        ({"endTime": "2026-11-30T00:00:00Z"}, (), "`endTime` must be after `startTime`"),
        ({"policies": [{"name": f"p{i}", "arguments": "--cb_explore_adf"} for i in range(9)]},
         ("policies",), "at most 8"),
    ],
)  # fmt: skip
def test_a_bad_evaluation_is_refused_naming_the_field(
    body: dict[str, object], where: tuple[object, ...], rule: str
) -> None:
    base = {"name": "e", "startTime": "2026-12-01T00:00:00Z", "endTime": "2026-12-02T00:00:00Z"}
    with pytest.raises(pydantic.ValidationError) as refused:
        PersonalizerEvaluationRequest.model_validate({**base, **body})
    [error] = refused.value.errors()
    assert error["loc"] == where
    assert rule in error["msg"]


def test_a_log_file_gone_meanwhile_is_passed_over(tmp_path: Path) -> None:
    write_log(tmp_path / "w1" / "decisions-1.dsjson", 50, policy="main")
    (tmp_path / "w1" / "decisions-2.dsjson").symlink_to(tmp_path / "deleted.dsjson")
    result = run_evaluation(_job(tmp_path))
    assert (result["log"]["files"], result["log"]["rowsEvaluated"]) == (1, 50)
