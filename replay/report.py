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
``switch-dr``    :class:`~replay.estimators.SwitchDR`        ``tau=10``
``dros``         :class:`~replay.estimators.DRos`            ``lambda_=10``
``replay``       :class:`~replay.estimators.ReplayMethod`    ``on_nonuniform="warn"``
===============  ==========================================  =========================

``dm``, ``dr``, ``sndr``, ``switch-dr`` and ``dros`` need reward predictions: one
cross-fitted :class:`~replay.reward_models.HashedRidge` shared by all of them.

The HTML report holds its plots as inline SVG drawn here: no script, no stylesheet or
font fetched, nothing but the file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bandit.errors import ConfigurationError
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
from replay.reward_models import RewardPredictions
from replay.targets import Target
from replay.whatif import WhatIf

__all__ = [
    "ESTIMATORS",
    "Evaluation",
    "Report",
    "evaluate",
    "make_estimator",
    "needs_rewards",
    "render_html",
    "to_json",
]

ESTIMATORS: Mapping[str, tuple[type[Any], Mapping[str, Any]]] = {
    "dm": (DirectMethod, {}),
    "ips": (IPS, {}),
    "clipped-ips": (ClippedIPS, {"max_weight": 10.0}),
    "snips": (SNIPS, {}),
    "dr": (DoublyRobust, {}),
    "sndr": (SNDR, {}),
    "switch-dr": (SwitchDR, {"tau": 10.0}),
    "dros": (DRos, {"lambda_": 10.0}),
    "replay": (ReplayMethod, {"on_nonuniform": "warn"}),
}
"""Estimator names, their classes and the defaults used here."""

_NEED_REWARDS = frozenset({"dm", "dr", "sndr", "switch-dr", "dros"})
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
    bandit.errors.ConfigurationError: no estimator named 'best'; known: dm, ips, ...
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
    """Whether the named estimator needs reward predictions."""
    return parse_spec(spec)[0] in _NEED_REWARDS


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
    """

    evaluations: tuple[Evaluation, ...]
    curves: Mapping[str, FloatArray] = field(default_factory=dict)
    logged_curve: FloatArray | None = None
    log: Mapping[str, Any] = field(default_factory=dict)
    whatif: WhatIf | None = None


def evaluate(
    logs: LoggedDecisions,
    targets: Sequence[Target],
    estimators: Sequence[str],
    *,
    intervals: Intervals | None = None,
    rewards: RewardPredictions | None = None,
    log: Mapping[str, Any] | None = None,
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
    curves = {t.label: t.running_value for t in targets if t.running_value is not None}
    logged_curve = None
    if logs.n:
        logged_curve = np.cumsum(logs.reward) / np.arange(1, logs.n + 1)
    return Report(tuple(evaluations), curves, logged_curve, dict(log or {}))


# -- JSON --------------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """Every figure of the report as plain JSON data (NaN becomes null).

    Curves are thinned to at most 500 points, each ``[row, value]`` (row 1-based).
    """
    data: dict[str, Any] = _clean(
        {
            "log": dict(report.log),
            "evaluations": [
                {"policy": e.policy, "estimator": e.estimator, **_estimate(e.estimate)}
                for e in report.evaluations
            ],
            "curves": {label: _thin(curve) for label, curve in report.curves.items()},
            "logged_curve": None if report.logged_curve is None else _thin(report.logged_curve),
            "whatif": None if report.whatif is None else _whatif(report.whatif),
        }
    )
    return data


def _estimate(estimate: Estimate) -> dict[str, Any]:
    d = estimate.diagnostics
    return {
        "estimator_class": estimate.estimator,
        "value": estimate.value,
        "std_error": estimate.std_error,
        "ci": _interval(estimate.ci),
        "bootstrap_ci": _interval(estimate.bootstrap_ci),
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
    }


def _whatif(whatif: WhatIf) -> dict[str, Any]:
    return {
        "parameter": whatif.parameter,
        "rows": [
            {"value": r.value, "spec": r.spec, "current": r.current, **_estimate(r.estimate)}
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
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
td.warn { color: #a33; text-align: left; font-size: 0.9em; }
svg { background: #fff; border: 1px solid #ddd; }
"""


