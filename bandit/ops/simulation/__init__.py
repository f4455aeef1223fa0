"""The policy simulator: environments with a known best action, and fair head-to-head runs.

Two environments produce :class:`Round` objects that know the true expected reward of
every offered action, so the oracle and every policy's regret are exact:

- :class:`SyntheticEnvironment`: users, sessions, devices and times of day choosing
  among items under a hidden click model whose best item depends on the context, with
  optional drift;
- :class:`DigitsEnvironment`: scikit-learn's bundled digits as a bandit problem, as in
  Bietti, Agarwal and Langford, *A Contextual Bandit Bake-off*.

:func:`simulate` runs several policies over the same rounds and returns a
:class:`SimulationResult`.
"""

from __future__ import annotations

from bandit.errors import ConfigurationError
from bandit.ops.simulation._digits import DigitsEnvironment
from bandit.ops.simulation._round import Environment, Round
from bandit.ops.simulation._runner import PolicyResult, SimulationResult, simulate
from bandit.ops.simulation._synthetic import (
    DEFAULT_N_ACTIONS,
    DEFAULT_N_ITEMS,
    SyntheticEnvironment,
)

__all__ = [
    "DEFAULT_N_ACTIONS",
    "DEFAULT_N_ITEMS",
    "DigitsEnvironment",
    "Environment",
    "PolicyResult",
    "Round",
    "SimulationResult",
    "SyntheticEnvironment",
    "make_environment",
    "simulate",
]

_ENVIRONMENTS = ("digits", "synthetic")


def make_environment(
    name: str,
    *,
    seed: int = 0,
    n_actions: int | None = None,
    n_items: int | None = None,
    drift: float = 0.0,
    change_point: int | None = None,
) -> Environment:
    """Build an environment by name.

    Parameters
    ----------
    name
        ``"synthetic"`` or ``"digits"``.
    seed
        Seeds the environment.
    n_actions, n_items, drift, change_point
        Settings of the synthetic environment (``None`` means its default); the digits
        environment always has 10 actions and does not drift, so it refuses them.

    Raises
    ------
    ConfigurationError
        If `name` is unknown, or a setting does not apply to the environment.
    DatasetError
        If a setting breaks the environment's rule.

    Examples
    --------
    >>> make_environment("synthetic", seed=1, n_actions=5).n_actions
    5
    >>> make_environment("digits", drift=0.5)
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `drift` applies only to the synthetic environment; \
the digits environment does not drift, got 0.5
    """
    if name == "synthetic":
        sizes = {"n_actions": n_actions, "n_items": n_items}
        return SyntheticEnvironment(
            seed=seed,
            drift=drift,
            change_point=change_point,
            **{key: value for key, value in sizes.items() if value is not None},
        )
    if name == "digits":
        if n_actions is not None and n_actions != 10:
            msg = (
                "`n_actions` must be 10 for the digits environment (one per class), "
                f"got {n_actions!r}"
            )
            raise ConfigurationError(msg)
        if n_items is not None:
            msg = (
                "`n_items` applies only to the synthetic environment; the digits "
                f"environment has no catalog, got {n_items!r}"
            )
            raise ConfigurationError(msg)
        if drift != 0.0:
            msg = (
                "`drift` applies only to the synthetic environment; "
                f"the digits environment does not drift, got {drift!r}"
            )
            raise ConfigurationError(msg)
        if change_point is not None:
            msg = (
                "`change_point` applies only to the synthetic environment; "
                f"the digits environment does not drift, got {change_point!r}"
            )
            raise ConfigurationError(msg)
        return DigitsEnvironment(seed=seed)
    msg = f"`name` must be one of {list(_ENVIRONMENTS)}, got {name!r}"
    raise ConfigurationError(msg)
