"""Evaluate target policies with several estimators, and report as JSON or self-contained HTML.

Estimators are named as on the command line, optionally with their hyperparameters as
in a policy spec (``clipped-ips:max_weight=20``):

===============  ==========================================  =========================
name             estimator                                   default hyperparameters
===============  ==========================================  =========================
``dm``           :class:`~replay.estimators.DirectMethod`
``ips``          :class:`~replay.estimators.IPS`
``clipped-ips``  :class:`~replay.estimators.ClippedIPS`      ``max_weight=10``
``snips``        :class:`~replay.estimators.SNIPS`
``dr``           :class:`~replay.estimators.DoublyRobust`
``sndr``         :class:`~replay.estimators.SNDR`
``switch-dr``    :class:`~replay.estimators.SwitchDR`        ``tau`` tuned (``tuning="slope"``)
``dros``         :class:`~replay.estimators.DRos`            ``lambda_`` tuned (``tuning="slope"``)
``replay``       :class:`~replay.estimators.ReplayMethod`    ``on_nonuniform="warn"``
===============  ==========================================  =========================

``dm``, ``dr``, ``sndr``, ``switch-dr`` and ``dros`` need reward predictions: one
cross-fitted reward model (:mod:`replay.reward_models`) shared by all of them, whose
held-out quality the report shows beside a constant's. ``switch-dr:tau=10`` fixes the
threshold; ``switch-dr:tuning=mse`` tunes it by the other method.

The HTML report holds its plots as inline SVG drawn here: no script, no stylesheet or
font fetched, nothing but the file.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from policies.errors import ConfigurationError
from policies.registry import parse_spec
from replay._data import FloatArray, LoggedDecisions
from replay.estimators import (
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimate,
    Estimator,
    Interval,
    Intervals,
    ReplayMethod,
    SwitchDR,
)
from replay.reward_models import ModelQuality, RewardPredictions
from replay.sequential import SequenceReading, over_log
from replay.targets import Target
from replay.whatif import WhatIf

__all__ = [
    "ESTIMATORS",
    "Evaluation",
    "Report",
    "estimator_label",
    "evaluate",
    "format_figure",
    "interval_scale",
    "make_estimator",
    "needs_rewards",
    "render_html",
    "to_json",
]

ESTIMATORS: Mapping[str, tuple[type[Estimator], Mapping[str, Any]]] = {
    "dm": (DirectMethod, {}),
    "ips": (IPS, {}),
    "clipped-ips": (ClippedIPS, {"max_weight": 10.0}),
    "snips": (SNIPS, {}),
    "dr": (DoublyRobust, {}),
    "sndr": (SNDR, {}),
    "switch-dr": (SwitchDR, {}),
    "dros": (DRos, {}),
    "replay": (ReplayMethod, {"on_nonuniform": "warn"}),
}
"""Estimator names, their classes and the defaults used here."""

_CURVE_POINTS = 500


def make_estimator(spec: str, intervals: Intervals | None = None) -> Estimator:
    """Build an estimator from its name, optionally with hyperparameters.

    Raises
    ------
    ConfigurationError
        For an unknown name or a hyperparameter the estimator refuses.

    Examples
    --------
    >>> make_estimator("clipped-ips:max_weight=20").max_weight
    20
    >>> make_estimator("best")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: no estimator named 'best'; known: dm, ips, ...
    """
    name, params = parse_spec(spec)
    if name not in ESTIMATORS:
        msg = f"no estimator named {name!r}; known: {', '.join(ESTIMATORS)}"
        raise ConfigurationError(msg)
    cls, defaults = ESTIMATORS[name]
    extra = {} if intervals is None else {"intervals": intervals}
    try:
        estimator: Estimator = cls(**{**defaults, **params, **extra})
    except TypeError as exc:
        msg = f"estimator {spec!r}: {exc}"
        raise ConfigurationError(msg) from exc
    return estimator


def needs_rewards(spec: str) -> bool:
    """Whether the named estimator needs reward predictions (False for an unknown name)."""
    known = ESTIMATORS.get(parse_spec(spec)[0])
    return known is not None and known[0].needs_rewards


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One target policy's estimate by one estimator."""

    policy: str
    estimator: str
    estimate: Estimate


