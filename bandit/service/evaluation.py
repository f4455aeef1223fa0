"""Offline evaluations and feature importance, computed on the decision log by the replay engine.

:func:`run_evaluation` and :func:`run_feature_importance` are the work behind
Personalizer's ``/evaluations`` and ``/featureImportances`` (:mod:`bandit.api.personalizer`):
plain functions of a picklable job, run in a helper process
(:mod:`bandit.service.evaluations`), returning JSON-ready results. Each copies the
policy's decision log lines dated within the job's window
(:func:`~bandit.service.logfiles.copy_window`), reads them with :func:`replay.read_log`
and estimates with :mod:`replay`'s estimators.
Why these methods: docs/migrating-from-personalizer.md, "Evaluations".
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bandit.service.logfiles import Window, copy_window
from policies.errors import LogFormatError
from policies.registry import format_spec
from policies.vw import VWPolicy
from policies.vwargs import USES, parse_arguments
from replay import Estimate, Intervals, LoggedDecisions, TargetProbabilities, read_log
from replay.report import evaluate, make_estimator
from replay.targets import Target, TargetSpec, build_target

__all__ = [
    "DEFAULT_ARGUMENTS",
    "EXPERIMENT_EPSILONS",
    "INTERVALS_MINUTES",
    "MAX_SUMMARIES",
    "EvaluationJob",
    "FeatureImportanceJob",
    "PolicySource",
    "PolicyToEvaluate",
    "experiment_policies",
    "optimisation_verdict",
    "run_evaluation",
    "run_feature_importance",
]

PolicySource = Literal["Online", "Baseline", "Random", "Custom", "OfflineExperimentation"]
"""Where an evaluated policy comes from, as Personalizer names it."""

DEFAULT_ARGUMENTS = "--cb_explore_adf --epsilon 0.05"
"""The VW command line tried for a served policy that is not VW's (grid, importance)."""

EXPERIMENT_EPSILONS = (0.01, 0.05, 0.1, 0.2)
"""The exploration rates tried by ``enableOfflineExperimentation``, on the online arguments."""

INTERVALS_MINUTES = (5, 60, 360, 720, 1440)
"""Personalizer's summary intervals: the first that splits the window in at most
:data:`MAX_SUMMARIES` is used (else whole days, as many as needed)."""
MAX_SUMMARIES = 100
"""The most ``summary`` entries of a policy."""

_ESTIMATORS = ("ips", "snips")
_MAX_NAMESPACES = 16  # namespaces scored by a feature importance, the most frequent first
_Feature = tuple[str, str]  # a feature's namespace and name


@dataclass(frozen=True, slots=True)
class PolicyToEvaluate:
    """One policy of an evaluation: its name, VW command line (may be empty) and source."""

    name: str
    arguments: str
    source: PolicySource


@dataclass(frozen=True, slots=True)
class EvaluationJob:
    """What an evaluation reads and evaluates.

    Parameters
    ----------
    directory
        The decision log's folder (``settings.decision_log.directory``).
    policy
        The served policy whose log lines are read.
    start, end
        The window of decision dates read (timezone-aware).
    policies
        The policies evaluated: ``Online`` (the logged probabilities), ``Baseline``
        (the first offered action), ``Random`` (uniform), ``Custom`` and
        ``OfflineExperimentation`` (VW command lines, trained along the log).
    max_rows
        The most log lines read (the earliest in the window).
    level
        Confidence level of the intervals.
    """

    directory: Path
    policy: str
    start: datetime
    end: datetime
    policies: tuple[PolicyToEvaluate, ...]
    max_rows: int
    level: float = 0.95


@dataclass(frozen=True, slots=True)
class FeatureImportanceJob:
    """What a feature importance reads, the VW command line it learns with, what it scores.

    `max_features` is the most single features scored (the most frequent first; 0
    scores namespaces only): each one costs a replay of the window.
    """

    directory: Path
    policy: str
    start: datetime
    end: datetime
    arguments: str
    max_rows: int
    max_features: int = 32
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.max_features < 0:
            msg = f"`max_features` must be >= 0, got {self.max_features!r}"
            raise ValueError(msg)


