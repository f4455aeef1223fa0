"""The one validated in-memory form of logged decisions, and target probabilities.

Rows may offer different numbers of actions: arrays are padded to the widest row
(``K``) and ``n_actions`` says how many of each row's columns are real. Everything is
checked once, in the constructors, so estimators can trust what they get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.errors import LogFormatError

__all__ = ["FloatArray", "IntArray", "LoggedDecisions", "TargetProbabilities"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class LoggedDecisions:
    """Logged decisions: what was offered, chosen with which probability, and earned.

    Parameters
    ----------
    n_actions
        ``(n,)`` how many actions each row offered, >= 1.
    chosen
        ``(n,)`` 0-based index of the logged choice, ``0 <= chosen < n_actions``.
    propensity
        ``(n,)`` the logged probability of the chosen action, in (0, 1].
    reward
        ``(n,)`` the observed reward, finite.
    probabilities
        ``(n, K)`` the logged probability of every offered action (0 in padding), or
        None when the log holds only the chosen action's. Each row sums to 1 within
        1e-6 over its real columns and agrees with `propensity` at `chosen`.
    action_ids
        Per row, the offered action ids in offer order (optional).
    contexts, action_features
        Per row, the shared features and each action's features, by namespace
        (optional; needed by reward models and by policies replayed on the log).
    event_ids
        Per row, the event id (optional).
    position
        ``(n,)`` 0-based position (slot) each row's action was shown in, >= 0, or None
        when the log has no notion of position. Rows of one page or slate share a
        context and differ in position (:mod:`replay.slates`).

    Raises
    ------
    LogFormatError
        Naming the first bad row, the field and the rule.

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 3]), chosen=np.array([1, 0]),
    ...     propensity=np.array([0.5, 0.2]), reward=np.array([1.0, 0.0]),
    ... )
    >>> logs.n, logs.width
    (2, 3)
    >>> LoggedDecisions(n_actions=np.array([2]), chosen=np.array([2]),
    ...                 propensity=np.array([0.5]), reward=np.array([1.0]))
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: row 0: `chosen` must be in [0, n_actions=2), got 2
    """

    n_actions: IntArray
    chosen: IntArray
    propensity: FloatArray
    reward: FloatArray
    probabilities: FloatArray | None = None
    action_ids: Sequence[Sequence[str]] | None = None
    contexts: Sequence[Mapping[str, Mapping[str, Any]]] | None = None
    action_features: Sequence[Sequence[Mapping[str, Mapping[str, Any]]]] | None = None
    event_ids: Sequence[str] | None = None
    position: IntArray | None = None
    width: int = field(init=False)

    def __post_init__(self) -> None:
        n_actions = np.asarray(self.n_actions, dtype=np.int64)
        chosen = np.asarray(self.chosen, dtype=np.int64)
        propensity = np.asarray(self.propensity, dtype=np.float64)
        reward = np.asarray(self.reward, dtype=np.float64)
        n = n_actions.shape[0]
        for name, array in (("chosen", chosen), ("propensity", propensity), ("reward", reward)):
            if array.shape != (n,):
                msg = f"`{name}` must have shape ({n},) like `n_actions`, got {array.shape}"
                raise LogFormatError(msg)
        _first_bad(n_actions < 1, "`n_actions` must be >= 1", n_actions)
        _first_bad(
            (chosen < 0) | (chosen >= n_actions),
            "`chosen` must be in [0, n_actions={extra}), got {value}",
            chosen,
            extra=n_actions,
        )
        _first_bad(
            ~((propensity > 0.0) & (propensity <= 1.0)),
            "`propensity` must be in (0, 1], got {value}",
            propensity,
        )
        _first_bad(~np.isfinite(reward), "`reward` must be finite, got {value}", reward)
        width = int(n_actions.max()) if n else 0
        object.__setattr__(self, "n_actions", n_actions)
        object.__setattr__(self, "chosen", chosen)
        object.__setattr__(self, "propensity", propensity)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "width", width)
        if self.probabilities is not None:
            probabilities = np.asarray(self.probabilities, dtype=np.float64)
            if probabilities.shape != (n, width):
                msg = f"`probabilities` must have shape ({n}, {width}), got {probabilities.shape}"
                raise LogFormatError(msg)
            real = np.arange(width)[None, :] < n_actions[:, None]
            bad = real & ~((probabilities > 0.0) & (probabilities <= 1.0))
            _first_bad(
                bad.any(axis=1),
                "`probabilities` must be in (0, 1] for every offered action",
                n_actions,
            )
            _first_bad(
                (~real & (probabilities != 0.0)).any(axis=1),
                "`probabilities` must be 0 in padding",
                n_actions,
            )
            sums = probabilities.sum(axis=1)
            _first_bad(
                np.abs(sums - 1.0) > 1e-6, "`probabilities` must sum to 1, got {value}", sums
            )
            at_chosen = probabilities[np.arange(n), chosen]
            _first_bad(
                np.abs(at_chosen - propensity) > 1e-9,
                "`propensity` must equal `probabilities` at `chosen`, got {value}",
                propensity,
            )
            object.__setattr__(self, "probabilities", probabilities)
        for name in ("action_ids", "contexts", "action_features", "event_ids"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                msg = f"`{name}` must hold one entry per row ({n}), got {len(column)}"
                raise LogFormatError(msg)
        if self.position is not None:
            position = np.asarray(self.position)
            if position.shape != (n,) or (n and position.dtype.kind not in "iu"):
                msg = f"`position` must be ({n},) integers, got {position.dtype} {position.shape}"
                raise LogFormatError(msg)
            position = position.astype(np.int64)
            _first_bad(position < 0, "`position` must be >= 0, got {value}", position)
            object.__setattr__(self, "position", position)
        if self.action_ids is not None:
            for i, ids in enumerate(self.action_ids):
                if len(ids) != n_actions[i]:
                    msg = f"row {i}: `action_ids` must list {n_actions[i]} actions, got {len(ids)}"
                    raise LogFormatError(msg)

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.n_actions.shape[0])

    def mask(self) -> npt.NDArray[np.bool_]:
        """``(n, K)`` True where a column is a real offered action."""
        return np.arange(self.width)[None, :] < self.n_actions[:, None]

    def take(self, rows: npt.NDArray[np.int64] | slice) -> LoggedDecisions:
        """Return the decisions at `rows` (for bootstrap resamples and cross-fitting)."""
        index = np.arange(self.n)[rows]

        def pick(column: Sequence[Any] | None) -> list[Any] | None:
            return None if column is None else [column[i] for i in index]

        n_actions = self.n_actions[index]
        width = int(n_actions.max()) if len(index) else 0
        return LoggedDecisions(
            n_actions=n_actions,
            chosen=self.chosen[index],
            propensity=self.propensity[index],
            reward=self.reward[index],
            probabilities=None if self.probabilities is None else self.probabilities[index, :width],
            action_ids=pick(self.action_ids),
            contexts=pick(self.contexts),
            action_features=pick(self.action_features),
            event_ids=pick(self.event_ids),
            position=None if self.position is None else self.position[index],
        )


@dataclass(frozen=True, eq=False)
class TargetProbabilities:
    """A target policy's probability of every offered action, row by row.

    Parameters
    ----------
    logs
        The decisions these probabilities are for.
    probabilities
        ``(n, K)``, in [0, 1] on real columns (0 allowed: the target may never take an
        action), 0 in padding, each row summing to 1 within 1e-6.
    """

    logs: LoggedDecisions
    probabilities: FloatArray

    def __post_init__(self) -> None:
        probabilities = np.asarray(self.probabilities, dtype=np.float64)
        n, width = self.logs.n, self.logs.width
        if probabilities.shape != (n, width):
            msg = (
                f"target `probabilities` must have shape ({n}, {width}), got {probabilities.shape}"
            )
            raise LogFormatError(msg)
        real = self.logs.mask()
        bad = real & ~((probabilities >= 0.0) & (probabilities <= 1.0))
        _first_bad(bad.any(axis=1), "target probabilities must be in [0, 1]", self.logs.n_actions)
        _first_bad(
            (~real & (probabilities != 0.0)).any(axis=1),
            "target probabilities must be 0 in padding",
            self.logs.n_actions,
        )
        sums = probabilities.sum(axis=1)
        _first_bad(
            np.abs(sums - 1.0) > 1e-6, "target probabilities must sum to 1, got {value}", sums
        )
        object.__setattr__(self, "probabilities", probabilities)

    def at_chosen(self) -> FloatArray:
        """``(n,)`` the target's probability of each logged choice."""
        logs = self.logs
        return self.probabilities[np.arange(logs.n), logs.chosen]

    def weights(self) -> FloatArray:
        """``(n,)`` importance weights: target over logged probability of the choice."""
        return self.at_chosen() / self.logs.propensity


def _first_bad(
    bad: npt.NDArray[np.bool_] | np.bool_,
    rule: str,
    values: npt.NDArray[Any],
    *,
    extra: npt.NDArray[Any] | None = None,
) -> None:
    """Raise naming the first row where `bad` holds."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    value = values[row]
    shown = repr(value.item() if hasattr(value, "item") else value)
    message = rule.format(value=shown, extra=None if extra is None else extra[row].item())
    msg = f"row {row}: {message}"
    raise LogFormatError(msg)
