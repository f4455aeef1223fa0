"""What-if exploration: how a learning policy would have done with other exploration settings.

Each setting of a grid (e.g. ``epsilon`` in 0.01, 0.05, 0.1, 0.2 for ``vw-epsilon``, or
``gamma_scale`` for ``vw-squarecb``) is evaluated by counterfactual learning on the same
log (:func:`replay.targets.build_target` with ``policy:SPEC``) and one estimator.

Recommendation rule
-------------------
The *current* setting is the policy spec as given (its value of the grid's parameter,
or the policy's default). A setting is recommended only when the lower bound of its
analytic confidence interval is above the current setting's point estimate; among
several, the one with the highest lower bound. Otherwise nothing is recommended: the
log does not show, with the chosen confidence, that another setting does better.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from policies import make_policy
from policies.errors import ConfigurationError
from policies.registry import parse_spec
from replay._data import LoggedDecisions
from replay.estimators import SNIPS, Estimate, Estimator
from replay.reward_models import RewardPredictions
from replay.targets import TargetSpec, build_target

__all__ = ["WhatIf", "WhatIfRow", "parse_grid", "what_if"]


@dataclass(frozen=True, slots=True)
class WhatIfRow:
    """One setting of the grid and its estimate.

    Parameters
    ----------
    value
        The parameter's value in this setting.
    spec
        The policy spec evaluated (the base spec with this value).
    estimate
        The estimator's value of counterfactual learning with this setting.
    current
        Whether this is the current setting.
    """

    value: Any
    spec: str
    estimate: Estimate
    current: bool


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The grid's estimates and the recommendation.

    Parameters
    ----------
    parameter
        The parameter varied.
    rows
        One per setting, the current one included, in grid order (the current setting
        first when it is not in the grid).
    recommended
        The recommended row, or None (see the module docstring for the rule).
    reason
        One sentence saying why.
    """

    parameter: str
    rows: tuple[WhatIfRow, ...]
    recommended: WhatIfRow | None
    reason: str

    @property
    def current(self) -> WhatIfRow:
        """The current setting's row."""
        return next(row for row in self.rows if row.current)


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """Parse ``"param=v1,v2,..."`` into the name and its values (JSON where they parse).

    Examples
    --------
    >>> parse_grid("epsilon=0.01,0.05,0.1")
    ('epsilon', [0.01, 0.05, 0.1])
    >>> parse_grid("epsilon")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: grid 'epsilon' must look like param=v1,v2,...
    """
    name, eq, rest = text.partition("=")
    values = [part.strip() for part in rest.split(",") if part.strip()]
    if not eq or not name.strip() or not values:
        msg = f"grid {text!r} must look like param=v1,v2,..."
        raise ConfigurationError(msg)
    _, parsed = parse_spec("x:" + ",".join(f"v{i}={v}" for i, v in enumerate(values)))
    return name.strip(), [parsed[f"v{i}"] for i in range(len(values))]


def what_if(
    logs: LoggedDecisions,
    policy: str,
    parameter: str,
    values: Sequence[Any],
    *,
    estimator: Estimator | None = None,
    rewards: RewardPredictions | None = None,
    progress: Callable[[int], None] | None = None,
) -> WhatIf:
    """Evaluate `policy` with each of `values` for `parameter`, by counterfactual learning.

    Parameters
    ----------
    logs
        The logged decisions, with contexts and action features.
    policy
        The current policy spec, e.g. ``"vw-epsilon:epsilon=0.05"``.
    parameter, values
        The exploration parameter and the values to try (at least one).
    estimator
        Default :class:`~replay.estimators.SNIPS`.
    rewards
        Reward predictions, for estimators that need them.
    progress
        Called with the rows replayed so far, summed over the settings.

    Returns
    -------
    WhatIf

    Raises
    ------
    ConfigurationError
        For an unknown policy, an empty grid, or a value the policy refuses.

    Examples
    --------
    >>> import numpy as np
    >>> n = 300
    >>> logs = LoggedDecisions(
    ...     n_actions=np.full(n, 2), chosen=np.arange(n) % 2, propensity=np.full(n, 0.5),
    ...     reward=np.ones(n), action_ids=[["a", "b"]] * n,
    ...     contexts=[{}] * n, action_features=[[{}, {}]] * n)
    >>> result = what_if(logs, "vw-epsilon:epsilon=0.1", "epsilon", [0.05, 0.2])
    >>> [row.value for row in result.rows], result.recommended
    ([0.1, 0.05, 0.2], None)
    """
    if not values:
        msg = f"the grid of `{parameter}` must hold at least one value, got none"
        raise ConfigurationError(msg)
    name, params = parse_spec(policy)
    current_value = params.get(parameter)
    if current_value is None:
        current_value = make_policy(policy).params().get(parameter)
        if current_value is None:
            msg = f"policy {policy!r} has no parameter `{parameter}`"
            raise ConfigurationError(msg)
    settings = list(values)
    if current_value not in settings:
        settings.insert(0, current_value)
    estimator = SNIPS() if estimator is None else estimator
    rows = []
    done = 0
    for value in settings:
        spec = _with(name, params, parameter, value)
        base = done

        def report(rows_done: int, base: int = base) -> None:
            if progress is not None:
                progress(base + rows_done)

        target = build_target(
            TargetSpec(f"policy:{spec}", "policy", spec, learn=True), logs, progress=report
        )
        done += logs.n
        estimate = estimator.estimate(logs, target.probabilities, rewards=rewards)
        rows.append(WhatIfRow(value, spec, estimate, value == current_value))
    recommended, reason = _recommend(parameter, rows)
    return WhatIf(parameter, tuple(rows), recommended, reason)


def _with(name: str, params: dict[str, Any], parameter: str, value: Any) -> str:
    merged = {**params, parameter: value}
    items = ",".join(
        f"{k}={v}" if isinstance(v, str) else f"{k}={json.dumps(v)}" for k, v in merged.items()
    )
    return f"{name}:{items}"


def _recommend(parameter: str, rows: list[WhatIfRow]) -> tuple[WhatIfRow | None, str]:
    current = next(row for row in rows if row.current)
    bar = current.estimate.value
    better = [
        (row.estimate.ci.low, i, row)
        for i, row in enumerate(rows)
        if not row.current and row.estimate.ci is not None and row.estimate.ci.low > bar
    ]
    if math.isnan(bar) or not better:
        return None, (
            f"no setting's lower confidence bound beats the current {parameter}="
            f"{current.value}'s estimate {bar:.4g}: keep it"
        )
    low, _, best = max(better, key=lambda item: (item[0], -item[1]))
    return best, (
        f"{parameter}={best.value}: its lower confidence bound {low:.4g} "
        f"beats the current {parameter}={current.value}'s estimate {bar:.4g}"
    )