def experiment_policies(online_arguments: str) -> list[PolicyToEvaluate]:
    """Return the offline experimentation grid: the online arguments at each epsilon.

    Examples
    --------
    >>> [p.name for p in experiment_policies("--cb_explore_adf --squarecb -l 0.5")]
    ['epsilon-0.01', 'epsilon-0.05', 'epsilon-0.1', 'epsilon-0.2']
    >>> experiment_policies("--cb_explore_adf -l 0.5 -q ca")[2].arguments.split(" --l2")[0]
    '--cb_explore_adf --epsilon 0.1 --interactions ca --learning_rate 0.5 --power_t 0.5'
    """
    params = parse_arguments(online_arguments)
    for exploration_param in {p for uses in USES.values() for p in uses}:
        params.pop(exploration_param, None)
    grid = []
    for epsilon in EXPERIMENT_EPSILONS:
        policy = VWPolicy(**{**params, "exploration": "epsilon", "epsilon": epsilon})
        name = f"epsilon-{epsilon:g}"
        grid.append(PolicyToEvaluate(name, policy.vw_arguments(), "OfflineExperimentation"))
    return grid


def run_evaluation(job: EvaluationJob) -> dict[str, Any]:
    """Evaluate every policy of `job` on its window of the decision log.

    Returns
    -------
    dict
        ``policyResults`` (per policy: ``name``, ``arguments``, ``policySource``,
        ``totalSummary`` in Personalizer's shape over the whole window, ``summary``
        the same per interval (:data:`INTERVALS_MINUTES`; intervals without a decision
        left out), ``timeseries`` the SNIPS estimate per interval with its interval,
        ``estimates``: IPS and SNIPS over the whole window with their intervals),
        ``optimalPolicy`` (the highest SNIPS estimate's lower bound) and ``log`` (what
        was read, and the summaries' ``intervalInMinutes``).

    Raises
    ------
    LogFormatError
        When the window holds no decision of the policy.
    ConfigurationError
        For a VW command line that does not build.
    """
    times: dict[str, datetime] = {}
    with tempfile.TemporaryDirectory(prefix="sb-evaluation-") as folder:
        logs, facts = _window(job, folder, times)
        targets = [_target(policy, logs) for policy in job.policies]
    intervals = Intervals(level=job.level, n_bootstrap=0, kinds=("normal",))
    report = evaluate(logs, targets, _ESTIMATORS, intervals=intervals)
    by_policy: dict[str, dict[str, Estimate]] = {}
    for found in report.evaluations:
        by_policy.setdefault(found.policy, {})[found.estimator] = found.estimate
    minutes = _interval_minutes(job.end - job.start)
    buckets = _buckets(logs, times, job, minutes)
    facts["intervalInMinutes"] = minutes
    results: list[dict[str, Any]] = []
    for policy, target in zip(job.policies, targets, strict=True):
        estimates = by_policy[policy.name]
        window = _duration(job.end - job.start)
        total = _summary(target.probabilities, estimates["ips"], job.end, window)
        summaries, series = _per_interval(target.probabilities, buckets, minutes, intervals)
        results.append(
            {
                "name": policy.name,
                "arguments": policy.arguments,
                "policySource": policy.source,
                "summary": summaries,
                "totalSummary": total,
                "timeseries": {"data": series},
                "estimates": {name: _estimate(estimates[name]) for name in _ESTIMATORS},
            }
        )
    best = max(results, key=lambda r: _low(r["estimates"]["snips"]))
    return {"policyResults": results, "optimalPolicy": best["name"], "log": facts}


