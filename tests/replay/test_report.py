"""Estimator names, evaluating policies x estimators, the JSON figures and the HTML report."""

from __future__ import annotations

import html
import json
from dataclasses import replace as dc_replace

import numpy as np
import pytest

from bandit.errors import ConfigurationError
from replay import ClippedIPS, HashedRidge, Interval, Intervals, LoggedDecisions, ReplayMethod
from replay.report import (
    ESTIMATORS,
    Evaluation,
    Report,
    _tick_text,
    _ticks,
    evaluate,
    format_figure,
    interval_scale,
    make_estimator,
    needs_rewards,
    render_html,
    to_json,
)
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


def test_running_value_has_a_band_that_holds_it_and_narrows() -> None:
    """Each learning policy's running value lies in its band, which narrows along the log."""
    logs, _ = segment_log(2_000)
    target = build_target("policy:vw-squarecb", logs)
    report = evaluate(logs, [target], ["ips"], intervals=Intervals(level=0.9, n_bootstrap=0))
    low, high = report.curve_bands["policy:vw-squarecb"]
    curve = report.curves["policy:vw-squarecb"]
    assert np.isnan(low[0])
    assert np.isnan(high[0])
    assert np.all(low[1:] <= curve[1:])
    assert np.all(curve[1:] <= high[1:])
    assert high[-1] - low[-1] < (high[199] - low[199]) / 2
    ips = report.evaluations[0].estimate  # the band's last point is IPS's interval
    assert ips.ci is not None
    assert (low[-1], high[-1]) == pytest.approx((ips.ci.low, ips.ci.high), rel=1e-3)
    data = to_json(report)
    band = data["curve_bands"]["policy:vw-squarecb"]
    assert band["level"] == 0.9
    assert len(band["low"]) == len(band["high"]) == 500
    assert band["low"][0] == [1, None]  # NaN becomes null


def test_html_lists_each_distinct_warning_once_and_numbers_the_rows() -> None:
    """Repeated warnings are listed once under the table; rows carry their numbers."""
    rng = np.random.default_rng(0)
    n = 400
    chosen = (rng.random(n) < 0.02).astype(int)  # the logger rarely shows "b"
    logs = LoggedDecisions(
        n_actions=np.full(n, 2),
        chosen=chosen,
        propensity=np.where(chosen == 1, 0.02, 0.98),
        reward=rng.binomial(1, 0.5, n).astype(float),
        probabilities=np.tile([0.98, 0.02], (n, 1)),
        action_ids=[["a", "b"]] * n,
    )
    targets = [build_target(spec, logs) for spec in ("logging", "fixed:b")]
    report = evaluate(logs, targets, ["ips", "snips"], intervals=Intervals(n_bootstrap=20))
    assert report.evaluations[0].estimate.diagnostics.warnings == ()
    warnings = [w for e in report.evaluations for w in e.estimate.diagnostics.warnings]
    distinct = list(dict.fromkeys(warnings))
    # fixed:b: IPS's normal interval clipped to [0, 1], and small ESS for IPS and SNIPS
    assert len(distinct) == 2
    assert len(warnings) == 3
    page = render_html(report)
    assert all(page.count(html.escape(warning)) == 1 for warning in distinct)
    assert page.count('<td class="notes">1, 2</td>') == 1
    assert page.count('<td class="notes">2</td>') == 1
    assert page.count('<td class="notes"></td>') == 2
    assert '<td class="policy" rowspan="2">fixed:<wbr>b</td>' in page
    assert "logged mean reward" in page  # the reference line of the estimates plot


def test_ticks_are_round_and_labelled_with_the_decimals_they_need() -> None:
    """Ticks fall on 1, 2 or 5 times a power of ten; labels neither drop nor pad digits."""
    assert _ticks(0.17, 0.63) == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert [_tick_text(t, 0.17, 0.63) for t in _ticks(0.17, 0.63)] == [
        "0.2",
        "0.3",
        "0.4",
        "0.5",
        "0.6",
    ]
    assert [_tick_text(t, 1, 6_432) for t in _ticks(1, 6_432)] == ["2,000", "4,000", "6,000"]
    assert _ticks(-0.1, 0.1, 2) == [-0.1, 0.0, 0.1]