@dataclass(frozen=True, eq=False)
class Report:
    """Everything a replay found, for :func:`to_json` and :func:`render_html`.

    Parameters
    ----------
    evaluations
        One per policy and estimator.
    curves
        Per learning policy, its running IPS value along the log
        (:attr:`replay.targets.Target.running_value`).
    logged_curve
        The running mean of the logged rewards (what the logging policy earned).
    log
        Facts about the log read: files, rows read and kept, rows skipped by reason.
    whatif
        A what-if exploration, if one was run.
    curve_bands
        Per learning policy, the ``(low, high)`` pointwise confidence band of its running
        value (normal approximation over the rows so far, at `level`).
    level
        Confidence level of `curve_bands`.
    anytime
        Per target, its anytime-valid confidence sequence at level `level` over the log
        (:func:`replay.sequential.over_log`): the IPS estimate with bounds that hold
        at every row at once, as the live evaluation reports them.
    reward_quality
        The held-out quality of the reward model the estimators used, beside a
        constant's; None when none was used or it was given without one.
    """

    evaluations: tuple[Evaluation, ...]
    curves: Mapping[str, FloatArray] = field(default_factory=dict)
    logged_curve: FloatArray | None = None
    log: Mapping[str, Any] = field(default_factory=dict)
    whatif: WhatIf | None = None
    curve_bands: Mapping[str, tuple[FloatArray, FloatArray]] = field(default_factory=dict)
    level: float = 0.95
    anytime: Mapping[str, SequenceReading] = field(default_factory=dict)
    reward_quality: ModelQuality | None = None


def evaluate(
    logs: LoggedDecisions,
    targets: Sequence[Target],
    estimators: Sequence[str],
    *,
    intervals: Intervals | None = None,
    rewards: RewardPredictions | None = None,
    log: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    anytime: bool = False,
) -> Report:
    """Estimate every target with every estimator.

    Parameters
    ----------
    logs
        The logged decisions the targets were built on.
    targets
        The target policies.
    estimators
        Estimator specs (see the module docstring).
    intervals
        Interval settings for every estimator (default :class:`Intervals()`).
    rewards
        Reward predictions; required when an estimator needs them.
    log
        Facts about the log, copied into the report.
    progress
        Called with the number of (target, estimator) estimates done, after each.
    anytime
        Also run each target's anytime-valid confidence sequence over the log
        (:attr:`Report.anytime`). It costs a pass over a 256-point grid per row (some
        15 CPU s a target on a million rows), so only reports that show it ask.

    Examples
    --------
    >>> from replay.targets import build_target
    >>> logs = LoggedDecisions(n_actions=np.full(4, 2), chosen=np.array([0, 1, 0, 1]),
    ...                        propensity=np.full(4, 0.5), reward=np.array([1.0, 0, 1, 0]),
    ...                        action_ids=[["a", "b"]] * 4)
    >>> report = evaluate(logs, [build_target("fixed:a", logs)], ["ips", "snips"],
    ...                   intervals=Intervals(n_bootstrap=0))
    >>> [(e.policy, e.estimator, e.estimate.value) for e in report.evaluations]
    [('fixed:a', 'ips', 1.0), ('fixed:a', 'snips', 1.0)]
    """
    built = [(spec, make_estimator(spec, intervals)) for spec in estimators]
    evaluations = []
    for target in targets:
        for spec, estimator in built:
            needed = rewards if needs_rewards(spec) else None
            estimate = estimator.estimate(logs, target.probabilities, rewards=needed)
            evaluations.append(Evaluation(target.label, spec, estimate))
            if progress is not None:
                progress(len(evaluations))
    curves = {t.label: t.running_value for t in targets if t.running_value is not None}
    settings = intervals or Intervals()
    level = settings.level
    bands = {
        t.label: _running_band(t.probabilities.weights() * logs.reward, level)
        for t in targets
        if t.running_value is not None
    }
    logged_curve = None
    if logs.n:
        logged_curve = np.cumsum(logs.reward) / np.arange(1, logs.n + 1)
    (low, high), _ = settings.range_of(logs.reward)
    readings = {
        t.label: over_log(
            t.probabilities.weights(), logs.reward, alpha=1.0 - level, low=low, high=high
        )
        for t in (targets if anytime else ())
    }
    used = rewards is not None and any(needs_rewards(spec) for spec in estimators)
    return Report(
        tuple(evaluations),
        curves,
        logged_curve,
        dict(log or {}),
        curve_bands=bands,
        level=level,
        anytime=readings,
        reward_quality=rewards.quality if used and rewards is not None else None,
    )


def _running_band(terms: FloatArray, level: float) -> tuple[FloatArray, FloatArray]:
    """Pointwise normal interval of the running mean of `terms` (NaN at the first row)."""
    steps = np.arange(1, terms.size + 1, dtype=np.float64)
    mean = np.cumsum(terms) / steps
    squares = np.cumsum(terms * terms) / steps
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.maximum(squares - mean * mean, 0.0) * steps / (steps - 1)
        half = NormalDist().inv_cdf(0.5 + level / 2) * np.sqrt(variance / steps)
    half[:1] = np.nan
    low: FloatArray = mean - half
    high: FloatArray = mean + half
    return low, high