def run_feature_importance(job: FeatureImportanceJob) -> dict[str, Any]:
    """Score each feature and each namespace by the drop in the SNIPS value learned without it.

    The policy of `job.arguments` is trained along the log with every feature, and
    again with one feature (a namespace and name: every value of a categorical feature)
    or one whole namespace removed from every context and action. A score is the SNIPS
    estimate of the first minus that of the second, both on the logged propensities: an
    off-policy estimate, so exploration in the log does not bias it (a weight of the
    model would), and it counts a feature through its interactions. Positive: the
    policy earns more with it. The :data:`_MAX_NAMESPACES` most frequent namespaces and
    the `job.max_features` most frequent features are scored; a feature alone in its
    namespace takes the namespace's estimate (removing either is the same log).

    Returns
    -------
    dict
        ``featureScores`` (Personalizer's entries, one a feature: ``namespace``,
        ``featureName``, ``score``, and the two estimates), ``namespaceScores`` (the
        same a namespace, without ``featureName``), both best first; ``value`` (the
        SNIPS value with every feature) and ``log`` (what was read).
    """
    with tempfile.TemporaryDirectory(prefix="sb-importance-") as folder:
        logs, facts = _window(job, folder)
    intervals = Intervals(level=job.level, n_bootstrap=0, kinds=("normal",))
    learner = PolicyToEvaluate("all features", job.arguments, "Online")
    full = _snips(_target(learner, logs, learn=True), logs, intervals)

    def score(without: LoggedDecisions) -> dict[str, Any]:
        value = _snips(_target(learner, without, learn=True), without, intervals)
        return {
            "score": _finite(full.value - value.value),
            "withFeature": _estimate(full),
            "withoutFeature": _estimate(value),
        }

    namespaces, features = _frequencies(logs)
    by_namespace = {
        ns: score(_without(logs, ns)) for ns, _ in namespaces.most_common(_MAX_NAMESPACES)
    }
    names: dict[str, set[str]] = {}
    for namespace, name in features:
        names.setdefault(namespace, set()).add(name)
    feature_scores = []
    for (namespace, name), _ in features.most_common(job.max_features):
        alone = names[namespace] == {name} and namespace in by_namespace
        found = by_namespace[namespace] if alone else score(_without(logs, namespace, name))
        feature_scores.append({"namespace": namespace, "featureName": name, **found})
    return {
        "featureScores": _best_first(feature_scores),
        "namespaceScores": _best_first([{"namespace": ns, **s} for ns, s in by_namespace.items()]),
        "value": _estimate(full),
        "log": facts,
    }


# -- reading ----------------------------------------------------------------------------


def _window(
    job: EvaluationJob | FeatureImportanceJob,
    folder: str,
    times: dict[str, datetime] | None = None,
) -> tuple[LoggedDecisions, dict[str, Any]]:
    path = Path(folder) / "window.dsjson"
    policy, start, end, max_rows = job.policy, job.start, job.end, job.max_rows
    copied: Window = copy_window(
        job.directory, path, policy=policy, start=start, end=end, max_lines=max_rows, times=times
    )
    read = read_log(path, format="dsjson", on_error="skip")
    facts = {
        "files": copied.files,
        "rowsRead": read.rows_read,
        "rowsEvaluated": read.rows_kept,
        "rowsSkipped": dict(read.skipped),
        "truncatedAt": max_rows if copied.truncated else None,
    }
    if read.logs.n == 0:
        msg = (
            f"the decision log holds no decision of policy {policy!r} between "
            f"{start.isoformat()} and {end.isoformat()} ({read.rows_read} lines read)"
        )
        raise LogFormatError(msg)
    return read.logs, facts


# -- targets ----------------------------------------------------------------------------


def _target(policy: PolicyToEvaluate, logs: LoggedDecisions, *, learn: bool = False) -> Target:
    if policy.source == "Online" and not learn:
        return build_target(TargetSpec(policy.name, "logging"), logs)
    if policy.source == "Random":
        return build_target(TargetSpec(policy.name, "uniform"), logs)
    if policy.source == "Baseline":
        first = np.zeros((logs.n, logs.width))
        first[:, 0] = 1.0
        spec = TargetSpec(policy.name, "fixed")
        return Target(spec, TargetProbabilities(logs, first))
    spec_text = format_spec(VWPolicy.name, parse_arguments(policy.arguments))
    return build_target(TargetSpec(policy.name, "policy", spec_text, learn=True), logs)


