"""Estimator names, evaluating policies x estimators, the JSON figures and the HTML report."""

from __future__ import annotations

import json

import pytest

from bandit.errors import ConfigurationError
from replay import ClippedIPS, HashedRidge, Intervals, ReplayMethod
from replay.report import ESTIMATORS, evaluate, make_estimator, needs_rewards, render_html, to_json
from replay.targets import build_target
from tests.replay.test_targets import segment_log


def test_every_estimator_name_builds_with_the_given_intervals() -> None:
    """Each listed name builds its estimator, with the intervals passed and its defaults."""
    intervals = Intervals(n_bootstrap=7, seed=3)
    for name in ESTIMATORS:
        assert make_estimator(name, intervals).intervals == intervals
    assert make_estimator("clipped-ips") == ClippedIPS(max_weight=10.0)
    assert make_estimator("replay") == ReplayMethod(on_nonuniform="warn")
    assert needs_rewards("dr")
    assert not needs_rewards("snips")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("nope", "no estimator named 'nope'; known: dm, ips"),
        ("clipped-ips:max_weight=0", "`max_weight` must be > 0"),
        ("ips:tau=3", "estimator 'ips:tau=3'"),
    ],
)
def test_bad_estimators_are_refused(spec: str, match: str) -> None:
    """Unknown names and refused hyperparameters raise naming them."""
    with pytest.raises(ConfigurationError, match=match):
        make_estimator(spec)


def test_report_holds_every_policy_and_estimator_as_json_and_html() -> None:
    """Every policy x estimator is estimated; JSON is strict; HTML has inline SVG and no script."""
    logs, _ = segment_log(400)
    targets = [
        build_target(spec, logs) for spec in ("uniform", "fixed:item-0", "policy:vw-squarecb")
    ]
    estimators = ["ips", "snips", "dr", "replay"]
    report = evaluate(
        logs,
        targets,
        estimators,
        intervals=Intervals(n_bootstrap=50),
        rewards=HashedRidge().cross_fit(logs),
        log={"rows_read": 400},
    )
    pairs = [(e.policy, e.estimator) for e in report.evaluations]
    assert pairs == [(t.label, e) for t in targets for e in estimators]
    assert list(report.curves) == ["policy:vw-squarecb"]
    data = json.loads(json.dumps(to_json(report), allow_nan=False))
    first = data["evaluations"][0]
    assert first["policy"] == "uniform"
    assert first["value"] == pytest.approx(report.evaluations[0].estimate.value)
    assert {"low", "high", "level", "method"} <= set(first["ci"])
    assert first["bootstrap_ci"]["method"] == "percentile bootstrap"
    assert {"ess", "weight_max", "warnings"} <= set(first["diagnostics"])
    assert len(data["curves"]["policy:vw-squarecb"]) == 400
    page = render_html(report)
    assert page.count("<svg") == 2
    assert "<polyline" in page
    assert "<circle" in page
    for remote in ("<script", "src=", "href=", "@import"):
        assert remote not in page
    assert "policy:vw-squarecb" in page