@pytest.mark.parametrize(
    ("value", "scale", "text"),
    [
        (0.00236, None, "0.00236"),
        (0.00233, None, "0.00233"),
        (0.00236, 0.0005, "0.002360"),
        (0.7, 0.1, "0.700"),
        (0.7, 2.0, "0.70"),
        (-0.7, 0.1, "-0.700"),
        (-0.00001, 0.05, "0.0000"),
        (123456.7, None, "123000"),
        (123456.7, 1000.0, "123460"),
        (-98765.4, None, "-98800"),
        (2.3604e-5, None, "2.36e-05"),
        (-3.2e-7, 1e-8, "-3.200e-07"),
        (1.5e12, None, "1.50e+12"),
        (0.0, None, "0"),
        (0.0, 0.05, "0.0000"),
        (1.0, 0.0, "1.00"),
        (1.0, float("nan"), "1.00"),
        (None, None, "-"),
        (float("nan"), 0.1, "-"),
        (float("-inf"), None, "-"),
    ],
)
def test_figures_keep_significant_digits_of_their_scale(
    value: float | None, scale: float | None, text: str
) -> None:
    """Small, large, negative, zero and missing figures: 3 significant digits of the scale."""
    assert format_figure(value, scale) == text


def test_close_estimates_and_their_interval_ends_read_differently() -> None:
    """0.00236 and 0.00233 with an interval 0.0005 wide differ, and so do the ends."""
    scale = interval_scale(Interval(0.00211, 0.00261, 0.95, "normal"))
    texts = [format_figure(v, scale) for v in (0.00236, 0.00233, 0.00211, 0.00261)]
    assert texts == ["0.002360", "0.002330", "0.002110", "0.002610"]
    assert interval_scale(Interval(1.0, 1.0, 0.95, "normal")) is None
    with pytest.raises(ConfigurationError, match="`digits` must be >= 1"):
        format_figure(1.0, digits=0)


def small_estimates() -> list[Evaluation]:
    """Two policies whose estimates (about 0.002) differ in the third significant digit."""
    logs, _ = segment_log(200, seed=4)
    base = evaluate(
        logs, [build_target("uniform", logs)], ["ips"], intervals=Intervals(n_bootstrap=0)
    ).evaluations[0]
    out = []
    for name, value in (("a", 0.00236), ("b", 0.00233)):
        ci = Interval(value - 0.00025, value + 0.00025, 0.95, "normal")
        out.append(Evaluation(name, "ips", dc_replace(base.estimate, value=value, ci=ci)))
    return out


def test_the_html_table_writes_estimates_to_their_interval_s_digits() -> None:
    """The report shows 0.002360 and 0.002330 with their interval ends, not 0.002 twice."""
    page = render_html(Report(tuple(small_estimates())))
    for text in ("0.002360", "0.002330", "0.002110 to 0.002610", "0.002080 to 0.002580"):
        assert text in page


def test_html_and_json_show_the_bernstein_and_betting_intervals() -> None:
    """Both range-respecting intervals get a column in the page and a key in the JSON."""
    logs = LoggedDecisions(
        n_actions=np.full(40, 2),
        chosen=np.tile([0, 1], 20),
        propensity=np.full(40, 0.5),
        reward=np.tile([1.0, 0.0, 0.0, 0.0], 10),
        action_ids=[["a", "b"]] * 40,
    )
    report = evaluate(
        logs, [build_target("fixed:a", logs)], ["ips"], intervals=Intervals(n_bootstrap=0)
    )
    page = render_html(report)
    assert "95% CI (Bernstein)" in page
    assert "95% CI (betting)" in page
    (evaluation,) = to_json(report)["evaluations"]
    assert evaluation["betting_ci"]["method"] == "betting"
    assert evaluation["bernstein_ci"]["method"] == "empirical Bernstein"
    assert 0.0 <= evaluation["betting_ci"]["low"] <= evaluation["betting_ci"]["high"] <= 1.0