def _frequencies(logs: LoggedDecisions) -> tuple[Counter[str], Counter[_Feature]]:
    """Count the contexts and actions each namespace, and each feature, is in."""
    namespaces: Counter[str] = Counter()
    features: Counter[_Feature] = Counter()
    rows = [*(logs.contexts or ()), *(f for row in logs.action_features or () for f in row)]
    for row in rows:
        namespaces.update(row.keys())
        features.update((namespace, name) for namespace, values in row.items() for name in values)
    return namespaces, features


def _without(logs: LoggedDecisions, namespace: str, name: str | None = None) -> LoggedDecisions:
    """Return `logs` without the feature `name` of `namespace` (without it all if None)."""
    contexts = [_drop(context, namespace, name) for context in logs.contexts or ()]
    actions = [[_drop(f, namespace, name) for f in row] for row in logs.action_features or ()]
    return replace(logs, contexts=contexts, action_features=actions)


def _drop(
    features: Mapping[str, Mapping[str, Any]], namespace: str, name: str | None
) -> dict[str, Any]:
    """Return `features` without `name` of `namespace` (all of it if None), in their order.

    A namespace left empty goes, so removing a namespace's only feature removes it.
    """
    kept = {
        ns: values if ns != namespace else {k: v for k, v in values.items() if k != name}
        for ns, values in features.items()
        if ns != namespace or name is not None
    }
    return {ns: values for ns, values in kept.items() if values or ns != namespace}


# -- results ----------------------------------------------------------------------------


def _snips(target: Target, logs: LoggedDecisions, intervals: Intervals) -> Estimate:
    report = evaluate(logs, [target], ["snips"], intervals=intervals)
    return report.evaluations[0].estimate