def render_html(report: Report, *, title: str = "streambandit replay") -> str:
    """Render the report as one self-contained HTML page with inline SVG plots.

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
        facts = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in report.log.items())
        parts.append(f"<p>{facts}</p>")
    parts += ["<h2>Estimates</h2>", _estimates_table(report.evaluations)]
    parts.append(_estimates_svg(report.evaluations))
    if report.curves:
        parts += [
            "<h2>Counterfactual learning along the log</h2>",
            (
                "<p>Running IPS estimate of each learning policy's mean reward over the rows "
                "replayed so far; the logged mean reward for reference.</p>"
            ),
            _curves_svg(report.curves, report.logged_curve),
        ]
    if report.whatif is not None:
        parts += ["<h2>What-if exploration</h2>", _whatif_html(report.whatif)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def _estimates_table(evaluations: Sequence[Evaluation]) -> str:
    esc = html.escape
    rows = [
        (
            "<table><tr><th>policy</th><th>estimator</th><th>estimate</th><th>CI low</th>"
            "<th>CI high</th><th>bootstrap low</th><th>bootstrap high</th><th>ESS</th>"
            "<th>max weight</th><th>warnings</th></tr>"
        )
    ]
    for e in evaluations:
        est = e.estimate
        ci, boot = est.ci, est.bootstrap_ci
        rows.append(
            f'<tr><td class="text">{esc(e.policy)}</td><td class="text">{esc(e.estimator)}</td>'
            f"<td>{_fmt(est.value)}</td><td>{_fmt(ci.low if ci else None)}</td>"
            f"<td>{_fmt(ci.high if ci else None)}</td>"
            f"<td>{_fmt(boot.low if boot else None)}</td>"
            f"<td>{_fmt(boot.high if boot else None)}</td>"
            f"<td>{_fmt(est.diagnostics.ess, 6)}</td>"
            f"<td>{_fmt(est.diagnostics.weight_max)}</td>"
            f'<td class="warn">{"<br>".join(esc(w) for w in est.diagnostics.warnings)}</td></tr>'
        )
    rows.append("</table>")
    return "\n".join(rows)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not high > low:
        return [low]
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step), default=step)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _estimates_svg(evaluations: Sequence[Evaluation]) -> str:
    """Dot-and-whisker plot: one row per policy and estimator, the analytic interval."""
    esc = html.escape
    values = [
        float(v)
        for e in evaluations
        for v in (
            e.estimate.value,
            *((e.estimate.ci.low, e.estimate.ci.high) if e.estimate.ci else ()),
        )
        if math.isfinite(v)
    ]
    if not values:
        return "<p>No finite estimate to plot.</p>"
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or 0.5
    low, high = low - pad, high + pad
    left, width, row_h, top = 260, 480, 22, 20
    height = top + row_h * len(evaluations) + 40

    def x(v: float) -> float:
        return left + (v - low) / (high - low) * width

    policies = list(dict.fromkeys(e.policy for e in evaluations))
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" '
            f'height="{height}" role="img" aria-label="estimates with confidence intervals">'
        )
    ]
    out.extend(
        f'<line x1="{x(tick):.1f}" y1="{top - 5}" x2="{x(tick):.1f}" '
        f'y2="{height - 35}" stroke="#eee"/>'
        f'<text x="{x(tick):.1f}" y="{height - 20}" font-size="11" '
        f'text-anchor="middle">{tick:.3g}</text>'
        for tick in _ticks(low, high)
    )
    for i, e in enumerate(evaluations):
        y = top + row_h * i + row_h / 2
        colour = _PALETTE[policies.index(e.policy) % len(_PALETTE)]
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">'
            f"{esc(e.policy)} / {esc(e.estimator)}</text>"
        )
        ci = e.estimate.ci
        if ci is not None and math.isfinite(ci.low) and math.isfinite(ci.high):
            out.append(
                f'<line x1="{x(ci.low):.1f}" y1="{y:.1f}" x2="{x(ci.high):.1f}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        if math.isfinite(e.estimate.value):
            out.append(
                f'<circle cx="{x(e.estimate.value):.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                f"<title>{esc(e.policy)} / {esc(e.estimator)}: "
                f"{_fmt(e.estimate.value)}</title></circle>"
            )
    out.append(
        f'<text x="{left + width / 2}" y="{height - 4}" font-size="12" '
        'text-anchor="middle">estimated mean reward per decision (analytic interval)</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _curves_svg(curves: Mapping[str, FloatArray], logged: FloatArray | None) -> str:
    """Line plot of each running value against the rows replayed."""
    esc = html.escape
    series = list(curves.items())
    if logged is not None:
        series.append(("logged reward", logged))
    n = max(curve.size for _, curve in series)
    start = min(n - 1, max(0, n // 50))  # the first rows swing widely: skip 2%
    finite = [float(v) for _, curve in series for v in curve[start:] if math.isfinite(float(v))]
    if not finite or n < 2:
        return "<p>Too few rows to plot.</p>"
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.05 or 0.5
    low, high = low - pad, high + pad
    left, width, top, plot_h = 60, 560, 20, 280
    legend_x = left + width + 15

    def x(row: int) -> float:
        return left + row / (n - 1) * width

    def y(v: float) -> float:
        return top + (1 - (v - low) / (high - low)) * plot_h

    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{legend_x + 260}" '
            f'height="{top + plot_h + 50}" role="img" aria-label="cumulative reward along the log">'
        )
    ]
    out.extend(
        f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + width}" y2="{y(tick):.1f}" '
        f'stroke="#eee"/><text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" '
        f'text-anchor="end">{tick:.3g}</text>'
        for tick in _ticks(low, high)
    )
    out.extend(
        f'<text x="{x(int(tick)):.1f}" y="{top + plot_h + 16}" font-size="11" '
        f'text-anchor="middle">{int(tick) + 1:,}</text>'
        for tick in _ticks(0, n - 1)
    )
    for k, (label, curve) in enumerate(series):
        colour = "#777" if label == "logged reward" and logged is not None else None
        colour = colour or _PALETTE[k % len(_PALETTE)]
        rows = [i for i in _thin_rows(curve.size) if i >= start and math.isfinite(curve[i])]
        points = " ".join(f"{x(i):.1f},{y(float(curve[i])):.1f}" for i in rows)
        dash = ' stroke-dasharray="5,4"' if colour == "#777" else ""
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="2"{dash}><title>{esc(label)}</title></polyline>'
            f'<rect x="{legend_x}" y="{top + 18 * k}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{legend_x + 18}" y="{top + 18 * k + 10}" font-size="12">'
            f"{esc(label)}</text>"
        )
    out.append(
        f'<text x="{left + width / 2}" y="{top + plot_h + 40}" font-size="12" '
        'text-anchor="middle">rows of the log replayed</text></svg>'
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
    return "\n".join(
        [
            _estimates_table(evaluations),
            _estimates_svg(evaluations),
            (
                f"<p><strong>{'Recommended' if whatif.recommended else 'No change'}:</strong> "
                f"{esc(whatif.reason)}</p>"
            ),
        ]
    )