# -- JSON --------------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """Every figure of the report as plain JSON data (NaN becomes null).

    Curves and their bands are thinned to at most 500 points, each ``[row, value]``
    (row 1-based).
    """
    data: dict[str, Any] = _clean(
        {
            "log": dict(report.log),
            "evaluations": [
                {"policy": e.policy, "estimator": e.estimator, **_estimate(e.estimate)}
                for e in report.evaluations
            ],
            "curves": {label: _thin(curve) for label, curve in report.curves.items()},
            "curve_bands": {
                label: {"level": report.level, "low": _thin(low), "high": _thin(high)}
                for label, (low, high) in report.curve_bands.items()
            },
            "logged_curve": None if report.logged_curve is None else _thin(report.logged_curve),
            "whatif": None if report.whatif is None else _whatif(report.whatif),
            "anytime_valid": {
                label: {
                    "estimate": r.estimate, "low": r.lower, "high": r.upper, "n": r.n,
                    "level": 1.0 - r.alpha, "method": "betting confidence sequence",
                }
                for label, r in report.anytime.items()
            },
            "reward_model": _quality(report.reward_quality),
        }
    )  # fmt: skip
    return data


def _quality(quality: ModelQuality | None) -> dict[str, Any] | None:
    if quality is None:
        return None
    return {
        "model": quality.model,
        "metric": quality.metric,
        "held_out": quality.value,
        "constant_baseline": quality.baseline,
        "better_than_constant": quality.better,
        "out_of_range_share": quality.out_of_range,
    }


def _tuning(estimate: Estimate) -> dict[str, Any] | None:
    tuning = estimate.diagnostics.tuning
    if tuning is None:
        return None
    return {
        "parameter": tuning.parameter,
        "value": _finite_or_text(tuning.value),
        "method": tuning.method,
        "grid": [_finite_or_text(v) for v in tuning.grid],
    }


def _finite_or_text(value: float) -> float | str:
    """Return `value` for JSON: infinity as the text "inf" (JSON has no infinity)."""
    return value if math.isfinite(value) else str(value)


def estimator_label(evaluation: Evaluation) -> str:
    """Return the estimator's spec with the value it tuned: ``switch-dr (tau=8, slope)``.

    Examples
    --------
    >>> logs = LoggedDecisions(n_actions=np.full(4, 2), chosen=np.array([0, 1, 0, 1]),
    ...                        propensity=np.full(4, 0.5), reward=np.array([1.0, 0, 1, 0]))
    >>> from replay.targets import build_target
    >>> report = evaluate(logs, [build_target("uniform", logs)], ["switch-dr"],
    ...                   rewards=RewardPredictions.constant(logs, 0.5))
    >>> estimator_label(report.evaluations[0])
    'switch-dr (tau=1, slope)'
    """
    tuning = evaluation.estimate.diagnostics.tuning
    if tuning is None:
        return evaluation.estimator
    return f"{evaluation.estimator} ({tuning.parameter}={tuning.value:g}, {tuning.method})"


def _estimate(estimate: Estimate) -> dict[str, Any]:
    d = estimate.diagnostics
    return {
        "estimator_class": estimate.estimator,
        "value": estimate.value,
        "std_error": estimate.std_error,
        "ci": _interval(estimate.ci),
        "bootstrap_ci": _interval(estimate.bootstrap_ci),
        "bernstein_ci": _interval(estimate.bernstein_ci),
        "betting_ci": _interval(estimate.betting_ci),
        "n": estimate.n,
        "diagnostics": {
            "n": d.n,
            "ess": d.ess,
            "weight_mean": d.weight_mean,
            "weight_max": d.weight_max,
            "weight_quantiles": {str(q): v for q, v in d.weight_quantiles},
            "unsupported_share": d.unsupported_share,
            "support_known": d.support_known,
            "warnings": list(d.warnings),
            "tuning": _tuning(estimate),
        },
    }


def _interval(interval: Interval | None) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {
        "low": interval.low,
        "high": interval.high,
        "level": interval.level,
        "method": interval.method,
        "clipped": interval.clipped,
    }


def _whatif(whatif: WhatIf) -> dict[str, Any]:
    return {
        "parameter": whatif.parameter,
        "rows": [
            # The estimate has a "value" of its own: the parameter's value is "setting".
            {"setting": r.value, "spec": r.spec, "current": r.current, **_estimate(r.estimate)}
            for r in whatif.rows
        ],
        "recommended": None if whatif.recommended is None else whatif.recommended.value,
        "reason": whatif.reason,
    }


def _thin(curve: FloatArray) -> list[list[float]]:
    rows = _thin_rows(curve.size)
    return [[int(i) + 1, float(curve[i])] for i in rows]


def _thin_rows(n: int) -> list[int]:
    if n <= _CURVE_POINTS:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, _CURVE_POINTS)})


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# -- HTML and SVG ------------------------------------------------------------------------------

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
_LOGGED_COLOUR = "#666"
_CHAR_WIDTH = 7.0  # px per character of 12 px sans-serif, generously: sizes the margins
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 76em; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
td { white-space: nowrap; }
th { background: #f4f4f4; }
div.wide { overflow-x: auto; }
th.text, td.text { text-align: left; white-space: nowrap; }
td.policy { text-align: left; max-width: 16em; }
td.notes { text-align: left; color: #a33; white-space: nowrap; }
ol.warnings { color: #a33; }
ul.facts { padding-left: 1.2em; }
p.caption { color: #555; font-size: 0.9em; max-width: 62em; }
svg { background: #fff; border: 1px solid #ddd; display: block; margin: 1em 0; }
"""