def _best_first(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort scores highest first, those without a finite score last."""
    return sorted(scores, key=lambda s: -(s["score"] if s["score"] is not None else -math.inf))


def _interval_minutes(span: timedelta) -> int:
    """Return the summaries' interval: the first of Personalizer's giving few enough.

    Examples
    --------
    >>> _interval_minutes(timedelta(hours=8)), _interval_minutes(timedelta(days=30))
    (5, 720)
    >>> _interval_minutes(timedelta(days=365))
    5256
    """
    minutes = span.total_seconds() / 60
    for interval in INTERVALS_MINUTES:
        if math.ceil(minutes / interval) <= MAX_SUMMARIES:
            return interval
    return math.ceil(minutes / MAX_SUMMARIES)


def _buckets(
    logs: LoggedDecisions, times: Mapping[str, datetime], job: EvaluationJob, minutes: int
) -> list[tuple[datetime, np.ndarray[Any, np.dtype[np.int64]]]]:
    """Return each interval with a decision (its end), and its rows, by the rows' event ids.

    A log without every row's date is one interval, the whole window.
    """
    ids = logs.event_ids
    if ids is None or any(event_id not in times for event_id in ids):
        return [(job.end, np.arange(logs.n))]
    width = minutes * 60
    index = np.array(
        [int((times[event_id] - job.start).total_seconds() // width) for event_id in ids],
        dtype=np.int64,
    )
    step = timedelta(minutes=minutes)
    return [
        (min(job.start + step * (int(i) + 1), job.end), np.flatnonzero(index == i))
        for i in np.unique(index)
    ]


def _per_interval(
    target: TargetProbabilities,
    buckets: Sequence[tuple[datetime, np.ndarray[Any, np.dtype[np.int64]]]],
    minutes: int,
    intervals: Intervals,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Personalizer's summary, and the SNIPS estimate, of each interval's decisions."""
    ips, snips = (make_estimator(name, intervals) for name in _ESTIMATORS)
    window = _duration(timedelta(minutes=minutes))
    summaries, series = [], []
    for at, rows in buckets:
        logs = target.logs.take(rows)
        part = TargetProbabilities(logs, target.probabilities[rows, : logs.width])
        summaries.append(_summary(part, ips.estimate(logs, part), at, window))
        found = snips.estimate(logs, part)
        interval = _estimate(found)["confidenceInterval"]
        series.append(
            {
                "timeStamp": at.isoformat(),
                "expectedReward": _finite(found.value),
                "confidenceInterval": interval,
            }
        )
    return summaries, series


def _summary(
    target: TargetProbabilities, ips: Estimate, end: datetime, window: str
) -> dict[str, Any]:
    """Personalizer's summary of one window: IPS and SNIPS parts, and IPS's half interval."""
    weights = target.weights()
    terms = weights * target.logs.reward
    numerator = float(terms.sum())
    half = None if ips.ci is None else (ips.ci.high - ips.ci.low) / 2
    return {
        "timeStamp": end.isoformat(),
        "ipsEstimatorNumerator": numerator,
        "ipsEstimatorDenominator": target.logs.n,
        "snipsEstimatorDenominator": float(weights.sum()),
        "aggregateTimeWindow": window,
        "nonZeroProbability": int(np.count_nonzero(weights)),
        "sumOfSquares": float((terms**2).sum()),
        "confidenceInterval": _finite(half),
        "averageReward": numerator / target.logs.n,
    }


def _estimate(estimate: Estimate) -> dict[str, Any]:
    interval = estimate.ci
    return {
        "value": _finite(estimate.value),
        "stdError": _finite(estimate.std_error),
        "confidenceInterval": None
        if interval is None
        else [_finite(interval.low), _finite(interval.high)],
        "level": None if interval is None else interval.level,
        "warnings": list(estimate.diagnostics.warnings),
    }


def optimisation_verdict(result: Mapping[str, Any]) -> tuple[str | None, str]:
    """Decide what automatic optimisation applies from an evaluation's `result`.

    The optimal policy (the highest SNIPS lower bound) is applied only when it has VW
    arguments, is not the online one, and its SNIPS lower bound beats the online
    policy's SNIPS estimate. Return its name, or None, and the reason in words.

    Examples
    --------
    >>> def entry(name, value, low):
    ...     snips = {"value": value, "confidenceInterval": [low, value + 1]}
    ...     return {"name": name, "arguments": "--cb_explore_adf", "estimates": {"snips": snips}}
    >>> optimisation_verdict({"optimalPolicy": "b", "policyResults": [
    ...     entry("online", 0.2, 0.1), entry("b", 0.6, 0.4)]})
    ('b', "b's SNIPS lower bound 0.4 beats the online policy's SNIPS estimate 0.2")
    """
    results = {found["name"]: found for found in result.get("policyResults", [])}
    best = results.get(result.get("optimalPolicy", ""))
    online = results.get("online")
    if best is None or online is None:
        return None, "the evaluation found no optimal and online policy to compare"
    name = best["name"]
    if name == "online":
        return None, "the online policy is the optimal one"
    if not best["arguments"]:
        return None, f"the optimal policy {name!r} has no VW arguments to learn with"
    low = _low(best["estimates"]["snips"])
    served = online["estimates"]["snips"]["value"]
    if served is None or not low > served:
        return None, (
            f"{name}'s SNIPS lower bound {low:g} does not beat the online policy's "
            f"SNIPS estimate {served}"
        )
    return (
        name,
        f"{name}'s SNIPS lower bound {low:g} beats the online policy's SNIPS estimate {served:g}",
    )


def _low(estimate: Mapping[str, Any]) -> float:
    interval: Sequence[float | None] | None = estimate["confidenceInterval"]
    low = None if interval is None else interval[0]
    return -math.inf if low is None else low


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _duration(span: timedelta) -> str:
    """Write an ISO-8601 duration of whole seconds (``PT3600S``)."""
    return f"PT{max(0, int(span.total_seconds()))}S"