def render_html(report: Report, *, title: str = "streambandit replay") -> str:
    """Render the report as one self-contained HTML page with inline SVG plots.

    The page holds the facts of the log, a table of every estimate (its analytic and
    bootstrap intervals, standard error, effective sample size, largest weight, and the
    numbers of its warnings, listed under the table), a dot-and-whisker plot of the
    estimates against the logged mean reward, the running value of each learning
    policy along the log with its pointwise confidence band, and the what-if table and
    plot when there is one.

    Examples
    --------
    >>> from replay.targets import build_target
    >>> logs = LoggedDecisions(n_actions=np.full(4, 2), chosen=np.array([0, 1, 0, 1]),
    ...                        propensity=np.full(4, 0.5), reward=np.array([1.0, 0, 1, 0]),
    ...                        action_ids=[["a", "b"]] * 4)
    >>> report = evaluate(logs, [build_target("fixed:a", logs)], ["ips"])
    >>> page = render_html(report)
    >>> page.startswith("<!DOCTYPE html>"), "<svg" in page, "<script" in page
    (True, True, False)
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if report.log:
        parts.append(_facts_html(report.log))
    reference = None
    if report.logged_curve is not None and report.logged_curve.size:
        reference = ("logged mean reward", float(report.logged_curve[-1]))
    parts += [
        "<h2>Estimates</h2>",
        (
            '<p class="caption">Each target policy\'s estimated mean reward per decision '
            "on this log, by each estimator, with its analytic and percentile-bootstrap "
            "confidence intervals. ESS is the effective sample size of the importance "
            "weights: the number of logged decisions the estimate effectively rests on.</p>"
        ),
        _estimates_html(report.evaluations),
        _estimates_svg(report.evaluations, reference),
        *_anytime_html(report.anytime),
    ]
    if report.reward_quality is not None:
        parts.append(
            f'<p class="caption">{html.escape(report.reward_quality.describe())}. Held out: '
            "each logged choice predicted by the model fitted on the other folds; the "
            "baseline predicts the training folds' mean reward.</p>"
        )
    if report.curves:
        parts += [
            "<h2>Counterfactual learning along the log</h2>",
            (
                '<p class="caption">Running IPS estimate of each learning policy\'s mean '
                "reward over the rows replayed so far, as it learned along the log; the "
                f"shaded band is its pointwise {report.level:.0%} confidence interval. The "
                "logged mean reward (dashed) is what the logging policy earned. The first "
                "2% of rows, where every running mean swings widely, are not drawn.</p>"
            ),
            _curves_svg(
                report.curves,
                report.curve_bands,
                report.logged_curve,
                _colours([e.policy for e in report.evaluations]),
            ),
        ]
    if report.whatif is not None:
        parts += ["<h2>What-if exploration</h2>", _whatif_html(report.whatif)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _anytime_html(readings: Mapping[str, SequenceReading]) -> list[str]:
    """Lay out each target's anytime-valid confidence sequence at the end of the log."""
    if not readings:
        return []
    level = 1.0 - next(iter(readings.values())).alpha
    rows = [
        (
            '<div class="wide"><table><tr><th class="text">policy</th><th>IPS estimate</th>'
            f"<th>{level:.0%} anytime-valid</th><th>rows</th></tr>"
        )
    ]
    rows += [
        f'<tr><td class="text">{html.escape(label)}</td><td>{_fmt(r.estimate)}</td>'
        f"<td>{_fmt(r.lower)} to {_fmt(r.upper)}</td><td>{r.n:,}</td></tr>"
        for label, r in readings.items()
    ]
    caption = (
        '<p class="caption">Anytime-valid bounds (a betting confidence sequence, '
        "replay/sequential.py): they hold at every row at once, so they stay valid however "
        "often the log is looked at while it grows, as the live evaluation reports them; "
        "wider than the fixed-time intervals above.</p>"
    )
    return ["<h3>Anytime-valid</h3>", caption, *rows, "</table></div>"]


_FIXED_RANGE = (1e-4, 1e9)  # magnitudes written without an exponent
_MAX_DECIMALS = 12
_SMALL_DECIMALS = 6  # a value below the range still written without an exponent: 0.000000
_MAX_DIGITS = 17  # a float64's


def format_figure(value: float | None, scale: float | None = None, *, digits: int = 3) -> str:
    """Write `value` to `digits` significant digits of `scale`: the one format of every figure.

    An estimate shown with its interval takes the interval's width as `scale`
    (:func:`interval_scale`): the estimate and both ends are then written to the same
    decimal place, the one that gives the width `digits` significant digits, so values
    that differ by a few percent of the width read differently (0.002360 and 0.002330,
    not both 0.002) and no digit is shown that the interval says is noise. Without a
    `scale`, the value's own magnitude is the scale (`digits` significant digits).
    Magnitudes from 1e-4 to 1e9 are written without an exponent, others as ``2.36e-05``.

    Parameters
    ----------
    value
        The figure; None, NaN and infinities are written ``-``.
    scale
        The magnitude whose `digits` significant digits are kept; None, zero or not
        finite: the value's own.
    digits
        Significant digits of the scale, >= 1.

    Returns
    -------
    str

    Examples
    --------
    >>> format_figure(0.00236), format_figure(0.00233)
    ('0.00236', '0.00233')
    >>> format_figure(0.00236, 0.0005), format_figure(0.00211, 0.0005)
    ('0.002360', '0.002110')
    >>> format_figure(0.7, 0.1), format_figure(-0.7, 0.1)
    ('0.700', '-0.700')
    >>> format_figure(123456.7), format_figure(2.3604e-5), format_figure(1.5e12)
    ('123000', '2.36e-05', '1.50e+12')
    >>> format_figure(0.0), format_figure(0.0, 0.05), format_figure(-0.00001, 0.05)
    ('0', '0.0000', '0.0000')
    >>> format_figure(None), format_figure(float("nan"))
    ('-', '-')
    """
    if digits < 1:
        msg = f"`digits` must be >= 1, got {digits!r}"
        raise ConfigurationError(msg)
    if value is None or not math.isfinite(value):
        return "-"
    known = scale is not None and math.isfinite(scale) and scale != 0.0
    reference = abs(scale) if known and scale is not None else abs(value)
    if reference == 0.0:
        return "0"
    exponent = math.floor(math.log10(reference))
    decimals = digits - 1 - exponent
    size = abs(value)
    low, high = _FIXED_RANGE
    # Without an exponent: a magnitude in the range (or a small one a coarse scale rounds
    # to zeros), unless that would take too many decimals.
    fixed = size < high and (size >= low or decimals <= _SMALL_DECIMALS)
    if fixed and decimals <= _MAX_DECIMALS:
        text = f"{round(value, decimals):.{max(decimals, 0)}f}"
    else:
        shown = math.floor(math.log10(size)) - exponent + digits if size else digits
        text = f"{value:.{min(max(shown, 1), _MAX_DIGITS) - 1}e}"
    if text.startswith("-") and not text.strip("-0.e+"):  # no "-0.00"
        text = text[1:]
    return text


def interval_scale(interval: Interval | None) -> float | None:
    """Return the width of `interval` when finite and not zero: the scale its figures take.

    Examples
    --------
    >>> from replay.estimators import Interval
    >>> interval_scale(Interval(0.1, 0.3, 0.95, "normal"))
    0.19999999999999998
    >>> interval_scale(None) is None
    True
    """
    if interval is None:
        return None
    width = interval.high - interval.low
    return width if math.isfinite(width) and width > 0.0 else None


def _fmt(value: float | None, digits: int = 4, scale: float | None = None) -> str:
    return format_figure(value, scale, digits=digits)


def _facts_html(log: Mapping[str, Any]) -> str:
    esc = html.escape
    items = "".join(
        f"<li><strong>{esc(str(key).replace('_', ' '))}</strong>: {_fact(value)}</li>"
        for key, value in log.items()
    )
    return f'<ul class="facts">{items}</ul>'


def _fact(value: Any) -> str:
    """Format one fact: lists shortened, mappings as ``key: value``, counts with commas."""
    text = html.escape(str(value))
    if isinstance(value, list | tuple) and value:
        shown = ", ".join(f"<code>{html.escape(str(v))}</code>" for v in value[:3])
        more = len(value) - 3
        text = f"{len(value):,}: {shown}" + (f" and {more:,} more" if more > 0 else "")
    elif isinstance(value, Mapping) and value:
        text = ", ".join(f"{html.escape(str(k))}: {_fact(v)}" for k, v in value.items())
    elif isinstance(value, list | tuple | Mapping):
        text = "none"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = _fmt(value)
    return text


def _interval_cell(interval: Interval | None, scale: float | None = None) -> str:
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return "-"
    scale = interval_scale(interval) if scale is None else scale
    return f"{_fmt(interval.low, 3, scale)} to {_fmt(interval.high, 3, scale)}"


def _level_of(evaluations: Sequence[Evaluation]) -> str:
    for e in evaluations:
        for interval in (
            e.estimate.ci,
            e.estimate.bootstrap_ci,
            e.estimate.bernstein_ci,
            e.estimate.betting_ci,
        ):
            if interval is not None:
                return f"{interval.level:.0%} "
    return ""


def _estimates_html(evaluations: Sequence[Evaluation]) -> str:
    """Lay out the estimates table, one row per estimate, and the numbered warnings."""
    esc = html.escape
    level = _level_of(evaluations)
    rows = [
        (
            '<div class="wide"><table><tr><th class="text">policy</th>'
            '<th class="text">estimator</th>'
            f"<th>estimate</th><th>{level}CI (analytic)</th><th>{level}CI (bootstrap)</th>"
            f"<th>{level}CI (Bernstein)</th><th>{level}CI (betting)</th>"
            "<th>std. error</th><th>ESS</th><th>max weight</th>"
            '<th class="text">warnings</th></tr>'
        )
    ]
    numbers: dict[str, int] = {}
    groups: dict[str, int] = {}
    for e in evaluations:
        groups[e.policy] = groups.get(e.policy, 0) + 1
    previous = None
    for e in evaluations:
        est = e.estimate
        marks = [
            str(numbers.setdefault(warning, len(numbers) + 1))
            for warning in est.diagnostics.warnings
        ]
        policy = ""
        if e.policy != previous:
            label = re.sub(r"([:,])", r"\1<wbr>", esc(e.policy))  # wrap a long spec there
            policy = f'<td class="policy" rowspan="{groups[e.policy]}">{label}</td>'
        previous = e.policy
        intervals = (est.ci, est.bootstrap_ci, est.betting_ci, est.bernstein_ci)
        scale = next(filter(None, map(interval_scale, intervals)), None)
        rows.append(
            f'<tr>{policy}<td class="text">{esc(estimator_label(e))}</td>'
            f"<td>{_fmt(est.value, 3, scale)}</td><td>{_interval_cell(est.ci, scale)}</td>"
            f"<td>{_interval_cell(est.bootstrap_ci, scale)}</td>"
            f"<td>{_interval_cell(est.bernstein_ci, scale)}</td>"
            f"<td>{_interval_cell(est.betting_ci, scale)}</td><td>{_fmt(est.std_error, 3)}</td>"
            f"<td>{est.diagnostics.ess:,.0f}</td><td>{_fmt(est.diagnostics.weight_max)}</td>"
            f'<td class="notes">{", ".join(marks)}</td></tr>'
        )
    rows.append("</table></div>")
    if numbers:
        rows.append('<ol class="warnings">')
        rows.extend(f"<li>{esc(warning)}</li>" for warning in numbers)
        rows.append("</ol>")
    return "\n".join(rows)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not high > low:
        return [low]
    step = _tick_step(low, high, count)
    first = math.ceil(low / step) * step
    ticks = [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def _tick_step(low: float, high: float, count: int = 5) -> float:
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    return min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step), default=step)


def _tick_text(tick: float, low: float, high: float, count: int = 5) -> str:
    """Format a tick with as many decimals as the step needs, thousands separated."""
    step = _tick_step(low, high, count) if high > low else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{tick:,.{decimals}f}"


def _estimates_svg(
    evaluations: Sequence[Evaluation], reference: tuple[str, float] | None = None
) -> str:
    """Draw a dot-and-whisker plot: a row per estimate, with its intervals.

    The analytic interval is the thick line, the bootstrap's the thin one under it; a
    dashed vertical line marks the reference value.
    """
    esc = html.escape
    values = [
        float(v)
        for e in evaluations
        for interval in (e.estimate.ci, e.estimate.bootstrap_ci)
        for v in (
            e.estimate.value,
            *((interval.low, interval.high) if interval is not None else ()),
        )
        if math.isfinite(v)
    ]
    if reference is not None and math.isfinite(reference[1]):
        values.append(reference[1])
    if not values:
        return "<p>No finite estimate to plot.</p>"
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or 0.5
    low, high = low - pad, high + pad
    labels = [f"{e.policy} / {e.estimator}" for e in evaluations]
    left = round(min(max(_CHAR_WIDTH * max(map(len, labels)) + 20, 140), 560))
    width, row_h, top = 520, 22, 58
    axis = top + row_h * len(evaluations) + 6
    height = axis + 44
    level = _level_of(evaluations)

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * width

    policies = list(dict.fromkeys(e.policy for e in evaluations))
    colours = _colours(policies)
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" '
            f'height="{height}" role="img" aria-label="estimates with confidence intervals" '
            'font-family="system-ui, sans-serif">'
        ),
        (  # the legend of the two intervals
            f'<line x1="{left}" y1="12" x2="{left + 24}" y2="12" stroke="#444" '
            f'stroke-width="3"/><text x="{left + 30}" y="16" font-size="12">'
            f"{level}CI, analytic</text>"
            f'<line x1="{left + 170}" y1="12" x2="{left + 194}" y2="12" stroke="#444" '
            f'stroke-width="1"/><text x="{left + 200}" y="16" font-size="12">'
            f"{level}CI, bootstrap</text>"
        ),
    ]
    for i, e in enumerate(evaluations):  # a light band behind every other policy's rows
        if policies.index(e.policy) % 2:
            y0 = top + row_h * i
            out.append(
                f'<rect x="0" y="{y0}" width="{left + width + 30}" height="{row_h}" '
                'fill="#f6f6f6"/>'
            )
    ticks = _ticks(low, high, 6)
    out.extend(
        f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{axis}" stroke="#e4e4e4"/>'
        f'<line x1="{x(t):.1f}" y1="{axis}" x2="{x(t):.1f}" y2="{axis + 4}" stroke="#444"/>'
        f'<text x="{x(t):.1f}" y="{axis + 17}" font-size="11" text-anchor="middle">'
        f"{_tick_text(t, low, high, 6)}</text>"
        for t in ticks
    )
    out.append(f'<line x1="{left}" y1="{axis}" x2="{left + width}" y2="{axis}" stroke="#444"/>')
    if reference is not None and math.isfinite(reference[1]):
        rx = x(reference[1])
        anchor = "middle"
        if rx < left + width / 4:
            anchor = "start"
        elif rx > left + width * 3 / 4:
            anchor = "end"
        out.append(
            f'<line x1="{rx:.1f}" y1="{top - 10}" x2="{rx:.1f}" y2="{axis}" stroke="#666" '
            'stroke-dasharray="4,3"/>'
            f'<text x="{rx:.1f}" y="{top - 14}" font-size="11" text-anchor="{anchor}" '
            f'fill="#444">{esc(reference[0])} {_fmt(reference[1])}</text>'
        )
    for i, (e, label) in enumerate(zip(evaluations, labels, strict=True)):
        y = top + row_h * i + row_h / 2
        colour = colours[e.policy]
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">'
            f"{esc(label)}</text>"
        )
        for interval, stroke, dy in ((e.estimate.ci, 3, -2), (e.estimate.bootstrap_ci, 1, 4)):
            if (
                interval is not None
                and math.isfinite(interval.low)
                and math.isfinite(interval.high)
            ):
                out.append(
                    f'<line x1="{x(interval.low):.1f}" y1="{y + dy:.1f}" '
                    f'x2="{x(interval.high):.1f}" y2="{y + dy:.1f}" stroke="{colour}" '
                    f'stroke-width="{stroke}"/>'
                )
        if math.isfinite(e.estimate.value):
            out.append(
                f'<circle cx="{x(e.estimate.value):.1f}" cy="{y - 2:.1f}" r="4" fill="{colour}">'
                f"<title>{esc(label)}: {_fmt(e.estimate.value)} "
                f"({_interval_cell(e.estimate.ci)})</title></circle>"
            )
    out.append(
        f'<text x="{left + width / 2}" y="{height - 6}" font-size="12" '
        'text-anchor="middle">estimated mean reward per decision</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _colours(labels: Sequence[str]) -> dict[str, str]:
    """Give each policy a colour, in order of first appearance: the same in every plot."""
    distinct = list(dict.fromkeys(labels))
    return {label: _PALETTE[k % len(_PALETTE)] for k, label in enumerate(distinct)}


def _curves_svg(
    curves: Mapping[str, FloatArray],
    bands: Mapping[str, tuple[FloatArray, FloatArray]],
    logged: FloatArray | None,
    colours: Mapping[str, str] | None = None,
) -> str:
    """Line plot of each running value (with its band) against the rows replayed."""
    esc = html.escape
    colours = {**_colours(list(curves)), **(colours or {})}
    series: list[tuple[str, FloatArray, str]] = [
        (label, curve, colours[label]) for label, curve in curves.items()
    ]
    if logged is not None:
        series.append(("logged mean reward", logged, _LOGGED_COLOUR))
    n = max(curve.size for _, curve, _ in series)
    if n < 2:
        return "<p>Too few rows to plot.</p>"
    start = min(n - 1, max(0, n // 50))  # the first rows swing widely: skip 2%
    settled = max(start, n // 10)  # the bands' early width would flatten the curves
    finite = [float(v) for _, curve, _ in series for v in curve[start:] if math.isfinite(float(v))]
    for low_band, high_band in bands.values():
        finite += [
            float(v) for v in (*low_band[settled:], *high_band[settled:]) if math.isfinite(v)
        ]
    if not finite:
        return "<p>No finite value to plot.</p>"
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.05 or 0.5
    low, high = low - pad, high + pad
    left, width, top, plot_h = 70, 600, 16, 300
    legend_x = left + width + 20
    legend_w = round(30 + _CHAR_WIDTH * max(len(label) for label, _, _ in series))

    def x(row: int) -> float:
        return left + row / (n - 1) * width

    def y(v: float) -> float:
        return top + (1 - (v - low) / (high - low)) * plot_h

    bottom = top + plot_h
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{legend_x + legend_w}" '
            f'height="{bottom + 52}" role="img" aria-label="running value along the log" '
            'font-family="system-ui, sans-serif">'
        ),
        (
            f'<clipPath id="plot-area"><rect x="{left}" y="{top}" width="{width}" '
            f'height="{plot_h}"/></clipPath>'
        ),
    ]
    out.extend(
        f'<line x1="{left}" y1="{y(t):.1f}" x2="{left + width}" y2="{y(t):.1f}" '
        f'stroke="#e4e4e4"/><text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" '
        f'text-anchor="end">{_tick_text(t, low, high)}</text>'
        for t in _ticks(low, high)
    )
    out.extend(
        f'<line x1="{x(int(t) - 1):.1f}" y1="{bottom}" x2="{x(int(t) - 1):.1f}" '
        f'y2="{bottom + 4}" stroke="#444"/><text x="{x(int(t) - 1):.1f}" y="{bottom + 17}" '
        f'font-size="11" text-anchor="middle">{int(t):,}</text>'
        for t in _ticks(1, n)
        if t >= 1
    )
    out.append(
        f'<line x1="{left}" y1="{bottom}" x2="{left + width}" y2="{bottom}" stroke="#444"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444"/>'
    )
    out.append('<g clip-path="url(#plot-area)">')
    for label, _, colour in series:
        band = bands.get(label)
        if band is None:
            continue
        rows = [
            i
            for i in _thin_rows(band[0].size)
            if i >= start and math.isfinite(band[0][i]) and math.isfinite(band[1][i])
        ]
        if len(rows) < 2:
            continue
        upper = [f"{x(i):.1f},{y(float(band[1][i])):.1f}" for i in rows]
        lower = [f"{x(i):.1f},{y(float(band[0][i])):.1f}" for i in reversed(rows)]
        out.append(
            f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" '
            f'fill-opacity="0.15" stroke="none"><title>{esc(label)}: confidence band</title>'
            "</polygon>"
        )
    for label, curve, colour in series:
        rows = [i for i in _thin_rows(curve.size) if i >= start and math.isfinite(curve[i])]
        points = " ".join(f"{x(i):.1f},{y(float(curve[i])):.1f}" for i in rows)
        dash = ' stroke-dasharray="5,4"' if colour == _LOGGED_COLOUR else ""
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="2"{dash}><title>{esc(label)}</title></polyline>'
        )
    out.append("</g>")
    for k, (label, _, colour) in enumerate(series):
        dash = ' stroke-dasharray="5,4"' if colour == _LOGGED_COLOUR else ""
        ly = top + 8 + 20 * k
        out.append(
            f'<line x1="{legend_x}" y1="{ly}" x2="{legend_x + 22}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="3"{dash}/><text x="{legend_x + 28}" y="{ly + 4}" font-size="12">'
            f"{esc(label)}</text>"
        )
    out.append(
        f'<text x="{left + width / 2}" y="{bottom + 40}" font-size="12" '
        'text-anchor="middle">rows of the log replayed</text>'
        f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" font-size="12" '
        'text-anchor="middle">mean reward per decision</text></svg>'
    )
    return "".join(out)


def _whatif_html(whatif: WhatIf) -> str:
    esc = html.escape
    evaluations = [
        Evaluation(
            f"{whatif.parameter}={r.value}" + (" (current)" if r.current else ""),
            r.estimate.estimator,
            r.estimate,
        )
        for r in whatif.rows
    ]
    current = whatif.current.estimate.value
    return "\n".join(
        [
            (
                f'<p class="caption">The learning policy replayed along the log with each '
                f"setting of <code>{esc(whatif.parameter)}</code>, estimated with "
                f"{esc(whatif.current.estimate.estimator)}. A setting is recommended only "
                "when its lower confidence bound beats the current setting's estimate.</p>"
            ),
            _estimates_html(evaluations),
            _estimates_svg(evaluations, ("current setting", current)),
            (
                f"<p><strong>{'Recommended' if whatif.recommended else 'No change'}:</strong> "
                f"{esc(whatif.reason)}</p>"
            ),
        ]
    )
